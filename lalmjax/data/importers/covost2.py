"""CoVoST 2 (facebookresearch/covost) -> speech-to-text translation (s2tt) manifest.

A release file `covost_v2.<src>_<tgt>.tsv` (tab-separated, header row, backslash escapes)
has the columns `path sentence translation client_id split`, `split` one of train, dev,
test (train also takes the rows marked `train_covost`, as CoVoST's own split script
does). Files already cut per split, `covost_v2.<src>_<tgt>.<split>.tsv` without a `split`
column, work too. `path` names a clip of the Common Voice (version 4) release of the
source language: the `clips` folder, by default clips/ beside the tsv. The languages come
from the file name; the id is the clip's file name without extension.
"""

from __future__ import annotations

import glob
import os
import re

from lalmjax.data.importers import ImportReport, ManifestBuilder
from lalmjax.data.importers.commonvoice import MALFORMED_ROW, clip_path, read_tsv

SPLITS = ("train", "dev", "test")
_NAME = re.compile(r"^covost_v2\.([A-Za-z-]+)_([A-Za-z-]+)(?:\.(train|dev|test))?\.tsv$")


def parse_name(path: str) -> tuple[str, str, str | None]:
  """(source_lang, target_lang, split or None) from a CoVoST 2 tsv file name."""
  match = _NAME.match(os.path.basename(path))
  if not match:
    raise ValueError(f"{path}: not a CoVoST 2 file name; expected "
                     "covost_v2.<src>_<tgt>.tsv or covost_v2.<src>_<tgt>.<split>.tsv")
  return match.group(1), match.group(2), match.group(3)


def find_tsv(root: str, split: str, pair: str | None = None) -> str:
  """The tsv for `root` (a tsv file, or a folder holding covost_v2.*.tsv files)."""
  if not os.path.exists(root):
    raise FileNotFoundError(f"{root}: CoVoST 2 folder or file does not exist")
  if os.path.isfile(root):
    return root
  candidates = [p for p in sorted(glob.glob(os.path.join(glob.escape(root), "covost_v2.*.tsv")))
                if _NAME.match(os.path.basename(p))]
  if pair is not None:
    candidates = [p for p in candidates if "{}_{}".format(*parse_name(p)[:2]) == pair]
  # A file cut for this split wins over the whole-release file.
  for_split = [p for p in candidates if parse_name(p)[2] == split]
  whole = [p for p in candidates if parse_name(p)[2] is None]
  chosen = for_split or whole
  if not chosen:
    raise FileNotFoundError(f"{root}: no covost_v2.<src>_<tgt>.tsv"
                            f"{f' for the pair {pair}' if pair else ''} with split {split!r}")
  if len(chosen) > 1:
    pairs = ", ".join("{}_{}".format(*parse_name(p)[:2]) for p in chosen)
    raise ValueError(f"{root}: several language pairs ({pairs}): choose one with --pair")
  return chosen[0]


def import_corpus(root: str, out_manifest: str, split: str = "test", pair: str | None = None,
                  clips: str | None = None, max_duration: float | None = None) -> ImportReport:
  """Writes an s2tt manifest of one CoVoST 2 split of one language pair.

  Args:
    root: a covost_v2.<src>_<tgt>[.<split>].tsv file, or the folder holding it.
    out_manifest: the manifest to write.
    split: "train", "dev" or "test".
    pair: "<src>_<tgt>" (e.g. "de_en") when the folder holds several pairs.
    clips: the Common Voice clips folder; default: clips/ beside the tsv.
    max_duration: seconds; longer clips are left out (and counted).
  """
  if split not in SPLITS:
    raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
  tsv = find_tsv(root, split, pair)
  source_lang, target_lang, file_split = parse_name(tsv)
  if file_split is not None and file_split != split:
    raise ValueError(f"{tsv}: holds the {file_split} split, not {split}")
  clips = clips or os.path.join(os.path.dirname(os.path.abspath(tsv)), "clips")
  wanted = {split, f"{split}_covost"} if split == "train" else {split}
  required = ("path", "sentence", "translation") + (("split",) if file_split is None else ())
  builder = ManifestBuilder(out_manifest, max_duration)

  def malformed(lineno, message):
    builder.skip(MALFORMED_ROW, f"{tsv}:{lineno}", message)

  for _, row in read_tsv(tsv, required, escapechar="\\", on_malformed=malformed):
    if file_split is None and row["split"] not in wanted:
      continue
    name = row["path"]
    builder.add(os.path.splitext(name)[0], clip_path(clips, name), row["sentence"],
                source_lang, target_lang=target_lang, translation=row["translation"],
                task="s2tt")
  return builder.write()
