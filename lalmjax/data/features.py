"""A cache of encoder frames, for training and sweeps with a frozen encoder.

With the Whisper encoder frozen, its output for an utterance never changes: computing
it once and storing it makes every later epoch, and every compression setting of a
sweep, skip the encoder (the most expensive part on a CPU). Frames are stored per
utterance as float16 ``[T_valid, E]`` (only the valid frames, 50 per second) in::

    <root>/<fingerprint>/<xx>/<utterance key>.npy

where the utterance key names the utterance id AND its audio file (resolved path, size,
modification time), so two corpora that reuse ids (every corpus made by
scripts/make_corpus.py numbers its utterances the same way), or a regenerated audio
file, never read another file's frames; and the fingerprint is a content hash of the
encoder checkpoint (config.json and every weight file) together with the compute dtype
and the encoder window, so a different encoder, the same one run in another precision,
or with another window, never reads another's frames. ``meta.json`` in that
folder records the checkpoint path and the frame width, checked on open.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from typing import Callable, Sequence

import numpy as np

log = logging.getLogger(__name__)

# Weights and configs; model.bin.part<k> are the parts of a split CTranslate2 model.bin.
_WEIGHT_FILES = re.compile(r".*\.(safetensors|bin|json)$|^model\.bin\.part\w+$")


def encoder_fingerprint(path: str, extra: str = "") -> str:
  """sha256 (hex, first 20 chars) over the files of a checkpoint folder, and `extra`.

  Reads config.json, the safetensors (or CTranslate2 ``model.bin``) files and indexes,
  in name order, in 8 MiB blocks.
  """
  if not os.path.isdir(path):
    raise FileNotFoundError(f"{path}: encoder checkpoint folder does not exist")
  h = hashlib.sha256(extra.encode())
  names = sorted(n for n in os.listdir(path) if _WEIGHT_FILES.match(n)
                 and not n.startswith(("tokenizer", "preprocessor", "generation")))
  if not names:
    raise FileNotFoundError(f"{path}: no weight or config files to fingerprint")
  for name in names:
    h.update(name.encode())
    with open(os.path.join(path, name), "rb") as f:
      for block in iter(lambda: f.read(8 << 20), b""):
        h.update(block)
  return h.hexdigest()[:20]


def utterance_key(utt_id: str, audio_path: str | None = None) -> str:
  """A file-system-safe, collision-free name for an utterance: its id and, when given,
  the identity of its audio file (resolved path, size in bytes, mtime in ns).

  Raises OSError when `audio_path` does not exist."""
  safe = re.sub(r"[^A-Za-z0-9_.-]", "_", utt_id)[:80]
  ident = utt_id
  if audio_path is not None:
    st = os.stat(audio_path)
    ident += f"\0{os.path.realpath(audio_path)}\0{st.st_size}\0{st.st_mtime_ns}"
  return f"{safe}-{hashlib.sha1(ident.encode()).hexdigest()[:10]}"


def _key(utt) -> str:
  """The cache key of an utterance (an object with `.id` and `.audio`)."""
  return utterance_key(utt.id, utt.audio)


class FeatureCache:
  """Encoder frames per utterance id, for one encoder checkpoint and dtype.

  Args:
    root: the cache folder (shared by all encoders; each gets its own subfolder).
    encoder_path: the encoder checkpoint folder (hashed, see `encoder_fingerprint`).
    width: E, the encoder width (checked against what is stored).
    dtype: the encoder's compute dtype name ("float32", "bfloat16"), part of the key.
    fingerprint: the encoder's identity when the caller already knows it (skips
      hashing its files); the dtype and the window are folded in here, as they are
      into a hashed one.
    window_frames: encoder frames per window, part of the key (0 = the encoder's own
      window; a shorter one gives other frames).
  """

  def __init__(self, root: str, encoder_path: str, width: int, dtype: str = "float32",
               fingerprint: str | None = None, window_frames: int = 0):
    extra = str(dtype) + (f"/window{int(window_frames)}" if window_frames else "")
    self.fingerprint = (text_fingerprint(f"{fingerprint}/{extra}") if fingerprint
                        else encoder_fingerprint(encoder_path, extra=extra))
    self.dir = os.path.join(os.path.abspath(root), self.fingerprint)
    self.width = int(width)
    os.makedirs(self.dir, exist_ok=True)
    meta_path = os.path.join(self.dir, "meta.json")
    meta = {"encoder_path": os.path.abspath(encoder_path), "width": self.width,
            "dtype": str(dtype), "window_frames": int(window_frames),
            "fingerprint": self.fingerprint, "storage": "float16"}
    if os.path.exists(meta_path):
      with open(meta_path) as f:
        stored = json.load(f)
      if stored.get("width") != self.width:
        raise ValueError(f"{meta_path}: cached frames have width {stored.get('width')}, "
                         f"the encoder gives {self.width}")
    else:
      tmp = meta_path + f".tmp{os.getpid()}"
      with open(tmp, "w") as f:
        json.dump(meta, f, indent=2)
      os.replace(tmp, meta_path)

  def path(self, utt) -> str:
    """Where the frames of `utt` (an object with `.id` and `.audio`: a manifest
    `Utterance`) are stored."""
    key = _key(utt)
    return os.path.join(self.dir, key[-2:], key + ".npy")

  def __contains__(self, utt) -> bool:
    try:
      return os.path.exists(self.path(utt))
    except OSError:  # the audio file is gone: nothing cached can be trusted for it
      return False

  def get(self, utt) -> np.ndarray | None:
    """float16[T_valid, E] of `utt`'s audio file as it is now, or None when not cached."""
    try:
      path = self.path(utt)
    except OSError:
      return None
    if not os.path.exists(path):
      return None
    frames = np.load(path)
    if frames.ndim != 2 or frames.shape[1] != self.width:
      raise ValueError(f"{path}: cached frames of {utt.id!r} have shape {frames.shape}, "
                       f"expected [T, {self.width}]")
    return frames

  def put(self, utt, frames: np.ndarray):
    """Stores float[T_valid, E] frames (as float16) of `utt`, atomically."""
    frames = np.asarray(frames)
    if frames.ndim != 2 or frames.shape[1] != self.width:
      raise ValueError(f"frames of {utt.id!r} have shape {frames.shape}, "
                       f"expected [T, {self.width}]")
    path = self.path(utt)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path[:-4] + f".tmp{os.getpid()}.npy"
    np.save(tmp, frames.astype(np.float16))
    os.replace(tmp, path)


