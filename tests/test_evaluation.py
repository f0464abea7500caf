"""eval.py's library side and transcribe: a trained tiny run decoded on mixed lengths,
scores written, compilations bounded by the buckets, a corrupt file counted, the rest
scored."""

import json
import os

import numpy as np
import pytest
import soundfile as sf

from configs import tiny
from lalmjax import audio, evaluation, metrics, trainer, transcribe
from lalmjax.data import manifest

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet".split()
BUCKETS = ((1.0, 8, 96), (2.0, 8, 128))


def _corpus(tmp, n, seed, corrupt_at=None, lang="en", task="asr"):
  rng = np.random.default_rng(seed)
  utts = []
  for i in range(n):
    seconds = rng.uniform(0.3, 1.9)
    path = str(tmp / f"{task}{seed}_{i:02d}.flac")
    if i == corrupt_at:
      with open(path, "wb") as f:
        f.write(os.urandom(4000))
    else:
      t = np.arange(int(seconds * audio.SAMPLE_RATE)) / audio.SAMPLE_RATE
      sf.write(path, (0.3 * np.sin(2 * np.pi * (150 + 40 * i) * t)).astype(np.float32),
               audio.SAMPLE_RATE)
    text = " ".join(rng.choice(WORDS, 3))
    extra = {"translation": "über " + text, "target_lang": "de"} if task == "s2tt" else {}
    utts.append(manifest.Utterance(**{
        "id": f"{task}{seed}_{i:02d}", "audio": path, "duration": seconds, "task": task,
        "text": text, "source_lang": lang, "target_lang": lang, **extra}))
  out = str(tmp / f"{task}{seed}.jsonl")
  manifest.write_manifest(out, utts)
  return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("eval_run")
  c = tiny.get_config()
  c.data.train_manifests = (_corpus(tmp, 16, 0),)
  c.data.test_manifests = (_corpus(tmp, 11, 1, corrupt_at=5),
                           _corpus(tmp, 5, 2, task="s2tt"))
  c.model.encoder.max_source_positions = 100  # a 2 s window
  c.data.buckets = ((2.0, 8, 128),)
  c.data.eval_buckets = BUCKETS
  c.total_steps, c.checkpoint_every, c.log_every = 2, 2, 1
  c.eval.max_new_tokens = 6
  workdir = str(tmp / "run")
  trainer.train(c, workdir)
  return c, workdir, tmp


def test_eval_scores_everything_it_can_and_counts_the_rest(run):
  config, workdir, _ = run
  scores = evaluation.evaluate(config, workdir)
  out = os.path.join(workdir, "eval", "2")
  assert scores["out_dir"] == out
  rows = [json.loads(l) for l in open(os.path.join(out, "hypotheses.jsonl"))]
  assert len(rows) == scores["num_utterances"] == 15  # 16 utterances, one corrupt
  assert scores["num_skipped"] == 1
  skipped = [json.loads(l) for l in open(os.path.join(out, "skipped.jsonl"))]
  assert [s["id"] for s in skipped] == ["asr1_05"]
  assert {r["task"] for r in rows} == {"asr", "s2tt"}
  for r in rows:
    assert set(r) >= {"id", "reference", "hypothesis", "language", "task"}
  # One compilation per bucket at most, however many batches.
  assert 1 <= scores["compilations"] <= len(BUCKETS)
  # The scores are the metrics module's on the written hypotheses.
  again = metrics.score(rows)
  assert scores["wer"]["overall"] == pytest.approx(again["wer"]["overall"])
  assert scores["bleu"] == pytest.approx(again["bleu"])
  stored = json.load(open(os.path.join(out, "scores.json")))
  assert stored["num_utterances"] == 15 and "en" in stored["wer"]["per_language"]
  assert "en-de" in stored["bleu"] and "en-de" in stored["chrf"]
  assert stored["speed"]["audio_seconds"] > 0
  assert stored["llm_audio_tokens_per_second"] == pytest.approx(25.0)  # k = 2
  print(evaluation.summary_table(scores))


