"""The assembled LALM: audio splice, token counts, trainable/frozen split, overfitting."""

import zlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lalmjax import audio, compression, prompts, training
from lalmjax.models import lalm, qwen2, whisper
from lalmjax.models.lora import LoraConfig

TEXTS = ["the quick brown fox", "jumps over the lazy dog", "hello world again",
         "speech to text is fun"]
ENCODER = whisper.WhisperEncoderConfig(num_mel_bins=80, d_model=32, encoder_layers=2,
                                       encoder_attention_heads=2, encoder_ffn_dim=64,
                                       max_source_positions=100)  # a 2 s window


@pytest.fixture(scope="module")
def builder(tmp_path_factory):
  path = prompts.build_tiny_tokenizer(str(tmp_path_factory.mktemp("tok")), TEXTS, 300)
  return prompts.PromptBuilder(prompts.load_tokenizer(path))


def make_config(builder, method="uniavg", factor=2, lora=LoraConfig(rank=8, alpha=16.0),
                projector="linear"):
  llm = qwen2.Qwen2Config(vocab_size=builder.vocab_size, hidden_size=64,
                          intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, head_dim=16)
  return lalm.LALMConfig(ENCODER, llm, audio_token_id=builder.audio_token_id, lora=lora,
                         method=method, factor=factor, projector=projector)


def make_batch(config, builder, samples, seed=0, texts=TEXTS, side="right"):
  """Noise utterances of `samples` lengths (<= 2 s) with `texts` as targets."""
  rng = np.random.default_rng(seed)
  n = int(max(samples))
  wav = rng.standard_normal((len(samples), n)).astype(np.float32) * 0.1
  wav *= np.arange(n)[None] < np.asarray(samples)[:, None]
  mel = np.asarray(audio.log_mel_spectrogram(wav, 80))[:, :, :ENCODER.num_mel_frames]
  counts = lalm.num_audio_tokens(config, samples)
  ps = [builder.encode("asr", int(c), t) for c, t in zip(counts, texts)]
  batch = prompts.pad_prompts(ps, builder.pad_id, bucket=16, side=side)
  batch.update(mel=mel, num_frames=lalm.num_encoder_frames(samples, 100))
  return batch


def frozen_lm_scaled(variables, seed=1):
  """Re-draws the frozen LLM weights at unit scale (std 1 embeddings, 1/sqrt(fan_in)
  kernels). At the 0.02 init of a fresh model the logits span too little for any
  adapter to fit targets; a pretrained LM is not like that, and neither is this."""
  def redraw(path, x):
    name = jax.tree_util.keystr(path)
    if not (name.startswith("['params']['llm']") and x.ndim == 2):
      return x
    key = jax.random.fold_in(jax.random.PRNGKey(seed), zlib.crc32(name.encode()) % (2 ** 31))
    return jax.random.normal(key, x.shape) * (1.0 if "embed_tokens" in name else x.shape[0] ** -0.5)
  return jax.tree_util.tree_map_with_path(redraw, variables)


