"""benchmarks/scale_plan.py's planning logic (no TPU: a fake compiler whose memory is a
known function of the batch). The compiles themselves need `jax[tpu]` and run in the
benchmark's own environment, never here."""

import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))
import scale_plan  # noqa: E402

HBM, ARGS, SPARE = 15.75, 2.0, 2.0


class FakeRunner:
  """Temporaries = a + s * batch + c * batch^2 GiB; a compile over HBM is refused."""

  def __init__(self, a, s, c=0.0):
    self.a, self.s, self.c, self.calls = a, s, c, []

  def temp(self, b):
    return self.a + self.s * b + self.c * b * b

  def get(self, p):
    b = p.batch
    self.calls.append(b)
    temp = self.temp(b)
    total = temp + ARGS
    if total > HBM:
      return {"point": {"batch": b}, "temp_gib": temp, "fits": False}
    return {"point": {"batch": b}, "temp_gib": temp, "fits": True, "total_gib": total,
            "spare_gib": HBM - total}


def point(b):
  return scale_plan.Point("v5e:2x4", "train", 6, b, (1, 8, 1), scan=True)


def largest_fitting(run):
  """The batch before the first one that leaves less than SPARE."""
  return next(b for b in range(1, 500) if run.temp(b + 1) + ARGS > HBM - SPARE)


@pytest.mark.parametrize("a,s,c", [
    (1.0, 0.22, 0.0),  # linear: the anchors predict it
    (2.0, 0.15, 0.0012),  # convex: the anchors' line overshoots (as k=6 did)
    (2.5, 0.30, -0.0015),  # concave: the line undershoots
])
def test_verify_finds_the_largest_batch_with_spare(a, s, c):
  run = FakeRunner(a, s, c)
  measured = {b: run.temp(b) for b in scale_plan.ANCHORS["train"]}
  intercept, slope = scale_plan.fit_line(sorted(measured.items()))
  limit = HBM - SPARE - ARGS
  predicted = int((limit - intercept) // slope)
  chosen = scale_plan._verify(run, point, predicted, measured, limit, SPARE)
  assert chosen is not None and chosen["spare_gib"] >= SPARE
  # Within one row of the true largest (a secant from below may stop one short), never over.
  assert largest_fitting(run) - 1 <= chosen["point"]["batch"] <= largest_fitting(run)
  assert len(run.calls) <= 6  # a handful of compiles, not a scan over batches


def test_point_key_round_trips():
  for text in ("v5e:2x4,train,k=3,b=8,mesh=1.8.1,remat=nothing_saveable,chunk=64,scan",
               "v5e:8x8,eval,k=6,b=115,mesh=1.64.1,remat=none,chunk=-,scan"):
    assert scale_plan.Point.parse(text).key == text
  with pytest.raises(ValueError, match="unknown setting"):
    scale_plan.Point.parse("v5e:2x4,train,k=3,b=8,bogus=1")
