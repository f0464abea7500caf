"""Audio in: load, validate and resample files; Whisper's log-mel front end in jax.numpy.

Units: sample rate in Hz, durations in seconds, waveforms float32 in [-1, 1].
`log_mel_spectrogram` reproduces `transformers.WhisperFeatureExtractor` (the numpy path):
30 s window (480,000 samples at 16 kHz), periodic Hann window of 400 samples (25 ms),
hop 160 (10 ms), centred frames with reflect padding, power spectrum, Slaney-normalised
Slaney-scale mel filters over 0-8 kHz, log10 with a 1e-10 floor, the last frame dropped
(3000 frames), a per-utterance dynamic-range clamp at max - 8, then (x + 4) / 4.
"""

from __future__ import annotations

import functools
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np

SAMPLE_RATE = 16000  # Hz, what Whisper expects.
N_FFT = 400  # samples: 25 ms window.
HOP_LENGTH = 160  # samples: 10 ms hop -> 100 frames/s.
CHUNK_SECONDS = 30  # the encoder window.
N_SAMPLES = SAMPLE_RATE * CHUNK_SECONDS  # 480,000 samples.
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3000 mel frames.


class AudioError(ValueError):
  """An audio file that cannot be used: missing, empty, corrupt, not audio, too long."""


def load_audio(path: str, sr: int = SAMPLE_RATE, max_seconds: float | None = None) -> np.ndarray:
  """Reads an audio file as mono float32 at `sr` Hz.

  Any format soundfile (WAV, FLAC, OGG, ...) or librosa's audioread fallback (MP3, M4A,
  ...) reads. Multi-channel audio is averaged to mono; other sample rates are resampled.

  Args:
    path: the file.
    sr: target sample rate in Hz.
    max_seconds: if set, a file longer than this raises AudioError (e.g. the 30 s
      encoder window) instead of being silently truncated later.

  Returns:
    float32[samples] waveform.

  Raises:
    AudioError (FileNotFoundError for a missing file) naming the file.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: audio file does not exist")
  if os.path.isdir(path):
    raise AudioError(f"{path}: is a directory, expected an audio file")
  if os.path.getsize(path) == 0:
    raise AudioError(f"{path}: empty file (0 bytes), expected audio")
  wav, file_sr = _read(path)
  if wav.ndim == 2:  # soundfile gives [samples, channels]
    wav = wav.mean(axis=1)
  if wav.size == 0:
    raise AudioError(f"{path}: decodes to 0 samples, expected audio")
  if not np.all(np.isfinite(wav)):
    raise AudioError(f"{path}: decoded samples contain NaN or Inf")
  if file_sr != sr:
    import librosa  # local: slow import, only needed to resample

    wav = librosa.resample(wav.astype(np.float32), orig_sr=file_sr, target_sr=sr)
  if max_seconds is not None and wav.shape[0] > max_seconds * sr:
    raise AudioError(f"{path}: {wav.shape[0] / sr:.2f} s long, longer than the "
                     f"{max_seconds:g} s the encoder window holds")
  return np.ascontiguousarray(wav, dtype=np.float32)


def _read(path: str) -> tuple[np.ndarray, int]:
  """Decodes with soundfile, falling back to librosa/audioread for compressed formats."""
  import soundfile as sf

  try:
    wav, file_sr = sf.read(path, dtype="float32", always_2d=False)
    return np.asarray(wav), int(file_sr)
  except Exception as sf_error:  # pylint: disable=broad-except
    try:
      import librosa

      with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # librosa warns when it falls back to audioread
        wav, file_sr = librosa.load(path, sr=None, mono=True)
      return np.asarray(wav, np.float32), int(file_sr)
    except Exception as e:  # pylint: disable=broad-except
      raise AudioError(f"{path}: not a readable audio file, or corrupt "
                       f"(soundfile: {sf_error}; librosa: {type(e).__name__}: {e})") from None


def pad_or_trim(wav: np.ndarray, length: int = N_SAMPLES) -> np.ndarray:
  """Zero-pads or cuts the last axis to `length` samples."""
  n = wav.shape[-1]
  if n >= length:
    return wav[..., :length]
  pad = [(0, 0)] * (wav.ndim - 1) + [(0, length - n)]
  return np.pad(wav, pad)


# Slaney mel scale: 3 mels per 200 Hz below 1 kHz, logarithmic (27 steps per 6.4x) above.
_F_SP, _MIN_LOG_HZ, _LOGSTEP = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP


def _hz_to_mel(freq: np.ndarray) -> np.ndarray:
  """Slaney mel scale: linear below 1 kHz, logarithmic above."""
  f_sp, min_log_hz, min_log_mel, logstep = _F_SP, _MIN_LOG_HZ, _MIN_LOG_MEL, _LOGSTEP
  freq = np.asarray(freq, np.float64)
  mels = freq / f_sp
  return np.where(freq >= min_log_hz,
                  min_log_mel + np.log(np.maximum(freq, 1e-10) / min_log_hz) / logstep, mels)


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
  f_sp, min_log_hz, min_log_mel, logstep = _F_SP, _MIN_LOG_HZ, _MIN_LOG_MEL, _LOGSTEP
  mels = np.asarray(mels, np.float64)
  return np.where(mels >= min_log_mel, min_log_hz * np.exp(logstep * (mels - min_log_mel)),
                  f_sp * mels)


@functools.lru_cache(maxsize=8)
def mel_filters(n_mels: int, sr: int = SAMPLE_RATE, n_fft: int = N_FFT) -> np.ndarray:
  """Slaney-normalised triangular mel filters over 0..sr/2 Hz: float32[n_fft//2+1, n_mels]."""
  n_freqs = n_fft // 2 + 1
  fft_freqs = np.linspace(0, sr // 2, n_freqs)
  mel_pts = np.linspace(_hz_to_mel(0.0), _hz_to_mel(sr / 2), n_mels + 2)
  filter_freqs = _mel_to_hz(mel_pts)
  diff = np.diff(filter_freqs)
  slopes = filter_freqs[None, :] - fft_freqs[:, None]  # [F, n_mels + 2]
  down = -slopes[:, :-2] / diff[:-1]
  up = slopes[:, 2:] / diff[1:]
  fb = np.maximum(0.0, np.minimum(down, up))
  # Slaney normalisation: each filter has unit area in Hz.
  fb *= 2.0 / (filter_freqs[2:n_mels + 2] - filter_freqs[:n_mels])
  return fb.astype(np.float32)


def _log_mel(xp, waveform, n_mels: int):
  """The log-mel computation, written once for both array modules (`np` or `jnp`).

  waveform: float32[B, samples] -> float32[B, n_mels, 3000].
  """
  n = waveform.shape[1]
  if n >= N_SAMPLES:
    waveform = waveform[:, :N_SAMPLES]
  else:
    waveform = xp.pad(waveform, ((0, 0), (0, N_SAMPLES - n)))
  # Centred frames: reflect-pad by half a window on each side.
  padded = xp.pad(waveform, ((0, 0), (N_FFT // 2, N_FFT // 2)), mode="reflect")
  # Only the first N_FRAMES frames: the feature extractor drops the last one.
  idx = np.arange(N_FRAMES)[:, None] * HOP_LENGTH + np.arange(N_FFT)[None, :]
  frames = padded[:, idx]  # [B, 3000, 400]
  window = np.hanning(N_FFT + 1)[:-1].astype(np.float32)  # periodic Hann
  spec = xp.fft.rfft(frames * window, n=N_FFT, axis=-1)  # [B, 3000, 201]
  power = (xp.real(spec) ** 2 + xp.imag(spec) ** 2).astype(np.float32)
  filters = mel_filters(n_mels)
  if xp is np:
    mel = np.einsum("btf,fm->bmt", power, filters)
  else:  # full float32 matmul precision also on TPU/GPU
    mel = jnp.einsum("btf,fm->bmt", power, jnp.asarray(filters),
                     precision=jax.lax.Precision.HIGHEST)
  log_spec = xp.log10(xp.maximum(mel, 1e-10))
  # The dynamic-range clamp is per utterance: each row's own maximum.
  log_spec = xp.maximum(log_spec, log_spec.max(axis=(1, 2), keepdims=True) - 8.0)
  return ((log_spec + 4.0) / 4.0).astype(np.float32)


@functools.partial(jax.jit, static_argnames=("n_mels",))
def log_mel_spectrogram(waveform: jax.Array, n_mels: int = 80) -> jax.Array:
  """Whisper log-mel features, in jax (jit; on the accelerator inside a model step).

  Args:
    waveform: float32[B, samples] at 16 kHz (any length: zero-padded or cut to 30 s).
    n_mels: 80 (Whisper up to v2) or 128 (large-v3).

  Returns:
    float32[B, n_mels, 3000].
  """
  waveform = jnp.asarray(waveform, jnp.float32)
  if waveform.ndim != 2:
    raise ValueError(f"waveform must be [B, samples], got shape {waveform.shape}")
  return _log_mel(jnp, waveform, n_mels)


def log_mel_spectrogram_np(waveform: np.ndarray, n_mels: int = 80) -> np.ndarray:
  """`log_mel_spectrogram` in numpy, for input-pipeline workers (which must not touch
  the accelerator). Same arguments and result; agrees with the jax version to float32
  rounding (numpy's FFT runs in float64)."""
  waveform = np.asarray(waveform, np.float32)
  if waveform.ndim != 2:
    raise ValueError(f"waveform must be [B, samples], got shape {waveform.shape}")
  return _log_mel(np, waveform, n_mels)


def num_valid_frames(num_samples, hop_length: int = HOP_LENGTH, max_frames: int = N_FRAMES):
  """Mel frames that hold real audio for an utterance of `num_samples` samples."""
  return np.minimum(-(-np.asarray(num_samples) // hop_length), max_frames)
