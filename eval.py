"""Evaluates a run: `python eval.py --config=configs/<name>.py[:arg] --workdir=DIR
[--step=N] [--manifest=PATH ...] [--no_lora]`.

Decodes the config's test manifests (or the given ones) with DIR's latest (or step N)
checkpoint and writes DIR/eval/<step>/hypotheses.jsonl and scores.json (WER per language
for ASR, BLEU and chrF per language pair for S2TT, counts of skipped utterances, speed).
`--no_lora` turns the LoRA adapters off (the projector alone).
"""

import logging

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from lalmjax import evaluation

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "the run folder to evaluate")
_STEP = flags.DEFINE_integer("step", None, "checkpoint step (default: the latest)")
_MANIFEST = flags.DEFINE_multi_string("manifest", [], "manifest(s) instead of the config's")
_NO_LORA = flags.DEFINE_bool("no_lora", False, "evaluate with the LoRA adapters off")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  absl_logging.set_verbosity(absl_logging.WARNING)
  logging.getLogger("lalmjax").setLevel(logging.INFO)
  scores = evaluation.evaluate(_CONFIG.value, _WORKDIR.value, _STEP.value, _MANIFEST.value,
                               _NO_LORA.value)
  print(evaluation.summary_table(scores))
  print(f"wrote {scores['out_dir']}/hypotheses.jsonl and scores.json")


if __name__ == "__main__":
  app.run(main)
