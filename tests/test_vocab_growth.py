"""Tokens new to the LLM (issue 16): a vocabulary grown to fit the tokenizer, the audio
markers' trained rows, their PEFT export, and a run that trains and restores them.

The checkpoint is a tiny random Qwen2 whose tokenizer fills its embedding exactly, as
tokenizers converted from GGUF files do (the vocabulary padded with ``[PADnnnnnn]``
entries up to ``vocab_size``), so `load_tokenizer` appends the markers past the last row.
Parity with PyTorch uses the whole-model tolerance of test_qwen2: max |ours - ref| <=
1e-4 * max(1, max |ref|).
"""

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import peft
import pytest
import soundfile as sf
import torch
import transformers
from flax import traverse_util

from configs import tiny
from lalmjax import audio, checkpoints, evaluation, experiment, prompts, sharding, trainer
from lalmjax import training
from lalmjax.data import manifest
from lalmjax.models import lora as lora_lib
from lalmjax.models import new_tokens
from lalmjax.models.lora import LoraConfig
from test_lalm import make_batch
from test_whisper import save_tiny_whisper

REL_TOL = 1e-4
ROWS = 320  # the checkpoint's vocab_size, and the base tokenizer's length: no spare rows
GROWN = 384  # 323 ids (3 markers appended) rounded up to a multiple of 64
TEXTS = ["the quick brown fox", "jumps over the lazy dog", "hello world again",
         "speech to text is fun"]


def save_qwen2(path, tied: bool, seed: int = 0):
  """A random Qwen2ForCausalLM with ROWS rows, weights ~ N(0, 0.1) (norms 1 + N(0, 0.1))."""
  torch.manual_seed(seed)
  model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(
      vocab_size=ROWS, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tied)).eval()
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=g) * 0.1
      p.copy_(1.0 + noise if "norm" in name else noise)
  model.save_pretrained(str(path))
  return str(path)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
  """{"tokenizer", "whisper", "untied", "tied"}: a base tokenizer of exactly ROWS ids
  (no audio markers) and checkpoints with ROWS embedding rows."""
  root = tmp_path_factory.mktemp("grow")
  tok_dir = prompts.build_tiny_tokenizer(str(root / "tok"), TEXTS, 300, audio_markers=False)
  tok = transformers.AutoTokenizer.from_pretrained(tok_dir)
  tok.add_tokens([f"[PAD{i:06d}]" for i in range(len(tok), ROWS)])  # as GGUF does
  tok.save_pretrained(tok_dir)
  save_tiny_whisper(root / "whisper", d=32, heads=2, positions=100)
  return {"tokenizer": tok_dir, "whisper": str(root / "whisper"),
          "untied": save_qwen2(root / "untied", tied=False),
          "tied": save_qwen2(root / "tied", tied=True)}


@pytest.fixture(scope="module")
def tokenizer(folders):
  return prompts.load_tokenizer(folders["tokenizer"])


def marker_ids(tokenizer):
  vocab = tokenizer.get_vocab()
  return [vocab[t] for t in (prompts.AUDIO_BOS, prompts.AUDIO_TOKEN, prompts.AUDIO_EOS)]


def text_ids(tokenizer, seed=0):
  """int32[2, 10]: old tokens around the two markers that reach the LLM."""
  bos, _, eos = marker_ids(tokenizer)
  ids = np.random.default_rng(seed).integers(0, ROWS, (2, 10)).astype(np.int32)
  ids[:, 2], ids[:, 7] = bos, eos
  return ids


def test_markers_land_past_a_full_embedding(tokenizer):
  assert marker_ids(tokenizer) == [ROWS, ROWS + 1, ROWS + 2]
  assert len(tokenizer) == ROWS + 3
  assert new_tokens.grown_vocab_size(ROWS, len(tokenizer)) == GROWN
  assert new_tokens.grown_vocab_size(ROWS, ROWS) == ROWS  # a tokenizer that fits: no growth
  # The markers that reach the LLM (not <|AUDIO|>, always replaced by audio), and any
  # token a config names.
  assert prompts.new_token_ids(tokenizer, ROWS) == (ROWS, ROWS + 2)
  assert prompts.new_token_ids(tokenizer, ROWS, ("<|im_start|>",))[1:] == (ROWS, ROWS + 2)
  with pytest.raises(ValueError, match="not in the tokenizer"):
    prompts.new_token_ids(tokenizer, ROWS, ("<|nope|>",))


