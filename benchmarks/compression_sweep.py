"""The paper's Table I at demo scale: WER against LLM audio tokens per second, per method.

    python benchmarks/compression_sweep.py                      # the committed run
    python benchmarks/compression_sweep.py --steps 60 --quick   # a smoke run (minutes)

Every row trains the projector + LoRA of `configs/demo.py` (Whisper tiny.en through pip,
the demo's pretrained and frozen small Qwen2, r16/a32 on every projection: the demo
config says why) on its training set (data/demo_train), from the same cached encoder
frames, for the same steps (the demo's, 1000) with the same seed, then scores greedy
decoding on English ASR (`data/demo/test_asr_en.jsonl`):

- uniavg / unisamp / unseg / stack at k in {1, 2, 3, 4, 6}. At k = 1 every method is
  the identity on the frames (checked in tests/test_compression.py), so k = 1 is trained
  once and listed under each method.
- uniavg-nolora: projector only (no LoRA) at k = 2 and 3, the paper's open question.
- elastic: one projector + LoRA trained with k drawn per step from {1, 2, 3, 4, 6}
  (`model.train_factors`), scored at each k; beside it, its WER gap to the fixed-k
  uniavg model at that k.

Writes benchmarks/results/compression_sweep.md (+ .json) and two PNG plots. Runs live
in --workdir (default runs/sweep); a re-run skips the rows whose scores are there. The
LM stage (configs/demo_lm.py) runs into WORKDIR/lm unless --lm names a finished one
(e.g. runs/demo/lm from `make run`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

METHODS = ("uniavg", "unisamp", "unseg", "stack")
FACTORS = (1, 2, 3, 4, 6)
RESULTS = os.path.join(REPO, "benchmarks", "results")


def _config(method: str, k: int, steps: int, lm: str, cache: str, lora: bool = True,
            train_factors: tuple[int, ...] = ()):
  from configs import demo

  c = demo.get_config(f"method={method},k={k},steps={steps},lora={str(lora).lower()}")
  c.model.llm_path = lm
  c.model.train_factors = train_factors
  c.data.feature_cache = cache  # one cache for every row: the encoder runs once per file
  c.data.test_manifests = ("data/demo/test_asr_en.jsonl",)
  c.checkpoint_every = steps
  return c


def _step_ms(workdir: str) -> float:
  """Median logged step time (ms), the first window (compilation, warm-up) left out."""
  from lalmjax.metric_writer import read_metrics

  rows = read_metrics(os.path.join(workdir, "metrics.jsonl"))
  times = [r["step_time_s"] for r in rows[1:]] or [r["step_time_s"] for r in rows]
  return 1000 * statistics.median(times)


def _run(name: str, config, workdir: str, eval_factors=None) -> list[dict]:
  """Trains (or finds trained) and scores a run; rows cached in WORKDIR/rows.json."""
  from lalmjax import evaluation, trainer

  cached = os.path.join(workdir, "rows.json")
  if os.path.exists(cached):
    with open(cached) as f:
      return json.load(f)
  t0 = time.perf_counter()
  trainer.train(config, workdir)
  train_s = time.perf_counter() - t0
  # 1-minute load average as training ends: above the core count, other processes were
  # competing and this row's step time is inflated (the report lists such rows).
  load = os.getloadavg()[0]
  rows = []
  for k in eval_factors or (config.model.factor,):
    c = config.copy_and_resolve_references()
    c.model.factor = k
    if config.model.train_factors:  # score with the buckets of that k
      from configs import demo

      c.data.buckets = demo.get_config(f"k={k}").data.buckets
    t0 = time.perf_counter()
    scores = evaluation.evaluate(c, workdir)
    rows.append({"method": name, "k": k,
                 "audio_tokens_per_s": scores["llm_audio_tokens_per_second"],
                 "wer": scores["wer"]["overall"], "train_step_ms": _step_ms(workdir),
                 "eval_s": time.perf_counter() - t0, "train_s": train_s,
                 "utterances": scores["num_utterances"], "skipped": scores["num_skipped"],
                 "compilations": scores["compilations"], "load_after_train": load})
    print(f"  {name} k={k}: WER {rows[-1]['wer']:.2f} %", flush=True)
  with open(cached, "w") as f:
    json.dump(rows, f, indent=2)
  return rows


def _machine() -> str:
  try:
    cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
               if line.startswith("model name"))
  except (OSError, StopIteration):
    cpu = platform.processor() or "unknown CPU"
  import jax

  return f"{cpu}, {os.cpu_count()} cores, jax {jax.__version__}, {platform.python_version()}"


def _plots(rows: list[dict], out_prefix: str) -> list[str]:
  """WER against audio tokens/s per method; elastic against fixed-k uniavg by k."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  curves = {  # file suffix: (x field, x label, title, [(method, style, label)])
      "_wer_vs_rate.png": ("audio_tokens_per_s", "LLM audio tokens per second of audio",
                           "WER vs audio-token rate (demo scale)",
                           [(m, "o-", m) for m in METHODS + ("uniavg-nolora",)]),
      "_elastic.png": ("k", "compression factor k",
                       "Elastic-rate model vs fixed-k uniavg models",
                       [("uniavg", "o-", "uniavg (one model per k)"),
                        ("elastic", "s--", "elastic (one model, k drawn per step)")]),
  }
  paths = []
  for suffix, (x, xlabel, title, lines) in curves.items():
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, style, label in lines:
      pts = sorted((r[x], r["wer"]) for r in rows if r["method"] == method)
      if pts:
        ax.plot(*zip(*pts), style, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("WER (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    paths.append(out_prefix + suffix)
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
  return paths


def _load_note(rows: list[dict]) -> str:
  """Which rows trained beside other work (load average above the core count)."""
  limit = (os.cpu_count() or 1) + 0.5
  busy = sorted({f"{r['method']} k={r['k']}" for r in rows
                 if r.get("load_after_train", 0) > limit})
  unknown = sum("load_after_train" not in r for r in rows)
  note = (f"Rows whose training ended with a load average above {limit:g} (other "
          f"processes on the cores; their step ms are inflated): {', '.join(busy)}."
          if busy else f"No row's training ended with a load average above {limit:g}.")
  if unknown:
    note += f" {unknown} row(s) carry no load record (run before it was recorded)."
  return note


def _markdown(rows: list[dict], args, plots: list[str], wall_s: float, lm_info: dict) -> str:
  order = {m: i for i, m in enumerate(METHODS + ("uniavg-nolora", "elastic"))}
  rows = sorted(rows, key=lambda r: (order[r["method"]], r["k"]))
  lines = [
      "# Compression sweep: the paper's Table I at demo scale",
      "",
      f"Command: `python benchmarks/compression_sweep.py {' '.join(sys.argv[1:])}`".rstrip(),
      f"Machine: {_machine()}; sweep wall time {wall_s / 60:.1f} min (rows already in the "
      "workdir are not re-run). " + _load_note(rows),
      "",
      f"Setup: `configs/demo.py` (Whisper tiny.en from pip, frozen; the demo LM "
      f"({lm_info.get('parameters', '?')} parameters, pretrained by configs/demo_lm.py, "
      "frozen); mlp projector + LoRA r16/a32 on every projection trained, on "
      "data/demo_train's 2300 utterances), "
      f"{args.steps} steps of 16 utterances, seed 0, the same cached encoder frames for "
      "every row; WER (%) of greedy decoding on data/demo/test_asr_en.jsonl (60 English "
      "utterances, Whisper English normalizer). k = 1 is one model (no compression is "
      "the same for every method), listed under each. audio tokens/s = 50 / k.",
      "",
      "| method | k | audio tokens/s | WER | train step ms | eval s |",
      "|---|---:|---:|---:|---:|---:|",
  ]
  for r in rows:
    lines.append(f"| {r['method']} | {r['k']} | {r['audio_tokens_per_s']:.1f} | "
                 f"{r['wer']:.2f} | {r['train_step_ms']:.0f} | {r['eval_s']:.1f} |")
  fixed = {r["k"]: r["wer"] for r in rows if r["method"] == "uniavg"}
  elastic = {r["k"]: r["wer"] for r in rows if r["method"] == "elastic"}
  if elastic:
    lines += ["", "Elastic-rate model (one projector + LoRA, k drawn per step from "
              f"{{{', '.join(map(str, FACTORS))}}}) against the fixed-k uniavg model "
              "trained at that k:", "",
              "| k | fixed-k WER | elastic WER | gap (elastic - fixed) |", "|---:|---:|---:|---:|"]
    for k in sorted(elastic):
      if k in fixed:
        lines.append(f"| {k} | {fixed[k]:.2f} | {elastic[k]:.2f} | "
                     f"{elastic[k] - fixed[k]:+.2f} |")
  lines += ["", "Plots: " + ", ".join(f"[{os.path.basename(p)}]({os.path.basename(p)})"
                                      for p in plots), ""]
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", default=os.path.join(REPO, "runs", "sweep"))
  parser.add_argument("--lm", default="", help="a finished demo LM folder (default: "
                      "the LM stage into WORKDIR/lm)")
  parser.add_argument("--steps", type=int, default=0, help="training steps of every row "
                      "(0 = configs/demo.py's)")
  parser.add_argument("--methods", default=",".join(METHODS))
  parser.add_argument("--factors", default=",".join(map(str, FACTORS)))
  parser.add_argument("--no_elastic", action="store_true")
  parser.add_argument("--quick", action="store_true",
                      help="uniavg and unisamp at k = 1, 3 only; results under WORKDIR")
  parser.add_argument("--out", default=os.path.join(RESULTS, "compression_sweep"),
                      help="output prefix (.md, .json, _*.png)")
  args = parser.parse_args()
  logging.basicConfig(level=logging.WARNING)
  logging.getLogger("lalmjax").setLevel(logging.WARNING)
  from configs import demo_lm
  from lalmjax import lm_pretraining

  if not args.steps:
    from configs import demo

    args.steps = demo.get_config().total_steps
  methods = args.methods.split(",")
  factors = [int(k) for k in args.factors.split(",")]
  if args.quick:
    methods, factors = ["uniavg", "unisamp"], [1, 3]
    args.out = os.path.join(args.workdir, "compression_sweep")
  args.workdir = os.path.abspath(args.workdir)  # the feature cache is relative to each run
  os.makedirs(args.workdir, exist_ok=True)
  t_start = time.perf_counter()
  lm = os.path.abspath(args.lm) if args.lm else lm_pretraining.pretrain_lm(
      demo_lm.get_config(), os.path.join(args.workdir, "lm"))
  with open(os.path.join(lm, "pretraining.json")) as f:
    lm_info = json.load(f)
  cache = os.path.join(args.workdir, "features")
  run = lambda name: os.path.join(args.workdir, name)

  rows = []
  if 1 in factors:  # k = 1: the same model for every method
    one = _run("uniavg", _config("uniavg", 1, args.steps, lm, cache), run("k1"))
    rows += [dict(r, method=m) for m in methods for r in one]
  for method in methods:
    for k in factors:
      if k != 1:
        rows += _run(method, _config(method, k, args.steps, lm, cache), run(f"{method}-k{k}"))
  if not args.quick:
    for k in (2, 3):
      rows += _run("uniavg-nolora", _config("uniavg", k, args.steps, lm, cache, lora=False),
                   run(f"uniavg-nolora-k{k}"))
  if not args.no_elastic:
    ks = tuple(factors)
    rows += _run("elastic", _config("uniavg", 2, args.steps, lm, cache, train_factors=ks),
                 run("elastic"), eval_factors=ks)

  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  plots = _plots(rows, args.out)
  wall = time.perf_counter() - t_start
  with open(args.out + ".json", "w") as f:
    json.dump({"rows": rows, "steps": args.steps, "machine": _machine(),
               "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                        capture_output=True, text=True).stdout.strip()},
              f, indent=2)
  md = _markdown(rows, args, plots, wall, lm_info)
  with open(args.out + ".md", "w") as f:
    f.write(md)
  print(md)


if __name__ == "__main__":
  main()
