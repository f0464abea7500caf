"""The training loop: `train(config, workdir)`, which `train.py` calls.

    config -> validate -> mesh -> model (sharded) -> [feature cache] -> train state
      (restored from WORKDIR's latest checkpoint, or initialised) -> input pipeline
      (at the restored data position) -> one compiled step per bucket -> loop:
        batch -> step -> metrics one step late -> log / checkpoint / SIGTERM
      -> final checkpoint -> WORKDIR/export/ (PEFT adapter + projector safetensors)

Re-running the same command resumes: the state, the optimizer and the data position
come from the latest checkpoint, and every random draw is a function of (seed, step),
so the resumed steps are the steps the uninterrupted run takes.

A non-finite loss or gradient norm stops the run naming the step; the last good
checkpoint stays (a checkpoint is written only after its step's loss was checked).
SIGTERM (a TPU VM's preemption notice) saves a checkpoint at the current step and
returns normally, so the process exits 0.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lalmjax import experiment, run_checkpoints, sharding, training
from lalmjax.data import features, manifest, pipeline
from lalmjax.metric_writer import MetricWriter

log = logging.getLogger(__name__)


def initialize_distributed(config):
  """`jax.distributed.initialize` when the config asks for several processes."""
  if not config.multiprocess:
    return
  kwargs = {}
  if config.coordinator_address:
    kwargs["coordinator_address"] = config.coordinator_address
  if config.num_processes:
    kwargs["num_processes"] = config.num_processes
  if config.process_id >= 0:
    kwargs["process_id"] = config.process_id
  jax.distributed.initialize(**kwargs)
  log.info("process %d of %d, %d local / %d global devices", jax.process_index(),
           jax.process_count(), jax.local_device_count(), jax.device_count())


def pipeline_config(config, *, train: bool = True) -> pipeline.PipelineConfig:
  d = config.data
  buckets = d.buckets if train or not d.eval_buckets else d.eval_buckets
  return pipeline.PipelineConfig(
      buckets=tuple(tuple(b) for b in buckets), seed=config.seed, shuffle=train,
      with_targets=train, num_threads=d.num_threads, num_workers=d.num_workers,
      prefetch=d.prefetch, max_seconds=d.max_seconds or None,
      max_audio_tokens=d.max_audio_tokens,
      system_prompt=d.system_prompt,
      factors=tuple(config.model.train_factors) if train else ())


def feature_cache(config, workdir: str, model: experiment.Model, utterances,
                  mesh) -> features.FeatureCache | None:
  """The filled encoder-feature cache of the config, or None when it has none."""
  d, m = config.data, config.model
  if not d.feature_cache:
    return None
  root = experiment.resolve(d.feature_cache, workdir)
  enc_cfg = model.module.config.encoder
  window = model.module.config.window_frames
  if m.encoder_path:
    path = experiment.resolve(m.encoder_path)
    fingerprint = None
  else:  # a random encoder: its identity is its shape and seed (FeatureCache adds the
    # dtype and the window, as it does to a hashed checkpoint)
    path = workdir
    fingerprint = features.text_fingerprint(json.dumps([dataclasses.asdict(enc_cfg),
                                                        config.seed]))
  cache = features.FeatureCache(root, path, enc_cfg.d_model, m.dtype, fingerprint=fingerprint,
                                window_frames=window)
  # Every process fills its share; the cache folder is shared.
  mine = utterances[jax.process_index()::jax.process_count()]
  if m.encoder_path:
    from lalmjax import checkpoints

    enc_module, enc_params = checkpoints.load_whisper_encoder(
        path, experiment.DTYPES[m.dtype], experiment.DTYPES[m.param_dtype])
  else:
    from lalmjax.models import whisper

    enc_module = whisper.WhisperEncoder(enc_cfg, dtype=experiment.DTYPES[m.dtype],
                                        param_dtype=experiment.DTYPES[m.param_dtype])
    enc_params = jax.device_get(model.variables["params"]["encoder"])
  max_seconds = d.max_seconds or max(b[0] for b in d.buckets)
  from lalmjax import audio

  stats = features.fill_cache(
      cache, mine, features.encoder_fn(enc_module, enc_params, batch_size=8,
                                       window_overlap=model.module.config.window_overlap,
                                       window_frames=window),
      load=lambda u: audio.load_audio(u.audio, max_seconds=max_seconds),
      progress=jax.process_index() == 0)
  log.info("feature cache %s: %d encoded, %d already cached, %d skipped", cache.dir,
           stats["encoded"], stats["cached"], len(stats["skipped"]))
  experiment._sync("feature_cache")  # pylint: disable=protected-access
  return cache


def _hash_or_label(source: str) -> dict:
  if source.startswith("random") or " (" in source:
    return {"path": source, "hash": source}
  return {"path": source, "hash": features.encoder_fingerprint(source)}


def run_metadata(config, model: experiment.Model, mesh) -> dict:
  """What a checkpoint records of its run (JSON), checked on resume."""
  tok = os.path.join(model.tokenizer_path, "tokenizer.json")
  tok_hash = features.file_fingerprint(tok) if os.path.exists(tok) else model.tokenizer_path
  shape = json.loads(json.dumps(dataclasses.asdict(model.module.config), default=str))
  lora = shape.pop("lora")
  return {
      "config": json.loads(config.to_json_best_effort()),
      "encoder": _hash_or_label(model.sources["encoder"].split(" (")[0]
                                if config.model.encoder_path else model.sources["encoder"]),
      "llm": _hash_or_label(model.sources["llm"]),
      "lora": lora,
      "model_shape": shape,
      "tokenizer": model.tokenizer_path,
      "tokenizer_hash": tok_hash,
      "mesh": dict(zip(sharding.MESH_AXES, [int(x) for x in mesh.devices.shape])),
      "process_count": jax.process_count(),
  }


def train_state_shardings(model: experiment.Model, trainable_patterns, tx, mesh):
  """(trainable/frozen split of the shardings, TrainState shardings), all derived from
  the logical axis names (the optimizer state mirrors the trainable tree)."""
  abstract, _ = experiment.variable_specs(model.module)
  abstract_trainable, _ = training.partition(abstract, trainable_patterns)
  opt_specs = nn.get_partition_spec(jax.eval_shape(tx.init, abstract_trainable))
  train_sh, frozen_sh = training.partition(model.shardings, trainable_patterns)
  state_sh = training.TrainState(
      step=sharding.replicated(mesh), trainable=train_sh,
      opt_state=sharding.logical_to_mesh_sharding(opt_specs, mesh))
  return train_sh, frozen_sh, state_sh


def export(model: experiment.Model, trainable: dict, workdir: str) -> str:
  """WORKDIR/export/: the LoRA and the new tokens' rows as a PEFT adapter folder (with
  the tokenizer, and vocab.json: the vocabulary size to resize the transformers model
  to), the projector as safetensors."""
  from safetensors.numpy import save_file
  from flax import traverse_util

  from lalmjax import checkpoints
  from lalmjax.models import lora

  out = os.path.join(workdir, "export")
  os.makedirs(out, exist_ok=True)
  trainable = jax.device_get(trainable)
  cfg = model.module.config
  llm_path = model.sources["llm"] if not model.sources["llm"].startswith("random") else None
  lora_tree = (trainable["lora"]["llm"] if "lora" in trainable and cfg.lora is not None
               else None)
  rows = trainable.get("params", {}).get("llm", {}).get("new_tokens", {}).get("embedding")
  if lora_tree is not None or rows is not None:
    adapter = os.path.join(out, "lora")
    lora.export_peft(lora_tree, cfg.lora, adapter, base_model_name_or_path=llm_path,
                     new_token_ids=cfg.new_token_ids if rows is not None else (),
                     new_token_rows=rows)
    # The marker ids and the grown vocabulary the adapter was trained with.
    model.builder.tokenizer.save_pretrained(adapter)
    ids = {i: t for t, i in model.builder.tokenizer.get_vocab().items()}
    with open(os.path.join(adapter, "vocab.json"), "w") as f:
      json.dump({"vocab_size": cfg.llm.vocab_size,
                 "checkpoint_vocab_size": (checkpoints.read_config(llm_path)["vocab_size"]
                                           if llm_path else None),
                 "new_tokens": {ids[i]: i for i in cfg.new_token_ids},
                 "note": "call model.resize_token_embeddings(vocab_size) on the "
                         "transformers model before peft.PeftModel.from_pretrained"},
                f, indent=2)
  params = trainable.get("params", {})
  if "projector" in params:
    flat = traverse_util.flatten_dict(params["projector"], sep=".")
    save_file({k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in flat.items()},
              os.path.join(out, "projector.safetensors"),
              metadata={"kind": model.module.config.projector})
  with open(os.path.join(out, "model.json"), "w") as f:
    json.dump({"sources": model.sources,
               "lalm_config": json.loads(json.dumps(dataclasses.asdict(model.module.config),
                                                    default=str))}, f, indent=2)
  return out


class _Preemption:
  """Turns SIGTERM into a flag the loop checks after each step."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread (e.g. a notebook worker): no handler
      self._previous = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True
    log.warning("SIGTERM: saving a checkpoint after this step, then exiting")

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _describe_memory(compiled) -> str:
  try:
    m = compiled.memory_analysis()
    gib = lambda n: n / 2 ** 30
    return (f"arguments {gib(m.argument_size_in_bytes):.3f} GiB, outputs "
            f"{gib(m.output_size_in_bytes):.3f} GiB, temporaries "
            f"{gib(m.temp_size_in_bytes):.3f} GiB, aliased "
            f"{gib(m.alias_size_in_bytes):.3f} GiB (per device)")
  except Exception as e:  # pylint: disable=broad-except
    return f"unavailable ({e})"


