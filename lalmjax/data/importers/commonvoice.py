"""Mozilla Common Voice -> ASR manifest.

Layout of one locale of a release (e.g. `cv-corpus-17.0-2024-03-15/de`)::

    train.tsv dev.tsv test.tsv validated.tsv ...   tab-separated, header row
    clips/common_voice_de_19016063.mp3

The tsv columns include `client_id path sentence`; newer releases add `sentence_id`,
`locale` and others. The id of an utterance is its clip's file name without extension.
The language is the `locale` column if there is one, else the folder's name when it
looks like a locale code (`de`, `pt-BR`, `zh-CN`, `yue`), else the `lang` option.
"""

from __future__ import annotations

import csv
import glob
import logging
import os
import re
from typing import Iterator

from lalmjax.data.importers import ImportReport, ManifestBuilder

log = logging.getLogger(__name__)

MALFORMED_ROW = "malformed tsv row"
_LOCALE = re.compile(r"^[a-z]{2,3}(-[A-Za-z]{2,8})?$")


def read_tsv(path: str, required: tuple[str, ...], escapechar: str | None = None,
             on_malformed=None) -> Iterator[tuple[int, dict[str, str]]]:
  """(line number, row) of a tab-separated file with a header row; quotes are literal.

  Args:
    path: the file.
    required: columns that must be in the header (else ValueError naming file and column).
    escapechar: the escape character the file was written with (CoVoST uses "\\").
    on_malformed: called with (line number, message) for a row whose field count differs
      from the header's; the row is left out.
  """
  with open(path, encoding="utf-8", newline="") as f:
    reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar=escapechar)
    header = next(reader, None)
    if header is None:
      raise ValueError(f"{path}:1: empty file, expected a header row")
    for column in required:
      if column not in header:
        raise ValueError(f"{path}:1: column '{column}' is missing from the header "
                         f"(columns: {', '.join(header)})")
    for row in reader:
      if not row or row == [""]:
        continue
      if len(row) != len(header):
        if on_malformed is not None:
          on_malformed(reader.line_num,
                       f"{len(row)} fields, the header has {len(header)}")
        continue
      yield reader.line_num, dict(zip(header, row))


def locale_from_folder(folder: str) -> str | None:
  """The folder's name when it looks like a Common Voice locale code, else None."""
  name = os.path.basename(os.path.normpath(os.path.abspath(folder)))
  return name if _LOCALE.match(name) else None


def clip_path(clips: str, name: str) -> str:
  """The clip file `name` names (early releases leave out the ".mp3")."""
  path = os.path.join(clips, name)
  if not os.path.splitext(name)[1] and not os.path.exists(path):
    path += ".mp3"
  return path


def find_tsv(root: str, split: str) -> str:
  """`root` itself if it is a .tsv file, else ROOT/<split>.tsv."""
  if not os.path.exists(root):
    raise FileNotFoundError(f"{root}: Common Voice folder does not exist")
  if os.path.isfile(root):
    return root
  tsv = os.path.join(root, f"{split}.tsv")
  if not os.path.isfile(tsv):
    found = sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(
        glob.escape(root), "*.tsv")))
    raise FileNotFoundError(f"{tsv}: no such split file; {root} holds "
                            f"{', '.join(found) if found else 'no .tsv files'}")
  return tsv


def import_corpus(root: str, out_manifest: str, split: str = "test", lang: str | None = None,
                  clips: str | None = None, max_duration: float | None = None) -> ImportReport:
  """Writes an ASR manifest of one Common Voice split.

  Args:
    root: the locale folder (holding the .tsv files and clips/), or one .tsv file.
    out_manifest: the manifest to write.
    split: which tsv: "train", "dev", "test", "validated", ...
    lang: the language when there is no `locale` column and the folder's name is not a
      locale code.
    clips: the clips folder; default: clips/ beside the tsv.
    max_duration: seconds; longer clips are left out (and counted).
  """
  tsv = find_tsv(root, split)
  folder = os.path.dirname(os.path.abspath(tsv))
  clips = clips or os.path.join(folder, "clips")
  default_lang = locale_from_folder(folder) or lang
  if lang and default_lang != lang:
    log.warning("--lang %s differs from the folder's locale %s; using %s",
                lang, default_lang, default_lang)
  builder = ManifestBuilder(out_manifest, max_duration)

  def malformed(lineno, message):
    builder.skip(MALFORMED_ROW, f"{tsv}:{lineno}", message)

  for lineno, row in read_tsv(tsv, ("path", "sentence"), on_malformed=malformed):
    name = row["path"]
    utt_id = os.path.splitext(name)[0] or f"{os.path.basename(tsv)}:{lineno}"
    row_lang = row.get("locale") or default_lang
    if not row_lang:
      raise ValueError(f"{tsv}:{lineno}: field 'locale': no locale column, the folder name "
                       f"{os.path.basename(folder)!r} is not a locale code, and no --lang "
                       "was given")
    builder.add(utt_id, clip_path(clips, name), row["sentence"], row_lang)
  return builder.write()
