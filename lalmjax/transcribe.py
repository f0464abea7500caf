"""Transcribe (or translate) audio files with a trained run.

    python -m lalmjax.transcribe --workdir=DIR FILE [FILE ...] [--task=asr|s2tt]
        [--source_lang=en] [--target_lang=de] [--step=N] [--no_lora]

Any format `audio.load_audio` reads, any length (audio longer than the encoder window is
cut into windows and decoded in one pass). The run's own config (DIR/config.json) gives
the model; its latest (or step N) checkpoint gives the trained trees. Prints one line
per file: `path<TAB>text`. A file that cannot be read is reported on stderr and the
others are still transcribed (exit code 1 if any failed).
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags

_WORKDIR = flags.DEFINE_string("workdir", None, "a run folder (train.py --workdir)")
_TASK = flags.DEFINE_enum("task", "asr", ["asr", "s2tt"], "transcribe or translate")
_SOURCE = flags.DEFINE_string("source_lang", "en", "language spoken in the audio")
_TARGET = flags.DEFINE_string("target_lang", None, "translation target (s2tt)")
_STEP = flags.DEFINE_integer("step", None, "checkpoint step (default: the latest)")
_NO_LORA = flags.DEFINE_bool("no_lora", False, "decode with the LoRA adapters off")
flags.mark_flags_as_required(["workdir"])


def load_run_config(workdir: str):
  """The resolved config a run saved (DIR/config.json), as a ConfigDict."""
  import ml_collections

  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: missing; is {workdir} a train.py --workdir?")
  with open(path) as f:
    raw = json.load(f)
  return ml_collections.ConfigDict(raw)


def transcribe(workdir: str, files, task: str = "asr", source_lang: str = "en",
               target_lang: str | None = None, step: int | None = None,
               no_lora: bool = False) -> list[tuple[str, str | None, str | None]]:
  """[(file, text or None, error or None)] for each file, in order."""
  import flax.linen as nn
  import jax
  import numpy as np

  from lalmjax import audio, evaluation, experiment, generation, sharding
  from lalmjax.data import bucketing, manifest, pipeline

  config = load_run_config(workdir)
  mesh = experiment.build_mesh(config)
  model = experiment.build_model(config, workdir, mesh)
  variables = evaluation.restore_trained(config, workdir, model, mesh, step).variables
  module = model.module
  if no_lora:
    module, variables = evaluation.without_lora(model, variables)
  builder = model.builder
  spec = pipeline.AudioSpec.from_lalm(module.config)

  results = []
  utterances = []
  for path in files:
    try:
      wav = audio.load_audio(path)
    except (OSError, ValueError) as e:
      results.append((path, None, str(e)))
      continue
    utterances.append(manifest.Utterance(
        id=str(len(utterances)), audio=os.path.abspath(path),
        duration=len(wav) / audio.SAMPLE_RATE, task=task, text="",
        source_lang=source_lang, target_lang=target_lang or source_lang,
        translation="" if task == "s2tt" else None))
    results.append((path, "", None))
  if utterances:
    # One bucket per file length class: a window's worth, then whole windows.
    window = spec.window_seconds
    seconds = sorted({window} | {window * spec.windows.max_windows(u.duration)
                                 for u in utterances if u.duration > window})
    buckets = []
    for s in seconds:
      tokens = int(spec.windows.kept_frames(int(s * audio.SAMPLE_RATE))) // spec.factor + 1
      # One row per data-parallel shard: the smallest batch the mesh can split.
      buckets.append((s, mesh.shape["data"] * mesh.shape["fsdp"], prompts_round(tokens + 96)))
    cfg = pipeline.PipelineConfig(buckets=buckets, shuffle=False, with_targets=False,
                                  system_prompt=config.data.system_prompt)
    data = pipeline.InputPipeline(utterances, cfg, spec, model.tokenizer_path)
    decode = generation.DecodeConfig(beam_size=config.eval.beam_size,
                                     length_penalty=float(config.eval.length_penalty),
                                     buffer_size=config.eval.max_new_tokens)
    eos = np.asarray([builder.eos_id], np.int32)
    max_new = np.asarray(config.eval.max_new_tokens, np.int32)
    texts = {}
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.LOGICAL_AXIS_RULES):
      for batch in data.iterator():
        for uid, reason in batch["skipped"]:
          texts[uid] = (None, reason)
        inputs = experiment.global_batch(
            {k: v for k, v in pipeline.model_inputs(batch).items() if k != "loss_mask"}, mesh)
        out = generation.generate_lalm(module, variables, inputs, decode, max_new, eos,
                                       builder.pad_id)
        tokens, lengths = np.asarray(jax.device_get(out.tokens)), jax.device_get(out.lengths)
        for row, idx in enumerate(batch["index"]):
          if idx == bucketing.PAD_INDEX:
            continue
          ids = [t for t in tokens[row, :lengths[row]].tolist()
                 if t not in (builder.eos_id, builder.pad_id)]
          texts[utterances[idx].id] = (builder.tokenizer.decode(ids, skip_special_tokens=True)
                                       .strip(), None)
    ok = iter(u.id for u in utterances)
    results = [(p, *texts.get(next(ok), (None, "not decoded"))) if err is None else (p, t, err)
               for p, t, err in results]
  return results


def prompts_round(n: int, multiple: int = 64) -> int:
  return -(-n // multiple) * multiple


def main(argv):
  files = argv[1:]
  if not files:
    raise app.UsageError("give one or more audio files")
  failed = 0
  for path, text, error in transcribe(_WORKDIR.value, files, _TASK.value, _SOURCE.value,
                                      _TARGET.value, _STEP.value, _NO_LORA.value):
    if error is not None:
      failed += 1
      print(f"{path}: skipped: {error}", file=sys.stderr)
    else:
      print(f"{path}\t{text}")
  sys.exit(1 if failed else 0)


if __name__ == "__main__":
  app.run(main)