def train(config, workdir: str) -> dict[str, Any]:
  """Trains (or resumes) the run in `workdir`; returns the last logged metrics."""
  from configs import base  # local: the configs package sits beside lalmjax
  from tqdm import tqdm

  initialize_distributed(config)
  base.validate(config)
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  is_main = jax.process_index() == 0
  if is_main:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))

  mesh = experiment.build_mesh(config)
  contents = manifest.read_manifests([experiment.resolve(p) for p in
                                      config.data.train_manifests], on_error="skip")
  if contents.skipped:
    log.warning("%d manifest line(s) skipped", len(contents.skipped))
  utterances = contents.utterances
  model = experiment.build_model(config, workdir, mesh,
                                 load_encoder=not config.data.feature_cache)
  cache = feature_cache(config, workdir, model, utterances, mesh)

  patterns = experiment.trainable_patterns(config)
  trainable, frozen = training.partition(model.variables, patterns)
  schedule = training.learning_rate_schedule(config.optim, config.total_steps)
  tx = training.make_optimizer(config.optim, config.total_steps)
  train_sh, frozen_sh, state_sh = train_state_shardings(model, patterns, tx, mesh)
  del train_sh
  meta = run_metadata(config, model, mesh)

  ckpt = run_checkpoints.RunCheckpointer(workdir, config.keep_checkpoints,
                                         config.async_checkpoints)
  init_state = jax.jit(lambda t: training.init_train_state(t, tx), out_shardings=state_sh)
  latest = ckpt.latest_step()
  data_state = None
  if latest is not None:
    stored = ckpt.restore_meta(latest)
    run_checkpoints.check_compatible(stored, meta, workdir)
    abstract = run_checkpoints.abstract_like(jax.eval_shape(init_state, trainable), state_sh)
    state, data_state, _ = ckpt.restore(latest, abstract)
    log.info("resumed from %s at step %d", ckpt.directory, latest)
  else:
    state = init_state(trainable)
  del trainable
  start = int(jax.device_get(state.step))

  spec = pipeline.AudioSpec.from_lalm(model.module.config)
  data = pipeline.InputPipeline(utterances, pipeline_config(config), spec, model.tokenizer_path,
                                feature_cache=cache, num_steps=config.total_steps)
  it = data.iterator()
  if data_state:
    try:
      it.set_state(data_state)
    except Exception as e:  # pylint: disable=broad-except
      log.warning("data state %s does not fit this pipeline (%s); restarting it at the "
                  "checkpoint's step %d", data_state, e, start)
      data = pipeline.InputPipeline(utterances, pipeline_config(config), spec,
                                    model.tokenizer_path, feature_cache=cache,
                                    num_steps=config.total_steps)
      it = data.iterator({"next_index": start})

  batch_sh = experiment.batch_sharding(mesh)

  def jitted_step(factor: int):
    """The jitted train step of the model at compression `factor` (same params: an
    elastic-rate run has one per k of model.train_factors)."""
    module = model.module
    if factor != module.config.factor:
      module = module.clone(config=dataclasses.replace(module.config, factor=factor))
    step_fn = training.make_train_step(
        module, tx, grad_accum_steps=config.optim.grad_accum_steps,
        vocab_chunk=config.loss.vocab_chunk, seed=config.seed, lr_schedule=schedule)
    return jax.jit(step_fn, in_shardings=(state_sh, frozen_sh, batch_sh),
                   out_shardings=(state_sh, sharding.replicated(mesh)), donate_argnums=0)

  jitted: dict[int, Any] = {}  # factor -> jitted step
  compiled: dict[tuple[int, int], Any] = {}  # (bucket, factor) -> executable

  writer = MetricWriter(workdir, enabled=is_main)
  batch_log = open(os.path.join(workdir, f"batches.p{jax.process_index()}.jsonl"), "a",
                   buffering=1)  # line-buffered: a killed run keeps its lines
  bar = tqdm(total=config.total_steps, initial=start, desc="train", unit="step",
             disable=not is_main, dynamic_ncols=True)
  totals = {"skipped": 0, "left_out": len(data.left_out)}
  pending = None  # (step, metrics on device, host stats): read one step late
  last_logged: dict[str, Any] = {}
  window = {"tokens": 0.0, "audio_seconds": 0.0, "time": 0.0, "data_wait": 0.0, "steps": 0}
  saved_step = latest

  def check(step, metrics):
    if metrics["finite"] < 1.0:
      ckpt.wait()
      raise FloatingPointError(
          f"non-finite loss or gradient at step {step} (loss {metrics['loss']}, grad_norm "
          f"{metrics['grad_norm']}); the last good checkpoint is step {saved_step} in "
          f"{ckpt.directory}")

  def report(step, device_metrics, host):
    nonlocal last_logged
    metrics = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
    check(step, metrics)
    if step % config.log_every == 0 or step == config.total_steps:
      elapsed = max(window["time"], 1e-9)
      row = {"loss": metrics["loss"], "learning_rate": metrics["learning_rate"],
             "grad_norm": metrics["grad_norm"], "num_tokens": metrics["num_tokens"],
             "tokens_per_s": window["tokens"] / elapsed,
             "audio_seconds_per_s": window["audio_seconds"] / elapsed,
             "step_time_s": elapsed / max(window["steps"], 1),
             "data_wait_s": window["data_wait"] / max(window["steps"], 1),
             "skipped": totals["skipped"], "bucket": host["bucket"],
             "factor": host["factor"],
             "placeholder_mismatch": metrics["placeholder_mismatch"]}
      writer.write(step, row)
      bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['learning_rate']:.2e}",
                      tok_s=f"{row['tokens_per_s']:.0f}",
                      audio_s=f"{row['audio_seconds_per_s']:.1f}")
      last_logged = {"step": step, **row}
      for k in window:
        window[k] = 0.0 if k != "steps" else 0
    return metrics

  def save(step, state):
    nonlocal saved_step
    ckpt.save(step, state, it.get_state(), meta)
    saved_step = step

  with _Preemption() as preemption, jax.set_mesh(mesh), \
       nn.logical_axis_rules(sharding.LOGICAL_AXIS_RULES):
    step = start
    while step < config.total_steps:
      t0 = time.perf_counter()
      batch = next(it)
      t_data = time.perf_counter() - t0
      if batch["skipped"]:
        totals["skipped"] += len(batch["skipped"])
      bucket, factor = int(batch["bucket"]), int(batch["factor"])
      inputs = experiment.global_batch(pipeline.model_inputs(batch), mesh)
      key = (bucket, factor)
      if key not in compiled:
        t_c = time.perf_counter()
        if factor not in jitted:
          jitted[factor] = jitted_step(factor)
        compiled[key] = jitted[factor].lower(state, frozen, inputs).compile()
        t0 += time.perf_counter() - t_c  # compile time is reported apart, not as step time
        log.info("compiled the train step for bucket %d, k=%d %s in %.1f s; memory: %s",
                 bucket, factor, tuple(inputs["input_ids"].shape), time.perf_counter() - t_c,
                 _describe_memory(compiled[key]))
      state, metrics = compiled[key](state, frozen, inputs)
      step += 1
      batch_log.write(json.dumps({"step": step, "epoch": int(batch["epoch"]),
                                  "index": batch["index"].tolist()}) + "\n")
      if pending is not None:  # the previous step's metrics, now that this one runs
        report(*pending)
      window["tokens"] += float(batch["attention_mask"].sum()) * jax.process_count()
      window["audio_seconds"] += float(batch["audio_seconds"].sum()) * jax.process_count()
      window["data_wait"] += t_data
      window["steps"] += 1
      # This step's wall time (data, dispatch, the previous step's metrics): counted
      # before a checkpoint step reports, so its rates cover the step itself.
      window["time"] += time.perf_counter() - t0
      pending = (step, metrics, {"bucket": bucket, "factor": factor})
      due = step % config.checkpoint_every == 0 or step == config.total_steps
      if due or preemption.requested:
        report(*pending)  # a checkpoint is written only after its loss was checked
        pending = None
        save(step, state)
        if preemption.requested:
          break
      bar.update(1)
    if pending is not None:
      report(*pending)
  bar.close()
  batch_log.close()
  ckpt.wait()
  if is_main and not preemption.requested:
    out = export(model, state.trainable, workdir)
    log.info("exported the trained trees to %s", out)
  writer.close()
  ckpt.close()
  if not last_logged:  # resumed at total_steps: nothing left to train
    log.info("%s is already at step %d of %d: nothing to train", workdir, start,
             config.total_steps)
    last_logged = {"step": start}
  last_logged.update(compilations=len(compiled), skipped=totals["skipped"],
                     left_out=totals["left_out"], preempted=preemption.requested)
  return last_logged
