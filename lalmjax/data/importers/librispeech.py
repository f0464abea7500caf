"""LibriSpeech (openslr.org/12) -> ASR manifest.

Layout of a split folder (e.g. `LibriSpeech/test-clean`)::

    SPEAKER/CHAPTER/SPEAKER-CHAPTER.trans.txt   lines "SPEAKER-CHAPTER-UTT TRANSCRIPT"
    SPEAKER/CHAPTER/SPEAKER-CHAPTER-UTT.flac

`root` is the split folder, or a folder above it (`LibriSpeech/` or the folder the archive
was unpacked in) together with `split`. Transcripts stay as the corpus has them (upper
case, no punctuation): normalisation happens when scoring.
"""

from __future__ import annotations

import glob
import os

from lalmjax.data.importers import ImportReport, ManifestBuilder, MISSING_TRANSCRIPT

MALFORMED_LINE = "malformed transcript line"


def find_split_folder(root: str, split: str | None = None) -> str:
  """The folder holding SPEAKER/CHAPTER/*.trans.txt for `root` and `split`."""
  if not os.path.isdir(root):
    raise FileNotFoundError(f"{root}: LibriSpeech folder does not exist")
  if split is None:
    if _transcript_files(root):
      return root
    splits = sorted(name for name in os.listdir(root)
                    if _transcript_files(os.path.join(root, name))
                    or _transcript_files(os.path.join(root, "LibriSpeech", name)))
    hint = (f"it holds the splits {', '.join(splits)}: choose one with --split" if splits
            else "expected SPEAKER/CHAPTER/SPEAKER-CHAPTER.trans.txt under it")
    raise FileNotFoundError(f"{root}: not a LibriSpeech split folder; {hint}")
  candidates = [os.path.join(root, split), os.path.join(root, "LibriSpeech", split)]
  if os.path.basename(os.path.normpath(root)) == split:
    candidates.insert(0, root)
  for candidate in candidates:
    if os.path.isdir(candidate) and _transcript_files(candidate):
      return candidate
  raise FileNotFoundError(f"{root}: no LibriSpeech split {split!r} (looked for {split}/ and "
                          f"LibriSpeech/{split}/ with SPEAKER/CHAPTER/*.trans.txt inside)")


def _transcript_files(folder: str) -> list[str]:
  return sorted(glob.glob(os.path.join(glob.escape(folder), "*", "*", "*.trans.txt")))


def import_corpus(root: str, out_manifest: str, split: str | None = None, lang: str = "en",
                  max_duration: float | None = None) -> ImportReport:
  """Writes an ASR manifest of one LibriSpeech split.

  Args:
    root: the split folder, or a folder above it when `split` is given.
    out_manifest: the manifest to write.
    split: e.g. "test-clean", "train-clean-100".
    lang: language code for source_lang/target_lang.
    max_duration: seconds; longer utterances are left out (and counted).

  Returns:
    ImportReport; utterances without audio, with unreadable audio or an empty transcript
    are left out, as are audio files no transcript line names.
  """
  folder = find_split_folder(root, split)
  builder = ManifestBuilder(out_manifest, max_duration)
  named = set()
  for trans in _transcript_files(folder):
    chapter_dir = os.path.dirname(trans)
    prefix = os.path.basename(trans)[:-len(".trans.txt")] + "-"
    with open(trans, encoding="utf-8") as f:
      for lineno, line in enumerate(f, start=1):
        if not line.strip():
          continue
        utt_id, _, text = line.strip().partition(" ")
        if not utt_id.startswith(prefix):
          builder.skip(MALFORMED_LINE, f"{trans}:{lineno}",
                       f"expected an id starting with {prefix!r}, got {utt_id!r}")
          continue
        named.add(utt_id)
        builder.add(utt_id, os.path.join(chapter_dir, utt_id + ".flac"), text, lang)
  for flac in sorted(glob.glob(os.path.join(glob.escape(folder), "*", "*", "*.flac"))):
    utt_id = os.path.basename(flac)[:-len(".flac")]
    if utt_id not in named:
      builder.skip(MISSING_TRANSCRIPT, utt_id, f"no transcript line names {flac}")
  return builder.write()
