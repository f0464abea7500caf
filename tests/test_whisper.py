"""Whisper encoder parity with transformers.WhisperEncoder (PyTorch, float32)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import traverse_util
from transformers.modeling_outputs import BaseModelOutput

from lalmjax import audio, checkpoints
from lalmjax.models import whisper
from conftest import SPEECH, speech_path

# Whole-model parity bound: max abs error / max(1, max |reference|) (STYLE.md: 1e-4).
REL_TOL = 1e-4


def save_tiny_whisper(path, n_mels=80, d=64, layers=2, heads=4, ffn=128, positions=1500,
                      seed=0):
  """A random WhisperForConditionalGeneration saved with save_pretrained; returns torch model."""
  torch.manual_seed(seed)
  cfg = transformers.WhisperConfig(
      vocab_size=100, num_mel_bins=n_mels, d_model=d, encoder_layers=layers,
      encoder_attention_heads=heads, encoder_ffn_dim=ffn, decoder_layers=1,
      decoder_attention_heads=heads, decoder_ffn_dim=ffn, max_source_positions=positions,
      max_target_positions=32, pad_token_id=0, bos_token_id=1, eos_token_id=2,
      decoder_start_token_id=1)
  model = transformers.WhisperForConditionalGeneration(cfg).eval()
  # Random (not zero) biases and norms, so a mis-mapped tensor cannot hide.
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("bias") or "layer_norm" in name:
        p.add_(0.1 * torch.randn_like(p))
  model.save_pretrained(str(path))
  return model


def rel_err(ours, ref):
  return float(np.abs(np.asarray(ours, np.float32) - ref).max() / max(1.0, np.abs(ref).max()))


def reference_encoder(model, mel):
  with torch.no_grad():
    return model.model.encoder(torch.from_numpy(np.array(mel))).last_hidden_state.numpy()


@pytest.mark.parametrize("n_mels,layers,heads,d,positions", [
    (80, 2, 4, 64, 1500),
    (128, 3, 2, 32, 1500),
    (80, 1, 8, 64, 200),
    (128, 4, 1, 48, 100),
])
def test_tiny_random_encoder_parity(tmp_path, n_mels, layers, heads, d, positions):
  model = save_tiny_whisper(tmp_path, n_mels, d, layers, heads, 2 * d, positions)
  module, params = checkpoints.load_whisper_encoder(str(tmp_path))
  mel = np.random.default_rng(0).standard_normal((2, n_mels, 2 * positions)).astype(np.float32)
  ours = jax.jit(module.apply)({"params": params}, mel)
  ref = reference_encoder(model, mel)
  assert ours.shape == ref.shape == (2, positions, d)
  err = rel_err(ours, ref)
  print(f"tiny encoder mels={n_mels} L={layers} N={heads} D={d}: rel err {err:.2e}")
  assert err <= REL_TOL


@pytest.fixture(scope="module")
def tiny_en(whisper_tiny_en):
  module, params = checkpoints.load_whisper_encoder(whisper_tiny_en)
  ref = transformers.WhisperForConditionalGeneration.from_pretrained(
      whisper_tiny_en, dtype=torch.float32).eval()
  fe = transformers.WhisperFeatureExtractor.from_pretrained(whisper_tiny_en)
  return module, params, ref, fe


@pytest.mark.parametrize("name", sorted(SPEECH))
def test_real_whisper_tiny_en_parity_on_speech(tiny_en, name):
  module, params, ref, _ = tiny_en
  wav = audio.load_audio(speech_path(name))
  mel = np.asarray(audio.log_mel_spectrogram(wav[None], 80))
  ours = jax.jit(module.apply)({"params": params}, mel)
  err = rel_err(ours, reference_encoder(ref, mel))
  print(f"whisper-tiny.en {name}: rel err {err:.2e}")
  assert err <= REL_TOL


@pytest.mark.parametrize("name", ["speech_en_1.wav", "speech_en_2.flac"])
def test_our_encoder_drives_reference_decoder_to_same_text(tiny_en, whisper_tiny_en, name):
  """Our log-mel + encoder, decoded greedily by the reference decoder, gives the same
  tokens as the whole reference pipeline (feature extractor + encoder + decoder)."""
  module, params, ref, fe = tiny_en
  wav = audio.load_audio(speech_path(name))
  kw = dict(do_sample=False, num_beams=1, max_new_tokens=40)
  with torch.no_grad():
    ref_ids = ref.generate(
        input_features=fe(wav, sampling_rate=16000, return_tensors="pt").input_features, **kw)
    hidden = np.asarray(module.apply({"params": params}, audio.log_mel_spectrogram(wav[None], 80)))
    our_ids = ref.generate(
        encoder_outputs=BaseModelOutput(last_hidden_state=torch.from_numpy(hidden.copy())), **kw)
  tok = transformers.PreTrainedTokenizerFast(tokenizer_file=f"{whisper_tiny_en}/tokenizer.json")
  text = tok.decode(our_ids[0], skip_special_tokens=True).strip()
  print(f"{name}: {text!r}")
  assert our_ids.tolist() == ref_ids.tolist()
  # The real model hears the espeak sentence (a few words may differ).
  words = set(SPEECH[name].lower().replace(".", "").split())
  heard = set(text.lower().replace(".", "").split())
  assert len(words & heard) >= len(words) // 2


def test_bfloat16_and_remat_variants(tmp_path):
  save_tiny_whisper(tmp_path, positions=100)
  mel = np.random.default_rng(1).standard_normal((1, 80, 200)).astype(np.float32)
  m32, p32 = checkpoints.load_whisper_encoder(str(tmp_path))
  y32 = np.asarray(m32.apply({"params": p32}, mel))
  mbf, pbf = checkpoints.load_whisper_encoder(str(tmp_path), dtype=jnp.bfloat16)
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(pbf))
  ybf = mbf.apply({"params": pbf}, mel)
  assert ybf.dtype == jnp.bfloat16
  assert rel_err(ybf, y32) < 0.1  # bf16 has ~3 significant digits
  mre, _ = checkpoints.load_whisper_encoder(str(tmp_path), remat=True)
  loss = lambda p, m: jnp.sum(m.apply({"params": p}, mel) ** 2)
  g1 = jax.grad(loss)(p32, m32)
  g2 = jax.grad(loss)(p32, mre)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_every_parameter_has_logical_axes():
  cfg = whisper.WhisperEncoderConfig(num_mel_bins=80, d_model=32, encoder_layers=2,
                                     encoder_attention_heads=2, encoder_ffn_dim=64,
                                     max_source_positions=50)
  boxed = jax.eval_shape(whisper.WhisperEncoder(cfg).init, jax.random.PRNGKey(0),
                         jnp.zeros((1, 80, 100)))["params"]
  flat = traverse_util.flatten_dict(boxed)
  for path, leaf in flat.items():
    assert hasattr(leaf, "names"), f"{'/'.join(path)} has no logical axis names"
    assert len(leaf.names) == len(leaf.value.shape), path


def test_large_v3_shapes_without_memory():
  """eval_shape of the paper's encoder: parameter count of Whisper-large-v3's encoder."""
  cfg = whisper.WHISPER_LARGE_V3
  shapes = jax.eval_shape(whisper.WhisperEncoder(cfg).init, jax.random.PRNGKey(0),
                          jax.ShapeDtypeStruct((1, 128, 3000), jnp.float32))["params"]
  n = sum(int(np.prod(x.value.shape)) for x in jax.tree.leaves(
      shapes, is_leaf=lambda x: hasattr(x, "names")))
  print(f"Whisper-large-v3 encoder parameters: {n:,}")
  assert 630e6 < n < 640e6  # the encoder half of the 1.55B model
  out = jax.eval_shape(whisper.WhisperEncoder(cfg).apply, {"params": shapes},
                       jax.ShapeDtypeStruct((2, 128, 3000), jnp.float32))
  assert out.shape == (2, 1500, 1280)


def test_bad_mel_shape_is_rejected(tmp_path):
  save_tiny_whisper(tmp_path, positions=100)
  module, params = checkpoints.load_whisper_encoder(str(tmp_path))
  with pytest.raises(ValueError, match=r"\[B, 80, frames\]"):
    module.apply({"params": params}, np.zeros((1, 128, 200), np.float32))
  with pytest.raises(ValueError, match="<= 200"):
    module.apply({"params": params}, np.zeros((1, 80, 400), np.float32))
