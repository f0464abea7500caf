"""Hugging Face `datasets` parquet exports -> ASR or s2tt manifest, audio written as FLAC.

`root` is one .parquet file or a folder searched recursively for them; with `split`, only
files of that split: a folder of that name on the way (`default/test/0000.parquet`) or a
file name starting with it (`data/test-00000-of-00001.parquet`). Rows are read with
pyarrow, a batch at a time. The audio column is the `datasets.Audio` struct
(`bytes` and/or `path`); a bare binary or string column works too. Audio bytes are
decoded (soundfile; librosa for what it cannot read) and written as 16-bit FLAC at their
own sample rate to `audio/<id>.flac` beside the manifest; a row with only a path
points at that file (relative to the parquet file's folder, or to `root`).

The id is the `id_column`, else an `id` column, else the audio path's file name without
extension, else `<parquet file name>-<row>`. The language is a `locale` column if there
is one, else the `lang` option.
"""

from __future__ import annotations

import glob
import hashlib
import io
import logging
import os
import re
import tempfile
import warnings

import numpy as np

from lalmjax.data.importers import (ImportReport, ManifestBuilder, MISSING_AUDIO,
                                    UNREADABLE_AUDIO)

log = logging.getLogger(__name__)

TEXT_COLUMNS = ("text", "sentence", "transcription")  # tried in order when none is named
BATCH_ROWS = 32  # rows decoded at a time: bounds memory for long audio


def find_files(root: str, split: str | None = None) -> list[str]:
  """The parquet files under `root` (of `split` if given), sorted."""
  if not os.path.exists(root):
    raise FileNotFoundError(f"{root}: parquet file or folder does not exist")
  if os.path.isfile(root):
    return [root]
  files = sorted(glob.glob(os.path.join(glob.escape(root), "**", "*.parquet"), recursive=True))
  if not files:
    raise FileNotFoundError(f"{root}: no .parquet files under it")
  if split is None:
    return files
  chosen = [f for f in files if _in_split(os.path.relpath(f, root), split)]
  if not chosen:
    raise FileNotFoundError(f"{root}: no parquet file of split {split!r} among "
                            f"{', '.join(os.path.relpath(f, root) for f in files[:10])}"
                            f"{' ...' if len(files) > 10 else ''}")
  return chosen


def _in_split(relpath: str, split: str) -> bool:
  *folders, name = relpath.split(os.sep)
  stem = name[:-len(".parquet")]
  return split in folders or stem == split or stem.startswith(split + "-")


def _file_name(utt_id: str) -> str:
  """A file name for `utt_id`: the id itself when safe, else cleaned plus a short hash."""
  safe = re.sub(r"[^A-Za-z0-9._-]", "_", utt_id).lstrip(".")
  if safe != utt_id or not safe:
    safe += "-" + hashlib.sha1(utt_id.encode("utf-8")).hexdigest()[:8]
  return safe


def decode(data: bytes, name_hint: str = "") -> tuple[np.ndarray, int]:
  """Audio bytes -> (float32[samples, channels], sample rate); ValueError if not audio."""
  import soundfile as sf  # local: keeps `import lalmjax.data.importers` light

  try:
    wav, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
  except Exception as sf_error:  # pylint: disable=broad-except
    # librosa's audioread fallback needs a real file; the suffix guides it.
    suffix = os.path.splitext(name_hint)[1] or ".audio"
    with tempfile.NamedTemporaryFile(suffix=suffix) as tmp:
      tmp.write(data)
      tmp.flush()
      try:
        import librosa  # local: slow import

        with warnings.catch_warnings():
          warnings.simplefilter("ignore")
          wav, sr = librosa.load(tmp.name, sr=None, mono=False)
      except Exception as e:  # pylint: disable=broad-except
        raise ValueError(f"not decodable audio (soundfile: {sf_error}; librosa: "
                         f"{type(e).__name__}: {e})") from None
    wav = np.atleast_2d(np.asarray(wav, np.float32)).T  # librosa: [channels, samples]
  if wav.size == 0:
    raise ValueError("decodes to 0 samples")
  if not np.all(np.isfinite(wav)):
    raise ValueError("decoded samples contain NaN or Inf")
  return wav, int(sr)


def write_flac(path: str, wav: np.ndarray, sr: int):
  """Writes float samples as 16-bit FLAC, atomically (temporary name, then rename)."""
  import soundfile as sf

  tmp = f"{path}.{os.getpid()}.tmp"
  try:
    sf.write(tmp, np.clip(wav, -1.0, 1.0), sr, format="FLAC", subtype="PCM_16")
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def _resolve_columns(path: str, names: list[str], text_column: str | None,
                     translation_column: str | None, id_column: str | None,
                     audio_column: str) -> tuple[str, str | None]:
  """Checks the named columns exist in the file `path`; returns (text column, id column)."""

  def missing(column, flag):
    return ValueError(f"{path}: column '{column}' ({flag}) is missing; columns: "
                      f"{', '.join(names)}")

  if audio_column not in names:
    raise missing(audio_column, "--audio_column")
  if text_column is None:
    text_column = next((c for c in TEXT_COLUMNS if c in names), None)
    if text_column is None:
      raise ValueError(f"{path}: none of the columns {', '.join(TEXT_COLUMNS)} is present; "
                       f"name the transcript with --text_column (columns: {', '.join(names)})")
  elif text_column not in names:
    raise missing(text_column, "--text_column")
  if translation_column is not None and translation_column not in names:
    raise missing(translation_column, "--translation_column")
  if id_column is not None and id_column not in names:
    raise missing(id_column, "--id_column")
  return text_column, id_column or ("id" if "id" in names else None)


