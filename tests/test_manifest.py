"""lalmjax.data.manifest: round trips, path resolution, and every malformed-line error."""

import json
import logging
import os

import pytest

from lalmjax.data import manifest
from lalmjax.data.manifest import ManifestError, Utterance

GOOD = {"id": "a", "audio": "audio/a.flac", "duration": 1.5, "task": "asr", "text": "hello",
        "source_lang": "en", "target_lang": "en"}


def _line(**changes) -> str:
  obj = {**GOOD, **changes}
  return json.dumps({k: v for k, v in obj.items() if v is not _DROP})


_DROP = object()


def _write(path, lines) -> str:
  path = str(path)
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  return path


def _utterances(audio_dir):
  return [
      Utterance(id="u2", audio=os.path.join(audio_dir, "u2.flac"), duration=2.25, task="s2tt",
                text="Guten Morgen", source_lang="de", target_lang="en",
                translation="Good morning"),
      Utterance(id="u1", audio=os.path.join(audio_dir, "sub", "u1.flac"), duration=0.5,
                task="asr", text="HELLO «WORLD»", source_lang="en", target_lang="en"),
  ]


def test_round_trip_with_relative_paths(tmp_path):
  utts = _utterances(str(tmp_path / "corpus"))
  path = str(tmp_path / "new" / "dir" / "m.jsonl")
  assert manifest.write_manifest(path, utts) == 2
  assert sorted(os.listdir(tmp_path / "new" / "dir")) == ["m.jsonl"]  # no temporary left
  lines = [json.loads(l) for l in open(path, encoding="utf-8")]
  assert [l["id"] for l in lines] == ["u2", "u1"]  # written in the order given
  assert lines[0]["audio"] == os.path.join("..", "..", "corpus", "u2.flac")
  assert lines[1]["audio"] == os.path.join("..", "..", "corpus", "sub", "u1.flac")
  assert "translation" not in lines[1] and lines[0]["translation"] == "Good morning"
  contents = manifest.read_manifest(path)
  assert contents.utterances == utts and contents.skipped == [] and contents.path == path
  assert [u.target() for u in contents.utterances] == ["Good morning", "HELLO «WORLD»"]


