"""Tests for lalmjax.metrics.

WER against jiwer on the normalised strings and against hand-counted edits; corpus
level, not an average of sentences; the normalisers on English, German, Spanish,
French and Hindi; empty references and empty inputs; BLEU/chrF against sacrebleu, and
direction (reference vs hypothesis) checked where BLEU is asymmetric; speed figures;
the scores.json structure.
"""

import json

import jiwer
import pytest
import sacrebleu
from transformers.models.whisper.english_normalizer import BasicTextNormalizer

from lalmjax import metrics

# ---------------------------------------------------------------- normalisation


@pytest.mark.parametrize("text, expected", [
    ("Hello, World!", "hello world"),
    ("Mr. Smith met Dr. Jones.", "mister smith met doctor jones"),
    ("twenty five", "25"),
    ("one hundred and twenty three apples", "123 apples"),
    ("twenty five dollars", "$25"),
    ("ten percent", "10%"),
    ("I won't go, it's late.", "i will not go it is late"),
    ("Uh, hmm, okay [noise]", "okay"),
    ("  Café   NAÏVE  ", "cafe naive"),  # English drops diacritics
])
def test_english_normalizer(text, expected):
  assert metrics.normalize(text, "en") == expected


def test_english_codes():
  for lang in ("en", "EN", "en-US", "en_gb", "eng"):
    assert metrics.is_english(lang), lang
  for lang in ("de", "es", "fr", "ne"):
    assert not metrics.is_english(lang), lang
  # English rules apply to "en-US" but not to German.
  assert metrics.normalize("Mr. Mayer", "en-US") == "mister mayer"
  assert metrics.normalize("Mr. Mayer", "de") == "mr mayer"


def test_whisper_tiny_folder_has_no_spelling_table(whisper_tiny_en):
  """The shared whisper-tiny.en folder has no normalizer.json: the table is empty."""
  assert metrics.load_english_spelling(whisper_tiny_en) == {}
  assert metrics.normalize("The colour grey", "en", whisper_tiny_en) == "the colour grey"


def test_english_spelling_table(tmp_path):
  table = {"colour": "color", "grey": "gray"}
  (tmp_path / "normalizer.json").write_text(json.dumps(table))
  for path in (str(tmp_path), str(tmp_path / "normalizer.json")):
    assert metrics.load_english_spelling(path) == table
    assert metrics.normalize("The colour GREY.", "en", path) == "the color gray"
  assert metrics.load_english_spelling(None) == {}
  assert metrics.normalize("The colour grey", "en") == "the colour grey"
  with pytest.raises(FileNotFoundError):
    metrics.load_english_spelling(str(tmp_path / "missing.json"))
  # The table changes WER: "colour" vs "color" is an error only without it.
  ref, hyp = ["the colour"], ["the color"]
  assert metrics.wer_report(ref, hyp, ["en"])["overall"] == 50.0
  assert metrics.wer_report(ref, hyp, ["en"], spelling_path=str(tmp_path))["overall"] == 0.0


@pytest.mark.parametrize("text, lang, expected", [
    ("Grüße, Straße!", "de", "grüße straße"),
    ("ÄRGER über Öl?", "de", "ärger über öl"),
    ("¿Qué tal, señor Muñoz?", "es", "qué tal señor muñoz"),
    ("«Ça va», dit-il à Noël.", "fr", "ça va dit il à noël"),
    ("L'été [noise] (rires) arrive", "fr", "l été arrive"),
    ("hindi: हिन्दी भाषा।", "hi", "hindi हिन्दी भाषा"),
])
def test_basic_normalizer(text, lang, expected):
  assert metrics.normalize(text, lang) == expected