@pytest.mark.parametrize("head", ["untied", "tied"])
def test_growth_keeps_every_old_token_logit(folders, tokenizer, head):
  """load_lalm grows the vocabulary to fit the tokenizer: mean rows in the embedding (and
  the untied LM head), every other tensor as stored, old tokens' logits unchanged."""
  path, audio_id = folders[head], marker_ids(tokenizer)[1]
  with pytest.raises(checkpoints.CheckpointError, match=r"audio_token_id=321 is outside the "
                     r"LLM vocabulary \[0, 320\) \(pass tokenizer_size"):
    checkpoints.load_lalm(folders["whisper"], path, audio_id)
  ids = prompts.new_token_ids(tokenizer, ROWS)
  module, variables = checkpoints.load_lalm(folders["whisper"], path, audio_id,
                                            tokenizer_size=len(tokenizer), new_token_ids=ids,
                                            lora=LoraConfig(rank=4, alpha=8.0))
  print(f"\n{head}: vocabulary grown from {ROWS} to {module.config.llm.vocab_size} rows")
  assert module.config.llm.vocab_size == GROWN and module.config.new_token_ids == ids
  _, stored = checkpoints.load_qwen2(path)
  grown = variables["params"]["llm"]
  flat, flat_stored = (traverse_util.flatten_dict(t, sep="/") for t in (grown, stored))
  assert set(flat) == set(flat_stored) | {"new_tokens/embedding"}
  for name, x in flat_stored.items():
    if name == "embed_tokens/embedding":
      np.testing.assert_array_equal(flat[name][:ROWS], x)
      np.testing.assert_allclose(flat[name][ROWS:], np.broadcast_to(x.mean(0), (64, 64)),
                                 atol=1e-7)
    elif name == "lm_head/kernel":  # [D, V]: new columns
      np.testing.assert_array_equal(flat[name][:, :ROWS], x)
      np.testing.assert_allclose(flat[name][:, ROWS:],
                                 np.broadcast_to(x.mean(1, keepdims=True), (64, 64)), atol=1e-7)
    else:
      np.testing.assert_array_equal(flat[name], x)
  # The new tokens' trainable rows start as copies of their (mean) rows.
  np.testing.assert_array_equal(flat["new_tokens/embedding"],
                                flat["embed_tokens/embedding"][np.asarray(ids)])

  old = np.random.default_rng(1).integers(0, ROWS, (2, 12)).astype(np.int32)
  llm, _ = checkpoints.load_qwen2(path)
  ref = np.asarray(llm.apply({"params": stored}, old))
  ours = np.asarray(module.apply(variables, old, method=lambda m, i: m.llm(i)))
  err = float(np.abs(ours[..., :ROWS] - ref).max())
  print(f"{head}: old tokens' logits, grown vs stored model: max abs diff {err:.2e}")
  assert ours.shape[-1] == GROWN and err <= 1e-6 * max(1.0, float(np.abs(ref).max()))


def _build(folders, workdir, llm="untied", **overrides):
  c = tiny.get_config()
  c.model.encoder_path, c.model.llm_path = folders["whisper"], folders[llm]
  c.model.tokenizer_path = folders["tokenizer"]
  for key, value in overrides.items():
    node = c
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  mesh = experiment.build_mesh(c)
  return c, mesh, experiment.build_model(c, str(workdir), mesh)


def _embedding_table(model, variables):
  """float32[V, D]: what the LLM embeds for every id (the new rows written in)."""
  ids = jnp.arange(model.module.config.llm.vocab_size)[None]
  return np.asarray(model.module.apply(variables, ids, method=lambda m, i: m.llm.embed(i))[0])


def test_marker_rows_train_and_nothing_else_of_the_embedding(folders, tmp_path):
  c, mesh, model = _build(folders, tmp_path)
  cfg = model.module.config
  assert cfg.llm.vocab_size == GROWN and cfg.new_token_ids == (ROWS, ROWS + 2)
  patterns = experiment.trainable_patterns(c)
  trainable, frozen = training.partition(model.variables, patterns)
  # Only the [n_new, D] rows of the LLM are trainable, never its [V, D] embedding.
  assert jax.tree.map(np.shape, trainable["params"]["llm"]) == {
      "new_tokens": {"embedding": (2, 64)}}
  assert frozen["params"]["llm"]["embed_tokens"]["embedding"].shape == (GROWN, 64)
  batch = make_batch(cfg, model.builder, np.array([8000, 12000, 16000, 5000]), texts=TEXTS)

  _, grads = jax.jit(lambda t: training.loss_and_grads(model.module, t, frozen, batch))(
      trainable)
  g = np.abs(np.asarray(grads["params"]["llm"]["new_tokens"]["embedding"])).max(axis=1)
  print(f"\n|grad| of the <|audio_bos|>, <|audio_eos|> rows: {g}")
  assert (g > 0).all()

  tx = training.make_optimizer(c.optim, c.total_steps)
  step = jax.jit(training.make_train_step(model.module, tx))
  state = training.init_train_state(trainable, tx)
  with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.LOGICAL_AXIS_RULES):
    for _ in range(4):
      state, metrics = step(state, frozen, batch)
  assert float(metrics["finite"]) == 1.0
  before = _embedding_table(model, model.variables)
  after = _embedding_table(model, training.combine(state.trainable, frozen))
  change = np.abs(after - before).max(axis=1)
  print(f"after 4 steps: marker rows moved by max {change[ROWS]:.3e}, {change[ROWS + 2]:.3e}; "
        f"largest change of any other row {np.delete(change, [ROWS, ROWS + 2]).max():.1e}")
  assert change[ROWS] > 1e-4 and change[ROWS + 2] > 1e-4
  assert not np.delete(change, [ROWS, ROWS + 2]).any()