def test_eval_without_lora_and_on_given_manifests(run, tmp_path):
  config, workdir, tmp = run
  only = _corpus(tmp_path, 3, 7)
  scores = evaluation.evaluate(config, workdir, manifests=[only], no_lora=True)
  assert scores["num_utterances"] == 3 and scores["no_lora"]
  assert scores["out_dir"].endswith(os.path.join("eval", "2-nolora"))


def test_eval_of_a_missing_step_names_the_steps(run):
  config, workdir, _ = run
  with pytest.raises(FileNotFoundError, match=r"no checkpoint at step 7; there are \[2\]"):
    evaluation.evaluate(config, workdir, step=7)


def test_transcribe_any_length_and_reports_bad_files(run, tmp_path):
  _, workdir, tmp = run
  good = str(tmp_path / "good.wav")
  t = np.arange(int(4.5 * 22050)) / 22050  # 4.5 s at 22.05 kHz: 3 windows of 2 s
  sf.write(good, (0.2 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), 22050)
  bad = str(tmp_path / "bad.flac")
  open(bad, "wb").write(b"not audio at all")
  results = transcribe.transcribe(workdir, [good, bad])
  assert [r[0] for r in results] == [good, bad]
  assert results[0][1] is not None and results[0][2] is None
  assert results[1][1] is None and "bad.flac" in results[1][2]


def test_eval_at_another_rate_scores_into_its_own_folder(run):
  """uniavg params do not depend on k: a k=2 run scores at k=3 (its prompts hold
  ceil(frames / 3) audio tokens), into eval/<step>-uniavg-k3."""
  config, workdir, _ = run
  c = config.copy_and_resolve_references()
  c.model.factor = 3
  scores = evaluation.evaluate(c, workdir)
  assert scores["out_dir"].endswith(os.path.join("eval", "2-uniavg-k3"))
  assert scores["num_utterances"] == 15  # the corrupt file skipped, as at k=2
  assert scores["llm_audio_tokens_per_second"] == pytest.approx(50 / 3, rel=0.05)


def test_rate_suffix_comes_from_the_checkpoint_not_the_last_train_invocation(run):
  """The folder suffix compares the eval rate with the rate the checkpoint recorded, so a
  later `train.py` invocation at another k (which rewrites WORKDIR/config.json) does not
  rename where this checkpoint's scores go."""
  config, _, _ = run
  trained_at = lambda method, k: {"config": {"model": {"method": method, "factor": k}}}
  c = config.copy_and_resolve_references()
  c.model.method, c.model.factor = "uniavg", 3
  assert evaluation._rate_suffix(c, trained_at("uniavg", 3)) == ""
  assert evaluation._rate_suffix(c, trained_at("uniavg", 2)) == "-uniavg-k3"
  assert evaluation._rate_suffix(c, trained_at("unseg", 3)) == "-uniavg-k3"


def test_a_stack_run_refuses_another_rate():
  from lalmjax import run_checkpoints

  shape = lambda method, k: {"model_shape": {"method": method, "factor": k, "projector": "x"}}
  for a, b in ((shape("uniavg", 2), shape("uniavg", 3)), (shape("uniavg", 2),
                                                           shape("unseg", 2))):
    run_checkpoints.check_compatible(a, b, "w", evaluation.rate_free_keys(a, b))
  for a, b in ((shape("stack", 2), shape("stack", 3)), (shape("uniavg", 2), shape("stack", 2))):
    with pytest.raises(ValueError, match="model_shape"):
      run_checkpoints.check_compatible(a, b, "w", evaluation.rate_free_keys(a, b))
  # The projector is never free.
  a, b = shape("uniavg", 2), shape("uniavg", 3)
  b["model_shape"]["projector"] = "y"
  with pytest.raises(ValueError, match="model_shape"):
    run_checkpoints.check_compatible(a, b, "w", evaluation.rate_free_keys(a, b))