@pytest.mark.parametrize("method", ["uniavg", "unisamp", "unseg", "stack"])
@pytest.mark.parametrize("factor", [1, 2, 3, 4, 6])
def test_spliced_prompt_holds_ceil_valid_over_k_audio_tokens(builder, method, factor):
  config = make_config(builder, method, factor)
  module = lalm.LALM(config)
  variables = lalm.init_variables(module, jax.random.PRNGKey(0))
  samples = np.array([800, 7000, 16000, 32000])  # 0.05 s .. the full 2 s window
  batch = make_batch(config, builder, samples)
  valid = lalm.num_encoder_frames(samples, 100)
  np.testing.assert_array_equal(valid, [3, 22, 50, 100])
  tokens, token_mask = module.apply(variables, batch["mel"], batch["num_frames"],
                                    method=lalm.LALM.encode_audio)
  expected = -(-valid // factor)
  np.testing.assert_array_equal(np.asarray(token_mask).sum(1), expected)
  np.testing.assert_array_equal((batch["input_ids"] == builder.audio_token_id).sum(1), expected)
  embeds = module.apply(variables, jnp.asarray(batch["input_ids"]), tokens,
                        method=lalm.LALM.embed_inputs)
  for b in range(len(samples)):
    where = np.flatnonzero(batch["input_ids"][b] == builder.audio_token_id)
    # The i-th placeholder holds the i-th audio token, in order.
    np.testing.assert_allclose(np.asarray(embeds)[b, where], np.asarray(tokens)[b, :len(where)],
                               atol=1e-6)
  _, metrics = lalm.lalm_loss(module, variables, batch)
  assert int(metrics["placeholder_mismatch"]) == 0


def test_tokens_per_second_table():
  rows = []
  for method in ("uniavg", "unisamp", "unseg", "stack"):
    for k in (1, 2, 3, 4, 6):
      rows.append((method, k, compression.tokens_per_second(method, k)))
      assert rows[-1][2] == pytest.approx(50.0 / k)
  print("\n".join(f"{m:8s} k={k}: {r:6.2f} LLM audio tokens/s" for m, k, r in rows))


def test_placeholder_mismatch_is_counted(builder):
  config = make_config(builder)
  module = lalm.LALM(config)
  variables = lalm.init_variables(module, jax.random.PRNGKey(0))
  batch = make_batch(config, builder, np.array([8000, 16000, 16000, 32000]))
  batch["num_frames"] = batch["num_frames"] + np.array([0, 4, 0, 0], np.int32)
  _, metrics = lalm.lalm_loss(module, variables, batch)
  assert int(metrics["placeholder_mismatch"]) == 1


def _grad_fn(module, frozen):
  def loss(trainable, batch):
    return lalm.lalm_loss(module, training.combine(trainable, frozen), batch)[0]
  return jax.grad(loss)


def test_gradients_reach_only_projector_and_lora(builder):
  config = make_config(builder)
  module = lalm.LALM(config)
  variables = lalm.init_variables(module, jax.random.PRNGKey(0))
  trainable, frozen = training.partition(variables)
  assert set(trainable) == {"params", "lora"} and set(trainable["params"]) == {"projector"}
  assert set(frozen["params"]) == {"encoder", "llm"} and "lora" not in frozen
  batch = make_batch(config, builder, np.array([8000, 12000, 16000, 5000]))
  grads = jax.jit(_grad_fn(module, frozen))(trainable, batch)
  assert jax.tree.structure(grads) == jax.tree.structure(trainable)
  g = grads["lora"]["llm"]["layers_0"]["self_attn"]
  assert float(jnp.abs(g["q_proj"]["lora_B"]).max()) > 0  # B gets gradient at init
  assert float(jnp.abs(grads["params"]["projector"]["linear"]["kernel"]).max()) > 0
  # The frozen encoder's backward pass is not even in the program: its convolutions
  # appear only in the forward (2 convs), never transposed for a gradient.
  jaxpr = str(jax.make_jaxpr(_grad_fn(module, frozen))(trainable, batch))
  assert jaxpr.count("conv_general_dilated") == 2


def test_unfrozen_encoder_gets_gradients(builder):
  config = make_config(builder)
  module = lalm.LALM(config)
  variables = lalm.init_variables(module, jax.random.PRNGKey(0))
  trainable, frozen = training.partition(variables, training.trainable_patterns(True))
  assert set(trainable["params"]) == {"projector", "encoder"}
  batch = make_batch(config, builder, np.array([8000, 12000, 16000, 5000]))
  grads = jax.jit(_grad_fn(module, frozen))(trainable, batch)
  assert float(jnp.abs(grads["params"]["encoder"]["conv1"]["kernel"]).max()) > 0
  with pytest.raises(ValueError, match="match no variable"):
    training.partition(variables, ("params/projectr/.*",))


def test_forward_compiles_once_for_any_valid_lengths(builder):
  config = make_config(builder, "unseg", 3)
  module = lalm.LALM(config)
  variables = lalm.init_variables(module, jax.random.PRNGKey(0))
  traces = []

  @jax.jit
  def loss(variables, batch):
    traces.append(1)
    return lalm.lalm_loss(module, variables, batch)[0]

  for samples in ([8000, 12000, 16000, 5000], [32000, 100, 2000, 20000], [1, 1, 1, 32000]):
    batch = make_batch(config, builder, np.array(samples))
    batch.update(prompts.pad_prompts(
        [builder.encode("asr", int(c), t) for c, t in
         zip(lalm.num_audio_tokens(config, np.array(samples)), TEXTS)],
        builder.pad_id, length=128))
    assert np.isfinite(float(loss(variables, batch)))
  assert len(traces) == 1


def test_config_validation(builder):
  with pytest.raises(ValueError, match="LALMConfig.method='avg'"):
    make_config(builder, method="avg")
  with pytest.raises(ValueError, match="LALMConfig.factor=0"):
    make_config(builder, factor=0)
  with pytest.raises(ValueError, match="LALMConfig.projector='conv'"):
    make_config(builder, projector="conv")
  cfg = make_config(builder)
  with pytest.raises(ValueError, match="audio_token_id=9999 is outside"):
    lalm.LALMConfig(cfg.encoder, cfg.llm, audio_token_id=9999)
  # Method options are checked when the config is built, not when the model is traced.
  with pytest.raises(ValueError, match=r"method_options.*unseg: smooth must be an odd int"):
    lalm.LALMConfig(cfg.encoder, cfg.llm, cfg.audio_token_id, method="unseg",
                    method_options={"smooth": 2})
  with pytest.raises(ValueError, match=r"'unseg' got unknown option\(s\) \['smoth'\]"):
    lalm.LALMConfig(cfg.encoder, cfg.llm, cfg.audio_token_id, method="unseg",
                    method_options=(("smoth", 3),))
  with pytest.raises(ValueError, match=r"'uniavg' got unknown option\(s\) \['smooth'\]"):
    lalm.LALMConfig(cfg.encoder, cfg.llm, cfg.audio_token_id, method_options={"smooth": 3})
  ok = lalm.LALMConfig(cfg.encoder, cfg.llm, cfg.audio_token_id, method="unseg",
                       method_options={"smooth": 3})
  assert ok.method_options == (("smooth", 3),) and hash(ok)


def _fit(loss_fn, variables, steps, lr=1e-2, trainable=training.DEFAULT_TRAINABLE):
  """Adam (cosine-decayed) on the `trainable` tree; loss_fn(variables) -> loss.
  Returns the loss of every step."""
  trainable, frozen = training.partition(variables, trainable)
  opt = optax.adam(optax.cosine_decay_schedule(lr, steps, alpha=0.05))

  @jax.jit
  def step(trainable, opt_state):
    loss, grads = jax.value_and_grad(
        lambda t: loss_fn(training.combine(t, frozen)))(trainable)
    updates, opt_state = opt.update(grads, opt_state, trainable)
    return optax.apply_updates(trainable, updates), opt_state, loss

  opt_state = opt.init(trainable)
  losses = []
  for _ in range(steps):
    trainable, opt_state, loss = step(trainable, opt_state)
    losses.append(float(loss))
  return losses


def _overfit(builder, lora, steps, lr=1e-2, projector="linear"):
  config = make_config(builder, "uniavg", 2, lora=lora, projector=projector)
  module = lalm.LALM(config)
  variables = frozen_lm_scaled(lalm.init_variables(module, jax.random.PRNGKey(0)))
  batch = make_batch(config, builder, np.array([8000, 12000, 16000, 5000]))
  return _fit(lambda v: lalm.lalm_loss(module, v, batch)[0], variables, steps, lr)


def test_tiny_lalm_overfits_four_utterances(builder):
  """Projector + LoRA (on q, k, v, o) memorise 4 transcripts from their audio alone: the
  prompts are identical up to the audio, so only the audio tells them apart."""
  losses = _overfit(builder, LoraConfig(rank=8, alpha=16.0,
                                        targets=("q_proj", "k_proj", "v_proj", "o_proj")), 300)
  print(f"overfit (LoRA q,k,v,o): first loss {losses[0]:.3f}, step 100 {losses[99]:.3f}, "
        f"last {losses[-1]:.3f}")
  assert losses[-1] < 0.1 * losses[0]


def test_paper_lora_targets_learn(builder):
  """The paper's adapters (q, k only) on a random frozen LM: the loss must still fall."""
  losses = _overfit(builder, LoraConfig(rank=8, alpha=16.0), 300)
  print(f"overfit (LoRA q,k): first loss {losses[0]:.3f}, last {losses[-1]:.3f}")
  assert losses[-1] < 0.6 * losses[0]


def test_load_lalm_from_pretrained_folders(builder, tmp_path):
  """Encoder and LLM come from their checkpoints unchanged; only projector and LoRA are new
  (LoRA B = 0, so text-only logits equal the bare LLM's)."""
  import torch
  import transformers
  from lalmjax import checkpoints
  from test_whisper import save_tiny_whisper
  save_tiny_whisper(tmp_path / "whisper", d=32, heads=2, positions=100)
  torch.manual_seed(0)
  transformers.Qwen2ForCausalLM(transformers.Qwen2Config(
      vocab_size=builder.vocab_size, hidden_size=64, intermediate_size=128,
      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)).save_pretrained(
          str(tmp_path / "qwen2"))
  module, variables = checkpoints.load_lalm(
      str(tmp_path / "whisper"), str(tmp_path / "qwen2"), builder.audio_token_id,
      lora=LoraConfig(), method="unseg", factor=3, projector="mlp")
  enc, enc_params = checkpoints.load_whisper_encoder(str(tmp_path / "whisper"))
  llm, llm_params = checkpoints.load_qwen2(str(tmp_path / "qwen2"))
  assert module.config.factor == 3 and module.config.lora.rank == 16
  for a, b in zip(jax.tree.leaves(variables["params"]["encoder"]), jax.tree.leaves(enc_params)):
    np.testing.assert_array_equal(a, b)
  assert all(float(jnp.abs(x).max()) == 0 for path, x in
             jax.tree_util.tree_flatten_with_path(variables["lora"])[0]
             if "lora_B" in jax.tree_util.keystr(path))
  ids = jnp.asarray(builder.encode("asr", 0, "hello world").input_ids[None])
  ours = module.apply(variables, ids, method=lambda m, i: m.llm(i))
  np.testing.assert_allclose(ours, llm.apply({"params": llm_params}, ids), atol=1e-5)
  with pytest.raises(checkpoints.CheckpointError, match="audio_token_id=5000 is outside"):
    checkpoints.load_lalm(str(tmp_path / "whisper"), str(tmp_path / "qwen2"), 5000)


# ---------------------------------------------------------------------------------------
# The loss against independent references.


def hf_causal_lm_loss(logits, input_ids, loss_mask, reduction_sum=False):
  """transformers' own causal-LM loss (it shifts the labels itself): float."""
  import torch
  from transformers.loss.loss_utils import ForCausalLMLoss
  labels = np.where(loss_mask, input_ids, -100)
  return float(ForCausalLMLoss(torch.tensor(np.asarray(logits, np.float32)),
                               torch.tensor(labels, dtype=torch.long), logits.shape[-1],
                               num_items_in_batch=1 if reduction_sum else None))


def test_next_token_loss_matches_reference_cross_entropy():
  """Random logits, right and left padding, a loss mask that skips some target tokens:
  the summed loss and the count equal transformers' ForCausalLMLoss and optax's."""
  rng = np.random.default_rng(0)
  b, s, v = 3, 12, 50
  logits = (3.0 * rng.standard_normal((b, s, v))).astype(np.float32)
  ids = rng.integers(0, v, (b, s)).astype(np.int32)
  attention = np.ones((b, s), bool)
  attention[1, 9:] = False  # right padding
  attention[2, :4] = False  # left padding
  loss_mask = attention & (np.arange(s)[None] >= np.array([[5], [3], [7]]))
  loss_mask[0, 8] = False  # a hole inside the target
  loss_sum, count = lalm.next_token_loss(jnp.asarray(logits), jnp.asarray(ids),
                                         jnp.asarray(loss_mask))
  assert float(count) == loss_mask[:, 1:].sum() == 17
  np.testing.assert_allclose(float(loss_sum), hf_causal_lm_loss(logits, ids, loss_mask, True),
                             rtol=1e-5)
  np.testing.assert_allclose(float(loss_sum / count), hf_causal_lm_loss(logits, ids, loss_mask),
                             rtol=1e-5)
  per_token = optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], ids[:, 1:])
  np.testing.assert_allclose(float(loss_sum), float(np.sum(per_token * loss_mask[:, 1:])),
                             rtol=1e-5)


