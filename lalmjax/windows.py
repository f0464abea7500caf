"""Long-form audio: cutting utterances longer than the encoder window into windows.

Whisper's encoder sees 30 s (T = 1500 frames) at a time. Longer audio is cut into W
windows that start every `hop` samples (window minus overlap); each is encoded alone,
and the frames are joined in order into one sequence that is compressed as a whole, so
a 70 s utterance gives ceil(kept frames / k) audio tokens exactly as a 7 s one gives
ceil(frames / k).

Overlap: consecutive windows share `overlap` encoder frames. Each moment is kept once:
the earlier window drops the last overlap // 2 of them (where it lacks right context),
the later one the first overlap - overlap // 2 (where it lacks left context). All
windows but the last are full; the last one keeps its valid frames.

The model sees `num_frames: int32[B, W]`, the valid encoder frames of every window (0
for windows a row does not have), and derives the kept-frame mask from it and the
overlap (`frame_mask`), so the data side and the model side cannot disagree.

Axis letters: B batch, W windows, T frames per window.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from lalmjax import audio


@dataclasses.dataclass(frozen=True)
class WindowSpec:
  """How audio is cut into encoder windows.

  Attributes:
    frames_per_window: T, encoder frames per window (1500 = 30 s for Whisper).
    overlap: encoder frames shared by consecutive windows (0 = back to back).
  """

  frames_per_window: int = 1500
  overlap: int = 0

  def __post_init__(self):
    if self.frames_per_window < 1:
      raise ValueError(f"frames_per_window={self.frames_per_window} must be >= 1")
    if not 0 <= self.overlap < self.frames_per_window:
      raise ValueError(f"window overlap={self.overlap} frames must be in "
                       f"[0, {self.frames_per_window})")

  @property
  def samples_per_frame(self) -> int:
    return 2 * audio.HOP_LENGTH  # the stride-2 conv: 2 mel hops per encoder frame

  @property
  def window_samples(self) -> int:
    return self.frames_per_window * self.samples_per_frame

  @property
  def hop_samples(self) -> int:
    return (self.frames_per_window - self.overlap) * self.samples_per_frame

  @property
  def window_seconds(self) -> float:
    return self.window_samples / audio.SAMPLE_RATE

  def num_windows(self, num_samples):
    """Windows an utterance of `num_samples` needs (>= 1); int or int array."""
    n = np.asarray(num_samples, np.int64)
    extra = -(-np.maximum(n - self.window_samples, 0) // self.hop_samples)
    out = (1 + extra).astype(np.int32)
    return int(out) if out.ndim == 0 else out

  def max_windows(self, seconds: float) -> int:
    """Windows of the longest utterance of `seconds` (a bucket's static W)."""
    return self.num_windows(int(np.ceil(seconds * audio.SAMPLE_RATE)))

  def window_frames(self, num_samples: int, num_windows: int | None = None) -> np.ndarray:
    """int32[W]: valid encoder frames of each window (0 past the utterance's windows)."""
    from lalmjax.models import lalm  # local: lalm imports this module

    w_all = self.num_windows(num_samples) if num_windows is None else num_windows
    out = np.zeros(w_all, np.int32)
    for w in range(min(self.num_windows(num_samples), w_all)):
      rest = int(num_samples) - w * self.hop_samples
      out[w] = lalm.num_encoder_frames(min(rest, self.window_samples), self.frames_per_window)
    return out

  def kept_frames(self, num_samples) -> int:
    """Encoder frames of the joined sequence: what compression sees (int)."""
    frames = self.window_frames(num_samples)
    return int(np.asarray(frame_mask(frames[None], self.frames_per_window,
                                     self.overlap, xp=np)).sum())

  def cut(self, wav: np.ndarray, num_windows: int | None = None) -> np.ndarray:
    """float32[W, window_samples]: the windows of a waveform, zero-padded."""
    w_all = self.num_windows(len(wav)) if num_windows is None else num_windows
    out = np.zeros((w_all, self.window_samples), np.float32)
    for w in range(min(self.num_windows(len(wav)), w_all)):
      piece = wav[w * self.hop_samples:w * self.hop_samples + self.window_samples]
      out[w, :len(piece)] = piece
    return out


def frame_mask(num_frames, frames_per_window: int, overlap: int, xp=jnp):
  """bool[B, W * T]: which frames of the joined windows are kept.

  Args:
    num_frames: int32[B, W], valid encoder frames per window (0 = no such window).
    frames_per_window: T.
    overlap: frames shared by consecutive windows.
    xp: jnp (inside the model) or np (data side).
  """
  num_frames = xp.asarray(num_frames)
  b, w = num_frames.shape
  t = frames_per_window
  drop_end, drop_start = overlap // 2, overlap - overlap // 2
  windows = xp.sum(num_frames > 0, axis=1)  # [B]
  index = xp.arange(w)[None, :]  # [1, W]
  is_last = index == (windows[:, None] - 1)  # [B, W]
  start = xp.where(index > 0, drop_start, 0)  # [1, W]
  end = xp.where(is_last, num_frames, t - drop_end)  # [B, W]
  end = xp.where(index < windows[:, None], end, 0)
  j = xp.arange(t)[None, None, :]
  mask = (j >= start[..., None]) & (j < end[..., None])  # [B, W, T]
  return mask.reshape(b, w * t)
