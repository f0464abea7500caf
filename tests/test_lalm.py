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


def make_batch(config, builder, samples, seed=0):
  """Noise utterances of `samples` lengths (<= 2 s) with TEXTS as targets."""
  rng = np.random.default_rng(seed)
  n = int(max(samples))
  wav = rng.standard_normal((len(samples), n)).astype(np.float32) * 0.1
  wav *= np.arange(n)[None] < np.asarray(samples)[:, None]
  mel = np.asarray(audio.log_mel_spectrogram(wav, 80))[:, :, :ENCODER.num_mel_frames]
  counts = lalm.num_audio_tokens(config, samples)
  ps = [builder.encode("asr", int(c), t) for c, t in zip(counts, TEXTS)]
  batch = prompts.pad_prompts(ps, builder.pad_id, bucket=16)
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


def _overfit(builder, lora, steps, lr=1e-2, projector="linear"):
  config = make_config(builder, "uniavg", 2, lora=lora, projector=projector)
  module = lalm.LALM(config)
  variables = frozen_lm_scaled(lalm.init_variables(module, jax.random.PRNGKey(0)))
  trainable, frozen = training.partition(variables)
  batch = make_batch(config, builder, np.array([8000, 12000, 16000, 5000]))
  opt = optax.adam(optax.cosine_decay_schedule(lr, steps, alpha=0.05))

  @jax.jit
  def step(trainable, opt_state):
    loss, grads = jax.value_and_grad(
        lambda t: lalm.lalm_loss(module, training.combine(t, frozen), batch)[0])(trainable)
    updates, opt_state = opt.update(grads, opt_state, trainable)
    return optax.apply_updates(trainable, updates), opt_state, loss

  opt_state = opt.init(trainable)
  losses = []
  for _ in range(steps):
    trainable, opt_state, loss = step(trainable, opt_state)
    losses.append(float(loss))
  return losses


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