@pytest.fixture(scope="module")
def pretrained(builder, tmp_path_factory):
  """(whisper folder, qwen2 folder, torch Qwen2ForCausalLM) of tiny random models; the
  LM's weights ~ N(0, 0.1) so its logits are far from uniform."""
  import torch
  import transformers
  from test_whisper import save_tiny_whisper
  root = tmp_path_factory.mktemp("pretrained")
  save_tiny_whisper(root / "whisper", d=32, heads=2, positions=100)
  torch.manual_seed(0)
  model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(
      vocab_size=builder.vocab_size, hidden_size=64, intermediate_size=128,
      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
      tie_word_embeddings=False)).eval()
  g = torch.Generator().manual_seed(0)
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=g) * 0.1
      p.copy_(1.0 + noise if "norm" in name else noise)
  model.save_pretrained(str(root / "qwen2"))
  return str(root / "whisper"), str(root / "qwen2"), model


def test_lalm_loss_matches_the_pytorch_model(builder, pretrained):
  """lalm_loss on a left-padded batch with a partial loss mask equals the loss of
  transformers' Qwen2ForCausalLM given the same spliced embeddings, ids and mask."""
  import torch
  from lalmjax import checkpoints
  whisper_dir, qwen2_dir, torch_model = pretrained
  module, variables = checkpoints.load_lalm(whisper_dir, qwen2_dir, builder.audio_token_id,
                                            method="uniavg", factor=2)
  batch = make_batch(module.config, builder, np.array([8000, 16000, 5000]), side="left")
  batch["loss_mask"][0, -1] = False  # EOS not counted in row 0
  first = np.argmax(batch["loss_mask"][1])
  batch["loss_mask"][1, first:first + 2] = False  # nor the first target tokens of row 1
  loss, metrics = jax.jit(lambda v, b: lalm.lalm_loss(module, v, b))(variables, batch)

  def spliced(m, mel, num_frames, ids):
    return m.embed_inputs(ids, m.encode_audio(mel, num_frames)[0])

  embeds = module.apply(variables, batch["mel"], batch["num_frames"], batch["input_ids"],
                        method=spliced)
  attention = batch["attention_mask"].astype(np.int64)
  labels = np.where(batch["loss_mask"], batch["input_ids"], -100)
  with torch.no_grad():
    ref = torch_model(inputs_embeds=torch.tensor(np.asarray(embeds)),
                      attention_mask=torch.tensor(attention),
                      position_ids=torch.tensor(np.maximum(np.cumsum(attention, 1) - 1, 0)),
                      labels=torch.tensor(labels, dtype=torch.long)).loss
  print(f"\nlalm_loss {float(loss):.6f}, transformers {float(ref):.6f}")
  np.testing.assert_allclose(float(loss), float(ref), rtol=1e-4)
  assert float(metrics["num_tokens"]) == (labels[:, 1:] != -100).sum()


