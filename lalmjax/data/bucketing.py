"""Duration buckets and the batch plan: which utterances form global batch `step`.

A training run compiles once per bucket, so every bucket has a fixed global batch size
and a fixed prompt length (static shapes). Utterances go to the smallest bucket whose
`max_seconds` holds them. The plan of an epoch is a pure function of (durations,
buckets, seed, epoch): shuffle inside each bucket, cut into batches, shuffle the batch
order. Nothing depends on the number of hosts or on what was read before, so a resumed
run needs no replay, and a restart on a different number of hosts reads the same
global batches (each host then takes its own rows of them, `local_rows`).

A bucket's last batch of an epoch is padded with rows of index -1 (empty rows that the
loss ignores) rather than dropped: nothing is lost, and the shape stays static.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)

PAD_INDEX = -1  # a row of a batch that holds no utterance


@dataclasses.dataclass(frozen=True)
class Bucket:
  """One static batch shape.

  Attributes:
    max_seconds: utterances up to this duration (s) land here (if no smaller bucket
      holds them).
    batch_size: global rows per batch (all hosts together).
    max_length: S, the padded prompt length in tokens (audio placeholders + text).
  """

  max_seconds: float
  batch_size: int
  max_length: int

  def validate(self, where: str = "bucket"):
    if not self.max_seconds > 0:
      raise ValueError(f"{where}.max_seconds={self.max_seconds!r} must be > 0")
    if not isinstance(self.batch_size, (int, np.integer)) or self.batch_size < 1:
      raise ValueError(f"{where}.batch_size={self.batch_size!r} must be an int >= 1")
    if not isinstance(self.max_length, (int, np.integer)) or self.max_length < 2:
      raise ValueError(f"{where}.max_length={self.max_length!r} must be an int >= 2")


def parse_buckets(spec: Sequence) -> tuple[Bucket, ...]:
  """Buckets from `Bucket`s, dicts or (max_seconds, batch_size, max_length) triples,
  sorted by max_seconds (two buckets with one max_seconds are an error)."""
  buckets = []
  for i, b in enumerate(spec):
    if isinstance(b, Bucket):
      bucket = b
    elif isinstance(b, dict) or hasattr(b, "keys"):
      bucket = Bucket(float(b["max_seconds"]), int(b["batch_size"]), int(b["max_length"]))
    else:
      if len(b) != 3:
        raise ValueError(f"buckets[{i}]={b!r}: expected (max_seconds, batch_size, max_length)")
      bucket = Bucket(float(b[0]), int(b[1]), int(b[2]))
    bucket.validate(f"buckets[{i}]")
    buckets.append(bucket)
  if not buckets:
    raise ValueError("buckets: at least one bucket is needed")
  buckets.sort(key=lambda b: b.max_seconds)
  seconds = [b.max_seconds for b in buckets]
  if len(set(seconds)) != len(seconds):
    raise ValueError(f"buckets: two buckets share a max_seconds ({seconds})")
  return tuple(buckets)


def assign_buckets(durations: np.ndarray, buckets: Sequence[Bucket]) -> np.ndarray:
  """int32[N]: the bucket of each utterance, or -1 when it is longer than every bucket."""
  limits = np.asarray([b.max_seconds for b in buckets])
  which = np.searchsorted(limits, np.asarray(durations, np.float64), side="left")
  return np.where(which < len(buckets), which, -1).astype(np.int32)


@dataclasses.dataclass(frozen=True)
class Plan:
  """One epoch: `bucket[s]` and `rows[s]` (global indices, PAD_INDEX = empty) per step."""

  bucket: tuple[int, ...]
  rows: tuple[np.ndarray, ...]

  def __len__(self):
    return len(self.bucket)


def steps_per_epoch(bucket_of: np.ndarray, buckets: Sequence[Bucket]) -> int:
  """Batches in one epoch: sum over buckets of ceil(members / batch_size)."""
  counts = np.bincount(bucket_of[bucket_of >= 0], minlength=len(buckets))
  return int(sum(-(-int(c) // b.batch_size) for c, b in zip(counts, buckets)))


def epoch_plan(bucket_of: np.ndarray, buckets: Sequence[Bucket], seed: int, epoch: int,
               shuffle: bool = True) -> Plan:
  """The batches of `epoch`, a pure function of its arguments.

  Args:
    bucket_of: int32[N] from `assign_buckets` (-1: left out).
    buckets: the buckets.
    seed: the run's data seed.
    epoch: 0, 1, ...; each epoch shuffles differently.
    shuffle: False keeps manifest order inside buckets and buckets in order (eval).
  """
  rng = np.random.default_rng([int(seed), int(epoch)])
  batches = []
  for b, bucket in enumerate(buckets):
    members = np.flatnonzero(bucket_of == b)
    if shuffle:
      members = rng.permutation(members)
    for start in range(0, len(members), bucket.batch_size):
      rows = np.full(bucket.batch_size, PAD_INDEX, np.int64)
      chunk = members[start:start + bucket.batch_size]
      rows[:len(chunk)] = chunk
      batches.append((b, rows))
  if shuffle:
    batches = [batches[i] for i in rng.permutation(len(batches))]
  return Plan(tuple(b for b, _ in batches), tuple(r for _, r in batches))


def local_rows(rows: np.ndarray, process_index: int, process_count: int) -> np.ndarray:
  """This host's contiguous share of a global batch's rows (batch % hosts == 0)."""
  if len(rows) % process_count:
    raise ValueError(f"a batch of {len(rows)} rows cannot be split over {process_count} "
                     "processes; make every bucket's batch_size a multiple of it")
  per = len(rows) // process_count
  return rows[process_index * per:(process_index + 1) * per]


class Planner:
  """Global step -> (epoch, bucket, global rows), with epoch plans computed on demand.

  Step s of the run is batch s % steps_per_epoch of epoch s // steps_per_epoch.
  """

  def __init__(self, durations: Sequence[float], buckets: Sequence[Bucket], seed: int,
               shuffle: bool = True, ids: Sequence[str] | None = None):
    self.buckets = tuple(buckets)
    self.seed = int(seed)
    self.shuffle = shuffle
    self.bucket_of = assign_buckets(np.asarray(durations, np.float64), self.buckets)
    self.too_long = np.flatnonzero(self.bucket_of < 0)
    if len(self.too_long):
      names = [ids[i] for i in self.too_long[:5]] if ids is not None else self.too_long[:5]
      log.warning("%d utterance(s) are longer than the largest bucket (%g s) and are left "
                  "out, e.g. %s", len(self.too_long), self.buckets[-1].max_seconds,
                  list(names))
    self.steps_per_epoch = steps_per_epoch(self.bucket_of, self.buckets)
    if self.steps_per_epoch == 0:
      raise ValueError("no utterance fits any bucket: nothing to batch")

  @functools.lru_cache(maxsize=4)
  def plan(self, epoch: int) -> Plan:
    return epoch_plan(self.bucket_of, self.buckets, self.seed, epoch, self.shuffle)

  def batch(self, step: int) -> tuple[int, int, np.ndarray]:
    """(epoch, bucket index, global rows int64[batch_size]) of global step `step`."""
    epoch, within = divmod(int(step), self.steps_per_epoch)
    plan = self.plan(epoch)
    return epoch, plan.bucket[within], plan.rows[within]
