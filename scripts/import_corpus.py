"""Writes a manifest (JSON Lines) from a public corpus in its own layout.

  python scripts/import_corpus.py {librispeech,commonvoice,covost2,parquet} ROOT OUT.jsonl
      [--split S] [--lang L] [--max_duration SECONDS] [corpus options]

  librispeech  ROOT = a split folder (LibriSpeech/test-clean), or a folder above it + --split
  commonvoice  ROOT = a locale folder (cv-corpus-17.0/de) with <split>.tsv and clips/;
               --split (default test), --lang if neither a locale column nor the folder
               name gives it, --clips
  covost2      ROOT = covost_v2.<src>_<tgt>.tsv or its folder; --split (default test),
               --pair src_tgt, --clips (default: clips/ beside the tsv)
  parquet      ROOT = a .parquet file or a folder of them; --split, --lang, --text_column,
               --translation_column + --target_lang, --id_column, --audio_column

Prints "kept N, skipped M (reason: count, ...)". Exits 1, with a message, when ROOT does
not exist, the corpus cannot be read, or nothing was kept.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from lalmjax.data import importers  # pylint: disable=g-import-not-at-top,wrong-import-position

# Flags beyond ROOT and OUT; each is passed on only when given, and only to an importer
# that takes it.
OPTIONS = {
    "split": (str, "split name (LibriSpeech test-clean; Common Voice / CoVoST test, dev, ...)"),
    "lang": (str, "language code of the speech, when the corpus does not say"),
    "max_duration": (float, "seconds; longer utterances are left out"),
    "clips": (str, "Common Voice clips folder (commonvoice, covost2)"),
    "pair": (str, "CoVoST 2 language pair, e.g. de_en, when ROOT holds several"),
    "text_column": (str, "parquet: transcript column (default: text, sentence, "
                         "transcription)"),
    "translation_column": (str, "parquet: translation column (makes the task s2tt)"),
    "target_lang": (str, "parquet: language of --translation_column"),
    "id_column": (str, "parquet: id column"),
    "audio_column": (str, "parquet: audio column (default audio)"),
}


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      description=__doc__.splitlines()[0],
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog="\n".join(__doc__.splitlines()[2:]))
  parser.add_argument("corpus", choices=importers.IMPORTERS)
  parser.add_argument("root", help="the corpus (folder or file)")
  parser.add_argument("out", help="the manifest to write (.jsonl)")
  for name, (kind, help_text) in OPTIONS.items():
    parser.add_argument(f"--{name}", type=kind, default=None, help=help_text)
  parser.add_argument("--quiet", action="store_true", help="do not log each skipped utterance")
  args = parser.parse_args(argv)

  logging.basicConfig(level=logging.ERROR if args.quiet else logging.INFO,
                      format="%(levelname)s: %(message)s")
  importer = importers.get_importer(args.corpus)
  accepted = inspect.signature(importer.import_corpus).parameters
  options = {name: getattr(args, name) for name in OPTIONS if getattr(args, name) is not None}
  for name in options:
    if name not in accepted:
      parser.error(f"--{name} does not apply to {args.corpus}")
  if not os.path.exists(args.root):
    print(f"error: {args.root} does not exist", file=sys.stderr)
    return 1
  try:
    report = importer.import_corpus(args.root, args.out, **options)
  except (OSError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(report.summary())
  if report.kept == 0:
    print(f"error: nothing kept from {args.root}; {args.out} not written", file=sys.stderr)
    return 1
  print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
