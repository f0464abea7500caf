"""Evaluation metrics: WER for ASR, BLEU and chrF for S2TT, speed figures.

Text normalisation (WER only; BLEU and chrF score the raw text, as sacrebleu expects):

- English ("en", "en-US", "eng"): Whisper's ``EnglishTextNormalizer`` from transformers
  (contractions, titles such as "Mr." -> "mister", spelled numbers -> digits, fillers
  such as "uh"/"hmm" dropped, punctuation and diacritics removed). Its British -> American
  spelling table is not shipped with transformers 5.x: it is a Whisper tokenizer's
  ``normalizer.json``, which the Whisper folders used here do not carry. So the table
  defaults to empty ("colour" stays "colour"), and ``spelling_path`` (a
  ``normalizer.json`` or a tokenizer folder holding one) loads it.
- Any other language: ``basic_normalize``, lower case, words in <...>, [...] and (...)
  dropped, punctuation and symbols -> spaces, whitespace collapsed. It is Whisper's
  ``BasicTextNormalizer`` except that combining marks are kept: Whisper's turns them
  into spaces, which splits Devanagari, Thai or decomposed Latin words apart. Letters
  with diacritics (ü, ß, é, ñ) are kept; on precomposed Latin text the two agree.

WER is corpus level: total (substitutions + deletions + insertions) over total
reference words, from ``jiwer.process_words`` on the normalised strings. An utterance
whose reference normalises to nothing is counted here (every hypothesis word an
insertion), never passed to jiwer. A language with no reference words has WER None.

``score(rows)`` returns the structure ``eval.py`` writes to ``scores.json`` (eval.py adds
``num_skipped`` and the ``speed_report`` figures)::

    {"wer": {"overall": 12.3 | None,            # percent
             "per_language": {"en": 10.1, ...},
             "counts": {"overall": COUNTS, "per_language": {"en": COUNTS, ...}},
             "num_utterances": 250},             # ASR rows
     "bleu": {"en-de": 21.4, ...},               # per source-target pair, corpus level
     "chrf": {"en-de": 50.2, ...},
     "signatures": {"en-de": {"bleu": "nrefs:1|case:mixed|eff:no|tok:13a|...",
                              "chrf": "nrefs:1|case:mixed|eff:yes|nc:6|nw:0|...",
                              "note": "..."}},  # "note" only when a tokenizer fell back
     "num_utterances": 300}                      # all rows

    COUNTS = {"substitutions", "deletions", "insertions", "hits", "reference_words",
              "num_utterances"}
"""

from __future__ import annotations

import functools
import json
import os
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jiwer
import sacrebleu
from sacrebleu.tokenizers.tokenizer_ja_mecab import TokenizerJaMecab
from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

ASR, S2TT = "asr", "s2tt"
_COUNT_KEYS = ("substitutions", "deletions", "insertions", "hits")


# ---------------------------------------------------------------- normalisation


def load_english_spelling(path: str | None) -> dict[str, str]:
  """The British -> American spelling table of Whisper's English normalizer.

  Args:
    path: None (empty table), a ``normalizer.json``, or a tokenizer folder, whose
      ``normalizer.json`` is loaded if it has one (else the table is empty).

  Returns:
    {british: american}.
  """
  if path is None:
    return {}
  if os.path.isdir(path):
    path = os.path.join(path, "normalizer.json")
    if not os.path.exists(path):
      return {}
  with open(path, encoding="utf-8") as f:
    mapping = json.load(f)
  if not isinstance(mapping, dict):
    raise ValueError(f"{path}: expected a JSON object of spellings, got {type(mapping)}")
  return mapping


@functools.lru_cache(maxsize=8)
def _english_normalizer(spelling_path: str | None) -> EnglishTextNormalizer:
  """Whisper's English normalizer with the spelling table at `spelling_path`."""
  return EnglishTextNormalizer(load_english_spelling(spelling_path))


def is_english(lang: str) -> bool:
  """Whether a language code ("en", "en-US", "en_gb", "eng") names English."""
  return re.split(r"[-_]", lang.strip().lower())[0] in ("en", "eng")


def basic_normalize(text: str) -> str:
  """Lower case, bracketed words dropped, punctuation/symbols -> space, spaces collapsed.

  Unicode-aware: NFKC, then every character of category P (punctuation) or S (symbol)
  becomes a space; letters, digits and combining marks are kept, so "Grüße, Straße!"
  -> "grüße straße" and Devanagari vowel signs stay inside their word.
  """
  text = text.lower()
  text = re.sub(r"[<\[][^>\]]*[>\]]", "", text)  # [noise], <unk>
  text = re.sub(r"\(([^)]+?)\)", "", text)  # (laughs)
  text = unicodedata.normalize("NFKC", text)
  text = "".join(" " if unicodedata.category(c)[0] in "PS" else c for c in text)
  return " ".join(text.split())