def _audio_fields(value) -> tuple[bytes | None, str | None]:
  """(bytes, path) of one audio cell: a {bytes, path} struct, raw bytes or a path."""
  if isinstance(value, dict):
    return value.get("bytes"), value.get("path")
  if isinstance(value, (bytes, bytearray)):
    return bytes(value), None
  if isinstance(value, str):
    return None, value
  return None, None


def import_corpus(root: str, out_manifest: str, split: str | None = None,
                  lang: str | None = None, text_column: str | None = None,
                  translation_column: str | None = None, target_lang: str | None = None,
                  id_column: str | None = None, audio_column: str = "audio",
                  max_duration: float | None = None) -> ImportReport:
  """Writes a manifest of a parquet export, decoding its audio into FLAC files.

  Args:
    root: a .parquet file, or a folder searched recursively.
    out_manifest: the manifest to write; audio goes to audio/ beside it.
    split: only files of this split (see the module docstring).
    lang: the speech's language when there is no `locale` column.
    text_column: the transcript; default: the first of "text", "sentence",
      "transcription" present.
    translation_column: the translation; makes the task s2tt (needs `target_lang`).
    target_lang: the translation's language.
    id_column: the utterance ids (see the module docstring for the default).
    audio_column: the audio struct column.
    max_duration: seconds; longer audio is left out (and counted), never written.
  """
  import pyarrow.parquet as pq  # local: only this importer needs it

  if translation_column is not None and not target_lang:
    raise ValueError("--translation_column needs --target_lang (the translation's language)")
  task = "asr" if translation_column is None else "s2tt"
  target = target_lang if task == "s2tt" else None  # asr: the source language
  files = find_files(root, split)
  audio_dir = os.path.join(os.path.dirname(os.path.abspath(out_manifest)), "audio")
  builder = ManifestBuilder(out_manifest, max_duration)
  root_dir = root if os.path.isdir(root) else os.path.dirname(os.path.abspath(root))
  for path in files:
    parquet = pq.ParquetFile(path)
    names = parquet.schema_arrow.names
    text_col, id_col = _resolve_columns(path, names, text_column, translation_column,
                                        id_column, audio_column)
    lang_col = "locale" if "locale" in names else None
    if lang_col is None and not lang:
      raise ValueError(f"{path}: field 'locale': no locale column; give the language with "
                       "--lang")
    columns = [c for c in dict.fromkeys(
        [audio_column, text_col, translation_column, id_col, lang_col]) if c is not None]
    stem = os.path.basename(path)[:-len(".parquet")]
    index = 0
    for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=columns):
      for row in batch.to_pylist():
        index += 1
        data, audio_path = _audio_fields(row[audio_column])
        if id_col is not None and row[id_col] is not None:
          utt_id = str(row[id_col])
        elif audio_path:
          utt_id = os.path.splitext(os.path.basename(audio_path))[0]
        else:
          utt_id = f"{stem}-{index:06d}"
        text = _as_text(row[text_col])
        translation = _as_text(row[translation_column]) if translation_column else None
        source_lang = (row[lang_col] if lang_col else None) or lang
        if not source_lang:
          raise ValueError(f"{path}: row {index}: field 'locale' is empty; give the language "
                           "with --lang")
        if not builder.check_text(utt_id, text, task, translation):
          continue
        if data is None:
          # No bytes: the row points at a file that should exist on this machine.
          local = _find_local(audio_path, os.path.dirname(path), root_dir)
          if local is None:
            builder.skip(MISSING_AUDIO, utt_id, f"no audio bytes; path {audio_path!r}")
            continue
          builder.add(utt_id, local, text, source_lang, target, translation, task)
          continue
        try:
          wav, sr = decode(data, audio_path or "")
        except ValueError as e:
          builder.skip(UNREADABLE_AUDIO, utt_id, f"{path} row {index}: {e}")
          continue
        duration = wav.shape[0] / sr
        if not builder.check_duration(utt_id, duration):
          continue
        os.makedirs(audio_dir, exist_ok=True)
        flac = os.path.join(audio_dir, _file_name(utt_id) + ".flac")
        write_flac(flac, wav, sr)
        builder.add(utt_id, flac, text, source_lang, target, translation, task,
                    duration=duration)
  return builder.write()


def _as_text(value) -> str | None:
  return value if value is None or isinstance(value, str) else str(value)


def _find_local(audio_path: str | None, *folders: str) -> str | None:
  """An existing file for `audio_path`: as given if absolute, else under one of `folders`."""
  if not audio_path:
    return None
  candidates = ([audio_path] if os.path.isabs(audio_path)
                else [os.path.join(folder, audio_path) for folder in folders])
  return next((c for c in candidates if os.path.isfile(c)), None)
