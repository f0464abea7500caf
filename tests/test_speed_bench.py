"""benchmarks/speed.py --json: every row has the table's schema (tiny models, no timing
asserted: the numbers depend on the machine and its load)."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_speed_json_rows_have_the_schema():
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "speed.py"),
                        "--smoke", "--json"], capture_output=True, text=True, env=env,
                       cwd=REPO, timeout=600, check=True)
  rows = json.loads(out.stdout)
  assert "| row | ours ms |" in out.stderr  # the markdown table went to stderr
  refs = {r["reference"] for r in rows}
  assert refs == {"pytorch", "k=1", "flops"}
  for r in rows:
    assert {"name", "ours_ms", "reference", "reference_ms", "ratio"} <= set(r), r
    assert isinstance(r["name"], str) and r["ours_ms"] > 0 and r["reference_ms"] > 0
    assert abs(r["ratio"] - r["reference_ms"] / r["ours_ms"]) <= 1e-3 * r["ratio"] + 1e-3
  names = " ".join(r["name"] for r in rows)
  for part in ("matmul", "whisper encoder", "forward", "greedy", "k=1", "k=3"):
    assert part in names
  greedy = [r for r in rows if "greedy" in r["name"]]
  assert all(r["tokens_equal"] == 1.0 for r in greedy)  # tiny float32 model: same tokens
  k3 = [r for r in rows if r["reference"] == "k=1" and "k=3" in r["name"]][0]
  assert k3["flop_ratio"] > 1 and "speedup_over_flop_ratio" in k3
