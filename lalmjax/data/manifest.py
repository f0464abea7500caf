"""Manifests: JSON Lines files of utterances, the one format every corpus is turned into.

One utterance a line (wrapped here)::

    {"id": "1089-134686-0000", "duration": 10.435, "task": "asr",
     "audio": "../LibriSpeech/test-clean/1089/134686/1089-134686-0000.flac",
     "text": "HE HOPED THERE WOULD BE STEW FOR DINNER", "source_lang": "en", "target_lang": "en"}

`audio` is relative to the manifest's folder (an absolute path stays absolute);
`duration` is in seconds; `task` is one of TASKS; `translation` is present for "s2tt"
only. Unknown extra fields are allowed and ignored; blank lines are ignored. Once read,
`Utterance.audio` is an absolute path. Every malformed line is reported with the file,
the 1-based line number and the field at fault.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from typing import Any, Iterable, Sequence

log = logging.getLogger(__name__)

TASKS = ("asr", "s2tt")
ON_ERROR = ("raise", "skip")

# Required string fields; each must be non-empty except the transcript.
_STRING_FIELDS = ("id", "audio", "task", "text", "source_lang", "target_lang")
_NON_EMPTY = ("id", "audio", "source_lang", "target_lang")


class ManifestError(ValueError):
  """A malformed manifest line; the message names the file, the line and the field."""


@dataclasses.dataclass(frozen=True)
class Utterance:
  """One line of a manifest.

  Attributes:
    id: unique within the manifests used together.
    audio: the audio file; absolute once read from a manifest.
    duration: seconds, >= 0.
    task: "asr" or "s2tt".
    text: transcript in `source_lang`.
    source_lang: language code of the speech, e.g. "en".
    target_lang: language code of the target text; equals `source_lang` for "asr".
    translation: the target text of "s2tt" (a non-empty string); None for "asr".
  """

  id: str
  audio: str
  duration: float
  task: str
  text: str
  source_lang: str
  target_lang: str
  translation: str | None = None

  def __post_init__(self):
    problem = _check_fields(dataclasses.asdict(self))
    if problem is not None:
      field, message = problem
      raise ManifestError(f"utterance {self.id!r}: field '{field}' {message}")

  def target(self) -> str:
    """The text the model should produce: the transcript (asr) or the translation (s2tt)."""
    return self.translation if self.task == "s2tt" else self.text

  def to_json(self, root: str) -> dict[str, Any]:
    """The manifest line as a dict, with `audio` relative to the folder `root`.

    A relative `self.audio` is taken relative to the current directory. On Windows, a
    file on another drive than `root` keeps its absolute path.
    """
    audio = os.path.abspath(self.audio)
    try:
      audio = os.path.relpath(audio, os.path.abspath(root))
    except ValueError:  # another drive: no relative path exists
      pass
    line = {"id": self.id, "audio": audio, "duration": self.duration, "task": self.task,
            "text": self.text, "source_lang": self.source_lang,
            "target_lang": self.target_lang}
    if self.translation is not None:
      line["translation"] = self.translation
    return line


@dataclasses.dataclass
class ManifestContents:
  """What `read_manifest` (or `read_manifests`) found.

  Attributes:
    path: the manifest file (for several files: their paths joined by os.pathsep).
    utterances: the valid lines, in file order.
    skipped: (1-based line number, reason) of each line left out under on_error="skip";
      the reason starts with "FILE:LINE:" so it stays unambiguous across files.
  """

  path: str
  utterances: list[Utterance]
  skipped: list[tuple[int, str]] = dataclasses.field(default_factory=list)

  def __len__(self) -> int:
    return len(self.utterances)


def _check_fields(obj: dict[str, Any]) -> tuple[str, str] | None:
  """The first problem of a parsed line as (field, message), or None when it is valid."""
  for name in _STRING_FIELDS:
    if name not in obj:
      return name, "is missing"
    if not isinstance(obj[name], str):
      return name, f"must be a string, got {type(obj[name]).__name__} {obj[name]!r}"
    if name in _NON_EMPTY and not obj[name]:
      return name, "must not be empty"
  if "duration" not in obj:
    return "duration", "is missing"
  duration = obj["duration"]
  if isinstance(duration, bool) or not isinstance(duration, (int, float)):
    return "duration", f"must be a number, got {type(duration).__name__} {duration!r}"
  if not math.isfinite(duration) or duration < 0:
    return "duration", f"must be a finite number >= 0 (seconds), got {duration!r}"
  task = obj["task"]
  if task not in TASKS:
    return "task", f"must be one of {', '.join(TASKS)}, got {task!r}"
  translation = obj.get("translation")
  if translation is not None and not isinstance(translation, str):
    return "translation", f"must be a string, got {type(translation).__name__} {translation!r}"
  if task == "s2tt" and not translation:
    return "translation", "is missing or empty: an s2tt utterance needs a translation"
  if task == "asr" and obj["target_lang"] != obj["source_lang"]:
    return "target_lang", (f"must equal source_lang for asr, got {obj['target_lang']!r} vs "
                           f"source_lang {obj['source_lang']!r}")
  return None


class _LineError(Exception):
  """A problem with one line, before the file and line number are attached."""

  def __init__(self, field: str | None, message: str):
    super().__init__(message)
    self.field, self.message = field, message

  def describe(self, path: str, lineno: int) -> str:
    what = f"field '{self.field}' {self.message}" if self.field else self.message
    return f"{path}:{lineno}: {what}"


def _parse_line(raw: bytes, folder: str) -> Utterance:
  """One non-blank manifest line -> Utterance; raises _LineError(field, message)."""
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    raise _LineError(None, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
  try:
    obj = json.loads(text)
  except json.JSONDecodeError as e:
    raise _LineError(None, f"not valid JSON ({e.msg} at column {e.colno})") from None
  if not isinstance(obj, dict):
    raise _LineError(None, f"expected a JSON object, got {type(obj).__name__}")
  problem = _check_fields(obj)
  if problem is not None:
    raise _LineError(*problem)
  audio = obj["audio"]
  if not os.path.isabs(audio):
    audio = os.path.normpath(os.path.join(folder, audio))
  return Utterance(id=obj["id"], audio=audio, duration=float(obj["duration"]),
                   task=obj["task"], text=obj["text"], source_lang=obj["source_lang"],
                   target_lang=obj["target_lang"], translation=obj.get("translation"))


def _read_into(path: str, on_error: str, seen: dict[str, tuple[str, int]],
               contents: ManifestContents) -> int:
  """Appends `path`'s utterances to `contents`; `seen` maps id -> (file, line) so far.

  Returns the number of utterances this file contributed.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: manifest does not exist")
  folder = os.path.dirname(os.path.abspath(path))
  kept = 0
  with open(path, "rb") as f:
    for lineno, raw in enumerate(f, start=1):
      if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):  # UTF-8 byte-order mark
        raw = raw[3:]
      if not raw.strip():
        continue
      try:
        utt = _parse_line(raw, folder)
        if utt.id in seen:
          first_path, first_line = seen[utt.id]
          raise _LineError("id", f"duplicate id {utt.id!r}, first seen at "
                           f"{first_path}:{first_line}")
      except _LineError as e:
        message = e.describe(path, lineno)
        if on_error == "raise":
          raise ManifestError(message) from None
        log.warning("skipping manifest line: %s", message)
        contents.skipped.append((lineno, message))
        continue
      seen[utt.id] = (path, lineno)
      contents.utterances.append(utt)
      kept += 1
  if kept == 0:
    log.warning("%s: manifest holds no utterances", path)
  return kept


