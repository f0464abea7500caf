"""Trains a LALM: `python train.py --config=configs/<name>.py[:arg] --workdir=DIR`.

Any config value can be overridden: `--config.model.factor=3`, `--config.total_steps=500`.
Re-running the same command resumes from DIR's latest checkpoint. DIR receives
`metrics.jsonl`, TensorBoard events, `checkpoints/`, and at the end `export/` (the LoRA
as a PEFT adapter, the projector as safetensors).
"""

import logging

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from lalmjax import trainer

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "run folder (checkpoints, logs, export)")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # orbax logs every file it writes at INFO through absl; keep lalmjax's INFO lines.
  absl_logging.set_verbosity(absl_logging.WARNING)
  logging.getLogger("lalmjax").setLevel(logging.INFO)
  result = trainer.train(_CONFIG.value, _WORKDIR.value)
  loss = f"loss {result['loss']:.4f}, " if "loss" in result else ""
  print(f"done: step {result.get('step')}, {loss}{result.get('compilations')} "
        f"compilation(s), {result.get('skipped')} skipped utterance(s); "
        f"workdir {_WORKDIR.value}")


if __name__ == "__main__":
  app.run(main)