# ---------------------------------------------------------------------------------------
# What the audio carries.

# The same prompt and the same first target tokens in every row; the last word (one
# token that differs, then tokens it determines) is only in the audio.
SAME_PREFIX = ["the quick brown fox", "the quick brown dog", "the quick brown text",
               "the quick brown again"]


def text_only_floor(batch):
  """The least mean loss of a model that cannot tell the rows apart: at every target
  position, the entropy of the next token among the rows with the same ids so far."""
  ids, mask = batch["input_ids"], batch["loss_mask"]
  total = 0.0
  for s in range(1, ids.shape[1]):
    groups = {}
    for b in np.flatnonzero(mask[:, s]):
      groups.setdefault(tuple(ids[b, :s]), []).append(ids[b, s])
    for tokens in groups.values():
      _, counts = np.unique(tokens, return_counts=True)
      total -= float(np.sum(counts * np.log(counts / len(tokens))))
  return total / mask[:, 1:].sum()


def zeroed_audio_loss(module, variables, batch):
  """The control: lalm_loss with every audio token multiplied by 0 before the splice."""
  def logits(m, mel, num_frames, ids, attention_mask):
    tokens, _ = m.encode_audio(mel, num_frames)
    return m.llm(attention_mask=attention_mask, inputs_embeds=m.embed_inputs(ids, 0 * tokens))

  out = module.apply(variables, batch["mel"], batch["num_frames"], batch["input_ids"],
                     batch["attention_mask"], method=logits)
  loss_sum, count = lalm.next_token_loss(out, batch["input_ids"], batch["loss_mask"])
  return loss_sum / count