def test_switch_off_trains_no_rows_but_still_grows(folders, tmp_path):
  c, _, model = _build(folders, tmp_path, **{"model.train_new_tokens": False})
  assert model.module.config.llm.vocab_size == GROWN and model.module.config.new_token_ids == ()
  assert "new_tokens" not in model.variables["params"]["llm"]
  assert experiment.trainable_patterns(c) == tuple(c.trainable)


def test_chunked_loss_reads_the_rows_in_a_tied_head(tokenizer):
  """The chunked cross-entropy takes the LM head from `lalm.lm_head`: tied, it must see
  the trained rows as `Qwen2.logits` does (the rows enter every softmax normaliser)."""
  from lalmjax.models import lalm, qwen2
  from test_lalm import ENCODER
  builder = prompts.PromptBuilder(tokenizer)
  llm = qwen2.Qwen2Config(vocab_size=GROWN, hidden_size=64, intermediate_size=128,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                          head_dim=16, tie_word_embeddings=True)
  config = lalm.LALMConfig(ENCODER, llm, builder.audio_token_id, lora=None,
                           new_token_ids=prompts.new_token_ids(tokenizer, ROWS))
  module = lalm.LALM(config)
  variables = jax.jit(lambda k: lalm.init_variables(module, k))(jax.random.PRNGKey(0))
  rows = variables["params"]["llm"]["new_tokens"]["embedding"]
  variables["params"]["llm"]["new_tokens"]["embedding"] = 3.0 + rows  # "trained" rows
  batch = make_batch(config, builder, np.array([8000, 12000, 16000, 5000]), texts=TEXTS)
  loss = jax.jit(lambda v, chunk: lalm.lalm_loss(module, v, batch, vocab_chunk=chunk)[0],
                 static_argnums=1)
  full, chunked = float(loss(variables, 0)), float(loss(variables, 8))
  untrained = float(loss({"params": {**variables["params"], "llm": {
      **variables["params"]["llm"], "new_tokens": {"embedding": rows}}}}, 0))
  print(f"\ntied head with trained rows: full loss {full:.6f}, chunked {chunked:.6f} "
        f"(untrained rows: {untrained:.6f})")
  np.testing.assert_allclose(chunked, full, rtol=1e-5)
  assert abs(full - untrained) > 1e-3


def peft_logits(llm_path, adapter, vocab_size, ids):
  """float32 logits of peft's model: the transformers checkpoint resized to
  `vocab_size` with the adapter loaded. transformers' default resizing draws the new
  rows from N(mean, 1e-9 * covariance) of the old ones, a hair from our exact mean: the
  new columns of an untied head differ by ~1e-5 (seeded, so the test is repeatable)."""
  ref = transformers.Qwen2ForCausalLM.from_pretrained(llm_path).eval()
  torch.manual_seed(0)
  ref.resize_token_embeddings(vocab_size)
  model = peft.PeftModel.from_pretrained(ref, adapter).eval()
  with torch.no_grad():
    return model(input_ids=torch.tensor(ids, dtype=torch.long)).logits.numpy()


@pytest.mark.parametrize("head,use_lora", [("untied", True), ("tied", True),
                                           ("untied", False)],
                         ids=["untied_lora", "tied_lora", "untied_tokens_only"])