def test_basic_normalizer_matches_whisper_on_latin_text():
  """Same words as Whisper's BasicTextNormalizer on precomposed Latin text."""
  whisper = BasicTextNormalizer()
  for text in ["Grüße, Straße!", "¿Qué tal, señor Muñoz?", "«Ça va», dit-il à Noël.",
               "Wie geht's? (lacht) Gut -- danke; 3,5 km/h & 20 €"]:
    assert metrics.basic_normalize(text) == " ".join(whisper(text).split())
  # Whisper's splits a word with combining vowel signs; ours keeps it whole.
  assert whisper("हिन्दी").split() != ["हिन्दी"]
  assert metrics.basic_normalize("हिन्दी") == "हिन्दी"


# ---------------------------------------------------------------- WER


def _jiwer_counts(refs, hyps):
  out = jiwer.process_words(refs, hyps)
  return out.substitutions, out.deletions, out.insertions, out.hits


def _counts(report, lang=None):
  c = report["counts"]["overall"] if lang is None else report["counts"]["per_language"][lang]
  return c["substitutions"], c["deletions"], c["insertions"], c["hits"]


def test_wer_hand_counted():
  report = metrics.wer_report(["the cat sat"], ["The cat sat down."], ["en"])
  assert _counts(report) == (0, 0, 1, 3)
  assert report["counts"]["overall"]["reference_words"] == 3
  assert report["overall"] == pytest.approx(100 / 3)
  assert report["per_language"] == {"en": pytest.approx(33.333333, abs=1e-5)}

  # One substitution, one deletion: "a b c d" -> "a x c".
  report = metrics.wer_report(["A b, c d."], ["a X c"], ["en"])
  assert _counts(report) == (1, 1, 0, 2)
  assert report["overall"] == 50.0


def test_wer_normalises_before_scoring():
  """Case and punctuation are no errors; without normalisation they would be."""
  report = metrics.wer_report(["Hello, World!", "Grüße, Straße!"],
                              ["hello world", "grüße straße"], ["en", "de"])
  assert report["overall"] == 0.0
  assert report["counts"]["overall"]["hits"] == 4
  # Whisper's English rules: "Mr." and spelled numbers.
  report = metrics.wer_report(["Mr. Smith paid twenty five dollars."],
                              ["mister smith paid $25"], ["en"])
  assert report["overall"] == 0.0


def test_wer_equals_jiwer_on_normalised_strings():
  refs = ["The quick brown fox jumps over the lazy dog.", "Speech recognition works.",
          "Guten Morgen, wie geht es dir heute?", "Das ist ein Test."]
  hyps = ["the quick brown fox jumped over a lazy dog", "speech recognition works well",
          "Guten Morgen wie geht's dir heute", "das ist test"]
  langs = ["en", "en", "de", "de"]
  report = metrics.wer_report(refs, hyps, langs)
  norm_refs = [metrics.normalize(r, l) for r, l in zip(refs, langs)]
  norm_hyps = [metrics.normalize(h, l) for h, l in zip(hyps, langs)]
  assert report["overall"] == pytest.approx(100 * jiwer.wer(norm_refs, norm_hyps))
  assert _counts(report) == _jiwer_counts(norm_refs, norm_hyps)
  for lang, rows in (("en", slice(0, 2)), ("de", slice(2, 4))):
    assert _counts(report, lang) == _jiwer_counts(norm_refs[rows], norm_hyps[rows])
    assert report["per_language"][lang] == pytest.approx(
        100 * jiwer.wer(norm_refs[rows], norm_hyps[rows]))
    assert report["counts"]["per_language"][lang]["num_utterances"] == 2
  assert report["num_utterances"] == 4


def test_wer_is_corpus_level_not_sentence_average():
  refs = ["a b c d e f g h i j", "k l"]  # 10 words, 2 words
  hyps = ["a b c d e f g h i x", "k"]  # 1 error, 1 error
  report = metrics.wer_report(refs, hyps, ["de", "de"])
  assert report["overall"] == pytest.approx(100 * 2 / 12)
  sentence_mean = 100 * (1 / 10 + 1 / 2) / 2  # 30.0, what averaging would give
  assert report["overall"] != pytest.approx(sentence_mean)