def test_learns_what_only_the_audio_tells_apart(builder):
  """Four utterances, one prompt, targets that differ only after "the quick brown": the
  model must read the audio to get below the text-only floor, and with the audio tokens
  zeroed the same training cannot."""
  config = make_config(builder, "uniavg", 2, lora=LoraConfig(
      rank=8, alpha=16.0, targets=("q_proj", "k_proj", "v_proj", "o_proj")))
  module = lalm.LALM(config)
  variables = frozen_lm_scaled(lalm.init_variables(module, jax.random.PRNGKey(0)))
  batch = make_batch(config, builder, np.full(4, 16000), texts=SAME_PREFIX)
  prefix = builder.encode("asr", 25, "the quick brown").input_ids[:-1]  # drop its EOS
  assert all((row[:len(prefix)] == prefix).all() for row in batch["input_ids"])
  floor = text_only_floor(batch)
  # One position where the four rows differ, each with its own token: 4 ln 4 in all.
  np.testing.assert_allclose(floor, 4 * np.log(4) / batch["loss_mask"][:, 1:].sum())
  # The LM's embeddings and head train too, so the text is learnt quickly in both runs
  # and what is left is what only the audio can give.
  trainable = training.DEFAULT_TRAINABLE + ("params/llm/embed_tokens/.*",
                                            "params/llm/lm_head/.*")
  heard = _fit(lambda v: lalm.lalm_loss(module, v, batch)[0], variables, 300, 1e-2, trainable)
  deaf = _fit(lambda v: zeroed_audio_loss(module, v, batch), variables, 300, 1e-2, trainable)
  print(f"\ntext-only floor {floor:.4f}; final loss with audio {heard[-1]:.4f}, "
        f"audio tokens zeroed {deaf[-1]:.4f}")
  assert deaf[-1] > 0.9 * floor
  assert heard[-1] < 0.2 * floor
  assert deaf[-1] - heard[-1] > 0.7 * floor


