"""The main job, end to end on this machine (what `make run` runs):

    python scripts/run_demo.py                                     # -> runs/demo
    python scripts/run_demo.py --config=configs/demo_multilingual.py   # -> runs/demo_multilingual
    python scripts/run_demo.py --config=configs/demo.py:method=unseg,k=3 --workdir=runs/u3

    1. LM stage: a small Qwen2-shaped LM pretrained on the demo corpus's training text
       (configs/demo_lm.py) into WORKDIR/lm; reused when already there.
    2. Whisper from a pip package (a CTranslate2 export: tiny.en, or base for the
       multilingual config), imported into Flax.
    3. Encoder frames of every utterance cached under WORKDIR/train/features.
    4. Projector + LoRA trained (uniavg k=2 by default) into WORKDIR/train; resumed
       from its latest checkpoint when there is one.
    5. Evaluation on the config's test manifests: WER per language, BLEU for S2TT, and
       the LLM's audio tokens per second of audio; then the commands to try next.

Nothing downloads; nothing outside the repository and its pip packages is needed.
Any field is `--config.x=y` (e.g. `--config.total_steps=200`).
"""

from __future__ import annotations

import logging
import os
import sys
import time

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(REPO, "configs", "demo.py"), "the LALM config (configs/demo.py)",
    lock_config=True)
_LM_CONFIG = config_flags.DEFINE_config_file(
    "lm_config", os.path.join(REPO, "configs", "demo_lm.py"), "the LM stage's config",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "the demo's folder (default: runs/<config "
                               "file name>, e.g. runs/demo)")


def _config_name() -> str:
  for arg in sys.argv[1:]:
    if arg.startswith("--config="):
      return os.path.splitext(os.path.basename(arg.split("=", 1)[1].split(":")[0]))[0]
  return "demo"


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  absl_logging.set_verbosity(absl_logging.WARNING)
  logging.getLogger("lalmjax").setLevel(logging.WARNING)
  from lalmjax import evaluation, lm_pretraining, trainer  # pylint: disable=g-import-not-at-top

  t0 = time.time()
  workdir = os.path.abspath(_WORKDIR.value or os.path.join("runs", _config_name()))
  config = _CONFIG.value
  lm_dir = os.path.join(workdir, "lm")
  print(f"[1/4] LM stage (configs/demo_lm.py) -> {lm_dir}", flush=True)
  if config.model.llm_path:
    print(f"      config names an LLM ({config.model.llm_path}): no LM stage", flush=True)
  else:
    if lm_pretraining.is_done(lm_dir):
      print(f"      pretrained LM found in {lm_dir}, reused", flush=True)
    lm_pretraining.pretrain_lm(_LM_CONFIG.value, lm_dir)
    with config.unlocked():
      config.model.llm_path = lm_dir
  train_dir = os.path.join(workdir, "train")
  print(f"[2/4] encoder {config.model.encoder_path}, features cached under "
        f"{os.path.join(train_dir, config.data.feature_cache)}", flush=True)
  print(f"[3/4] training {config.model.method} k={config.model.factor}, "
        f"{config.total_steps} steps -> {train_dir}", flush=True)
  result = trainer.train(config, train_dir)
  if "loss" in result:
    print(f"      trained to step {result['step']}, loss {result['loss']:.3f}", flush=True)
  else:
    print(f"      {train_dir} is already at step {result['step']} of {config.total_steps}: "
          "nothing to train (a new --workdir or --config.total_steps trains more)", flush=True)

  print("[4/4] evaluation on " + ", ".join(config.data.test_manifests), flush=True)
  scores = evaluation.evaluate(config, train_dir)
  print()
  print(evaluation.summary_table(scores))
  print(f"\nLLM audio tokens per second of audio: {scores['llm_audio_tokens_per_second']:.1f} "
        f"({config.model.method}, k={config.model.factor}); wall time {time.time() - t0:.0f} s")
  print(f"scores: {os.path.relpath(scores['out_dir'])}/scores.json, hypotheses.jsonl")
  print(f"\nworkdir: {workdir}")
  rel_train, rel_lm = os.path.relpath(train_dir), os.path.relpath(config.model.llm_path)
  config_arg = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--config=")),
                    "configs/demo.py")
  example = os.path.relpath(os.path.join(REPO, "data", "demo", "audio",
                                         "test-asr-en-00001.flac"))
  print("next:\n"
        f"  python eval.py --config={config_arg} --workdir={rel_train} "
        f"--config.model.llm_path={rel_lm} --config.model.factor=3   # another rate\n"
        f"  python -m lalmjax.transcribe --workdir={rel_train} {example} YOUR_FILE.wav")


if __name__ == "__main__":
  app.run(main)
