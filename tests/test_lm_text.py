"""lalmjax.data.lm_text: the demo LM's text (no held-out sentence) and its formats."""

import glob
import os

import numpy as np
import pytest

from lalmjax import prompts
from lalmjax.data import lm_text, manifest, textgen

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO, "data", "demo")
TRAIN = [os.path.join(DEMO, "train.jsonl")]
HELD_OUT = [os.path.join(DEMO, "dev.jsonl"), os.path.join(DEMO, "test.jsonl")]


def every_held_out_text() -> set[str]:
  """Transcripts and translations of every dev/test manifest of the demo, per kind too."""
  out = set()
  for path in glob.glob(os.path.join(DEMO, "dev*.jsonl")) + glob.glob(
      os.path.join(DEMO, "test*.jsonl")):
    for u in manifest.read_manifest(path).utterances:
      out |= {textgen.normalize(u.text)} | ({textgen.normalize(u.translation)}
                                            if u.translation else set())
  return out


@pytest.fixture(scope="module")
def text():
  return lm_text.build_text(TRAIN, HELD_OUT, seed=1, en_de_pairs=2000, es_sentences=300,
                            fr_sentences=300)


@pytest.fixture(scope="module")
def builder(tmp_path_factory, text):
  path = str(tmp_path_factory.mktemp("tok"))
  prompts.build_tiny_tokenizer(path, lm_text.tokenizer_texts(text, "You are a helpful "
                                                             "assistant."), 600)
  return prompts.PromptBuilder(prompts.load_tokenizer(path))


def test_no_held_out_sentence_and_the_filter_is_exercised(text):
  held_out = every_held_out_text()
  assert held_out == text.held_out  # dev.jsonl + test.jsonl cover every per-kind file
  assert not {textgen.normalize(t) for t in text.texts()} & held_out
  for p in text.pairs:
    assert not {textgen.normalize(p.source), textgen.normalize(p.target)} & held_out
  # Seed 1 draws a few dev/test sentences (short ones recur): they were dropped.
  assert text.dropped > 0
  unfiltered = textgen.make_splits({"train": {"s2tt_en_de": 2000}}, 1)["train"]["s2tt_en_de"]
  assert any(textgen.normalize(s.text) in held_out or textgen.normalize(s.translation)
             in held_out for s in unfiltered)


def test_corpus_train_text_is_in(text):
  texts = set(text.texts())
  for u in manifest.read_manifest(TRAIN[0]).utterances:
    assert u.text in texts and (u.translation is None or u.translation in texts)
  langs = {lang for lang, _ in text.sentences}
  assert langs == {"en", "de", "es", "fr"}
  assert all(p.source_lang == "en" and p.target_lang == "de" for p in text.pairs)


def test_the_corpus_seed_is_refused():
  with pytest.raises(ValueError, match="seed of the corpus"):
    lm_text.build_text(TRAIN, HELD_OUT, seed=0, en_de_pairs=1, es_sentences=0,
                       fr_sentences=0)


def test_prompt_format_is_the_lalm_prompt_without_audio(builder, text):
  maker = lm_text.ExampleMaker(builder)
  pair = text.pairs[0]
  got = maker.task("prompt", [pair])
  want = builder.encode("s2tt", 0, pair.target, "English", "German")
  np.testing.assert_array_equal(got.input_ids, want.input_ids)
  np.testing.assert_array_equal(got.loss_mask, want.loss_mask)
  lang, sentence = next(s for s in text.sentences if s[0] == "fr")
  got = maker.task("prompt", [(lang, sentence)])
  np.testing.assert_array_equal(got.input_ids,
                                builder.encode("asr", 0, sentence, "French", "French").input_ids)