def test_method_options_reach_the_compression(builder):
  """unseg with smooth=3 set in LALMConfig.method_options: the audio tokens are the
  projected compress(frames, "unseg", 3, smooth=3), which differs from smooth=1 here."""
  base = make_config(builder)
  config = lalm.LALMConfig(base.encoder, base.llm, base.audio_token_id, lora=base.lora,
                           method="unseg", factor=3, method_options={"smooth": 3})
  module = lalm.LALM(config)
  variables = lalm.init_variables(module, jax.random.PRNGKey(0))
  batch = make_batch(config, builder, np.array([8000, 12000, 16000, 32000]))
  mask = np.arange(ENCODER.max_source_positions)[None] < batch["num_frames"][:, None]

  @jax.jit
  def run(variables, mel, num_frames):
    tokens, token_mask = module.apply(variables, mel, num_frames,
                                      method=lalm.LALM.encode_audio)
    frames = module.apply(variables, mel, method=lambda m, x: m.encoder(x))
    want, want_mask = compression.compress(frames, mask, "unseg", 3, smooth=3)
    want = module.apply(variables, want, method=lambda m, x: m.projector(x))
    ids3, _ = compression.assign_segments(frames, mask, "unseg", 3, smooth=3)
    ids1, _ = compression.assign_segments(frames, mask, "unseg", 3)
    return tokens, token_mask, jnp.where(want_mask[..., None], want, 0), want_mask, ids3, ids1

  tokens, token_mask, want, want_mask, ids3, ids1 = run(variables, batch["mel"],
                                                        batch["num_frames"])
  np.testing.assert_array_equal(token_mask, want_mask)
  np.testing.assert_allclose(tokens, want, atol=1e-5)
  assert (np.asarray(ids3) != np.asarray(ids1)).any()  # the option changes the segments


