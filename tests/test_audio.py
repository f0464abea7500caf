"""lalmjax.audio: file loading errors and log-mel parity with WhisperFeatureExtractor."""

import os
import shutil
import subprocess

import jax
import numpy as np
import pytest
import soundfile as sf
from transformers import WhisperFeatureExtractor

from lalmjax import audio
from conftest import SPEECH, speech_path

# Output scale of the log-mel features is about [-1, 2]; the reference itself computes its
# spectrogram through complex64, so agreement is at the 1e-5 level, bound at 1e-4.
TOL = 1e-4


@pytest.fixture(scope="module")
def speech():
  return audio.load_audio(speech_path("speech_en_1.wav"))


def _signal(kind, seconds, speech):
  n = int(seconds * audio.SAMPLE_RATE)
  if kind == "noise":
    return (np.random.default_rng(int(seconds * 10)).standard_normal(n) * 0.1).astype(np.float32)
  return np.tile(speech, n // len(speech) + 1)[:n]


@pytest.mark.parametrize("n_mels", [80, 128])
@pytest.mark.parametrize("kind", ["speech", "noise"])
@pytest.mark.parametrize("seconds", [0.5, 7.0, 30.0])
def test_log_mel_matches_whisper_feature_extractor(n_mels, kind, seconds, speech):
  wav = _signal(kind, seconds, speech)
  ref = WhisperFeatureExtractor(feature_size=n_mels)(
      wav, sampling_rate=16000, return_tensors="np").input_features
  ours = np.asarray(audio.log_mel_spectrogram(wav[None], n_mels))
  assert ours.shape == ref.shape == (1, n_mels, 3000)
  err = np.abs(ours - ref).max()
  print(f"log-mel n_mels={n_mels} {kind} {seconds}s: max abs err {err:.2e}")
  assert err <= TOL


def test_log_mel_batched_equals_single(speech):
  """Rows are independent (the dynamic-range clamp is per utterance)."""
  a, b = speech[:8000], np.concatenate([speech, speech])
  batch = np.stack([audio.pad_or_trim(a, len(b)), b])
  together = np.asarray(audio.log_mel_spectrogram(batch, 80))
  for i, wav in enumerate([a, b]):
    alone = np.asarray(audio.log_mel_spectrogram(wav[None], 80))[0]
    np.testing.assert_allclose(together[i], alone, atol=1e-5)


def test_log_mel_clamp_is_per_utterance_for_rows_of_different_loudness(speech):
  """Speech, the same speech 40 dB quieter and quiet noise in one batch: each row is
  clamped at its own maximum - 8 (log10 units), as the feature extractor does for each
  waveform, not at the batch's."""
  noise = np.random.default_rng(0).standard_normal(24000).astype(np.float32) * 1e-3
  rows = [speech[:24000], 1e-2 * speech[8000:32000], noise]
  batch = np.stack(rows)
  together = np.asarray(audio.log_mel_spectrogram(batch, 80))
  ref = WhisperFeatureExtractor(feature_size=80)(
      list(batch), sampling_rate=16000, return_tensors="np").input_features
  peaks = together.max(axis=(1, 2))
  # The quiet rows hold values below the loud row's clamp: a batch-wide clamp would
  # change them.
  assert (together[1] < peaks[0] - 2.0).mean() > 0.1 and (together[2] < peaks[0] - 2.0).any()
  for i, wav in enumerate(rows):
    alone = np.asarray(audio.log_mel_spectrogram(wav[None], 80))[0]
    np.testing.assert_allclose(together[i], alone, atol=1e-5)
    assert np.abs(together[i] - ref[i]).max() <= TOL
    # (max(row max - 8, log10 floor of -10) + 4) / 4
    assert together[i].min() == pytest.approx(max(peaks[i] - 2.0, -1.5), abs=1e-5)


def test_log_mel_longer_than_window_is_cut(speech):
  long = np.tile(speech, 12)[: 35 * 16000]
  np.testing.assert_allclose(np.asarray(audio.log_mel_spectrogram(long[None], 80)),
                             np.asarray(audio.log_mel_spectrogram(long[None, :480000], 80)),
                             atol=1e-6)


def test_log_mel_compiles_once_per_shape(speech):
  audio.log_mel_spectrogram(speech[None, :16000], 80)
  before = audio.log_mel_spectrogram._cache_size()
  for scale in (0.5, 1.0, 2.0):
    audio.log_mel_spectrogram(scale * speech[None, :16000], 80)
  assert audio.log_mel_spectrogram._cache_size() == before


@pytest.mark.parametrize("name", sorted(SPEECH))
def test_load_audio_resamples_to_16k_mono(name):
  path = speech_path(name)
  info = sf.info(path)
  wav = audio.load_audio(path)
  assert wav.dtype == np.float32 and wav.ndim == 1
  assert abs(len(wav) / 16000 - info.frames / info.samplerate) < 0.01
  assert 0.01 < np.abs(wav).max() <= 1.0


def test_load_audio_stereo_and_other_rate(tmp_path):
  t = np.arange(8000 * 2) / 8000
  left = 0.5 * np.sin(2 * np.pi * 440 * t)
  path = str(tmp_path / "stereo8k.wav")
  sf.write(path, np.stack([left, left], axis=1), 8000)
  wav = audio.load_audio(path)
  assert wav.shape == (32000,)
  # A 440 Hz tone survives resampling: its spectral peak stays at 440 Hz.
  spectrum = np.abs(np.fft.rfft(wav))
  assert abs(np.argmax(spectrum) * 16000 / len(wav) - 440) < 2


def test_load_audio_averages_different_channels(tmp_path):
  """Stereo with two different channels (a tone left, another tone right) becomes their
  mean, sample by sample; three channels too."""
  t = np.arange(16000) / 16000
  channels = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.25 * np.sin(2 * np.pi * 1000 * t),
                       0.1 * np.cos(2 * np.pi * 3000 * t)], axis=1).astype(np.float32)
  for n in (2, 3):
    path = str(tmp_path / f"ch{n}.wav")
    sf.write(path, channels[:, :n], 16000, subtype="FLOAT")
    wav = audio.load_audio(path)
    assert wav.shape == (16000,)
    np.testing.assert_allclose(wav, channels[:, :n].mean(axis=1), atol=1e-7)


