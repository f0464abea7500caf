"""Corpus importers: a public corpus in its own layout -> a manifest (lalmjax.data.manifest).

Each module here (`librispeech`, `commonvoice`, `covost2`, `parquet`) exposes
`import_corpus(root, out_manifest, **options) -> ImportReport`. The manifest points at
the corpus's audio files where they lie (paths relative to the manifest's folder); only
the parquet importer, whose audio lives inside the tables, writes audio files.

What they share lives here: `ImportReport`, the duration probe (file headers, no full
decode) and `ManifestBuilder`, which checks each candidate utterance, counts the ones it
leaves out by reason, and writes the manifest sorted by id.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import math
import os
import warnings

from lalmjax.data import manifest as manifest_lib

log = logging.getLogger(__name__)

IMPORTERS = ("librispeech", "commonvoice", "covost2", "parquet")

# Reasons an utterance is left out (ImportReport.skipped keys).
MISSING_AUDIO = "missing audio"
UNREADABLE_AUDIO = "unreadable audio"
EMPTY_TRANSCRIPT = "empty transcript"
MISSING_TRANSCRIPT = "missing transcript"
MISSING_TRANSLATION = "missing translation"
TOO_LONG = "longer than max_duration"
DUPLICATE_ID = "duplicate id"
MISSING_ID = "missing id"


@dataclasses.dataclass
class ImportReport:
  """What an importer did.

  Attributes:
    kept: utterances written to the manifest.
    skipped: reason -> number of utterances left out for it.
    manifest: the manifest written.
  """

  kept: int = 0
  skipped: dict[str, int] = dataclasses.field(default_factory=dict)
  manifest: str = ""

  @property
  def num_skipped(self) -> int:
    return sum(self.skipped.values())

  def summary(self) -> str:
    """"kept N, skipped M (reason: count, ...)", reasons by decreasing count."""
    text = f"kept {self.kept}, skipped {self.num_skipped}"
    if self.skipped:
      reasons = sorted(self.skipped.items(), key=lambda kv: (-kv[1], kv[0]))
      text += " (" + ", ".join(f"{reason}: {count}" for reason, count in reasons) + ")"
    return text


def get_importer(name: str):
  """The importer module called `name` (one of IMPORTERS)."""
  if name not in IMPORTERS:
    raise ValueError(f"unknown corpus {name!r}; expected one of {', '.join(IMPORTERS)}")
  return importlib.import_module(f"{__name__}.{name}")


class AudioProbeError(Exception):
  """The audio file's header cannot be read."""


def audio_duration(path: str) -> float:
  """Seconds of audio in `path`, from its header (soundfile; librosa for what it cannot read).

  Raises:
    FileNotFoundError if there is no such file; AudioProbeError if it is not readable audio
    or holds no samples.
  """
  import soundfile as sf  # local: keeps `import lalmjax.data.importers` light

  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: audio file does not exist")
  try:
    info = sf.info(path)
    duration = info.frames / info.samplerate if info.samplerate else float("nan")
  except Exception as sf_error:  # pylint: disable=broad-except
    try:
      import librosa  # local: slow import, only for formats soundfile cannot open

      with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # librosa warns when it falls back to audioread
        duration = float(librosa.get_duration(path=path))
    except Exception as e:  # pylint: disable=broad-except
      raise AudioProbeError(f"{path}: not readable audio (soundfile: {sf_error}; "
                            f"librosa: {type(e).__name__}: {e})") from None
  if not math.isfinite(duration) or duration <= 0:
    raise AudioProbeError(f"{path}: holds no audio (duration {duration!r} s)")
  return duration


class ManifestBuilder:
  """Collects an importer's utterances, counts what it leaves out, writes the manifest.

  Usage: `add(...)` per candidate utterance (or `skip(...)` for one the importer rejects
  itself), then `write()`.
  """

  def __init__(self, out_manifest: str, max_duration: float | None = None):
    if max_duration is not None and not max_duration > 0:
      raise ValueError(f"max_duration must be > 0 seconds, got {max_duration!r}")
    self.out_manifest = out_manifest
    self.max_duration = max_duration
    self.utterances: dict[str, manifest_lib.Utterance] = {}
    self.report = ImportReport(manifest=out_manifest)

  def skip(self, reason: str, utt_id: str, detail: str = ""):
    """Leaves `utt_id` out for `reason`, logged with its id."""
    log.warning("skipping %s: %s%s", utt_id, reason, f" ({detail})" if detail else "")
    self.report.skipped[reason] = self.report.skipped.get(reason, 0) + 1

  def check_text(self, utt_id: str, text: str | None, task: str = "asr",
                 translation: str | None = None) -> bool:
    """Whether the id is new and the texts present; counts the reason when not."""
    if not utt_id:
      self.skip(MISSING_ID, "(no id)")
      return False
    if utt_id in self.utterances:
      self.skip(DUPLICATE_ID, utt_id)
      return False
    if text is None:
      self.skip(MISSING_TRANSCRIPT, utt_id)
      return False
    if not text.strip():
      self.skip(EMPTY_TRANSCRIPT, utt_id)
      return False
    if task == "s2tt" and not (translation or "").strip():
      self.skip(MISSING_TRANSLATION, utt_id)
      return False
    return True

  def check_duration(self, utt_id: str, duration: float) -> bool:
    """Whether `duration` (seconds) is within max_duration; counts it when not."""
    if self.max_duration is not None and duration > self.max_duration:
      self.skip(TOO_LONG, utt_id, f"{duration:.2f} s > {self.max_duration:g} s")
      return False
    return True

  def add(self, utt_id: str, audio: str, text: str | None, source_lang: str,
          target_lang: str | None = None, translation: str | None = None,
          task: str = "asr", duration: float | None = None) -> bool:
    """Checks one candidate and keeps it; returns whether it was kept.

    Args:
      utt_id: the utterance id.
      audio: path of its audio file.
      text: transcript (surrounding white space is removed); None or blank is skipped.
      source_lang: language code of the speech.
      target_lang: of the target text; defaults to source_lang.
      translation: for task "s2tt"; None or blank is skipped.
      task: "asr" or "s2tt".
      duration: seconds, if already known; otherwise read from the file's header.
    """
    if not self.check_text(utt_id, text, task, translation):
      return False
    if duration is None:
      try:
        duration = audio_duration(audio)
      except FileNotFoundError:
        self.skip(MISSING_AUDIO, utt_id, audio)
        return False
      except AudioProbeError as e:
        self.skip(UNREADABLE_AUDIO, utt_id, str(e))
        return False
    if not self.check_duration(utt_id, duration):
      return False
    self.utterances[utt_id] = manifest_lib.Utterance(
        id=utt_id, audio=os.path.abspath(audio), duration=duration, task=task,
        text=text.strip(), source_lang=source_lang, target_lang=target_lang or source_lang,
        translation=translation.strip() if task == "s2tt" else None)
    return True

  def write(self) -> ImportReport:
    """Writes the kept utterances sorted by id; returns the report.

    When nothing was kept, no manifest is written (an existing file is left alone).
    """
    if not self.utterances:
      log.warning("%s: nothing kept, manifest not written (%s)", self.out_manifest,
                  self.report.summary())
      return self.report
    ordered = [self.utterances[k] for k in sorted(self.utterances)]
    self.report.kept = manifest_lib.write_manifest(self.out_manifest, ordered)
    log.info("%s: %s", self.out_manifest, self.report.summary())
    return self.report
