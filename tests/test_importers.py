"""Corpus importers on small fake corpora in their own layouts, and scripts/import_corpus.py."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from lalmjax.data import importers, manifest
from lalmjax.data.importers import commonvoice, covost2, librispeech, parquet

SR = 16000
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tone(seconds=0.3, sr=SR) -> np.ndarray:
  t = np.arange(int(round(seconds * sr))) / sr
  return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def _write_tone(path, seconds=0.3, sr=SR, fmt=None):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  sf.write(path, _tone(seconds, sr), sr, format=fmt)


def _write_corrupt(path):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(np.random.default_rng(0).bytes(2000))


def _write_text(path, lines):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")


def _raw_lines(path):
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def _check_audio(manifest_path, expected_files):
  """Manifest audio paths are relative and resolve to the expected files."""
  folder = os.path.dirname(manifest_path)
  lines = _raw_lines(manifest_path)
  assert [os.path.isabs(l["audio"]) for l in lines] == [False] * len(lines)
  for line, expected in zip(lines, expected_files):
    assert os.path.samefile(os.path.join(folder, line["audio"]), expected)
  assert [u.audio for u in manifest.read_manifest(manifest_path).utterances] == [
      os.path.abspath(p) for p in expected_files]


# LibriSpeech ------------------------------------------------------------------------------


@pytest.fixture
def librispeech_tree(tmp_path):
  """tmp/LibriSpeech/test-clean with 3 good utterances and 4 bad ones."""
  split = tmp_path / "LibriSpeech" / "test-clean"
  ch1, ch2 = split / "19" / "198", split / "84" / "121"
  _write_text(str(ch1 / "19-198.trans.txt"), [
      "19-198-0000 HELLO WORLD", "19-198-0001 A SECOND ONE", "19-198-0002 MISSING FILE",
      "19-198-0003 CORRUPT FILE", "19-198-0004", ""])
  for utt in ("0000", "0001", "0004", "0005"):  # 0005: audio without a transcript line
    _write_tone(str(ch1 / f"19-198-{utt}.flac"))
  _write_corrupt(str(ch1 / "19-198-0003.flac"))
  _write_text(str(ch2 / "84-121.trans.txt"), ["84-121-0000 A LONGER ONE"])
  _write_tone(str(ch2 / "84-121-0000.flac"), seconds=1.0)
  return split


LIBRISPEECH_SKIPPED = {"missing audio": 1, "unreadable audio": 1, "empty transcript": 1,
                       "missing transcript": 1}


def test_librispeech(librispeech_tree, tmp_path):
  out = str(tmp_path / "manifests" / "test-clean.jsonl")
  report = librispeech.import_corpus(str(librispeech_tree), out)
  assert (report.kept, report.skipped) == (3, LIBRISPEECH_SKIPPED)
  assert report.summary().startswith("kept 3, skipped 4 (")
  lines = _raw_lines(out)
  assert [l["id"] for l in lines] == ["19-198-0000", "19-198-0001", "84-121-0000"]
  assert [l["text"] for l in lines] == ["HELLO WORLD", "A SECOND ONE", "A LONGER ONE"]
  np.testing.assert_allclose([l["duration"] for l in lines], [0.3, 0.3, 1.0], atol=1e-3)
  assert {(l["task"], l["source_lang"], l["target_lang"]) for l in lines} == {("asr", "en", "en")}
  assert lines[0]["audio"] == os.path.join("..", "LibriSpeech", "test-clean", "19", "198",
                                           "19-198-0000.flac")
  _check_audio(out, [librispeech_tree / "19" / "198" / "19-198-0000.flac",
                     librispeech_tree / "19" / "198" / "19-198-0001.flac",
                     librispeech_tree / "84" / "121" / "84-121-0000.flac"])


def test_librispeech_split_and_max_duration(librispeech_tree, tmp_path):
  out = str(tmp_path / "ls.jsonl")
  for root in (tmp_path / "LibriSpeech", tmp_path):  # the split found below either
    report = librispeech.import_corpus(str(root), out, split="test-clean", max_duration=0.5)
    assert report.kept == 2
    assert report.skipped == {**LIBRISPEECH_SKIPPED, "longer than max_duration": 1}
  with pytest.raises(FileNotFoundError, match="test-clean: choose one with --split"):
    librispeech.import_corpus(str(tmp_path / "LibriSpeech"), out)
  with pytest.raises(FileNotFoundError, match="no LibriSpeech split 'dev-clean'"):
    librispeech.import_corpus(str(tmp_path), out, split="dev-clean")


# Common Voice -----------------------------------------------------------------------------

CV_HEADER = "client_id\tpath\tsentence\tup_votes\tdown_votes"


def _common_voice(folder, rows, header=CV_HEADER, split="test"):
  """Writes folder/<split>.tsv and folder/clips/*.mp3; rows: (clip, sentence, kind[, extra])."""
  lines = [header]
  for clip, sentence, kind, *extra in rows:
    lines.append("\t".join(["c0ffee", clip, sentence, "2", "0", *extra]))
    path = os.path.join(folder, "clips", clip)
    if kind == "ok":
      _write_tone(path, fmt="MP3")
    elif kind == "corrupt":
      _write_corrupt(path)
  _write_text(os.path.join(folder, f"{split}.tsv"), lines)


def test_commonvoice(tmp_path):
  folder = str(tmp_path / "cv-corpus-17.0" / "de")
  _common_voice(folder, [
      ("common_voice_de_2.mp3", '"Hallo", sagte er.', "ok"),
      ("common_voice_de_1.mp3", "Guten Morgen.", "ok"),
      ("common_voice_de_3.mp3", "Fehlt.", "missing"),
      ("common_voice_de_4.mp3", "Kaputt.", "corrupt"),
      ("common_voice_de_5.mp3", "", "ok"),
  ])
  _write_text(os.path.join(folder, "train.tsv"), [CV_HEADER])
  out = str(tmp_path / "out" / "cv.jsonl")
  report = commonvoice.import_corpus(folder, out)
  assert report.kept == 2
  assert report.skipped == {"missing audio": 1, "unreadable audio": 1, "empty transcript": 1}
  lines = _raw_lines(out)
  assert [l["id"] for l in lines] == ["common_voice_de_1", "common_voice_de_2"]
  assert [l["text"] for l in lines] == ["Guten Morgen.", '"Hallo", sagte er.']  # quotes kept
  np.testing.assert_allclose([l["duration"] for l in lines], [0.3, 0.3], atol=1e-3)
  assert {(l["task"], l["source_lang"], l["target_lang"]) for l in lines} == {("asr", "de", "de")}
  _check_audio(out, [os.path.join(folder, "clips", f"common_voice_de_{i}.mp3") for i in (1, 2)])
  with pytest.raises(FileNotFoundError, match="no such split file.*test, train"):
    commonvoice.import_corpus(folder, out, split="dev")


def test_commonvoice_locale_sources(tmp_path):
  header = CV_HEADER + "\tlocale"
  with_column = str(tmp_path / "with_column")
  _common_voice(with_column, [("a.mp3", "Bonjour.", "ok", "fr"), ("b.mp3", "Hola.", "ok", "es")],
                header=header)
  out = str(tmp_path / "cv.jsonl")
  assert commonvoice.import_corpus(with_column, out, lang="it").kept == 2
  assert [l["source_lang"] for l in _raw_lines(out)] == ["fr", "es"]

  no_locale = str(tmp_path / "no_locale_here")
  _common_voice(no_locale, [("a.mp3", "Ciao.", "ok")])
  with pytest.raises(ValueError, match="field 'locale'.*--lang"):
    commonvoice.import_corpus(no_locale, out)
  assert commonvoice.import_corpus(no_locale, out, lang="it", max_duration=0.2).skipped == {
      "longer than max_duration": 1}
  assert commonvoice.import_corpus(no_locale, out, lang="it").kept == 1
  assert _raw_lines(out)[0]["target_lang"] == "it"


# CoVoST 2 ---------------------------------------------------------------------------------


def test_covost2(tmp_path):
  root = tmp_path / "covost"
  rows = [  # path, sentence, translation, split, kind
      ("cv_de_10.mp3", "Eins.", "One.", "test", "ok"),
      ("cv_de_11.mp3", "Zwei.", "Two.", "test", "ok"),
      ("cv_de_12.mp3", "Drei.", "", "test", "ok"),
      ("cv_de_13.mp3", "Vier.", "Four.", "test", "missing"),
      ("cv_de_14.mp3", "Fünf.", "Five.", "test", "corrupt"),
      ("cv_de_20.mp3", "Zug.", "Train.", "train", "ok"),
      ("cv_de_21.mp3", "Mehr.", "More.", "train_covost", "ok"),
      ("cv_de_30.mp3", "Dev.", "Dev.", "dev", "ok"),
  ]
  lines = ["path\tsentence\ttranslation\tclient_id\tsplit"]
  for clip, sentence, translation, split, kind in rows:
    lines.append("\t".join([clip, sentence, translation, "c0ffee", split]))
    if kind == "ok":
      _write_tone(str(root / "clips" / clip), fmt="MP3")
    elif kind == "corrupt":
      _write_corrupt(str(root / "clips" / clip))
  _write_text(str(root / "covost_v2.de_en.tsv"), lines)

  out = str(tmp_path / "m" / "covost_test.jsonl")
  report = covost2.import_corpus(str(root), out)
  assert report.kept == 2
  assert report.skipped == {"missing translation": 1, "missing audio": 1, "unreadable audio": 1}
  lines = _raw_lines(out)
  assert [(l["id"], l["text"], l["translation"]) for l in lines] == [
      ("cv_de_10", "Eins.", "One."), ("cv_de_11", "Zwei.", "Two.")]
  assert {(l["task"], l["source_lang"], l["target_lang"]) for l in lines} == {
      ("s2tt", "de", "en")}
  np.testing.assert_allclose([l["duration"] for l in lines], [0.3, 0.3], atol=1e-3)
  _check_audio(out, [root / "clips" / "cv_de_10.mp3", root / "clips" / "cv_de_11.mp3"])
  assert [u.target() for u in manifest.read_manifest(out).utterances] == ["One.", "Two."]

  # train takes train_covost too; the tsv may be given directly, the clips elsewhere.
  report = covost2.import_corpus(str(root / "covost_v2.de_en.tsv"), out, split="train",
                                 clips=str(root / "clips"))
  assert report.kept == 2 and [l["id"] for l in _raw_lines(out)] == ["cv_de_20", "cv_de_21"]
  with pytest.raises(ValueError, match="split must be one of"):
    covost2.import_corpus(str(root), out, split="validated")


# Parquet ----------------------------------------------------------------------------------


def _encoded(fmt, seconds=0.3, sr=SR) -> bytes:
  buf = io.BytesIO()
  sf.write(buf, _tone(seconds, sr), sr, format=fmt)
  return buf.getvalue()


def _parquet(path, rows, **extra_columns):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  audio_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
  table = pa.table({
      "id": pa.array([r[0] for r in rows], pa.string()),
      "audio": pa.array([{"bytes": r[1], "path": r[2]} for r in rows], audio_type),
      "sentence": pa.array([r[3] for r in rows], pa.string()),
      **{name: pa.array(values, pa.string()) for name, values in extra_columns.items()},
  })
  pq.write_table(table, path)


def test_parquet(tmp_path):
  root = tmp_path / "hf"
  _write_tone(str(root / "data" / "local.flac"), seconds=0.4)
  _parquet(str(root / "data" / "test-00000-of-00001.parquet"), [
      ("r1", _encoded("FLAC"), "r1.flac", "one"),
      ("r2", _encoded("WAV", seconds=0.5, sr=8000), None, "two"),  # own rate kept
      ("r3", _encoded("MP3"), "r3.mp3", "three"),
      ("r4", np.random.default_rng(1).bytes(3000), "r4.flac", "corrupt"),
      ("r5", _encoded("FLAC"), None, "  "),
      ("r6", None, "local.flac", "on disk"),  # path only, relative to the parquet file
      ("r7", None, "gone.flac", "missing"),
      ("dir/r8", _encoded("FLAC"), None, "odd id"),
  ])
  _parquet(str(root / "data" / "train-00000-of-00001.parquet"),
           [("t1", _encoded("FLAC"), None, "train")])
  out = str(tmp_path / "out" / "test.jsonl")
  report = parquet.import_corpus(str(root), out, split="test", lang="en")
  assert report.kept == 5
  assert report.skipped == {"unreadable audio": 1, "empty transcript": 1, "missing audio": 1}
  lines = _raw_lines(out)
  assert [l["id"] for l in lines] == ["dir/r8", "r1", "r2", "r3", "r6"]
  assert [l["text"] for l in lines] == ["odd id", "one", "two", "three", "on disk"]
  np.testing.assert_allclose([l["duration"] for l in lines], [0.3, 0.3, 0.5, 0.3, 0.4],
                             atol=1e-3)
  audio = tmp_path / "out" / "audio"
  assert lines[1]["audio"] == os.path.join("audio", "r1.flac")
  assert lines[0]["audio"].startswith(os.path.join("audio", "dir_r8-"))
  _check_audio(out, [os.path.join(str(tmp_path / "out"), lines[0]["audio"]),
                     audio / "r1.flac", audio / "r2.flac", audio / "r3.flac",
                     root / "data" / "local.flac"])
  info = sf.info(str(audio / "r2.flac"))
  assert (info.format, info.subtype, info.samplerate) == ("FLAC", "PCM_16", 8000)
  wav, _ = sf.read(str(audio / "r1.flac"), dtype="float32")
  np.testing.assert_allclose(wav, _tone(), atol=1 / 2**15)
  assert not os.path.exists(audio / "r4.flac") and not os.path.exists(audio / "t1.flac")

  with pytest.raises(ValueError, match="--lang"):
    parquet.import_corpus(str(root), out, split="test")
  with pytest.raises(ValueError, match="column 'transcript' .*missing; columns: id, audio"):
    parquet.import_corpus(str(root), out, split="test", lang="en", text_column="transcript")


def test_parquet_translation(tmp_path):
  path = str(tmp_path / "pq" / "pairs.parquet")
  _parquet(path, [("b", _encoded("FLAC"), None, "Zwei"), ("a", _encoded("FLAC"), None, "Eins"),
                  ("c", _encoded("FLAC"), None, "Drei")],
           translation=["Two", "One", None], locale=["de", "de", "de"])
  out = str(tmp_path / "s2tt.jsonl")
  report = parquet.import_corpus(path, out, translation_column="translation", target_lang="en",
                                 max_duration=10.0)
  assert (report.kept, report.skipped) == (2, {"missing translation": 1})
  assert [(l["id"], l["task"], l["source_lang"], l["target_lang"], l["translation"])
          for l in _raw_lines(out)] == [("a", "s2tt", "de", "en", "One"),
                                        ("b", "s2tt", "de", "en", "Two")]


def test_report_summary_and_registry():
  report = importers.ImportReport(kept=5, skipped={"b": 1, "a": 1, "c": 3})
  assert report.summary() == "kept 5, skipped 5 (c: 3, a: 1, b: 1)"
  assert importers.ImportReport(kept=2).summary() == "kept 2, skipped 0"
  assert importers.get_importer("covost2") is covost2
  with pytest.raises(ValueError, match="unknown corpus"):
    importers.get_importer("timit")


# scripts/import_corpus.py -----------------------------------------------------------------


def _run(*args):
  return subprocess.run([sys.executable, os.path.join("scripts", "import_corpus.py"), *args],
                        cwd=REPO, capture_output=True, text=True, timeout=60, check=False)


def test_cli(librispeech_tree, tmp_path):
  out = str(tmp_path / "cli" / "ls.jsonl")
  result = _run("librispeech", str(tmp_path / "LibriSpeech"), out, "--split", "test-clean")
  assert result.returncode == 0, result.stderr
  assert result.stdout.splitlines()[0] == (
      "kept 3, skipped 4 (empty transcript: 1, missing audio: 1, missing transcript: 1, "
      "unreadable audio: 1)")
  assert "19-198-0002" in result.stderr  # each skipped utterance is logged with its id
  assert len(_raw_lines(out)) == 3

  result = _run("librispeech", str(tmp_path / "nowhere"), out)
  assert result.returncode == 1 and "nowhere does not exist" in result.stderr
  result = _run("librispeech", str(librispeech_tree), out, "--max_duration", "0.01")
  assert result.returncode == 1 and "nothing kept" in result.stderr
  result = _run("librispeech", str(librispeech_tree), out, "--pair", "de_en")
  assert result.returncode == 2 and "--pair does not apply to librispeech" in result.stderr
