"""Long-form audio: windows, the kept-frame rule, and a 70 s utterance through the LALM."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf

from lalmjax import audio, compression, prompts, windows
from lalmjax.data import features, manifest, pipeline
from lalmjax.models import lalm, qwen2, whisper
from lalmjax.models.lora import LoraConfig

SR = audio.SAMPLE_RATE


def test_seventy_seconds_take_three_windows():
  spec = windows.WindowSpec(1500, 0)
  assert spec.num_windows([30 * SR, 30 * SR + 1, 60 * SR, 70 * SR]).tolist() == [1, 2, 2, 3]
  np.testing.assert_array_equal(spec.window_frames(70 * SR), [1500, 1500, 500])
  assert spec.kept_frames(70 * SR) == 3500
  # With overlap every moment is still kept once: 70 s = 3500 frames.
  spec = windows.WindowSpec(1500, 100)  # 2 s shared, hop 28 s
  assert spec.num_windows(70 * SR) == 3
  np.testing.assert_array_equal(spec.window_frames(70 * SR), [1500, 1500, 700])
  assert spec.kept_frames(70 * SR) == 3500
  # Within one window nothing changes.
  for n in (1, 160, 16000, 30 * SR):
    assert spec.kept_frames(n) == int(lalm.num_encoder_frames(n))


def _reference_mask(num_frames, t, overlap):
  """The documented rule, row by row, in plain Python."""
  out = []
  for row in num_frames:
    w_row = sum(1 for f in row if f > 0)
    keep = []
    for w, f in enumerate(row):
      for j in range(t):
        start = overlap - overlap // 2 if w > 0 else 0
        end = (f if w == w_row - 1 else t - overlap // 2) if w < w_row else 0
        keep.append(start <= j < end)
    out.append(keep)
  return np.asarray(out)


@pytest.mark.parametrize("overlap", [0, 1, 4, 5])
def test_frame_mask_follows_the_rule(overlap):
  t = 10
  num_frames = np.array([[10, 10, 3], [10, 7, 0], [4, 0, 0], [0, 0, 0], [10, 10, 10]])
  ours = np.asarray(windows.frame_mask(jnp.asarray(num_frames), t, overlap))
  np.testing.assert_array_equal(ours, _reference_mask(num_frames, t, overlap))
  np.testing.assert_array_equal(windows.frame_mask(num_frames, t, overlap, xp=np), ours)


def test_cut_windows_start_every_hop():
  spec = windows.WindowSpec(4, 2)  # windows of 4 frames = 1280 samples, hop 640
  wav = np.arange(3000, dtype=np.float32)
  cut = spec.cut(wav)
  assert cut.shape == (spec.num_windows(3000), 1280)
  for w in range(cut.shape[0]):
    piece = wav[w * 640:w * 640 + 1280]
    np.testing.assert_array_equal(cut[w, :len(piece)], piece)
    assert not cut[w, len(piece):].any()


@pytest.fixture(scope="module")
def long_model(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("long")
  tok = prompts.build_tiny_tokenizer(str(tmp / "tok"), ["a long utterance"], 300)
  builder = prompts.PromptBuilder(prompts.load_tokenizer(tok))
  enc = whisper.WhisperEncoderConfig(num_mel_bins=80, d_model=32, encoder_layers=1,
                                     encoder_attention_heads=2, encoder_ffn_dim=64,
                                     max_source_positions=1500)
  llm = qwen2.Qwen2Config(vocab_size=builder.vocab_size, hidden_size=32, intermediate_size=64,
                          num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                          head_dim=16)
  return tmp, tok, builder, enc, llm


@pytest.mark.parametrize("overlap", [0, 100])
def test_seventy_second_utterance_through_the_lalm(long_model, overlap):
  tmp, tok, builder, enc, llm = long_model
  k = 3
  config = lalm.LALMConfig(enc, llm, builder.audio_token_id, lora=LoraConfig(rank=2),
                           method="uniavg", factor=k, window_overlap=overlap)
  rng = np.random.default_rng(0)
  wav = (0.1 * rng.standard_normal(70 * SR)).astype(np.float32)
  path = os.path.join(tmp, f"long{overlap}.flac")
  sf.write(path, wav, SR)
  wav = audio.load_audio(path)  # FLAC round trip (16-bit)
  utt = manifest.Utterance(id="long", audio=path, duration=70.0, task="asr",
                           text="a long utterance", source_lang="en", target_lang="en")
  expected_tokens = -(-3500 // k)
  assert int(lalm.num_audio_tokens(config, 70 * SR)) == expected_tokens

  spec = pipeline.AudioSpec.from_lalm(config)
  cfg = pipeline.PipelineConfig(buckets=((75.0, 1, 1280),), shuffle=False)
  batch = next(iter(pipeline.InputPipeline([utt], cfg, spec, tok, process_index=0,
                                           process_count=1)))
  assert batch["mel"].shape == (1, 3, 80, 3000)
  assert batch["num_frames"].tolist() == [list(spec.windows.window_frames(70 * SR))]
  assert int((batch["input_ids"] == builder.audio_token_id).sum()) == expected_tokens

  module = lalm.LALM(config)
  variables = lalm.init_variables(module, jax.random.PRNGKey(0))
  tokens, mask = module.apply(variables, batch["mel"], batch["num_frames"],
                              method=lalm.LALM.encode_audio)
  assert int(np.asarray(mask).sum()) == expected_tokens
  # The same tokens by hand: encode each window alone, keep the frames of the rule,
  # join, compress, project.
  enc_module = whisper.WhisperEncoder(enc)
  per_window = []
  for w in range(3):
    mel = audio.log_mel_spectrogram(spec.windows.cut(wav)[w][None], 80)
    per_window.append(np.asarray(enc_module.apply(
        {"params": variables["params"]["encoder"]}, mel))[0])
  keep = _reference_mask(batch["num_frames"], 1500, overlap)[0]
  joined = np.concatenate(per_window)[keep]
  assert joined.shape[0] == 3500
  ref, ref_mask = compression.compress(joined[None], np.ones((1, 3500), bool), "uniavg", k)
  ref = module.apply(variables, jnp.asarray(ref), method=lambda m, x: m.projector(x))
  n = expected_tokens
  np.testing.assert_allclose(np.asarray(tokens)[0, :n], np.asarray(ref)[0, :n], atol=2e-4)
  # And the loss path takes windowed batches too.
  loss, metrics = lalm.lalm_loss(module, variables, {
      **pipeline.model_inputs(batch), "loss_mask": batch["loss_mask"]})
  assert np.isfinite(float(loss)) and int(metrics["placeholder_mismatch"]) == 0

  # The feature cache joins windows the same way.
  cache = features.FeatureCache(str(tmp / f"cache{overlap}"), str(tmp / "tok"), 32,
                                fingerprint=f"test{overlap}")
  encode = features.encoder_fn(enc_module, variables["params"]["encoder"], 4, overlap)
  features.fill_cache(cache, [utt], encode, lambda u: audio.load_audio(u.audio),
                      progress=False)
  cached = cache.get(utt).astype(np.float32)
  assert cached.shape == (3500, 32)
  np.testing.assert_allclose(cached, joined, atol=2e-3 * max(1, np.abs(joined).max()))


def test_audio_token_cap_skips_and_counts(long_model, tmp_path):
  _, tok, builder, enc, llm = long_model
  config = lalm.LALMConfig(enc, llm, builder.audio_token_id, factor=2)
  path = str(tmp_path / "u.flac")
  sf.write(path, np.zeros(3 * SR, np.float32), SR)
  utt = manifest.Utterance(id="u", audio=path, duration=3.0, task="asr", text="a",
                           source_lang="en", target_lang="en")
  cfg = pipeline.PipelineConfig(buckets=((5.0, 1, 256),), max_audio_tokens=60)
  batch = next(iter(pipeline.InputPipeline([utt], cfg, pipeline.AudioSpec.from_lalm(config),
                                           tok, process_index=0, process_count=1)))
  assert batch["skipped"] and "max_audio_tokens=60" in batch["skipped"][0][1]
  assert batch["index"].tolist() == [-1]


def test_a_shorter_encoder_window_cuts_encodes_and_caches_alike(long_model):
  """`window_frames` (config `model.encoder_window_seconds`): a 25 s utterance in 10 s
  windows is three windows of 1000 mel frames, each encoded with the first 500
  positional embeddings; the LALM, the hand-made path and the feature cache agree."""
  tmp, tok, builder, enc, llm = long_model
  w_frames, k = 500, 2
  config = lalm.LALMConfig(enc, llm, builder.audio_token_id, lora=LoraConfig(rank=2),
                           method="uniavg", factor=k, window_frames=w_frames)
  assert config.encoder_window == w_frames
  rng = np.random.default_rng(1)
  path = os.path.join(tmp, "w10.flac")
  sf.write(path, (0.1 * rng.standard_normal(25 * SR)).astype(np.float32), SR)
  wav = audio.load_audio(path)
  utt = manifest.Utterance(id="w10", audio=path, duration=25.0, task="asr",
                           text="a long utterance", source_lang="en", target_lang="en")
  assert int(lalm.num_kept_frames(config, 25 * SR)) == 1250
  spec = pipeline.AudioSpec.from_lalm(config)
  cfg = pipeline.PipelineConfig(buckets=((30.0, 1, 768),), shuffle=False)
  batch = next(iter(pipeline.InputPipeline([utt], cfg, spec, tok, process_index=0,
                                           process_count=1)))
  assert batch["mel"].shape == (1, 3, 80, 2 * w_frames)
  assert batch["num_frames"].tolist() == [[500, 500, 250]]
  assert int((batch["input_ids"] == builder.audio_token_id).sum()) == 625

  module = lalm.LALM(config)
  variables = lalm.init_variables(module, jax.random.PRNGKey(0))
  tokens, mask = module.apply(variables, batch["mel"], batch["num_frames"],
                              method=lalm.LALM.encode_audio)
  assert int(np.asarray(mask).sum()) == 625
  enc_module = whisper.WhisperEncoder(enc)
  enc_params = variables["params"]["encoder"]
  cut = spec.windows.cut(wav)  # [3, 160000]
  assert cut.shape == (3, 10 * SR)
  per_window = [np.asarray(enc_module.apply({"params": enc_params},
                                            audio.log_mel_spectrogram(c[None], 80)[:, :, :1000]))[0]
                for c in cut]  # log_mel pads to 30 s: the window's 1000 mel frames
  assert per_window[0].shape == (w_frames, 32)
  joined = np.concatenate(per_window)[_reference_mask(batch["num_frames"], w_frames, 0)[0]]
  ref, _ = compression.compress(joined[None], np.ones((1, 1250), bool), "uniavg", k)
  ref = module.apply(variables, jnp.asarray(ref), method=lambda m, x: m.projector(x))
  np.testing.assert_allclose(np.asarray(tokens)[0, :625], np.asarray(ref)[0], atol=2e-4)
  # The 30-s window gives other frames: the window is part of what the cache keys on.
  full = np.asarray(enc_module.apply({"params": enc_params},
                                     audio.log_mel_spectrogram(wav[None], 80)))[0, :500]
  assert not np.allclose(full, per_window[0], atol=1e-3)

  enc_dir = tmp / "enc_w"  # what the cache fingerprints: the encoder's files + window
  enc_dir.mkdir(exist_ok=True)
  (enc_dir / "config.json").write_text('{"d_model": 32}')
  cache = features.FeatureCache(str(tmp / "cache_w"), str(enc_dir), 32, window_frames=w_frames)
  assert cache.dir != features.FeatureCache(str(tmp / "cache_w"), str(enc_dir), 32).dir
  given = lambda **kw: features.FeatureCache(str(tmp / "cache_w"), str(enc_dir), 32,
                                             fingerprint="random-encoder", **kw).dir
  assert given(window_frames=w_frames) != given()  # a caller's fingerprint gets it too
  assert given(dtype="bfloat16") != given()
  encode = features.encoder_fn(enc_module, enc_params, 4, 0, window_frames=w_frames)
  features.fill_cache(cache, [utt], encode, lambda u: audio.load_audio(u.audio),
                      progress=False)
  cached = cache.get(utt).astype(np.float32)
  assert cached.shape == (1250, 32)
  np.testing.assert_allclose(cached, joined, atol=2e-3 * max(1, np.abs(joined).max()))

  with pytest.raises(ValueError, match="window_frames"):
    lalm.LALMConfig(enc, llm, builder.audio_token_id, window_frames=1501)
  with pytest.raises(ValueError, match="window_overlap"):
    lalm.LALMConfig(enc, llm, builder.audio_token_id, window_frames=100, window_overlap=100)