def normalize(text: str, lang: str, spelling_path: str | None = None) -> str:
  """The text WER is computed on: Whisper's English normalizer or `basic_normalize`.

  Args:
    text: a transcript or hypothesis.
    lang: its language code; English codes use Whisper's English normalizer.
    spelling_path: see `load_english_spelling` (English only).

  Returns:
    Words separated by single spaces, no leading or trailing space.
  """
  if is_english(lang):
    text = _english_normalizer(spelling_path)(text)
  else:
    text = basic_normalize(text)
  return " ".join(text.split())


# ---------------------------------------------------------------- WER


def _zero_counts() -> dict[str, int]:
  """COUNTS (module docstring), all zero."""
  return {k: 0 for k in _COUNT_KEYS + ("reference_words", "num_utterances")}


def _word_counts(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, int]:
  """Summed edit counts of normalised (reference, hypothesis) pairs.

  Empty references are counted directly (all hypothesis words are insertions): jiwer
  rejects them in some versions.
  """
  counts = _zero_counts()
  counts["num_utterances"] = len(references)
  refs, hyps = [], []
  for ref, hyp in zip(references, hypotheses, strict=True):
    if ref.split():
      refs.append(ref)
      hyps.append(hyp)
    else:
      counts["insertions"] += len(hyp.split())
  if refs:
    out = jiwer.process_words(refs, hyps)
    for k in _COUNT_KEYS:
      counts[k] += getattr(out, k)
  counts["reference_words"] = counts["hits"] + counts["substitutions"] + counts["deletions"]
  return counts


def _wer_percent(counts: Mapping[str, int]) -> float | None:
  """100 * (S + D + I) / N, or None when there are no reference words."""
  if counts["reference_words"] == 0:
    return None
  errors = counts["substitutions"] + counts["deletions"] + counts["insertions"]
  return 100.0 * errors / counts["reference_words"]


def wer_report(references: Sequence[str], hypotheses: Sequence[str],
               langs: Sequence[str], spelling_path: str | None = None) -> dict[str, Any]:
  """Corpus-level WER in percent, overall and per language, after `normalize`.

  Args:
    references: raw transcripts.
    hypotheses: raw model outputs, one per reference.
    langs: language code of each utterance.
    spelling_path: see `load_english_spelling`.

  Returns:
    {"overall": WER | None, "per_language": {lang: WER | None},
    "counts": {"overall": COUNTS, "per_language": {lang: COUNTS}}, "num_utterances": n},
    COUNTS as in the module docstring; WER None where there are no reference words.
  """
  if not len(references) == len(hypotheses) == len(langs):
    raise ValueError(f"lengths differ: {len(references)} references, "
                     f"{len(hypotheses)} hypotheses, {len(langs)} languages")
  by_lang: dict[str, tuple[list[str], list[str]]] = {}
  for ref, hyp, lang in zip(references, hypotheses, langs):
    refs, hyps = by_lang.setdefault(lang, ([], []))
    refs.append(normalize(ref, lang, spelling_path))
    hyps.append(normalize(hyp, lang, spelling_path))
  per_lang = {lang: _word_counts(*by_lang[lang]) for lang in sorted(by_lang)}
  overall = _zero_counts()
  for counts in per_lang.values():
    for k in overall:
      overall[k] += counts[k]
  return {
      "overall": _wer_percent(overall),
      "per_language": {lang: _wer_percent(c) for lang, c in per_lang.items()},
      "counts": {"overall": overall, "per_language": per_lang},
      "num_utterances": len(references),
  }


# ---------------------------------------------------------------- BLEU / chrF


def _has_mecab() -> bool:
  """Whether sacrebleu's ja-mecab tokenizer can run (mecab-python3 and ipadic)."""
  try:
    TokenizerJaMecab()
  except (ImportError, RuntimeError):
    return False
  return True


def bleu_tokenizer(target_lang: str) -> tuple[str, str | None]:
  """sacrebleu's BLEU tokenizer for a target language, and a note if it fell back.

  "zh" for Chinese, "ja-mecab" for Japanese when installed (else "char", with a note),
  sacrebleu's default "13a" for everything else.
  """
  primary = re.split(r"[-_]", target_lang.strip().lower())[0]
  if primary == "zh":
    return "zh", None
  if primary == "ja":
    if _has_mecab():
      return "ja-mecab", None
    return "char", "ja-mecab not installed (pip install sacrebleu[ja]); BLEU uses tok:char"
  return "13a", None