def test_exported_adapter_on_the_resized_reference_gives_our_logits(folders, tokenizer,
                                                                    tmp_path, head, use_lora):
  path, ids = folders[head], prompts.new_token_ids(tokenizer, ROWS)
  config = LoraConfig(rank=4, alpha=8.0) if use_lora else None
  module, params = checkpoints.load_qwen2(path, lora_config=config, vocab_size=GROWN,
                                          new_token_ids=ids)
  variables = {"params": params}
  if use_lora:  # adapters with B != 0, as after training
    lora = nn.unbox(lora_lib.init_lora(module, jax.random.PRNGKey(0),
                                       jnp.zeros((1, 1), jnp.int32)))
    variables["lora"] = jax.tree_util.tree_map_with_path(
        lambda p, x: (0.1 * jax.random.normal(jax.random.PRNGKey(1), x.shape)
                      if "lora_B" in jax.tree_util.keystr(p) else x), lora)
  rows = params["new_tokens"]["embedding"]
  params["new_tokens"]["embedding"] = rows + 0.5 * jax.random.normal(jax.random.PRNGKey(2),
                                                                      rows.shape)
  names = lora_lib.export_peft(variables.get("lora"), config, str(tmp_path), path,
                               new_token_ids=ids, new_token_rows=params["new_tokens"]["embedding"])
  delta = ("base_model.model.model.embed_tokens." + ("token_adapter." if use_lora else "")
           + "trainable_tokens_delta")
  assert delta in names

  x = text_ids(tokenizer)
  ref = peft_logits(path, str(tmp_path), GROWN, x)
  ours = np.asarray(module.apply(variables, x))
  tol = REL_TOL * max(1.0, float(np.abs(ref).max()))
  err = float(np.abs(ours - ref).max())
  err_old = float(np.abs(ours[..., :ROWS] - ref[..., :ROWS]).max())
  print(f"\n{head}{' + LoRA' if use_lora else ''}: peft on the resized reference vs ours: "
        f"max abs diff {err:.2e} over all {GROWN} logits, {err_old:.2e} over the old "
        f"{ROWS} (allowed {tol:.2e})")
  assert err <= tol
  # The trained rows changed the model: without them the logits differ.
  plain = np.asarray(module.clone(new_token_ids=()).apply(
      {**variables, "params": {k: v for k, v in params.items() if k != "new_tokens"}}, x))
  assert np.abs(plain - ref).max() > 100 * tol


# ----------------------------------------------------------------------------- a run


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("grow_corpus")
  rng = np.random.default_rng(0)
  utts = []
  for i in range(8):
    n = int(rng.uniform(0.5, 1.9) * audio.SAMPLE_RATE)
    t = np.arange(n) / audio.SAMPLE_RATE
    path = str(tmp / f"g{i}.flac")
    sf.write(path, (0.3 * np.sin(2 * np.pi * (150 + 40 * i) * t)).astype(np.float32),
             audio.SAMPLE_RATE)
    utts.append(manifest.Utterance(id=f"g{i}", audio=path, duration=n / audio.SAMPLE_RATE,
                                   task="asr", text=TEXTS[i % 4], source_lang="en",
                                   target_lang="en"))
  path = str(tmp / "train.jsonl")
  manifest.write_manifest(path, utts)
  return path


def test_a_run_trains_exports_and_restores_the_grown_model(folders, corpus, tmp_path):
  """train() on the full-embedding checkpoint: the checkpoint and eval's restore give the
  trained rows back on the grown model, and the export is what peft loads."""
  workdir = str(tmp_path / "run")
  overrides = {"data.train_manifests": (corpus,), "data.test_manifests": (),
               "data.buckets": ((2.0, 8, 128),), "total_steps": 2, "checkpoint_every": 2,
               "log_every": 1, "optim.warmup_steps": 1}
  c, mesh, initial = _build(folders, workdir, **overrides)
  trainer.train(c, workdir)

  with open(os.path.join(workdir, "export", "lora", "vocab.json")) as f:
    vocab = json.load(f)
  assert vocab["vocab_size"] == GROWN and vocab["checkpoint_vocab_size"] == ROWS
  assert vocab["new_tokens"] == {prompts.AUDIO_BOS: ROWS, prompts.AUDIO_EOS: ROWS + 2}
  adapter_config = json.load(open(os.path.join(workdir, "export", "lora",
                                               "adapter_config.json")))
  assert adapter_config["trainable_token_indices"] == [ROWS, ROWS + 2]

  _, _, model = _build(folders, workdir, **overrides)  # as eval.py / transcribe build it
  variables, step, _ = evaluation.restore_trained(c, workdir, model, mesh)
  assert step == 2 and model.module.config.llm.vocab_size == GROWN
  trained = np.asarray(variables["params"]["llm"]["new_tokens"]["embedding"])
  start = np.asarray(initial.variables["params"]["llm"]["new_tokens"]["embedding"])
  print(f"\nrun: marker rows moved by max {np.abs(trained - start).max():.3e} in 2 steps")
  assert np.abs(trained - start).max() > 0

  x = text_ids(model.builder.tokenizer)
  ours = np.asarray(model.module.apply(variables, x, method=lambda m, i: m.llm(i)))
  ref = peft_logits(folders["untied"], os.path.join(workdir, "export", "lora"), GROWN, x)
  err, tol = float(np.abs(ours - ref).max()), REL_TOL * max(1.0, float(np.abs(ref).max()))
  print(f"run export: peft on the resized reference vs the restored model: max abs diff "
        f"{err:.2e} (allowed {tol:.2e})")
  assert err <= tol
