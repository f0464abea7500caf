"""The input pipeline: manifests -> static-shape, device-ready batches, with grain.

    manifest utterances --Planner (bucketing.py)--> global step -> (bucket, rows)
      --this host's rows--> grain MapDataset over steps
      --BatchLoader, in grain threads or worker processes-->
        decode + resample (audio.load_audio), log-mel (numpy) or cached encoder frames,
        prompts with exactly ceil(valid frames / k) <|AUDIO|> placeholders, padding
      --> one batch dict of numpy arrays per step

A batch of bucket b has b.batch_size / process_count rows and prompts of exactly
b.max_length tokens, so a training run compiles once per bucket. Its arrays:

    index           int32[B]         manifest position of each row (-1: empty row)
    mel             float32[B, M, F] log-mel of the encoder window     (no feature cache)
                    float32[B, W, M, F] in buckets longer than the window (W windows)
    frames          float32[B, T, E] cached encoder frames, T = bucket frames (with one)
    num_frames      int32[B]         valid encoder frames (0 for empty rows); int32[B, W]
                                     per window with windowed mel (`lalmjax.windows`)
    input_ids       int32[B, S]      prompts (right-padded with targets, left without)
    attention_mask  bool[B, S]
    loss_mask       bool[B, S]       target tokens + EOS (all False without targets)
    audio_seconds   float32[B]       duration of the audio (0 for empty rows)

and host-side fields: ``step``, ``epoch``, ``bucket`` (ints) and ``skipped`` (a list of
(utterance id, reason) for rows that could not be loaded; they became empty rows).

Rows that cannot be loaded (a missing, corrupt or too-long file, a prompt longer than
its bucket) are logged with their id, counted in ``skipped`` and replaced by empty
rows; nothing else is dropped. The iterator's state is grain's (``get_state`` /
``set_state``): since the batch of a step is a pure function of (seed, step), the state
is the next step, and a resumed run continues at the same example.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
from typing import Any, Sequence

import grain
import numpy as np

from lalmjax import audio, compression, prompts
from lalmjax import windows as windows_lib
from lalmjax.data import bucketing
from lalmjax.data.bucketing import PAD_INDEX, Bucket

log = logging.getLogger(__name__)

_BUILDER_LOCK = threading.Lock()
MODEL_KEYS = ("mel", "frames", "num_frames", "input_ids", "attention_mask", "loss_mask")


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  """How manifests become batches.

  Attributes:
    buckets: static batch shapes, by duration (see `bucketing.Bucket`).
    seed: the data order's seed (order = f(seed, epoch)).
    shuffle: shuffle within buckets and the batch order (False for evaluation).
    with_targets: training prompts (target + EOS, right-padded, loss mask) or generation
      prompts (ending at the assistant header, left-padded, no loss mask).
    num_threads: grain reader threads per process (decoding releases the GIL).
    num_workers: grain worker processes (0: threads in this process only). Workers
      need a real script file and, with absl, parsed flags.
    prefetch: batches read ahead per thread / worker.
    max_seconds: audio longer than this at load time is skipped (None: its bucket's
      max_seconds; audio longer than the encoder window is cut into windows).
    max_audio_tokens: an utterance needing more audio tokens is skipped and counted
      (0 = no cap).
    system_prompt: the chat system turn.
    factors: elastic rate: each step's compression factor k is drawn from these, a
      function of (seed, step) (`step_factor`), and the step's prompts hold
      ceil(frames / k) audio tokens, padded to `prompt_length(bucket, k)`; () = the
      model's factor (`AudioSpec.factor`) at every step.
  """

  buckets: tuple[Bucket, ...]
  seed: int = 0
  shuffle: bool = True
  with_targets: bool = True
  num_threads: int = 2
  num_workers: int = 0
  prefetch: int = 2
  max_seconds: float | None = None
  max_audio_tokens: int = 0
  system_prompt: str = prompts.DEFAULT_SYSTEM_PROMPT
  factors: tuple[int, ...] = ()

  def __post_init__(self):
    object.__setattr__(self, "buckets", bucketing.parse_buckets(self.buckets))
    object.__setattr__(self, "factors", tuple(int(k) for k in self.factors))
    if any(k < 1 for k in self.factors):
      raise ValueError(f"PipelineConfig.factors={self.factors}: expected ints >= 1")
    for name in ("num_threads", "prefetch"):
      if getattr(self, name) < 1:
        raise ValueError(f"PipelineConfig.{name}={getattr(self, name)} must be >= 1")
    if self.num_workers < 0:
      raise ValueError(f"PipelineConfig.num_workers={self.num_workers} must be >= 0")


@dataclasses.dataclass(frozen=True)
class AudioSpec:
  """What the loader needs of the model: mel bins, windows and compression factor."""

  num_mel_bins: int
  max_source_positions: int  # T: encoder frames per window (1500 = 30 s)
  factor: int  # compression factor k
  window_overlap: int = 0  # encoder frames shared by consecutive windows

  @classmethod
  def from_lalm(cls, config, factor: int | None = None) -> "AudioSpec":
    return cls(config.encoder.num_mel_bins, config.encoder_window,
               config.factor if factor is None else factor, config.window_overlap)

  @property
  def windows(self) -> windows_lib.WindowSpec:
    return windows_lib.WindowSpec(self.max_source_positions, self.window_overlap)

  @property
  def window_samples(self) -> int:
    return self.windows.window_samples

  @property
  def window_seconds(self) -> float:
    return self.windows.window_seconds

  def bucket_windows(self, bucket: Bucket) -> int:
    """W of a bucket: windows of its longest utterance (1 up to the encoder window)."""
    return self.windows.max_windows(bucket.max_seconds)

  def bucket_frames(self, bucket: Bucket) -> int:
    """T of a bucket's cached-frame arrays: the kept frames of its longest utterance."""
    return self.windows.kept_frames(int(math.ceil(bucket.max_seconds * audio.SAMPLE_RATE)))

  def prompt_length(self, bucket: Bucket, factor: int) -> int:
    """Prompt tokens of `bucket`'s batches at compression `factor`.

    `bucket.max_length` is the length at the model's own factor; at another k the
    audio part of the longest utterance, ceil(T / k), replaces ceil(T / self.factor),
    rounded up to a multiple of 8 (so an elastic run compiles once per bucket and k).
    """
    if factor == self.factor:
      return bucket.max_length
    t = self.bucket_frames(bucket)
    n = bucket.max_length - int(compression.num_output_tokens(t, self.factor)) + int(
        compression.num_output_tokens(t, factor))
    return -(-n // 8) * 8


def step_factor(seed: int, step: int, factors: Sequence[int]) -> int:
  """The compression factor of training step `step` of an elastic-rate run: uniform
  over `factors`, a pure function of (seed, step), so a resumed run draws the same."""
  rng = np.random.default_rng([int(seed), int(step), 0xE1A57])
  return int(factors[int(rng.integers(len(factors)))])


class _StepSource:
  """grain data source: element `step` = this host's rows of global batch `step`."""

  def __init__(self, planner: bucketing.Planner, num_steps: int, start: int,
               process_index: int, process_count: int):
    self.planner, self.num_steps, self.start = planner, num_steps, start
    self.process_index, self.process_count = process_index, process_count

  def __len__(self):
    return self.num_steps

  def __getitem__(self, i):
    step = self.start + int(i)
    epoch, bucket, rows = self.planner.batch(step)
    rows = bucketing.local_rows(rows, self.process_index, self.process_count)
    return {"step": step, "epoch": epoch, "bucket": bucket, "rows": rows}


class BatchLoader(grain.transforms.Map):
  """Loads the rows of one step into a batch (runs in grain threads or workers).

  Picklable: the tokenizer is loaded lazily, once per process.
  """

  def __init__(self, utterances: Sequence, config: PipelineConfig, spec: AudioSpec,
               tokenizer_path: str, feature_cache=None):
    self.utterances = list(utterances)
    self.config = config
    self.spec = spec
    self.tokenizer_path = tokenizer_path
    self.feature_cache = feature_cache
    self._builder = None

  def __getstate__(self):
    state = dict(self.__dict__)
    state["_builder"] = None
    return state

  @property
  def builder(self) -> prompts.PromptBuilder:
    # Reader threads ask at once; transformers' lazy imports are not thread-safe.
    with _BUILDER_LOCK:
      if self._builder is None:
        self._builder = prompts.PromptBuilder(prompts.load_tokenizer(self.tokenizer_path),
                                              system_prompt=self.config.system_prompt)
    return self._builder

  def _load_row(self, utt, bucket: Bucket, factor: int, max_length: int):
    """(audio array, encoder frames, seconds, prompt) of one utterance at compression
    `factor`, its prompt at most `max_length` tokens.

    The audio array is the waveform (or the cached frames); encoder frames are the
    valid frames per window, int32[W] (or the kept count, with cached frames).
    """
    max_seconds = min(self.config.max_seconds or bucket.max_seconds, bucket.max_seconds)
    if self.feature_cache is not None:
      frames = self.feature_cache.get(utt)
      if frames is None:
        raise ValueError(f"{utt.id}: not in the feature cache {self.feature_cache.dir}")
      t = self.spec.bucket_frames(bucket)
      if frames.shape[0] > t:
        raise ValueError(f"{utt.id}: {frames.shape[0]} cached frames, more than the "
                         f"bucket's {t}")
      data, num_frames, kept = frames, frames.shape[0], frames.shape[0]
      seconds = float(utt.duration)
    else:
      wav = audio.load_audio(utt.audio, max_seconds=max_seconds)
      data = wav
      num_frames = self.spec.windows.window_frames(len(wav), self.spec.bucket_windows(bucket))
      kept = self.spec.windows.kept_frames(len(wav))
      seconds = len(wav) / audio.SAMPLE_RATE
    n_audio = int(compression.num_output_tokens(kept, factor))
    if self.config.max_audio_tokens and n_audio > self.config.max_audio_tokens:
      raise ValueError(f"{utt.id}: {n_audio} audio tokens, more than max_audio_tokens="
                       f"{self.config.max_audio_tokens}")
    target = utt.target() if self.config.with_targets else None
    prompt = self.builder.encode(utt.task, n_audio, target,
                                 prompts.language_name(utt.source_lang),
                                 prompts.language_name(utt.target_lang))
    if len(prompt.input_ids) > max_length:
      raise ValueError(f"{utt.id}: prompt of {len(prompt.input_ids)} tokens is longer "
                       f"than the bucket's max_length {max_length} (at k={factor})")
    return data, num_frames, seconds, prompt

  def map(self, element: dict) -> dict[str, Any]:
    bucket = self.config.buckets[element["bucket"]]
    rows = element["rows"]
    factor = (step_factor(self.config.seed, element["step"], self.config.factors)
              if self.config.factors else self.spec.factor)
    max_length = self.spec.prompt_length(bucket, factor)
    empty = self.builder.encode("asr", 0, None)
    skipped, datas, prompts_, num_frames, seconds, index = [], [], [], [], [], []
    for row in rows:
      loaded = None
      if row != PAD_INDEX:
        utt = self.utterances[row]
        try:
          loaded = self._load_row(utt, bucket, factor, max_length)
        except (OSError, ValueError) as e:  # AudioError is a ValueError
          log.warning("skipping utterance %s: %s", utt.id, e)
          skipped.append((utt.id, str(e)))
      if loaded is None:
        datas.append(None)
        prompts_.append(empty)
        num_frames.append(0 if self.feature_cache is not None
                          else np.zeros(self.spec.bucket_windows(bucket), np.int32))
        seconds.append(0.0)
        index.append(PAD_INDEX)
      else:
        datas.append(loaded[0])
        num_frames.append(loaded[1])
        seconds.append(loaded[2])
        prompts_.append(loaded[3])
        index.append(int(row))

    side = "right" if self.config.with_targets else "left"
    batch = prompts.pad_prompts(prompts_, self.builder.pad_id, length=max_length, side=side)
    b = len(rows)
    if self.feature_cache is not None:
      t = self.spec.bucket_frames(bucket)
      frames = np.zeros((b, t, self.feature_cache.width), np.float32)
      for i, f in enumerate(datas):
        if f is not None:
          frames[i, :len(f)] = f
      batch["frames"] = frames
    else:
      w_all = self.spec.bucket_windows(bucket)
      wav = np.zeros((b, w_all, self.spec.window_samples), np.float32)
      for i, w in enumerate(datas):
        if w is not None:
          wav[i] = self.spec.windows.cut(w, w_all)
      mel = audio.log_mel_spectrogram_np(wav.reshape(b * w_all, -1), self.spec.num_mel_bins)
      mel = mel[:, :, :2 * self.spec.max_source_positions]
      # One window: [B, M, F] and num_frames [B]; long-form buckets: [B, W, M, F], [B, W].
      batch["mel"] = mel if w_all == 1 else mel.reshape((b, w_all) + mel.shape[1:])
      num_frames = np.stack(num_frames)
      num_frames = num_frames[:, 0] if w_all == 1 else num_frames
    batch.update(
        index=np.asarray(index, np.int32),
        num_frames=np.asarray(num_frames, np.int32),
        audio_seconds=np.asarray(seconds, np.float32),
        step=element["step"], epoch=element["epoch"], bucket=element["bucket"],
        factor=factor, skipped=skipped)
    return batch


class InputPipeline:
  """Batches of a manifest for a run: `iterator(start_step)`, `steps_per_epoch`.

  Args:
    utterances: manifest `Utterance`s (all hosts pass the same list).
    config: the pipeline settings.
    spec: the model's audio settings (`AudioSpec.from_lalm`).
    tokenizer_path: a local tokenizer folder (`prompts.load_tokenizer`).
    feature_cache: a `features.FeatureCache` already filled, or None to decode audio.
    num_steps: steps to produce (None: one epoch).
    process_index, process_count: this host among all (default: jax's).
  """

  def __init__(self, utterances: Sequence, config: PipelineConfig, spec: AudioSpec,
               tokenizer_path: str, *, feature_cache=None, num_steps: int | None = None,
               process_index: int | None = None, process_count: int | None = None):
    if process_index is None or process_count is None:
      import jax  # local: workers never need it

      process_index, process_count = jax.process_index(), jax.process_count()
    for i, b in enumerate(config.buckets):
      if b.batch_size % process_count:
        raise ValueError(f"buckets[{i}].batch_size={b.batch_size} is not divisible by the "
                         f"{process_count} processes")
    self.utterances = list(utterances)
    self.config, self.spec = config, spec
    self.process_index, self.process_count = process_index, process_count
    self.planner = bucketing.Planner([u.duration for u in self.utterances], config.buckets,
                                     config.seed, config.shuffle,
                                     ids=[u.id for u in self.utterances])
    self.steps_per_epoch = self.planner.steps_per_epoch
    self.num_steps = self.steps_per_epoch if num_steps is None else int(num_steps)
    self.loader = BatchLoader(self.utterances, config, spec, tokenizer_path, feature_cache)

  @property
  def left_out(self) -> list[str]:
    """Ids of utterances longer than the largest bucket (never batched)."""
    return [self.utterances[i].id for i in self.planner.too_long]

  def dataset(self) -> grain.IterDataset:
    """The grain dataset of steps 0 .. num_steps-1."""
    source = _StepSource(self.planner, self.num_steps, 0, self.process_index,
                         self.process_count)
    ds = grain.MapDataset.source(source).map(self.loader)
    ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=self.config.num_threads,
                                              prefetch_buffer_size=self.config.prefetch))
    if self.config.num_workers > 0:
      from absl import flags  # local: grain's workers read absl flags

      if not flags.FLAGS.is_parsed():  # a script not run under absl.app (tests, notebooks)
        flags.FLAGS.mark_as_parsed()
      ds = ds.mp_prefetch(grain.MultiprocessingOptions(
          num_workers=self.config.num_workers, per_worker_buffer_size=self.config.prefetch))
    return ds

  def iterator(self, state: dict | None = None):
    """A grain iterator; `state` from an earlier iterator's `get_state()` resumes it."""
    it = iter(self.dataset())
    if state is not None:
      it.set_state(state)
    return it

  def __iter__(self):
    return self.iterator()


def model_inputs(batch: dict) -> dict[str, np.ndarray]:
  """The arrays of a batch the model step takes (drops ids, counters and metadata)."""
  return {k: batch[k] for k in MODEL_KEYS if k in batch}
