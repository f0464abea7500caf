"""Evaluation: `evaluate(config, workdir, ...)`, which `eval.py` calls.

    config -> model (base checkpoints + the run's trained trees from WORKDIR/checkpoints)
      -> test manifests -> input pipeline (generation prompts, eval buckets, no shuffle)
      -> jit-compiled batched decoding (one compilation per bucket and decode settings)
      -> WORKDIR/eval/<step>/hypotheses.jsonl + scores.json, and a summary table

Every utterance of the manifests is scored or counted: manifest lines that do not parse,
audio that cannot be read, and utterances longer than the largest bucket are counted in
`num_skipped` (by reason) and listed in `skipped.jsonl`; the rest are scored.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, NamedTuple, Sequence

import flax.linen as nn
import jax
import numpy as np

from lalmjax import experiment, generation, metrics, run_checkpoints, sharding, training
from lalmjax.data import manifest, pipeline

log = logging.getLogger(__name__)


class Restored(NamedTuple):
  variables: dict  # the model's variables with the run's trained trees merged in
  step: int  # the checkpoint's step
  metadata: dict  # what the checkpoint recorded of its run (trainer.run_metadata)


def restore_trained(config, workdir: str, model: experiment.Model, mesh,
                    step: int | None = None) -> Restored:
  """The run's trained trees (projector, LoRA, new tokens' rows) at `step` (default: the
  latest), merged into the model's variables, after checking the checkpoint's run
  metadata against `config`."""
  from lalmjax import trainer  # local: trainer imports the training stack

  ckpt = run_checkpoints.RunCheckpointer(workdir, keep=config.keep_checkpoints,
                                         use_async=False)
  steps = ckpt.all_steps()
  if not steps:
    raise FileNotFoundError(f"{ckpt.directory}: no checkpoint to evaluate (train first, "
                            "or give another --workdir)")
  step = max(steps) if step is None else int(step)
  if step not in steps:
    raise FileNotFoundError(f"{ckpt.directory}: no checkpoint at step {step}; there are "
                            f"{sorted(steps)}")
  tx = training.make_optimizer(config.optim, config.total_steps)
  patterns = experiment.trainable_patterns(config)
  trainable, frozen = training.partition(model.variables, patterns)
  _, _, state_sh = trainer.train_state_shardings(model, patterns, tx, mesh)
  stored = ckpt.restore_meta(step)
  current = trainer.run_metadata(config, model, mesh)
  run_checkpoints.check_compatible(stored, current, workdir,
                                   free_shape_keys=rate_free_keys(stored, current))
  init = jax.eval_shape(lambda t: training.init_train_state(t, tx), trainable)
  state, _, _ = ckpt.restore(step, run_checkpoints.abstract_like(init, state_sh))
  ckpt.close()
  return Restored(training.combine(state.trainable, frozen), step, stored)


def rate_free_keys(stored: dict, current: dict) -> tuple[str, ...]:
  """Model-shape fields an evaluation may change from the trained run's: the rate
  (factor, method, its options) where the params do not depend on it, i.e. unless
  either side is stack (its projector width is k * D). Elastic-rate models, and fixed-k
  models scored at another k."""
  methods = {stored.get("model_shape", {}).get("method"),
             current.get("model_shape", {}).get("method")}
  return () if "stack" in methods else ("factor", "method", "method_options")


def _rate_suffix(config, metadata: dict) -> str:
  """"-<method>-k<factor>" when scoring at a rate other than the one the checkpoint was
  trained at (its run metadata), so scores of several rates sit side by side; else ""."""
  trained = metadata.get("config", {}).get("model", {})
  m = config.model
  if (trained.get("method"), trained.get("factor")) == (m.method, m.factor):
    return ""
  return f"-{m.method}-k{m.factor}"


def without_lora(model: experiment.Model, variables: dict):
  """(module, variables) of the same model with the LoRA adapters off."""
  import dataclasses

  cfg = dataclasses.replace(model.module.config, lora=None)
  module = model.module.clone(config=cfg)
  return module, {k: v for k, v in variables.items() if k != "lora"}


def _gather(x) -> np.ndarray:
  """A global array's full value on every host."""
  if jax.process_count() == 1:
    return np.asarray(jax.device_get(x))
  from jax.experimental import multihost_utils

  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def evaluate(config, workdir: str, step: int | None = None,
             manifests: Sequence[str] = (), no_lora: bool = False,
             out_dir: str | None = None) -> dict[str, Any]:
  """Decodes the test manifests with the run's model and scores them.

  Args:
    config: the experiment config.
    workdir: the run folder (its checkpoints give the trained trees).
    step: the checkpoint step (default: the latest).
    manifests: manifests to evaluate instead of `config.data.test_manifests`.
    no_lora: evaluate with the LoRA adapters off (projector only).
    out_dir: where to write (default WORKDIR/eval/<step>[-nolora]).

  Returns:
    The scores (also written to scores.json).
  """
  from configs import base  # local: the configs package sits beside lalmjax
  from lalmjax import trainer
  from tqdm import tqdm

  trainer.initialize_distributed(config)
  base.validate(config, check_files=False)
  workdir = os.path.abspath(workdir)
  mesh = experiment.build_mesh(config)
  model = experiment.build_model(config, workdir, mesh,
                                 load_encoder=not config.data.feature_cache)
  variables, step, trained = restore_trained(config, workdir, model, mesh, step)
  module = model.module
  if no_lora:
    module, variables = without_lora(model, variables)
  out_dir = out_dir or os.path.join(
      workdir, "eval", f"{step}" + _rate_suffix(config, trained) + ("-nolora" if no_lora else ""))
  os.makedirs(out_dir, exist_ok=True)

  paths = [experiment.resolve(p) for p in (manifests or config.data.test_manifests)]
  if not paths:
    raise ValueError("no test manifests: set config.data.test_manifests or pass --manifest")
  utterances, skipped = [], []
  for path in paths:
    contents = manifest.read_manifest(path, on_error="skip")
    utterances += contents.utterances
    skipped += [{"id": None, "reason": f"manifest line: {r}"} for _, r in contents.skipped]

  spec = pipeline.AudioSpec.from_lalm(module.config)
  # With a feature cache (frozen encoder) the test audio is encoded once, like training's.
  cache = trainer.feature_cache(config, workdir, model, utterances, mesh)
  data = pipeline.InputPipeline(utterances, trainer.pipeline_config(config, train=False), spec,
                                model.tokenizer_path, feature_cache=cache)
  skipped += [{"id": i, "reason": "longer than the largest bucket"} for i in data.left_out]
  builder = model.builder
  decode = generation.DecodeConfig(beam_size=config.eval.beam_size,
                                   length_penalty=float(config.eval.length_penalty),
                                   buffer_size=config.eval.max_new_tokens)
  eos_ids = np.asarray([builder.eos_id], np.int32)
  max_new = np.asarray(config.eval.max_new_tokens, np.int32)
  gen = lambda v, b: generation.generate_lalm(module, v, b, decode, max_new, eos_ids,
                                              builder.pad_id)
  compiles_before = generation.compilations()

  rows, audio_seconds, gen_tokens, audio_tokens = [], 0.0, 0, 0
  t_start = time.perf_counter()
  bar = tqdm(total=len(utterances), desc="eval", unit="utt", disable=jax.process_index() != 0)
  with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.LOGICAL_AXIS_RULES):
    for batch in data.iterator():
      skipped += [{"id": i, "reason": r} for i, r in batch["skipped"]]
      inputs = experiment.global_batch(
          {k: v for k, v in pipeline.model_inputs(batch).items() if k != "loss_mask"}, mesh)
      out = gen(variables, inputs)
      tokens, lengths = _gather(out.tokens), _gather(out.lengths)
      index = _gather(experiment.global_batch({"i": batch["index"]}, mesh)["i"])
      seconds = _gather(experiment.global_batch({"s": batch["audio_seconds"]}, mesh)["s"])
      n_audio = _gather(experiment.global_batch(
          {"a": (batch["input_ids"] == builder.audio_token_id).sum(1)}, mesh)["a"])
      for row, idx in enumerate(index):
        if idx < 0:
          continue
        u = utterances[idx]
        ids = [t for t in tokens[row, :lengths[row]].tolist() if t not in (builder.eos_id,
                                                                          builder.pad_id)]
        hyp = builder.tokenizer.decode(ids, skip_special_tokens=True).strip()
        rows.append({"id": u.id, "reference": u.target(), "hypothesis": hyp,
                     "language": u.target_lang if u.task == "s2tt" else u.source_lang,
                     "task": u.task, "source_lang": u.source_lang,
                     "target_lang": u.target_lang})
        audio_seconds += float(seconds[row])
        gen_tokens += int(lengths[row])
        audio_tokens += int(n_audio[row])
      bar.update(int((index >= 0).sum()) + len(batch["skipped"]))
  bar.close()
  wall = time.perf_counter() - t_start

  scores = metrics.score(rows)
  reasons: dict[str, int] = {}
  for s in skipped:
    key = s["reason"].split(":")[0] if s["id"] is None else _reason_kind(s["reason"])
    reasons[key] = reasons.get(key, 0) + 1
  scores.update(
      step=step, no_lora=no_lora, manifests=paths, num_utterances=len(rows),
      num_skipped=len(skipped), skipped_by_reason=reasons,
      compilations=generation.compilations() - compiles_before,
      decode={"beam_size": decode.beam_size, "length_penalty": decode.length_penalty,
              "max_new_tokens": config.eval.max_new_tokens},
      speed=metrics.speed_report(audio_seconds, wall, gen_tokens, audio_tokens),
      llm_audio_tokens_per_second=metrics_rate(module.config))
  if jax.process_index() == 0:
    with open(os.path.join(out_dir, "hypotheses.jsonl"), "w") as f:
      for r in rows:
        f.write(json.dumps(r, ensure_ascii=False) + "\n")
    with open(os.path.join(out_dir, "skipped.jsonl"), "w") as f:
      for s in skipped:
        f.write(json.dumps(s, ensure_ascii=False) + "\n")
    with open(os.path.join(out_dir, "scores.json"), "w") as f:
      json.dump(scores, f, indent=2, ensure_ascii=False)
  scores["out_dir"] = out_dir
  return scores