def bleu_report(references: Sequence[str], hypotheses: Sequence[str],
                pairs: Sequence[str]) -> dict[str, Any]:
  """Corpus-level BLEU and chrF per language pair, with sacrebleu signatures.

  Scores the raw text (sacrebleu tokenizes internally); one reference per hypothesis.

  Args:
    references: reference translations.
    hypotheses: model translations, one per reference.
    pairs: "source-target" of each utterance, e.g. "en-de"; the target selects the
      BLEU tokenizer (`bleu_tokenizer`).

  Returns:
    {"bleu": {pair: score}, "chrf": {pair: score}, "signatures": {pair: {"bleu": str,
    "chrf": str[, "note": str]}}, "num_utterances": n}.
  """
  if not len(references) == len(hypotheses) == len(pairs):
    raise ValueError(f"lengths differ: {len(references)} references, "
                     f"{len(hypotheses)} hypotheses, {len(pairs)} pairs")
  by_pair: dict[str, tuple[list[str], list[str]]] = {}
  for ref, hyp, pair in zip(references, hypotheses, pairs):
    refs, hyps = by_pair.setdefault(pair, ([], []))
    refs.append(ref)
    hyps.append(hyp)
  report: dict[str, Any] = {"bleu": {}, "chrf": {}, "signatures": {},
                            "num_utterances": len(references)}
  for pair in sorted(by_pair):
    refs, hyps = by_pair[pair]
    tokenize, note = bleu_tokenizer(pair.split("-", 1)[-1])
    bleu = sacrebleu.metrics.BLEU(tokenize=tokenize)
    chrf = sacrebleu.metrics.CHRF()
    report["bleu"][pair] = bleu.corpus_score(hyps, [refs]).score
    report["chrf"][pair] = chrf.corpus_score(hyps, [refs]).score
    signatures = {"bleu": str(bleu.get_signature()), "chrf": str(chrf.get_signature())}
    if note:
      signatures["note"] = note
    report["signatures"][pair] = signatures
  return report


# ---------------------------------------------------------------- speed


def _ratio(num: float, den: float) -> float | None:
  """num / den, or None when den is not positive."""
  return num / den if den > 0 else None


def speed_report(audio_seconds: float, wall_seconds: float, generated_tokens: int,
                 audio_tokens: int) -> dict[str, float | None]:
  """Throughput of an evaluation run; None for a ratio whose denominator is 0.

  Args:
    audio_seconds: total duration of the evaluated audio.
    wall_seconds: wall-clock time spent on it (after warm-up, compilation apart).
    generated_tokens: text tokens the decoder produced.
    audio_tokens: audio tokens the LLM received (after compression).

  Returns:
    {"real_time_factor": wall / audio, "audio_seconds_per_second": audio / wall,
    "generated_tokens_per_second": generated / wall,
    "audio_tokens_per_audio_second": audio_tokens / audio, and the four inputs}.
  """
  return {
      "real_time_factor": _ratio(wall_seconds, audio_seconds),
      "audio_seconds_per_second": _ratio(audio_seconds, wall_seconds),
      "generated_tokens_per_second": _ratio(generated_tokens, wall_seconds),
      "audio_tokens_per_audio_second": _ratio(audio_tokens, audio_seconds),
      "audio_seconds": audio_seconds,
      "wall_seconds": wall_seconds,
      "generated_tokens": generated_tokens,
      "audio_tokens": audio_tokens,
  }


# ---------------------------------------------------------------- scores.json


def score(hypothesis_rows: Iterable[Mapping[str, Any]],
          spelling_path: str | None = None) -> dict[str, Any]:
  """The scores.json structure (module docstring) from hypotheses.jsonl rows.

  Args:
    hypothesis_rows: {"id", "reference", "hypothesis", "language", "task",
      "source_lang", "target_lang"}; "asr" rows are scored by WER per "language",
      "s2tt" rows by BLEU/chrF per "source_lang-target_lang".
    spelling_path: see `load_english_spelling`.

  Returns:
    {"wer", "bleu", "chrf", "signatures", "num_utterances"}.
  """
  asr: tuple[list[str], list[str], list[str]] = ([], [], [])
  s2tt: tuple[list[str], list[str], list[str]] = ([], [], [])
  num_rows = 0
  for row in hypothesis_rows:
    num_rows += 1
    if row["task"] == ASR:
      key, target = row["language"], asr
    elif row["task"] == S2TT:
      key, target = f"{row['source_lang']}-{row['target_lang']}", s2tt
    else:
      raise ValueError(f"row {row.get('id')!r}: task {row['task']!r} is not "
                       f"{ASR!r} or {S2TT!r}")
    target[0].append(row["reference"])
    target[1].append(row["hypothesis"])
    target[2].append(key)
  bleu = bleu_report(*s2tt)
  return {
      "wer": wer_report(*asr, spelling_path=spelling_path),
      "bleu": bleu["bleu"],
      "chrf": bleu["chrf"],
      "signatures": bleu["signatures"],
      "num_utterances": num_rows,
  }