def _check_on_error(on_error: str):
  if on_error not in ON_ERROR:
    raise ValueError(f"on_error must be one of {', '.join(ON_ERROR)}, got {on_error!r}")


def read_manifest(path: str, on_error: str = "raise") -> ManifestContents:
  """Reads one manifest.

  Args:
    path: the JSON Lines file.
    on_error: "raise" to stop at the first malformed line with a ManifestError; "skip" to
      log it, leave it out and list it in `skipped`.

  Returns:
    ManifestContents with absolute audio paths.

  Raises:
    FileNotFoundError if `path` does not exist; ManifestError (file, line, field) for a
    malformed line under on_error="raise".
  """
  _check_on_error(on_error)
  contents = ManifestContents(path=path, utterances=[])
  _read_into(path, on_error, {}, contents)
  return contents


def read_manifests(paths: Sequence[str], on_error: str = "raise") -> ManifestContents:
  """Reads several manifests as one; ids must be unique across all of them.

  A duplicate id is a ManifestError naming both files and lines (or a skipped line).
  """
  _check_on_error(on_error)
  if isinstance(paths, str):
    paths = [paths]
  contents = ManifestContents(path=os.pathsep.join(paths), utterances=[])
  seen: dict[str, tuple[str, int]] = {}
  for path in paths:
    _read_into(path, on_error, seen, contents)
  return contents


def write_manifest(path: str, utterances: Iterable[Utterance]) -> int:
  """Writes `utterances` to `path` (audio relative to its folder), atomically.

  The parent folders are created; the file is written under a temporary name in the same
  folder and renamed, so a reader never sees half a manifest.

  Returns:
    The number of utterances written.

  Raises:
    ManifestError for a duplicate id (nothing is written).
  """
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  seen: set[str] = set()
  lines = []
  for utt in utterances:
    if utt.id in seen:
      raise ManifestError(f"{path}: field 'id': duplicate id {utt.id!r}, nothing written")
    seen.add(utt.id)
    lines.append(json.dumps(utt.to_json(folder), ensure_ascii=False, allow_nan=False))
  tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
  try:
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
      f.writelines(line + "\n" for line in lines)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return len(lines)