def metrics_rate(config) -> float:
  from lalmjax.models import lalm

  return lalm.llm_tokens_per_second(config)


def _reason_kind(reason: str) -> str:
  """A short class of a load error, for counting ("does not exist", "corrupt", ...)."""
  for kind in ("does not exist", "longer than", "not a readable audio file", "empty file",
               "NaN or Inf", "not in the feature cache", "prompt of"):
    if kind in reason:
      return kind
  return "other"


def summary_table(scores: dict) -> str:
  """A plain-text table of the scores, for the console."""
  lines = [f"step {scores['step']}{' (no LoRA)' if scores['no_lora'] else ''}: "
           f"{scores['num_utterances']} utterances scored, {scores['num_skipped']} skipped, "
           f"{scores['compilations']} compilation(s)"]
  wer = scores.get("wer") or {}
  for lang, value in sorted((wer.get("per_language") or {}).items()):
    lines.append(f"  WER  {lang:8s} {value:7.2f} %")
  if wer.get("overall") is not None:
    lines.append(f"  WER  {'overall':8s} {wer['overall']:7.2f} %")
  for pair, value in sorted((scores.get("bleu") or {}).items()):
    chrf = (scores.get("chrf") or {}).get(pair)
    lines.append(f"  BLEU {pair:8s} {value:7.2f}" + (f"   chrF {chrf:6.2f}" if chrf is not None
                                                     else ""))
  sp = scores.get("speed") or {}
  if sp:
    lines.append("  speed: " + ", ".join(f"{k} {v:.3g}" for k, v in sp.items()
                                         if isinstance(v, (int, float))))
  return "\n".join(lines)