def fill_cache(cache: FeatureCache, utterances: Sequence, encode: Callable,
               load: Callable, batch_size: int = 8, progress: bool = True) -> dict:
  """Encodes every utterance not yet in `cache`.

  Args:
    cache: the cache.
    utterances: objects with `.id` and `.audio` (manifest `Utterance`s).
    encode: a list of float32[samples] waveforms -> (per utterance float[kept, E]
      frames, int32[N] kept counts); `encoder_fn` makes one.
    load: utterance -> float32[samples] waveform, raising on unreadable audio.
    batch_size: rows per encoder call (the last call is padded).

  Returns:
    {"encoded": n, "cached": n already there, "skipped": {id: reason}}.
  """
  from tqdm import tqdm  # local: only filling shows progress

  todo = [u for u in utterances if u not in cache]
  stats = {"encoded": 0, "cached": len(utterances) - len(todo), "skipped": {}}
  bar = tqdm(total=len(todo), desc="encoder features", unit="utt",
             disable=not progress or not todo)
  for start in range(0, len(todo), batch_size):
    chunk, wavs = [], []
    for u in todo[start:start + batch_size]:
      try:
        wavs.append(load(u))
        chunk.append(u)
      except (OSError, ValueError) as e:
        log.warning("feature cache: skipping %s: %s", u.id, e)
        stats["skipped"][u.id] = str(e)
    if chunk:
      frames, kept = encode(wavs)
      for u, f, n in zip(chunk, frames, kept):
        cache.put(u, np.asarray(f[:int(n)]))
      stats["encoded"] += len(chunk)
    bar.update(batch_size if start + batch_size <= len(todo) else len(todo) - start)
  bar.close()
  return stats


def encoder_fn(module, params, batch_size: int, window_overlap: int = 0,
               window_frames: int = 0) -> Callable:
  """A batched, jitted encode for `fill_cache`: waveforms -> (frames, kept frames).

  Audio longer than the encoder window is cut into windows (`lalmjax.windows`), each
  window encoded, and the kept frames joined, as the model does with windowed mel.

  Args:
    module: a `WhisperEncoder` (its config gives the mel bins and the window).
    params: its parameters.
    batch_size: windows per encoder call; the last call is padded with silence, so it
      compiles once.
    window_overlap: encoder frames shared by consecutive windows.
    window_frames: encoder frames per window (0 = the encoder's max_source_positions;
      `LALMConfig.window_frames`).

  Returns:
    encode(list of float32[samples]) -> (list of float32[kept, E], int32[N] kept counts).
  """
  import jax  # local: pipeline workers import this module without touching jax

  from lalmjax import audio, windows

  cfg = module.config
  spec = windows.WindowSpec(window_frames or cfg.max_source_positions, window_overlap)

  @jax.jit
  def run(p, wav):
    mel = audio.log_mel_spectrogram(wav, cfg.num_mel_bins)[:, :, :2 * spec.frames_per_window]
    return module.apply({"params": p}, mel)

  def encode(wavs):
    cuts = [spec.cut(w) for w in wavs]  # each [W_i, window samples]
    rows = np.concatenate(cuts)
    outs = []
    for start in range(0, len(rows), batch_size):
      chunk = rows[start:start + batch_size]
      batch = np.zeros((batch_size, rows.shape[1]), np.float32)
      batch[:len(chunk)] = chunk
      outs.append(np.asarray(jax.device_get(run(params, batch)), np.float32)[:len(chunk)])
    encoded = np.concatenate(outs)  # [sum W_i, T, E]
    frames, kept, at = [], [], 0
    for w, cut in zip(wavs, cuts):
      per_window = encoded[at:at + len(cut)]
      at += len(cut)
      mask = windows.frame_mask(spec.window_frames(len(w))[None], spec.frames_per_window,
                                spec.overlap, xp=np)[0]
      joined = per_window.reshape(-1, per_window.shape[-1])[mask]
      frames.append(joined)
      kept.append(len(joined))
    return frames, np.asarray(kept, np.int32)

  return encode


def text_fingerprint(text: str) -> str:
  """sha256 (first 20 hex chars) of a string: the identity of a random encoder."""
  return hashlib.sha256(text.encode()).hexdigest()[:20]


def file_fingerprint(path: str) -> str:
  """sha256 (first 20 hex chars) of one file's content."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(8 << 20), b""):
      h.update(block)
  return h.hexdigest()[:20]