def test_paths_relative_to_manifest_folder_absolute_kept(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # relative audio must not resolve against the cwd
  (tmp_path / "m").mkdir()
  absolute = str(tmp_path / "elsewhere" / "b.wav")
  path = _write(tmp_path / "m" / "x.jsonl", [_line(), _line(id="b", audio=absolute)])
  utts = manifest.read_manifest(path).utterances
  assert utts[0].audio == str(tmp_path / "m" / "audio" / "a.flac")
  assert utts[1].audio == absolute


def test_blank_lines_and_extra_fields(tmp_path):
  path = _write(tmp_path / "x.jsonl", ["", _line(speaker="s1", gender="f"), "   ",
                                       _line(id="b"), ""])
  contents = manifest.read_manifest(path)
  assert [u.id for u in contents.utterances] == ["a", "b"]


def test_empty_manifest_warns(tmp_path, caplog):
  path = _write(tmp_path / "empty.jsonl", ["", ""])
  with caplog.at_level(logging.WARNING):
    contents = manifest.read_manifest(path)
  assert contents.utterances == [] and "empty.jsonl" in caplog.text
  assert "no utterances" in caplog.text


MALFORMED = {
    "not_json": ('{"id": "x", oops', None, "not valid JSON"),
    "not_object": ('["a", 1.0]', None, "expected a JSON object"),
    "missing_text": (_line(id="x", text=_DROP), "text", "is missing"),
    "missing_duration": (_line(id="x", duration=_DROP), "duration", "is missing"),
    "duration_string": (_line(id="x", duration="1.5"), "duration", "must be a number"),
    "duration_bool": (_line(id="x", duration=True), "duration", "must be a number"),
    "id_number": (_line(id=7), "id", "must be a string"),
    "empty_audio": (_line(id="x", audio=""), "audio", "must not be empty"),
    "unknown_task": (_line(id="x", task="mt"), "task", "must be one of"),
    "negative_duration": (_line(id="x", duration=-0.1), "duration", ">= 0"),
    "nan_duration": (_line(id="x").replace("1.5", "NaN"), "duration", "finite"),
    "s2tt_no_translation": (_line(id="x", task="s2tt", target_lang="de"), "translation",
                            "needs a translation"),
    "translation_number": (_line(id="x", task="s2tt", translation=3), "translation",
                           "must be a string"),
    "asr_other_target": (_line(id="x", target_lang="de"), "target_lang", "source_lang"),
    "duplicate_id": (_line(), "id", "duplicate id 'a'"),
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_line_names_file_line_field(tmp_path, kind):
  bad, field, message = MALFORMED[kind]
  path = _write(tmp_path / "bad.jsonl", [_line(), "", bad, _line(id="z")])
  with pytest.raises(ManifestError) as e:
    manifest.read_manifest(path)
  text = str(e.value)
  assert text.startswith(f"{path}:3: "), text
  assert message in text
  if field is not None:
    assert f"field '{field}'" in text
  if kind == "duplicate_id":
    assert f"{path}:1" in text  # where the id was first seen


def test_skip_mode_counts_every_bad_line(tmp_path, caplog):
  lines, expected = [_line()], []
  for i, kind in enumerate(sorted(MALFORMED)):
    lines.append(MALFORMED[kind][0])
    expected.append(2 * i + 2)
    lines.append(_line(id=f"ok{i}"))
  path = _write(tmp_path / "bad.jsonl", lines)
  with caplog.at_level(logging.WARNING):
    contents = manifest.read_manifest(path, on_error="skip")
  assert len(contents.utterances) == 1 + len(MALFORMED)
  assert [lineno for lineno, _ in contents.skipped] == expected
  assert all(reason.startswith(f"{path}:{lineno}:") for lineno, reason in contents.skipped)
  assert caplog.text.count("skipping manifest line") == len(MALFORMED)


def test_not_utf8_line(tmp_path):
  path = str(tmp_path / "latin1.jsonl")
  with open(path, "wb") as f:
    latin1 = _line(id="b", text="caf?").replace("?", "\xe9").encode("latin-1")
    f.write((_line() + "\n").encode() + latin1 + b"\n")
  with pytest.raises(ManifestError, match=r"latin1\.jsonl:2: not UTF-8"):
    manifest.read_manifest(path)


def test_read_manifests_duplicate_across_files(tmp_path):
  first = _write(tmp_path / "one.jsonl", [_line(), _line(id="b")])
  second = _write(tmp_path / "two.jsonl", [_line(id="c"), _line(id="b")])
  with pytest.raises(ManifestError) as e:
    manifest.read_manifests([first, second])
  assert f"{second}:2: field 'id'" in str(e.value) and f"{first}:2" in str(e.value)
  contents = manifest.read_manifests([first, second], on_error="skip")
  assert [u.id for u in contents.utterances] == ["a", "b", "c"]
  assert [lineno for lineno, _ in contents.skipped] == [2]
  assert contents.path == os.pathsep.join([first, second])


def test_errors_outside_lines(tmp_path):
  with pytest.raises(FileNotFoundError, match="nope.jsonl"):
    manifest.read_manifest(str(tmp_path / "nope.jsonl"))
  with pytest.raises(ValueError, match="on_error"):
    manifest.read_manifest(_write(tmp_path / "x.jsonl", [_line()]), on_error="ignore")
  utt = Utterance(**{**GOOD, "audio": "/a.flac"})
  with pytest.raises(ManifestError, match="duplicate id 'a'"):
    manifest.write_manifest(str(tmp_path / "dup.jsonl"), [utt, utt])
  assert not os.path.exists(tmp_path / "dup.jsonl")
  with pytest.raises(ManifestError, match="field 'translation'"):
    Utterance(**{**GOOD, "task": "s2tt", "target_lang": "de"})
  with pytest.raises(ManifestError, match="field 'duration'"):
    Utterance(**{**GOOD, "duration": float("nan")})