def test_wer_per_language_split():
  refs = ["one two three four", "eins zwei", "uno dos tres"]
  hyps = ["one two three four", "eins drei", "uno"]
  report = metrics.wer_report(refs, hyps, ["xx", "de", "es"])
  assert report["per_language"] == {"xx": 0.0, "de": 50.0, "es": pytest.approx(200 / 3)}
  assert report["counts"]["per_language"]["es"]["deletions"] == 2
  assert report["counts"]["per_language"]["de"]["substitutions"] == 1
  assert report["overall"] == pytest.approx(100 * 3 / 9)
  overall = report["counts"]["overall"]
  assert overall["reference_words"] == 9 and overall["num_utterances"] == 3


def test_wer_empty_reference():
  """A reference that normalises to nothing: its hypothesis words are insertions."""
  report = metrics.wer_report(["[noise]", "", "the cat"], ["uh oh", "", "the cat sat"],
                              ["en", "en", "en"])
  # "uh" is a filler Whisper's normaliser drops: 1 + 0 + 1 insertions over 2 words.
  assert _counts(report) == (0, 0, 2, 2)
  assert report["overall"] == 100.0
  assert report["counts"]["overall"]["num_utterances"] == 3
  # Only empty references: no reference words, WER undefined.
  report = metrics.wer_report(["...", "(laughs)"], ["hallo", ""], ["de", "de"])
  assert report["overall"] is None and report["per_language"] == {"de": None}
  assert report["counts"]["per_language"]["de"]["insertions"] == 1


def test_wer_empty_input():
  report = metrics.wer_report([], [], [])
  assert report["overall"] is None and report["per_language"] == {}
  assert report["num_utterances"] == 0
  assert report["counts"]["overall"]["reference_words"] == 0
  with pytest.raises(ValueError, match="lengths differ"):
    metrics.wer_report(["a"], [], ["en"])


# ---------------------------------------------------------------- BLEU / chrF

DE_REFS = ["Der Hund läuft schnell nach Hause.", "Ich habe heute keine Zeit.",
           "Das Wetter ist sehr schön."]
DE_HYPS = ["Der Hund rennt schnell nach Hause.", "Ich habe keine Zeit heute.",
           "Das Wetter ist schön."]


def test_bleu_chrf_equal_sacrebleu():
  report = metrics.bleu_report(DE_REFS, DE_HYPS, ["en-de"] * 3)
  expected_bleu = sacrebleu.corpus_bleu(DE_HYPS, [DE_REFS])
  expected_chrf = sacrebleu.corpus_chrf(DE_HYPS, [DE_REFS])
  assert report["bleu"]["en-de"] == pytest.approx(expected_bleu.score)
  assert report["chrf"]["en-de"] == pytest.approx(expected_chrf.score)
  assert 0 < report["bleu"]["en-de"] < 100
  signature = report["signatures"]["en-de"]
  bleu = sacrebleu.metrics.BLEU()
  bleu.corpus_score(DE_HYPS, [DE_REFS])
  assert signature["bleu"] == str(bleu.get_signature())
  assert "tok:13a" in signature["bleu"] and "nc:6" in signature["chrf"]
  assert "note" not in signature
  assert report["num_utterances"] == 3


