"""Per-chip batch plan for the paper model on real TPU topologies, compiled on a CPU host.

The paper configs (`configs/paper_asr.py`: Whisper-large-v3 encoder + Qwen2-7B, LoRA r16
alpha 32 on q_proj,k_proj, bf16, uniavg) are compiled ahead of time for TPU topologies,
as MaxText's `train_compile.py` does: libtpu compiles for chips this machine does not
have, and its compiler reports memory per chip (and refuses a program that does not fit).
Everything is abstract: `jax.eval_shape` for the variables, `jax.ShapeDtypeStruct` with
`NamedSharding`s for the inputs; no weight is ever allocated.

The steps compiled are the library's own:
  train  `training.make_train_step` jitted as `trainer.train` jits it (state shardings
         from `trainer.train_state_shardings`, donated state), on one 30 s bucket.
  eval   `generation.generate_lalm` as `evaluation.evaluate` calls it (encoder, prefill,
         KV cache and the greedy decode loop of `eval.max_new_tokens`).

Setup, once: a TPU venv outside the package requirements (never in setup.py or CI):

    python -m venv --system-site-packages /work/.venv-tpu    # or .venv-tpu (git-ignored)
    /work/.venv-tpu/bin/pip install "jax[tpu]==0.10.2"       # brings libtpu
    # without --system-site-packages also: flax optax ml-collections chex, and
    # `pip install -e . --no-deps` (this script also puts the repository on sys.path)

Run:

    /work/.venv-tpu/bin/python benchmarks/scale_plan.py            # the whole plan
    /work/.venv-tpu/bin/python benchmarks/scale_plan.py --quick    # v5e:2x4 train only
    /work/.venv-tpu/bin/python benchmarks/scale_plan.py --point \
        v5e:2x4,train,k=3,b=8,mesh=1.8.1,remat=nothing_saveable,chunk=256

Two runs at once need `ALLOW_MULTIPLE_LIBTPU_LOAD=1` (libtpu otherwise holds a lockfile);
the cache is merged on every write.

While others edit the tree, compile a snapshot of a commit instead (`--src`):

    mkdir -p /tmp/src && git archive HEAD lalmjax configs | tar -x -C /tmp/src \
        && git rev-parse --short HEAD > /tmp/src/.source

`SCALE_PLAN_HLO_DIR=DIR` saves each compiled program's scheduled HLO; `--peak FILE` then
lists what is live at its peak (the compiler's refusal names only the total).

Each compile of the 7B step takes minutes on a small CPU host, so the plan does not
scan batches: for each topology and step it compiles the anchor batches (`ANCHORS`),
fits per-chip memory as linear in the batch (temporaries grow with the activations, the
arguments with the weights' shards), predicts the largest batch that leaves
`--spare_gib` free, and verifies it, bracketing the answer with a few more compiles when
the line was off (`_verify`: a secant through the compiles nearest the limit, at most
five compiles). The compiler's memory is not always monotonic in the batch (a layout
choice can cost 1-3 GiB at one batch and not the next), so the answer is the largest
batch verified, not a proof that none above fits. Results are cached in
`benchmarks/results/scale_plan_cache.json`, keyed by every setting and the library's
commit, so a re-run compiles only what is new;
`--no_compile` reports from the cache alone. Writes `benchmarks/results/scale_plan.md`
and, with `--json`, the records.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
import types

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = REPO  # the library compiled: this checkout, or --src (set before any import of it)

RESULTS = os.path.join(REPO, "benchmarks", "results")
CACHE = os.path.join(RESULTS, "scale_plan_cache.json")
GIB = 2 ** 30
HLO_DIR = os.environ.get("SCALE_PLAN_HLO_DIR", "")  # save each compiled HLO here if set
HBM_GIB = {"v5e": 15.75}  # usable HBM per chip, as the TPU compiler reports it
STEPS = ("train", "eval")
FACTORS = (1, 2, 3, 4, 6)

# Ids the audio markers get in Qwen2-7B's tokenizer (`prompts.load_tokenizer` appends
# them after <|im_end|> = 151645); the embedding has 152064 rows, so nothing grows.
AUDIO_MARKERS = {"<|audio_bos|>": 151646, "<|AUDIO|>": 151647, "<|audio_eos|>": 151648}


@dataclasses.dataclass(frozen=True)
class Point:
  """One compile: a topology, a step and every setting that changes its memory."""

  topology: str  # e.g. "v5e:2x4"
  step: str  # "train" | "eval"
  k: int  # compression factor
  batch: int  # 30 s utterances per chip
  mesh: tuple[int, int, int]  # (data, fsdp, tensor)
  remat: str = "nothing_saveable"  # model.remat_policy
  vocab_chunk: int = 256  # loss.vocab_chunk (train only; 0 = full logits)
  encoder_remat: bool = False  # model.encoder_remat
  attention: str = ""  # model.attention when the library has it ("" = its default)
  accum: int = 1  # optim.grad_accum_steps (train): the batch runs as this many micro-batches
  scan: bool = False  # model.scan_layers: encoder and LLM blocks under nn.scan

  @property
  def key(self) -> str:
    mesh = ".".join(map(str, self.mesh))
    key = (f"{self.topology},{self.step},k={self.k},b={self.batch},mesh={mesh},"
           f"remat={self.remat},chunk={self.vocab_chunk if self.step == 'train' else '-'}")
    if self.encoder_remat:
      key += ",enc_remat"
    if self.attention:
      key += f",attention={self.attention}"
    if self.accum > 1:
      key += f",accum={self.accum}"
    if self.scan:
      key += ",scan"
    return key

  @classmethod
  def parse(cls, text: str) -> "Point":
    """'v5e:2x4,train,k=3,b=8,mesh=1.8.1,remat=nothing_saveable,chunk=256[,enc_remat]'."""
    topology, step, *items = text.split(",")
    kw = {}
    for item in items:
      name, _, value = item.partition("=")
      if name == "k":
        kw["k"] = int(value)
      elif name == "b":
        kw["batch"] = int(value)
      elif name == "mesh":
        kw["mesh"] = tuple(int(x) for x in value.split("."))
      elif name == "remat":
        kw["remat"] = value
      elif name == "chunk":
        kw["vocab_chunk"] = 0 if value == "-" else int(value)
      elif name == "enc_remat":
        kw["encoder_remat"] = True
      elif name == "attention":
        kw["attention"] = value
      elif name == "accum":
        kw["accum"] = int(value)
      elif name == "scan":
        kw["scan"] = True
      else:
        raise ValueError(f"--point: unknown setting {item!r}")
    return cls(topology, step, **kw)


def num_chips(topology: str) -> int:
  return math.prod(int(x) for x in topology.split(":")[1].split("x"))


def hbm_gib(topology: str) -> float:
  return HBM_GIB[topology.split(":")[0]]


# ---------------------------------------------------------------------------------------
# One compile.


def paper_config(p: Point):
  """configs/paper_asr.py at this point's settings, one 30 s bucket of the global batch."""
  from configs import paper_asr

  c = paper_asr.get_config(f"method=uniavg,k={p.k},remat={p.remat},"
                           f"mesh={'.'.join(map(str, p.mesh))}")
  length = c.data.buckets[-1][2]  # the 30 s bucket's prompt length
  c.data.buckets = ((30.0, p.batch * num_chips(p.topology), length),)
  c.loss.vocab_chunk = p.vocab_chunk
  c.model.encoder_remat = p.encoder_remat
  c.optim.grad_accum_steps = p.accum
  if p.scan:
    c.model.scan_layers = True  # fails loudly on a library without the field
  if p.attention:
    c.model.attention = p.attention  # fails loudly on a library without the field
  return c


