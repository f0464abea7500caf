"""Run metrics on disk: TensorBoard event files and ``metrics.jsonl`` in the workdir.

Only process 0 writes. Each logged step appends one JSON line (``step`` first), so a
run's curve can be read with nothing but ``json``; the same scalars go to TensorBoard
through tensorboardX (no TensorFlow needed).
"""

from __future__ import annotations

import json
import math
import os


class MetricWriter:
  """Appends scalars per step to ``WORKDIR/metrics.jsonl`` and TensorBoard events.

  Args:
    workdir: the run folder.
    enabled: False on processes other than 0 (they write nothing).
    filename: the JSON-lines file name.
  """

  def __init__(self, workdir: str, enabled: bool = True, filename: str = "metrics.jsonl"):
    self.enabled = enabled
    self.path = os.path.join(workdir, filename)
    self._tb = None
    if enabled:
      os.makedirs(workdir, exist_ok=True)
      from tensorboardX import SummaryWriter  # local: only process 0 needs it

      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, scalars: dict[str, float]):
    if not self.enabled:
      return
    row = {"step": int(step)}
    for k, v in scalars.items():
      v = float(v)
      row[k] = v if math.isfinite(v) else str(v)  # JSON has no NaN/Infinity
      self._tb.add_scalar(k, v, int(step))
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")

  def flush(self):
    if self._tb is not None:
      self._tb.flush()

  def close(self):
    if self._tb is not None:
      self._tb.close()
      self._tb = None


def read_metrics(path: str) -> list[dict]:
  """The rows of a ``metrics.jsonl``; a later row for a step replaces an earlier one (a
  resumed run re-logs the steps after its checkpoint)."""
  by_step = {}
  with open(path) as f:
    for line in f:
      if line.strip():
        row = json.loads(line)
        by_step[row["step"]] = row
  return [by_step[s] for s in sorted(by_step)]
