"""The text a demo LM pretrains on, and the formats it is shown in.

What. The training transcripts and translations of the speech corpus, plus many more
sentences from the same grammars (`textgen.make_splits` with a seed other than the
corpus's), so that the LM learns the grammar and the whole lexicon rather than 251
sentences. No held-out sentence gets in: every text whose `textgen.normalize`d form is
a transcript or a translation of a held-out manifest (dev, test) is dropped, with the
whole pair when one side is. A different seed alone would not do: the grammars are
small, and short sentences ("The helmet is soft.") come out of any seed.

How. A row of a batch is one example, in one of four formats:

- "prompt": exactly what the LALM is trained on, with no audio:
  ``PromptBuilder.encode(task, 0, target)`` (system turn, user turn with empty audio
  markers and the instruction, assistant turn with the target), the loss on the
  target and its ``<|im_end|>``. ASR in each language; S2TT English->German.
- "text_in_audio": the same prompt with the source TEXT between the audio markers,
  where the LALM puts the audio tokens; the loss on the source (plain language
  modelling, free: the tokens are there anyway) and on the target. The model learns to
  transcribe (copy) and translate what sits between ``<|audio_bos|>`` and
  ``<|audio_eos|>``: the text skills a real pretrained LLM brings to the LALM, which
  the projector then has to tap with audio.
- "scrambled": "text_in_audio" ASR of a sentence with its words shuffled. Grammar
  cannot predict the target, only copying can: without it, copying is not learned in
  a few CPU minutes (the LM's prior explains most of a grammatical target).
- "stretched": "text_in_audio" ASR (words shuffled half of the time) with each source
  token repeated r times, r drawn per token from `stretch` (min, max), the loss on the
  target only. Audio tokens come 12-50 a second, text tokens 3-4: a word spans several
  audio tokens. Reading a stretched source teaches the LM what the projector then
  only has to supply frame by frame: the current token's embedding, repeated.
- "plain": sentences each closed by ``<|endoftext|>`` (a document boundary, as in
  Qwen2's pretraining), as many as fit in the row, the loss on every token.

An ASR or S2TT example holds 1 to `max_sentences` sentences (of one language; the
source's and the target's joined alike), so that the model copies and translates over
distances nearer an LALM prompt's (whose audio is tens to hundreds of tokens). Rows are
not packed with several examples: attention over other examples slows the learning of
copying several times over (measured), and Qwen2's attention mask has no segments.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Iterable, Sequence

import numpy as np

from lalmjax import prompts
from lalmjax.data import manifest, textgen

FORMATS = ("prompt", "text_in_audio", "scrambled", "stretched", "plain")


@dataclasses.dataclass(frozen=True)
class Pair:
  """A translation pair: `source` in `source_lang`, `target` in `target_lang`."""

  source_lang: str
  source: str
  target_lang: str
  target: str


@dataclasses.dataclass(frozen=True)
class LMText:
  """The sentences an LM trains on.

  Attributes:
    sentences: (language code, text), every monolingual text, both sides of the pairs
      included; ASR targets and plain text.
    pairs: translation pairs; S2TT targets.
    held_out: normalized texts of the held-out manifests, none of which is above.
    dropped: texts (corpus or generated) left out because they are held out.
  """

  sentences: tuple[tuple[str, str], ...]
  pairs: tuple[Pair, ...]
  held_out: frozenset[str]
  dropped: int

  def texts(self) -> list[str]:
    """Every string of the text, once per occurrence (for the tokenizer and checks)."""
    return [t for _, t in self.sentences]

  def sizes(self) -> dict[str, int]:
    langs: dict[str, int] = {}
    for lang, _ in self.sentences:
      langs[lang] = langs.get(lang, 0) + 1
    return {"sentences": len(self.sentences), "pairs": len(self.pairs),
            "dropped_held_out": self.dropped, "held_out": len(self.held_out),
            "characters": sum(len(t) for _, t in self.sentences),
            **{f"sentences_{k}": v for k, v in sorted(langs.items())}}


def held_out_texts(paths: Sequence[str]) -> frozenset[str]:
  """Normalized transcripts and translations of every utterance in `paths`."""
  out = set()
  for path in paths:
    for utt in manifest.read_manifest(path).utterances:
      out.add(textgen.normalize(utt.text))
      if utt.translation:
        out.add(textgen.normalize(utt.translation))
  return frozenset(out)


def corpus_seed(manifest_path: str) -> int | None:
  """The textgen seed of the corpus a manifest belongs to (its folder's meta.json)."""
  meta = os.path.join(os.path.dirname(os.path.abspath(manifest_path)), "meta.json")
  if not os.path.exists(meta):
    return None
  with open(meta) as f:
    return json.load(f).get("seed")


def build_text(train_manifests: Sequence[str], held_out_manifests: Sequence[str],
               seed: int, en_de_pairs: int, es_sentences: int, fr_sentences: int) -> LMText:
  """The corpus's training text plus generated sentences, without held-out text.

  Args:
    train_manifests: manifests whose transcripts (and translations) are used as they are.
    held_out_manifests: manifests (dev, test) none of whose texts may be trained on.
    seed: `textgen.make_splits` seed of the generated sentences; must differ from the
      seed of each train manifest's corpus (its meta.json), so that the generated text
      is not the corpus's own stream, dev and test included.
    en_de_pairs, es_sentences, fr_sentences: generated texts to draw (before the
      held-out ones are dropped).

  Raises:
    ValueError when `seed` is a train corpus's seed.
  """
  for path in train_manifests:
    if corpus_seed(path) == seed:
      raise ValueError(f"text seed {seed} is the seed of the corpus of {path} (meta.json): "
                       "the generated text would replay its streams; choose another")
  held_out = held_out_texts(held_out_manifests)
  ok = lambda *texts: all(textgen.normalize(t) not in held_out for t in texts)
  sentences, pairs, dropped = [], [], 0

  def add(lang: str, text: str, translation: str | None = None, target_lang: str = ""):
    nonlocal dropped
    texts = (text,) if translation is None else (text, translation)
    if not ok(*texts):
      dropped += len(texts)
      return
    sentences.append((lang, text))
    if translation is not None:
      sentences.append((target_lang, translation))
      pairs.append(Pair(lang, text, target_lang, translation))

  for path in train_manifests:
    for utt in manifest.read_manifest(path).utterances:
      add(utt.source_lang, utt.text, utt.translation, utt.target_lang)
  generated = textgen.make_splits({"train": {"s2tt_en_de": en_de_pairs, "asr_es": es_sentences,
                                             "asr_fr": fr_sentences}}, seed)["train"]
  for kind in ("s2tt_en_de", "asr_es", "asr_fr"):
    for sent in generated[kind]:
      add(sent.lang, sent.text, sent.translation, "de")
  return LMText(tuple(sentences), tuple(pairs), held_out, dropped)


def tokenizer_texts(text: LMText, system_prompt: str | None,
                    instructions: dict[str, str] | None = None, repeat: int = 1000) -> list[str]:
  """What a tokenizer for `text` trains on: the sentences, and the prompt's words.

  The chat template's words (roles, system prompt, instructions) are in almost every
  training row but in none of the sentences; `repeat` copies give them that weight, so
  BPE makes them whole tokens ("assistant" one token, not nine) and a prompt stays short.
  `instructions` as `prompts.PromptBuilder`'s (default: the LALM's).
  """
  instructions = prompts.DEFAULT_INSTRUCTIONS if instructions is None else instructions
  name = prompts.language_name
  langs = [(name(lang), name(lang)) for lang in sorted({lang for lang, _ in text.sentences})]
  langs_s2tt = sorted({(name(p.source_lang), name(p.target_lang)) for p in text.pairs})
  words = {system_prompt or "", "system", "user", "assistant"}
  for task, pairs in (("asr", langs), ("s2tt", langs_s2tt)):
    words |= {instructions[task].format(source=s, target=t) for s, t in pairs}
  return text.texts() + sorted(w for w in words if w) * repeat


# ---------------------------------------------------------------------------------------
# Formats.


class ExampleMaker:
  """Turns sentences and pairs into token ids in the formats of the module docstring.

  Args:
    builder: the LALM's `prompts.PromptBuilder` (its tokenizer, system prompt and
      instructions: the prompt format is the LALM's own).
  """

  def __init__(self, builder: prompts.PromptBuilder):
    self.builder = builder
    self.end_of_text = builder.tokenizer.get_vocab()[prompts.ENDOFTEXT]
    self._ids: dict[str, list[int]] = {}

  def ids(self, text: str) -> list[int]:
    if text not in self._ids:
      self._ids[text] = self.builder.tokenizer(text, add_special_tokens=False)["input_ids"]
    return self._ids[text]

  def task(self, fmt: str, items: Sequence[tuple[str, str]] | Sequence[Pair],
           repeats: np.ndarray | None = None) -> prompts.PromptIds:
    """ASR of sentences (lang, text) of one language, or S2TT of `Pair`s, in format
    "prompt" or "text_in_audio"; several items are joined by spaces. `repeats` (one int
    per source token, "text_in_audio" only) repeats each source token so many times
    ("stretched"), and keeps the source out of the loss."""
    if isinstance(items[0], Pair):
      task = "s2tt"
      source, target = " ".join(p.source for p in items), " ".join(p.target for p in items)
      langs = (prompts.language_name(items[0].source_lang),
               prompts.language_name(items[0].target_lang))
    else:
      task = "asr"
      source = target = " ".join(t for _, t in items)
      langs = (prompts.language_name(items[0][0]),) * 2
    if fmt == "prompt":
      return self.builder.encode(task, 0, target, *langs)
    if fmt != "text_in_audio":
      raise ValueError(f"format {fmt!r}: expected 'prompt' or 'text_in_audio' here")
    p = self.builder.encode(task, 1, target, *langs)
    # The one placeholder becomes the source text, in the loss.
    at = int(np.flatnonzero(p.input_ids == self.builder.audio_token_id)[0])
    source_ids = np.asarray(self.ids(source), np.int32)
    in_loss = repeats is None
    if repeats is not None:
      source_ids = np.repeat(source_ids, np.resize(np.asarray(repeats), len(source_ids)))
    ids = np.concatenate([p.input_ids[:at], source_ids, p.input_ids[at + 1:]])
    mask = np.concatenate([p.loss_mask[:at], np.full(len(source_ids), in_loss),
                           p.loss_mask[at + 1:]])
    return prompts.PromptIds(ids, mask, 0)

  def plain(self, texts: Iterable[str], max_length: int) -> prompts.PromptIds:
    """Texts each closed by <|endoftext|>, as many as fit in `max_length` (at least
    one), the loss on every token."""
    ids: list[int] = []
    for text in texts:
      more = self.ids(text) + [self.end_of_text]
      if ids and len(ids) + len(more) > max_length:
        break
      ids += more
    return prompts.PromptIds(np.asarray(ids, np.int32), np.ones(len(ids), bool), 0)


def sample_examples(text: LMText, builder: prompts.PromptBuilder, *, weights: dict[str, float],
                    max_sentences: int, max_length: int, seed: int,
                    counts: dict[str, int] | None = None,
                    stretch: tuple[int, int] = (2, 8)):
  """An endless, deterministic stream of examples (`prompts.PromptIds`) of at most
  `max_length` tokens.

  Each example's format is drawn by `weights` (format -> weight), then its number of
  sentences k uniformly from 1..`max_sentences`. An ASR/S2TT example starts from a
  sentence or a pair drawn uniformly from all of them (so pairs / (sentences + pairs)
  of them are S2TT), and adds k - 1 more of the same language (or pairs). One longer
  than `max_length` is drawn again. `counts`, if given, counts the formats yielded and
  "too_long".
  """
  unknown = set(weights) - set(FORMATS)
  if unknown or not any(w > 0 for w in weights.values()) or min(weights.values()) < 0:
    raise ValueError(f"format weights {dict(weights)}: expected weights >= 0 over "
                     f"{FORMATS}, one of them > 0")
  if max_sentences < 1:
    raise ValueError(f"max_sentences={max_sentences}: expected >= 1")
  formats = [f for f in FORMATS if weights.get(f, 0) > 0]
  p = np.asarray([weights[f] for f in formats], np.float64)
  p /= p.sum()
  rng = np.random.default_rng(seed)
  maker = ExampleMaker(builder)
  sentences, pairs = text.sentences, text.pairs
  by_lang: dict[str, np.ndarray] = {}
  for i, (lang, _) in enumerate(sentences):
    by_lang.setdefault(lang, []).append(i)
  by_lang = {k: np.asarray(v) for k, v in by_lang.items()}
  counts = {} if counts is None else counts
  draw = lambda n: int(rng.integers(0, n))

  def asr_items(k):
    lang, first = sentences[draw(len(sentences))]
    more = rng.choice(by_lang[lang], size=k - 1)
    return [(lang, first)] + [sentences[i] for i in more]

  while True:
    fmt = formats[rng.choice(len(formats), p=p)]
    k = int(rng.integers(1, max_sentences + 1))
    if fmt == "plain":
      ex = maker.plain((sentences[draw(len(sentences))][1] for _ in range(64)), max_length)
    elif fmt in ("scrambled", "stretched"):
      items = asr_items(k)
      words = " ".join(t for _, t in items).split()
      if fmt == "scrambled" or rng.random() < 0.5:
        rng.shuffle(words)
      repeats = (rng.integers(stretch[0], stretch[1] + 1, size=4 * len(words) + 8)
                 if fmt == "stretched" else None)
      ex = maker.task("text_in_audio", [(items[0][0], " ".join(words))], repeats)
    else:
      i = draw(len(sentences) + len(pairs))
      items = (asr_items(k) if i < len(sentences) else
               [pairs[i - len(sentences)]] + [pairs[draw(len(pairs))] for _ in range(k - 1)])
      ex = maker.task(fmt, items)
    if len(ex.input_ids) > max_length:
      counts["too_long"] = counts.get("too_long", 0) + 1
      continue
    counts[fmt] = counts.get(fmt, 0) + 1
    yield ex


def sample_batches(text: LMText, builder: prompts.PromptBuilder, *, steps: int,
                   batch_size: int, max_length: int, max_sentences: int,
                   weights: dict[str, float], seed: int, stretch: tuple[int, int] = (2, 8)
                   ) -> tuple[dict[str, np.ndarray], dict[str, int]]:
  """`steps` batches of `batch_size` rows (one example each, `sample_examples`),
  right-padded to `max_length`; deterministic from `seed`.

  Returns:
    ({input_ids int32, attention_mask bool, loss_mask bool: [steps, B, S]}, counts:
    examples per format, "too_long" (drawn again), "tokens", "target_tokens").
  """
  counts = {f: 0 for f in FORMATS} | {"too_long": 0}
  stream = sample_examples(text, builder, weights=weights, max_sentences=max_sentences,
                           max_length=max_length, seed=seed, counts=counts,
                           stretch=stretch)
  rows = [next(stream) for _ in range(steps * batch_size)]
  arrays = prompts.pad_prompts(rows, builder.pad_id, length=max_length, side="right")
  counts["tokens"] = int(arrays["attention_mask"].sum())
  counts["target_tokens"] = int(arrays["loss_mask"].sum())
  shape = (steps, batch_size, max_length)
  return {k: v.reshape(shape) for k, v in arrays.items()}, counts