def _stub_builder():
  """What `experiment.lalm_config` reads of a PromptBuilder, for Qwen2-7B's tokenizer."""
  vocab = dict(AUDIO_MARKERS)
  return types.SimpleNamespace(vocab_size=max(vocab.values()) + 1,
                               audio_token_id=vocab["<|AUDIO|>"],
                               tokenizer=types.SimpleNamespace(get_vocab=lambda: vocab))


def _abstract(tree, shardings):
  import jax

  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)


def compile_point(p: Point) -> dict:
  """Compiles `p` for its topology; memory per chip, flops, compile seconds (or the
  compiler's refusal)."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import numpy as np
  from jax.experimental import topologies
  from jax.sharding import Mesh, NamedSharding

  from configs import base
  from lalmjax import experiment, generation, sharding, trainer, training
  from lalmjax.models import lalm

  config = paper_config(p)
  chips = num_chips(p.topology)
  base.validate(config, num_devices=chips, check_files=False)
  topo = topologies.get_topology_desc(topology_name=p.topology, platform="tpu")
  devices = np.asarray(topo.devices)
  mesh = Mesh(devices.reshape(sharding.mesh_shape(config.mesh_shape, devices.size)),
              sharding.MESH_AXES)

  m = config.model
  cfg = experiment.lalm_config(config, _stub_builder())
  module = lalm.LALM(cfg, dtype=experiment.DTYPES[m.dtype],
                     param_dtype=experiment.DTYPES[m.param_dtype],
                     encoder_remat=m.encoder_remat)
  abstract, specs = experiment.variable_specs(module)
  shardings = sharding.logical_to_mesh_sharding(specs, mesh)
  model = experiment.Model(module, nn.unbox(abstract), shardings, specs, _stub_builder(),
                           "", {})
  patterns = experiment.trainable_patterns(config)
  trainable, frozen = training.partition(model.variables, patterns)

  _, batch_size, length = config.data.buckets[0]
  batch_sh = experiment.batch_sharding(mesh)
  b_spec = batch_sh.spec
  row = lambda shape, dtype: jax.ShapeDtypeStruct(
      shape, dtype, sharding=NamedSharding(mesh, jax.sharding.PartitionSpec(
          *(tuple(b_spec) + (None,) * (len(shape) - 1)))))
  batch = {"mel": row((batch_size, cfg.encoder.num_mel_bins, cfg.encoder.num_mel_frames),
                      jnp.float32),
           "num_frames": row((batch_size,), jnp.int32),
           "input_ids": row((batch_size, length), jnp.int32),
           "attention_mask": row((batch_size, length), jnp.bool_)}

  if p.step == "train":
    batch["loss_mask"] = row((batch_size, length), jnp.bool_)
    tx = training.make_optimizer(config.optim, config.total_steps)
    _, frozen_sh, state_sh = trainer.train_state_shardings(model, patterns, tx, mesh)
    state = _abstract(jax.eval_shape(lambda t: training.init_train_state(t, tx), trainable),
                      state_sh)
    step_fn = training.make_train_step(
        module, tx, grad_accum_steps=config.optim.grad_accum_steps,
        vocab_chunk=config.loss.vocab_chunk, seed=config.seed,
        lr_schedule=training.learning_rate_schedule(config.optim, config.total_steps))
    jitted = jax.jit(step_fn, in_shardings=(state_sh, frozen_sh, batch_sh),
                     out_shardings=(state_sh, sharding.replicated(mesh)), donate_argnums=0)
    args = (state, _abstract(frozen, frozen_sh), batch)
  else:
    decode = generation.DecodeConfig(beam_size=config.eval.beam_size,
                                     length_penalty=float(config.eval.length_penalty),
                                     buffer_size=config.eval.max_new_tokens)
    max_new = np.asarray(config.eval.max_new_tokens, np.int32)
    eos_ids = np.asarray([151645, 151643], np.int32)  # <|im_end|>, <|endoftext|>

    def eval_step(variables, inputs):
      return generation.generate_lalm(module, variables, inputs, decode, max_new, eos_ids,
                                      151643)

    jitted = jax.jit(eval_step, in_shardings=(shardings, batch_sh))
    args = (_abstract(model.variables, shardings), batch)

  start = time.perf_counter()
  record = {"key": p.key, "point": dataclasses.asdict(p), "chips": chips,
            "global_batch": batch_size, "prompt_length": length,
            "audio_tokens": -(-1500 // p.k), "hbm_gib": hbm_gib(p.topology),
            # before model.attention existed, both models called jax.nn's (xla) attention
            "attention_used": getattr(cfg.llm, "attention", "xla"),
            "jax": jax.__version__, "commit": _git_commit(), "host": _host()}
  try:
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.LOGICAL_AXIS_RULES):
      compiled = jitted.lower(*args).compile()
  except Exception as e:  # pylint: disable=broad-except
    record.update(fits=False, compile_s=round(time.perf_counter() - start, 1),
                  error=str(e)[:3000], **_parse_oom(str(e)))
    return record
  record["compile_s"] = round(time.perf_counter() - start, 1)
  if HLO_DIR:  # the optimized, scheduled HLO, for `--peak` (what is live at the peak)
    os.makedirs(HLO_DIR, exist_ok=True)
    name = _file_name(cache_key(p.key, record["commit"])) + ".hlo.txt.gz"
    with gzip.open(os.path.join(HLO_DIR, name), "wt") as f:
      f.write(compiled.as_text())
  mem = compiled.memory_analysis()
  sizes = {name: getattr(mem, f"{name}_size_in_bytes") / GIB
           for name in ("argument", "output", "temp", "alias", "generated_code")}
  total = sizes["argument"] + sizes["output"] - sizes["alias"] + sizes["temp"]
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
  record.update(fits=True, **{f"{k}_gib": round(v, 3) for k, v in sizes.items()},
                total_gib=round(total, 3), spare_gib=round(hbm_gib(p.topology) - total, 3),
                tflops_per_chip=round(flops / 1e12, 2),
                tflops_per_step=round(flops * chips / 1e12, 1))
  return record


def _file_name(key: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.=-]+", "_", key)


def _parse_oom(message: str) -> dict:
  """The sizes a RESOURCE_EXHAUSTED message names (GiB), when it names them."""
  out = {}
  found = re.search(r"HLO temporaries \(([\d.]+)([GM])\) exceeds available HBM \(([\d.]+)G",
                    message)
  if found:
    scale = 1 if found.group(2) == "G" else 1 / 1024
    out.update(temp_gib=float(found.group(1)) * scale, hbm_reported_gib=float(found.group(3)))
  found = re.search(r"Used ([\d.]+)([GM]) of ([\d.]+)G hbm", message)
  if found:
    scale = 1 if found.group(2) == "G" else 1 / 1024
    out.update(total_gib=float(found.group(1)) * scale, hbm_reported_gib=float(found.group(3)))
  return out


def _git_commit() -> str:
  """The library's commit; "+dirty" when the checkout's lalmjax/ or configs/ differ from
  it. A --src snapshot names its commit in SRC/.source (`git archive` keeps no .git)."""
  marker = os.path.join(SRC, ".source")
  if os.path.exists(marker):
    return open(marker).read().strip()
  git = lambda *a: subprocess.run(["git", "-C", SRC, *a], capture_output=True, text=True)
  head = git("rev-parse", "--short", "HEAD")
  if head.returncode:
    return "unknown"
  dirty = git("diff", "--quiet", "HEAD", "--", "lalmjax", "configs").returncode
  return head.stdout.strip() + ("+dirty" if dirty else "")


def _host() -> str:
  return f"{platform.node()} ({os.cpu_count()} CPUs, {platform.processor() or platform.machine()})"


# ---------------------------------------------------------------------------------------
# What is live at the peak: a liveness sweep over the scheduled HLO a compile saved.

_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "bf16": 2, "f16": 2,
                "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8}
_ARRAY = re.compile(r"\b(pred|[suf]\d+|bf16)\[([\d,]*)\]")
_INSTR = re.compile(r"^\s*(?:ROOT )?%?([\w.-]+) = (.+?) ([\w-]+)\((.*)$")
_ALIASES = ("get-tuple-element", "bitcast", "tuple", "parameter", "constant",
            "optimization-barrier", "copy-start", "copy-done")


def _bytes(shape: str) -> int:
  return sum(_DTYPE_BYTES.get(t, 4) * math.prod(int(d) for d in dims.split(",") if d)
             for t, dims in _ARRAY.findall(shape))


def _computations(text: str) -> dict[str, list[tuple]]:
  comps, name = {}, None
  for line in text.splitlines():
    if not line.startswith(" ") and "{" in line and ("%" in line or "ENTRY" in line):
      name = "ENTRY" if line.startswith("ENTRY") else line.split()[0].lstrip("%")
      comps[name] = []
    elif name and (m := _INSTR.match(line)):
      out, op, rest = m.group(1), m.group(3), m.group(4)
      called = re.findall(r"body=%?([\w.-]+)", rest)
      source = re.search(r'op_name="([^"]+)"', rest)
      comps[name].append((out, _bytes(m.group(2)) if not m.group(2).startswith("(") or
                          op not in _ALIASES else 0, op,
                          re.findall(r"%([\w.-]+)", rest.split("), ")[0]), called,
                          source.group(1) if source else ""))
  return comps


def peak_report(hlo_path: str, top: int = 20) -> str:
  """The largest buffers live at the entry computation's peak (parameters excluded;
  a while loop counts its body's own peak while it runs)."""
  opener = gzip.open if hlo_path.endswith(".gz") else open
  with opener(hlo_path, "rt") as f:
    comps = _computations(f.read())

  def sweep(name):
    instrs = comps[name]
    index = {out: i for i, (out, *_) in enumerate(instrs)}
    last = {}
    for i, (out, _, op, operands, _, _) in enumerate(instrs):
      for o in operands:
        if o in index:
          last[o] = i
    live, peak, at = 0, 0, []
    ends = {}
    for i, (out, size, op, operands, called, src) in enumerate(instrs):
      extra = max((sweep(c)[0] for c in called if c in comps), default=0)
      if op not in _ALIASES:
        live += size
        ends.setdefault(last.get(out, i), []).append((out, size, op, src))
      if live + extra > peak:
        peak = live + extra
        at = [b for j, bs in ends.items() if j >= i for b in bs] + (
            [("(while body peak)", extra, "while", called[0])] if extra else [])
      for out_, size_, *_ in ends.pop(i, []):
        live -= size_
    return peak, at

  peak, at = sweep("ENTRY")
  lines = [f"peak of the entry computation: {peak / GIB:.2f} GiB (parameters excluded)"]
  for out, size, op, src in sorted(at, key=lambda b: -b[1])[:top]:
    lines.append(f"  {size / GIB:7.3f} GiB  {op:22s} {out:28s} {src[-110:]}")
  return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# The cache and the plan.