def test_lalm_loss_with_dropout_rngs_gives_gradients(builder):
  """lalm_loss(..., rngs={"dropout": key}) trains with LoRA dropout: finite gradients on
  the trainable tree, the same for the same key, different for another key or none."""
  config = make_config(builder, lora=LoraConfig(rank=8, alpha=16.0, dropout=0.3))
  module = lalm.LALM(config)
  variables = lalm.init_variables(module, jax.random.PRNGKey(0))
  # B != 0, so the adapters (and their dropout) act on the output.
  variables["lora"] = jax.tree_util.tree_map_with_path(
      lambda p, x: 0.1 * jnp.ones_like(x) if "lora_B" in jax.tree_util.keystr(p) else x,
      variables["lora"])
  trainable, frozen = training.partition(variables)
  batch = make_batch(config, builder, np.array([8000, 12000, 16000, 5000]))

  @jax.jit
  def grads(trainable, key):
    rngs = None if key is None else {"dropout": key}
    return jax.grad(lambda t: lalm.lalm_loss(module, training.combine(t, frozen), batch,
                                             rngs=rngs)[0])(trainable)

  g1, g1_again, g2 = (grads(trainable, jax.random.PRNGKey(k)) for k in (1, 1, 2))
  g_off = jax.jit(lambda t: grads(t, None))(trainable)
  leaves = lambda g: [np.asarray(x) for x in jax.tree.leaves(g)]
  assert jax.tree.structure(g1) == jax.tree.structure(trainable)
  assert all(np.isfinite(x).all() for x in leaves(g1))
  assert float(jnp.abs(g1["lora"]["llm"]["layers_0"]["self_attn"]["q_proj"]["lora_A"]).max()) > 0
  assert float(jnp.abs(g1["params"]["projector"]["linear"]["kernel"]).max()) > 0
  for a, b in zip(leaves(g1), leaves(g1_again)):
    np.testing.assert_array_equal(a, b)
  assert any(not np.allclose(a, b) for a, b in zip(leaves(g1), leaves(g2)))
  assert any(not np.allclose(a, b) for a, b in zip(leaves(g1), leaves(g_off)))