def test_text_in_audio_puts_the_source_where_the_audio_goes(builder, text):
  maker = lm_text.ExampleMaker(builder)
  pair = text.pairs[1]
  ex = maker.task("text_in_audio", [pair])
  tok = builder.tokenizer
  assert (f"<|audio_bos|>{pair.source}<|audio_eos|>\nTranslate the audio from English into "
          f"German.<|im_end|>\n<|im_start|>assistant\n{pair.target}<|im_end|>"
          in tok.decode(ex.input_ids))
  # The loss covers the source (language modelling) and the target.
  assert tok.decode(ex.input_ids[ex.loss_mask]) == pair.source + pair.target + "<|im_end|>"
  assert builder.audio_token_id not in ex.input_ids
  # The prompt around the source is the LALM's, token for token.
  lalm = builder.encode("s2tt", 1, pair.target, "English", "German")
  at = int(np.flatnonzero(lalm.input_ids == builder.audio_token_id)[0])
  n = len(maker.ids(pair.source))
  np.testing.assert_array_equal(ex.input_ids[:at], lalm.input_ids[:at])
  np.testing.assert_array_equal(ex.input_ids[at + n:], lalm.input_ids[at + 1:])


def test_stretched_repeats_each_source_token_and_keeps_it_out_of_the_loss(builder, text):
  maker = lm_text.ExampleMaker(builder)
  lang, sentence = next(s for s in text.sentences if s[0] == "en")
  source = maker.ids(sentence)
  repeats = np.arange(len(source)) % 3 + 2  # 2, 3, 4, 2, ...
  ex = maker.task("text_in_audio", [(lang, sentence)], repeats)
  plain = maker.task("text_in_audio", [(lang, sentence)])
  at = int(np.flatnonzero(plain.input_ids == source[0])[0])
  n = int(repeats.sum())
  np.testing.assert_array_equal(ex.input_ids[at:at + n], np.repeat(source, repeats))
  np.testing.assert_array_equal(ex.input_ids[:at], plain.input_ids[:at])
  np.testing.assert_array_equal(ex.input_ids[at + n:], plain.input_ids[at + len(source):])
  assert not ex.loss_mask[at:at + n].any()  # the stretched source is not predicted
  assert builder.tokenizer.decode(ex.input_ids[ex.loss_mask]) == sentence + "<|im_end|>"
  # Fewer repeats than tokens: the repeats cycle.
  short = maker.task("text_in_audio", [(lang, sentence)], np.array([2]))
  assert len(short.input_ids) == len(plain.input_ids) + len(source)


def test_plain_is_sentences_each_closed_by_end_of_text(builder):
  maker = lm_text.ExampleMaker(builder)
  texts = ["Der Hund schläft.", "Die Katze isst."]
  n = len(maker.ids(texts[0])) + 1
  ex = maker.plain(texts, max_length=n)  # the second does not fit
  assert builder.tokenizer.decode(ex.input_ids) == "Der Hund schläft.<|endoftext|>"
  assert ex.loss_mask.all()
  ex = maker.plain(texts, max_length=n + len(maker.ids(texts[1])) + 1)
  assert builder.tokenizer.decode(ex.input_ids) == (
      "Der Hund schläft.<|endoftext|>Die Katze isst.<|endoftext|>")
  # The first always goes in, even when longer than max_length.
  assert len(maker.plain(texts, max_length=2).input_ids) == n


def test_batches_are_deterministic_and_count_formats(builder, text):
  kw = dict(steps=4, batch_size=4, max_length=128, max_sentences=2,
            weights={"prompt": 1.0, "text_in_audio": 1.0, "scrambled": 1.0, "stretched": 1.0,
                     "plain": 1.0})
  a, counts = lm_text.sample_batches(text, builder, seed=3, **kw)
  b, _ = lm_text.sample_batches(text, builder, seed=3, **kw)
  c, _ = lm_text.sample_batches(text, builder, seed=4, **kw)
  assert a["input_ids"].shape == (4, 4, 128)
  np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
  assert not np.array_equal(a["input_ids"], c["input_ids"])
  assert all(counts[f] > 0 for f in lm_text.FORMATS)
  assert counts["target_tokens"] == a["loss_mask"].sum()
  with pytest.raises(ValueError, match="weights"):
    lm_text.sample_batches(text, builder, seed=3, **{**kw, "weights": {"prose": 1.0}})