@pytest.mark.parametrize("sr", [16000, 8000])  # 8 kHz: checked before resampling too
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_load_audio_rejects_non_finite_samples(tmp_path, bad, sr):
  wav = np.zeros((1600, 2), np.float32)
  wav[100, 1] = bad
  path = str(tmp_path / "broken_take.wav")
  sf.write(path, wav, sr, subtype="FLOAT")
  with pytest.raises(audio.AudioError, match=r"broken_take\.wav: .*NaN or Inf"):
    audio.load_audio(path)


def test_load_audio_errors_name_the_file(tmp_path):
  missing = str(tmp_path / "nope.wav")
  with pytest.raises(FileNotFoundError, match="nope.wav"):
    audio.load_audio(missing)
  empty = tmp_path / "empty.wav"
  empty.write_bytes(b"")
  with pytest.raises(audio.AudioError, match="empty.wav.*empty"):
    audio.load_audio(str(empty))
  text = tmp_path / "notes.wav"
  text.write_text("this is not audio\n" * 50)
  with pytest.raises(audio.AudioError, match="notes.wav.*not a readable audio"):
    audio.load_audio(str(text))
  corrupt = tmp_path / "corrupt.flac"
  corrupt.write_bytes(open(speech_path("speech_en_2.flac"), "rb").read()[:200])
  with pytest.raises(audio.AudioError, match="corrupt.flac"):
    audio.load_audio(str(corrupt))
  with pytest.raises(audio.AudioError, match="is a directory"):
    audio.load_audio(str(tmp_path))


def test_load_audio_too_long(tmp_path):
  path = str(tmp_path / "long.wav")
  sf.write(path, np.zeros(16000 * 31, np.float32), 16000)
  with pytest.raises(audio.AudioError, match=r"long.wav: 31.00 s long.*30 s"):
    audio.load_audio(path, max_seconds=30)
  assert audio.load_audio(path).shape == (16000 * 31,)


def test_load_audio_ogg(tmp_path):
  """Other container formats that soundfile decodes (OGG Vorbis here)."""
  if shutil.which("sox") is None:
    pytest.skip("sox not installed")
  path = str(tmp_path / "a.ogg")
  subprocess.run(["sox", speech_path("speech_en_1.wav"), path], check=True)
  wav = audio.load_audio(path)
  assert wav.ndim == 1 and len(wav) > 16000


def test_num_valid_frames():
  assert list(audio.num_valid_frames([0, 1, 160, 161, 480000, 10**7])) == [0, 1, 1, 2, 3000, 3000]