def cache_key(key: str, commit: str) -> str:
  """A compile is reused only for the same settings and the same library."""
  return f"{key}@{commit}"


def load_cache(path: str) -> dict[str, dict]:
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return {cache_key(r["key"], r["commit"]): r for r in json.load(f)}


def save_cache(path: str, cache: dict[str, dict]):
  """Writes the cache merged with what is on disk (another run may have added to it)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  cache.update({k: v for k, v in load_cache(path).items() if k not in cache})
  tmp = f"{path}.{os.getpid()}.tmp"
  with open(tmp, "w") as f:
    json.dump(sorted(cache.values(), key=lambda r: (r["key"], r["commit"])), f, indent=1)
  os.replace(tmp, path)


class Runner:
  """Compiles points not in the cache (unless `dry`), saving after each one."""

  def __init__(self, cache_path: str, dry: bool = False):
    self.path, self.dry = cache_path, dry
    self.cache = load_cache(cache_path)

  def get(self, p: Point) -> dict | None:
    key = cache_key(p.key, _git_commit())
    if key in self.cache or self.dry:
      return self.cache.get(key)
    print(f"compiling {p.key} ...", flush=True)
    r = compile_point(p)
    self.cache[key] = r
    save_cache(self.path, self.cache)
    print(f"  {_summary(r)}", flush=True)
    return r


def _summary(r: dict) -> str:
  if r["fits"]:
    return (f"args {r['argument_gib']:.2f} + temp {r['temp_gib']:.2f} = {r['total_gib']:.2f} "
            f"GiB, spare {r['spare_gib']:.2f}, {r['tflops_per_step']} TFLOP/step, "
            f"{r['compile_s']:.0f} s")
  return (f"does not fit: {r.get('temp_gib', '?')} GiB temporaries "
          f"({r['error'].splitlines()[0][:160]}), {r['compile_s']:.0f} s")


# Settings the plan uses per step (chosen from the lever measurements in scale_plan.md),
# and the anchor batches whose compiles fit the linear memory model.
PLAN = {"train": dict(remat="nothing_saveable", vocab_chunk=64, scan=True),
        "eval": dict(remat="none", vocab_chunk=0, scan=True)}
ANCHORS = {"train": (4, 8), "eval": (8, 16)}


def per_chip_memory(r: dict) -> float | None:
  return r.get("total_gib") if r else None


def fit_line(points: list[tuple[int, float]]) -> tuple[float, float]:
  """Least squares (intercept, slope) of memory (GiB) against per-chip batch."""
  n = len(points)
  mx = sum(b for b, _ in points) / n
  my = sum(v for _, v in points) / n
  sxx = sum((b - mx) ** 2 for b, _ in points)
  slope = sum((b - mx) * (v - my) for b, v in points) / sxx
  return my - slope * mx, slope


def plan_one(run: Runner, topology: str, step: str, k: int, mesh, spare: float,
             slope_hint: float | None = None) -> dict:
  """Anchors -> line -> predicted largest batch -> one verifying compile.

  The line is temporaries (GiB per chip) against the per-chip batch: a refused compile
  reports its temporaries too. Arguments and outputs (the weights' shards, the train
  state) barely change with the batch; they come from a compile that fitted.
  """
  settings = PLAN[step]
  point = lambda b: Point(topology, step, k, b, tuple(mesh), **settings)
  anchors = ANCHORS[step] if slope_hint is None else ANCHORS[step][-1:]
  for b in anchors:
    run.get(point(b))
  measured, overheads = {}, []
  for r in run.cache.values():
    q = Point(**{**r["point"], "mesh": tuple(r["point"]["mesh"])})
    if r["commit"] != _git_commit():
      continue
    if r["fits"] and (q.topology, q.step, q.mesh) == (topology, step, tuple(mesh)):
      overheads.append(r["total_gib"] - r["temp_gib"])
    if q == point(q.batch) and r.get("temp_gib") is not None:
      measured[q.batch] = r["temp_gib"]
  result = {"topology": topology, "step": step, "k": k, "mesh": list(mesh), **settings,
            "anchors": sorted(measured.items())}
  if not measured or not overheads or (len(measured) < 2 and slope_hint is None):
    return result
  if len(measured) >= 2:
    intercept, slope = fit_line(sorted(measured.items()))
  else:
    (b0, v0), = measured.items()
    slope, intercept = slope_hint, v0 - slope_hint * b0
  overhead = sorted(overheads)[len(overheads) // 2]
  limit = hbm_gib(topology) - spare - overhead
  predicted = max(int((limit - intercept) // slope), 0) if slope > 0 else 0
  result.update(intercept_gib=round(intercept, 3), slope_gib=round(slope, 4),
                overhead_gib=round(overhead, 3), predicted_batch=predicted)
  result["chosen"] = _verify(run, point, predicted, measured, limit, spare)
  return result


def _verify(run, point, predicted, measured, limit, spare, rounds=5):
  """Compiles batches until the largest with `spare` GiB left is pinned down: the first
  try is the line's prediction, each next one the secant through the two compiles whose
  temporaries are nearest the limit (the anchors' slope can be off by a few percent,
  several rows at a 50-row batch), kept strictly between the largest batch that left
  `spare` and the smallest that did not. At most `rounds` compiles; returns the largest
  verified record, or None. `measured` (batch -> temporaries GiB) gains every compile.
  """
  lo, hi, best, b = 0, None, None, predicted
  for _ in range(rounds):
    b = max(b, lo + 1) if hi is None else min(max(b, lo + 1), hi - 1)
    if b < 1 or (hi is not None and b <= lo):
      break
    r = run.get(point(b))
    if r is None:
      break
    if r.get("temp_gib") is not None:
      measured[b] = r["temp_gib"]
    if r["fits"] and r["spare_gib"] >= spare:
      lo, best = b, r
    else:
      hi = b
    if hi is not None and hi == lo + 1:
      break
    near = sorted(measured.items(), key=lambda bv: abs(bv[1] - limit))[:2]
    (b1, v1), (b2, v2) = sorted(near) if len(near) == 2 else (near[0], near[0])
    if b2 > b1 and v2 > v1:
      b = b1 + int((limit - v1) // ((v2 - v1) / (b2 - b1)))
    else:  # no usable secant: bisect, or step up from an unbounded success
      b = lo + 1 if hi is None else (lo + hi) // 2
  return best


def slope_model(ends: list[tuple[int, float]]):
  """Temporaries per row against the prompt length S, as a*S + b*S^2 (projections and
  MLP grow with S, attention scores with S^2), through the two measured ends."""
  (s1, y1), (s2, y2) = ends
  b = (y2 / s2 - y1 / s1) / (s2 - s1)
  a = y1 / s1 - b * s1
  return lambda s: a * s + b * s * s


def run_plan(run: Runner, topologies_, steps, factors, spare: float, meshes) -> list[dict]:
  """Per topology and step: both anchors at the smallest and largest k, one anchor at the
  others with the per-row slope interpolated in the prompt length; then verification."""
  from configs import paper_asr

  length = lambda k: paper_asr.get_config(f"k={k}").data.buckets[-1][2]
  plans = []
  for step in steps:
    for topology in topologies_:
      ends = [plan_one(run, topology, step, k, meshes[topology], spare)
              for k in (factors[0], factors[-1])]
      slope = None
      if all("slope_gib" in p for p in ends) and len(factors) > 2:
        slope = slope_model([(length(p["k"]), p["slope_gib"]) for p in ends])
      middle = {k: plan_one(run, topology, step, k, meshes[topology], spare,
                            slope_hint=None if slope is None else slope(length(k)))
                for k in factors[1:-1]}
      plans += [ends[0], *middle.values(), ends[-1]] if len(factors) > 1 else ends[:1]
  return plans


# ---------------------------------------------------------------------------------------
# Report.


def _row(r: dict) -> str:
  p = r["point"]
  mesh = "x".join(map(str, p["mesh"]))
  remat = p["remat"] + (" +enc" if p["encoder_remat"] else "")
  chunk = str(p["vocab_chunk"]) if p["step"] == "train" else "-"
  attn = r.get("attention_used") or p["attention"] or "xla"
  batch = str(p["batch"])
  if p.get("accum", 1) > 1:
    batch += f" ({p['accum']} x {p['batch'] // p['accum']})"
  if r["fits"]:
    mem = (f"{r['argument_gib']:.2f} | {r['temp_gib']:.2f} | {r['total_gib']:.2f} | "
           f"{r['spare_gib']:.2f}")
    flops = f"{r['tflops_per_step']:.1f}" + ("*" if p.get("scan") else "")
  else:
    temp = r.get("temp_gib")
    mem = f"- | {temp:.2f} | - | no" if temp is not None else "- | - | - | no"
    flops = "-"
  layers = "scan" if p.get("scan") else "unrolled"
  return (f"| {p['topology']} | {p['k']} | {p['step']} | {batch} | {mesh} | {remat} | "
          f"{chunk} | {attn} | {layers} | {r['commit']} | {mem} | {flops} | "
          f"{r['compile_s']:.0f} |")


HEADER = ("| topology | k | step | per-chip batch | mesh (data x fsdp x tensor) | remat | "
          "vocab_chunk | attention | layers | library | args GiB | temp GiB | total GiB | "
          "spare GiB | TFLOPs/step | compile s |\n|" + "---|" * 16)


def write_report(path: str, plans: list[dict], cache: dict[str, dict], command: str,
                 spare: float, notes: str = ""):
  lines = ["# Scale plan: the paper model compiled for TPU v5e from a CPU host", "",
           "Written by `benchmarks/scale_plan.py` (see its docstring for the TPU venv).", "",
           f"    {command}", ""]
  hosts = sorted({r["host"] for r in cache.values()})
  lines += [f"Compiled on: {', '.join(hosts)}; jax/libtpu "
            f"{', '.join(sorted({r['jax'] for r in cache.values()}))}; "
            f"library commits {', '.join(sorted({r['commit'] for r in cache.values()}))}.",
            "Memory is per chip as the TPU compiler reports it (`memory_analysis()`): "
            "total = arguments + outputs - aliased (the donated train state) + "
            "temporaries; spare = usable HBM (15.75 GiB on v5e) - total. TFLOPs per step "
            "= `cost_analysis()` flops of one chip's program x chips; XLA counts a while "
            "loop's body once, so the eval step's decode loop counts one token and the "
            "scanned (`layers` = scan) compiles, marked *, count one layer of each "
            "stack. Batches are 30 s utterances; the prompt length is `paper_asr.py`'s "
            "30 s bucket, ceil(1500/k) audio tokens + 128 rounded up to 64. Eval = "
            "encoder + prefill + greedy decoding of up to 256 tokens into a KV cache.",
            ""]
  lines += [f"## Largest verified per-chip batch with at least {spare:g} GiB spare", "",
            "From every compile so far: per library version, topology, step and k, the "
            "fitting compile with the most utterances per chip (ties: the most spare).",
            "", HEADER]
  best = {}
  for r in cache.values():
    p = r["point"]
    if r["fits"] and r["spare_gib"] >= spare:
      key = (r["commit"], p["topology"], p["step"], p["k"])
      if key not in best or (p["batch"], r["spare_gib"]) > (
          best[key]["point"]["batch"], best[key]["spare_gib"]):
        best[key] = r
  lines += [_row(best[key]) for key in sorted(best)]
  lines.append("")
  if any("slope_gib" in p for p in plans):
    lines += ["## Plan", "", "Fits (temporaries linear in the per-chip batch) through every "
              "compile of the setting in the cache when the plan ran: the anchors, and on a "
              "re-run the earlier verifications too:", "",
              "| topology | step | k | compiles fitted (batch, temp GiB) | temp GiB at 0 | "
              "temp GiB per row | args+out GiB | predicted | verified |",
              "|---|---|---|---|---|---|---|---|---|"]
    for p in plans:
      anchors = ", ".join(f"({b}, {v:.2f})" for b, v in p["anchors"])
      chosen = p.get("chosen")
      lines.append(f"| {p['topology']} | {p['step']} | {p['k']} | {anchors} | "
                   f"{p.get('intercept_gib', '-')} | {p.get('slope_gib', '-')} | "
                   f"{p.get('overhead_gib', '-')} | "
                   f"{p.get('predicted_batch', '-')} | "
                   f"{chosen['point']['batch'] if chosen else 'none'} |")
    lines.append("")
  if notes:
    lines += [notes, ""]
  lines += ["## Every compile (the cache)", "", HEADER]
  order = lambda r: (r["point"]["topology"], r["point"]["step"], r["point"]["k"],
                     r["point"]["batch"], r["key"])
  lines += [_row(r) for r in sorted(cache.values(), key=order)]
  misses = [r for r in sorted(cache.values(), key=order) if not r["fits"]]
  if misses:
    lines += ["", "Refusals, first line of the compiler's message:", ""]
    lines += [f"- `{r['key']}`: {r['error'].strip().splitlines()[0][:300]}" for r in misses]
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--quick", action="store_true",
                      help="v5e:2x4 train step only")
  parser.add_argument("--topologies", default="v5e:2x4,v5e:8x8")
  parser.add_argument("--steps", default="train,eval")
  parser.add_argument("--k", default=",".join(map(str, FACTORS)))
  parser.add_argument("--mesh", action="append", default=[],
                      help="TOPOLOGY=data.fsdp.tensor (default: fsdp over every chip)")
  parser.add_argument("--spare_gib", type=float, default=2.0)
  parser.add_argument("--point", action="append", default=[],
                      help="compile just these points (see Point.parse), then report")
  parser.add_argument("--no_compile", action="store_true", help="report from the cache")
  parser.add_argument("--cache", default=CACHE)
  parser.add_argument("--out", default=os.path.join(RESULTS, "scale_plan.md"))
  parser.add_argument("--json", nargs="?", const=os.path.join(RESULTS, "scale_plan.json"),
                      default=None, help="also write the plan and records as JSON")
  parser.add_argument("--notes", default=os.path.join(RESULTS, "scale_plan_notes.md"),
                      help="hand-written findings included in the report, if present")
  parser.add_argument("--src", default=REPO,
                      help="library checkout to compile, e.g. a `git archive` snapshot of a "
                           "commit (with its hash in SRC/.source) while others edit the tree")
  parser.add_argument("--peak", default="",
                      help="print what is live at the peak of a saved HLO "
                           "(SCALE_PLAN_HLO_DIR) and exit")
  args = parser.parse_args(argv)
  if args.peak:
    print(peak_report(args.peak))
    return
  global SRC
  SRC = os.path.abspath(args.src)
  sys.path.insert(0, SRC)

  run = Runner(args.cache, dry=args.no_compile)
  plans = []
  if args.point:
    for text in args.point:
      run.get(Point.parse(text))
  else:
    topologies_ = ["v5e:2x4"] if args.quick else args.topologies.split(",")
    steps = ["train"] if args.quick else args.steps.split(",")
    meshes = {t: (1, num_chips(t), 1) for t in topologies_}
    for m in args.mesh:
      t, _, shape = m.partition("=")
      meshes[t] = tuple(int(x) for x in shape.split("."))
    factors = tuple(int(x) for x in args.k.split(","))
    plans = run_plan(run, topologies_, steps, factors, args.spare_gib, meshes)
  notes = open(args.notes).read() if os.path.exists(args.notes) else ""
  command = "python benchmarks/scale_plan.py " + " ".join(sys.argv[1:] if argv is None
                                                          else argv)
  write_report(args.out, plans, run.cache, command.strip(), args.spare_gib, notes)
  print(f"wrote {args.out}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"command": command.strip(), "plans": plans,
                 "compiles": sorted(run.cache.values(), key=lambda r: r["key"])}, f, indent=1)
    print(f"wrote {args.json}")


if __name__ == "__main__":
  main()