def test_bleu_direction():
  """Swapping references and hypotheses changes BLEU, so the test catches a swap.

  Forward: a long hypothesis, low precision; swapped: a short one, brevity penalty.
  """
  refs = ["the cat sat on the mat"]
  hyps = ["the cat sat on the mat and then it slept all day long"]
  forward = sacrebleu.corpus_bleu(hyps, [refs]).score
  backward = sacrebleu.corpus_bleu(refs, [hyps]).score
  assert abs(forward - backward) > 5  # the case really is asymmetric
  report = metrics.bleu_report(refs, hyps, ["en-en"])
  assert report["bleu"]["en-en"] == pytest.approx(forward)
  # chrF is asymmetric too (recall weighted by beta = 2).
  assert report["chrf"]["en-en"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
  assert report["chrf"]["en-en"] != pytest.approx(sacrebleu.corpus_chrf(refs, [hyps]).score)


def test_bleu_per_pair_and_tokenizers():
  zh_refs, zh_hyps = ["我喜欢吃苹果和香蕉。", "今天天气很好"], ["我喜欢吃苹果。", "今天天气很好"]
  refs, hyps = DE_REFS + zh_refs, DE_HYPS + zh_hyps
  pairs = ["en-de"] * 3 + ["en-zh"] * 2
  report = metrics.bleu_report(refs, hyps, pairs)
  assert set(report["bleu"]) == {"en-de", "en-zh"}
  assert report["bleu"]["en-de"] == pytest.approx(
      sacrebleu.corpus_bleu(DE_HYPS, [DE_REFS]).score)
  assert report["bleu"]["en-zh"] == pytest.approx(
      sacrebleu.corpus_bleu(zh_hyps, [zh_refs], tokenize="zh").score)
  # 13a would see each Chinese sentence as one or two "words": a different score.
  assert report["bleu"]["en-zh"] != pytest.approx(
      sacrebleu.corpus_bleu(zh_hyps, [zh_refs]).score)
  assert "tok:zh" in report["signatures"]["en-zh"]["bleu"]
  assert metrics.bleu_tokenizer("de") == ("13a", None)
  tokenize, note = metrics.bleu_tokenizer("ja")
  assert (tokenize, note is None) in (("ja-mecab", True), ("char", False))


def test_bleu_empty_input():
  assert metrics.bleu_report([], [], []) == {"bleu": {}, "chrf": {}, "signatures": {},
                                             "num_utterances": 0}


# ---------------------------------------------------------------- speed


def test_speed_report():
  report = metrics.speed_report(audio_seconds=120.0, wall_seconds=30.0,
                                generated_tokens=600, audio_tokens=3000)
  assert report["real_time_factor"] == 0.25
  assert report["audio_seconds_per_second"] == 4.0
  assert report["generated_tokens_per_second"] == 20.0
  assert report["audio_tokens_per_audio_second"] == 25.0
  empty = metrics.speed_report(0.0, 0.0, 0, 0)
  assert empty["real_time_factor"] is None and empty["generated_tokens_per_second"] is None


# ---------------------------------------------------------------- scores.json


def _row(i, reference, hypothesis, task, source, target):
  return {"id": f"u{i}", "reference": reference, "hypothesis": hypothesis,
          "language": source, "task": task, "source_lang": source, "target_lang": target}


def test_score_structure():
  rows = [_row(0, "The cat sat.", "the cat sat down", "asr", "en", "en"),
          _row(1, "Grüße, Straße!", "grüße strasse", "asr", "de", "de")]
  rows += [_row(2 + i, r, h, "s2tt", "en", "de") for i, (r, h) in
           enumerate(zip(DE_REFS, DE_HYPS))]
  scores = metrics.score(iter(rows))
  assert set(scores) == {"wer", "bleu", "chrf", "signatures", "num_utterances"}
  assert scores["num_utterances"] == 5
  assert scores["wer"]["num_utterances"] == 2
  assert scores["wer"]["per_language"] == {"en": pytest.approx(100 / 3), "de": 50.0}
  assert scores["wer"]["overall"] == pytest.approx(40.0)
  assert scores["bleu"] == {"en-de": pytest.approx(
      sacrebleu.corpus_bleu(DE_HYPS, [DE_REFS]).score)}
  assert set(scores["chrf"]) == set(scores["signatures"]) == {"en-de"}
  json.dumps(scores)  # scores.json must serialise
  empty = metrics.score([])
  assert empty["num_utterances"] == 0 and empty["wer"]["overall"] is None
  assert empty["bleu"] == {}
  with pytest.raises(ValueError, match="task"):
    metrics.score([_row(0, "a", "a", "tts", "en", "en")])
