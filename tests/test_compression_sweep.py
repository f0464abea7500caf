"""benchmarks/compression_sweep.py's report: the table the issue names, the elastic gaps,
and the rows that trained beside other work (no training here: rows are given)."""

import importlib.util
import os
import types

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _sweep():
  spec = importlib.util.spec_from_file_location(
      "compression_sweep", os.path.join(REPO, "benchmarks", "compression_sweep.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _row(method, k, wer, **extra):
  return {"method": method, "k": k, "audio_tokens_per_s": 50 / k, "wer": wer,
          "train_step_ms": 100.0 * k, "eval_s": 1.0, **extra}


def test_report_table_elastic_gaps_and_busy_rows():
  sweep = _sweep()
  cores = os.cpu_count() or 1
  rows = [_row("unisamp", 2, 84.0, load_after_train=0.1),
          _row("uniavg", 2, 77.0, load_after_train=cores + 3.0),
          _row("uniavg", 1, 76.0, load_after_train=0.1),
          _row("elastic", 2, 80.5, load_after_train=0.1),
          _row("elastic", 1, 75.0)]
  args = types.SimpleNamespace(steps=1000)
  md = sweep._markdown(rows, args, ["/x/compression_sweep_wer_vs_rate.png"], 60.0,
                       {"parameters": 123})
  lines = md.splitlines()
  header = lines.index("| method | k | audio tokens/s | WER | train step ms | eval s |")
  table = lines[header + 2:header + 7]
  # Ordered by method (uniavg first), then k.
  assert [tuple(c.strip() for c in t.split("|")[1:3]) for t in table] == [
      ("uniavg", "1"), ("uniavg", "2"), ("unisamp", "2"), ("elastic", "1"), ("elastic", "2")]
  assert "| uniavg | 2 | 25.0 | 77.00 | 200 | 1.0 |" in table
  assert "| 1 | 76.00 | 75.00 | -1.00 |" in lines  # elastic - fixed at each k
  assert "| 2 | 77.00 | 80.50 | +3.50 |" in lines
  assert "uniavg k=2" in md and "unisamp k=2" not in md.split("inflated")[1].split("\n")[0]
  assert "1 row(s) carry no load record" in md
