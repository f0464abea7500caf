"""The LLM's input text: tokenizer, Qwen2 chat template, audio placeholders, padding.

A training example becomes (Qwen2 chat format)::

    <|im_start|>system\\n{system}<|im_end|>\\n
    <|im_start|>user\\n<|audio_bos|><|AUDIO|> x n<|audio_eos|>\\n{instruction}<|im_end|>\\n
    <|im_start|>assistant\\n{target}<|im_end|>

where n = ceil(valid encoder frames / k) is the number of compressed audio tokens of that
utterance: the model overwrites each ``<|AUDIO|>`` embedding with one projected audio
token. The loss covers ``{target}<|im_end|>`` only (``<|im_end|>`` is the EOS).

The tokenizer is a local Hugging Face folder (tokenizer.json + tokenizer_config.json,
chat template included); the audio marker tokens are added when it lacks them
(Qwen2-Audio's names). `build_tiny_tokenizer` writes a small byte-level BPE tokenizer
with the same special tokens and template, for tests and the built-in default run.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np

AUDIO_BOS, AUDIO_TOKEN, AUDIO_EOS = "<|audio_bos|>", "<|AUDIO|>", "<|audio_eos|>"
IM_START, IM_END, ENDOFTEXT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"

# Qwen2(-Instruct)'s template, used when a tokenizer folder carries none.
QWEN2_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
# {source} / {target}: language names or codes from the manifest.
DEFAULT_INSTRUCTIONS = {
    "asr": "Transcribe the audio.",
    "s2tt": "Translate the audio from {source} into {target}.",
}

# Manifest language codes -> the names instructions use ("Translate ... from English").
LANGUAGE_NAMES = {
    "en": "English", "de": "German", "fr": "French", "es": "Spanish", "it": "Italian",
    "pt": "Portuguese", "nl": "Dutch", "ru": "Russian", "zh": "Chinese", "ja": "Japanese",
    "ar": "Arabic", "ca": "Catalan", "fa": "Persian", "et": "Estonian", "mn": "Mongolian",
    "tr": "Turkish", "cy": "Welsh", "sv": "Swedish", "lv": "Latvian", "sl": "Slovenian",
    "ta": "Tamil", "id": "Indonesian",
}


def language_name(code: str | None) -> str | None:
  """"de" -> "German"; "de-DE" -> "German"; an unknown code is returned as it is."""
  if not code:
    return code
  return LANGUAGE_NAMES.get(code.split("-")[0].split("_")[0].lower(), code)


def load_tokenizer(path: str):
  """A local Hugging Face tokenizer with the audio marker tokens (added if missing)."""
  from transformers import AutoTokenizer  # local: slow import

  if not os.path.isdir(path):
    raise FileNotFoundError(f"{path}: tokenizer folder does not exist")
  if not (os.path.exists(os.path.join(path, "tokenizer.json"))
          or os.path.exists(os.path.join(path, "vocab.json"))):
    raise FileNotFoundError(f"{path}: no tokenizer.json (or vocab.json) in this folder")
  tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
  missing = [t for t in (AUDIO_BOS, AUDIO_TOKEN, AUDIO_EOS, IM_START, IM_END)
             if t not in tok.get_vocab()]
  if missing:
    tok.add_special_tokens({"additional_special_tokens": missing},
                           replace_extra_special_tokens=False)
  if not getattr(tok, "chat_template", None):
    tok.chat_template = QWEN2_CHAT_TEMPLATE
  return tok


def new_token_ids(tokenizer, llm_rows: int, extra: Sequence[str] = ()) -> tuple[int, ...]:
  """Ids of the tokens new to an LLM whose checkpoint has `llm_rows` embedding rows.

  They are <|audio_bos|> and <|audio_eos|>, the tokens in `extra`, and any other token
  at or past `llm_rows` (`load_tokenizer` appends what a tokenizer lacks there). Never
  <|AUDIO|>: every placeholder's embedding is replaced by an audio token. Sorted.

  Raises:
    ValueError naming a token of `extra` the tokenizer does not hold.
  """
  vocab = tokenizer.get_vocab()
  missing = [t for t in extra if t not in vocab]
  if missing:
    raise ValueError(f"new tokens {missing} are not in the tokenizer")
  ids = {vocab[AUDIO_BOS], vocab[AUDIO_EOS]} | {vocab[t] for t in extra}
  ids |= {i for i in vocab.values() if i >= llm_rows}
  return tuple(sorted(ids - {vocab[AUDIO_TOKEN]}))


def build_tiny_tokenizer(out_dir: str, texts: Sequence[str] = (), vocab_size: int = 512,
                         audio_markers: bool = True) -> str:
  """Trains a byte-level BPE tokenizer on `texts` with Qwen2's special tokens and template.

  Every byte is in the alphabet, so any text round-trips. `audio_markers=False` leaves
  out the audio markers, as a base LLM's tokenizer does (`load_tokenizer` then appends
  them). Returns `out_dir`.
  """
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
  from transformers import PreTrainedTokenizerFast

  specials = [ENDOFTEXT, IM_START, IM_END] + ([AUDIO_BOS, AUDIO_TOKEN, AUDIO_EOS]
                                              if audio_markers else [])
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                show_progress=False)
  corpus = list(texts) + [DEFAULT_SYSTEM_PROMPT] + list(DEFAULT_INSTRUCTIONS.values())
  tok.train_from_iterator(corpus, trainer)
  fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=IM_END, pad_token=ENDOFTEXT,
                                 additional_special_tokens=specials[3:])
  fast.chat_template = QWEN2_CHAT_TEMPLATE
  fast.save_pretrained(out_dir)
  return out_dir


@dataclasses.dataclass(frozen=True)
class PromptIds:
  """Token ids of one example and which of them the loss covers."""

  input_ids: np.ndarray  # int32[S]
  loss_mask: np.ndarray  # bool[S]: target tokens and the closing EOS
  num_audio: int  # placeholders in input_ids


class PromptBuilder:
  """Turns (task, number of audio tokens, target text) into token ids.

  Args:
    tokenizer: from `load_tokenizer`.
    system_prompt: the system turn ("" or None: no system turn is written, and the
      template's default applies).
    instructions: task name -> instruction text, formatted with {source}/{target}.
  """

  def __init__(self, tokenizer, system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
               instructions: dict[str, str] | None = None):
    self.tokenizer = tokenizer
    self.system_prompt = system_prompt
    self.instructions = dict(DEFAULT_INSTRUCTIONS if instructions is None else instructions)
    vocab = tokenizer.get_vocab()
    self.audio_token_id = vocab[AUDIO_TOKEN]
    self.eos_id = vocab[IM_END]
    self.pad_id = vocab.get(ENDOFTEXT, self.eos_id)
    self._prefix_cache: dict[tuple, list[int]] = {}

  @property
  def vocab_size(self) -> int:
    return len(self.tokenizer)

  def instruction(self, task: str, source_lang: str | None = None,
                  target_lang: str | None = None) -> str:
    if task not in self.instructions:
      raise ValueError(f"task {task!r}: expected one of {sorted(self.instructions)}")
    return self.instructions[task].format(source=source_lang or "the source language",
                                          target=target_lang or "the target language")

  def _prefix(self, task, source_lang, target_lang) -> list[int]:
    """Ids of system + user turn + assistant header, with ONE audio placeholder."""
    key = (task, source_lang, target_lang)
    if key not in self._prefix_cache:
      user = (f"{AUDIO_BOS}{AUDIO_TOKEN}{AUDIO_EOS}\n"
              f"{self.instruction(task, source_lang, target_lang)}")
      messages = ([{"role": "system", "content": self.system_prompt}]
                  if self.system_prompt else []) + [{"role": "user", "content": user}]
      text = self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                add_generation_prompt=True)
      ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
      if ids.count(self.audio_token_id) != 1:
        raise ValueError(f"chat template produced {ids.count(self.audio_token_id)} "
                         f"{AUDIO_TOKEN} tokens; expected exactly 1")
      self._prefix_cache[key] = ids
    return self._prefix_cache[key]

  def encode(self, task: str, num_audio: int, target: str | None = None,
             source_lang: str | None = None, target_lang: str | None = None) -> PromptIds:
    """The prompt with `num_audio` placeholders, then `target` + EOS if given.

    Without a target the ids end with the assistant header (a generation prompt).
    """
    if num_audio < 0:
      raise ValueError(f"num_audio={num_audio} must be >= 0")
    prefix = self._prefix(task, source_lang, target_lang)
    at = prefix.index(self.audio_token_id)
    ids = prefix[:at] + [self.audio_token_id] * num_audio + prefix[at + 1:]
    n_prompt = len(ids)
    if target is not None:
      ids += self.tokenizer(target, add_special_tokens=False)["input_ids"] + [self.eos_id]
    loss_mask = np.arange(len(ids)) >= n_prompt
    return PromptIds(np.asarray(ids, np.int32), loss_mask, num_audio)


def round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def pad_prompts(prompts: Sequence[PromptIds], pad_id: int, length: int | None = None,
                bucket: int = 64, side: str = "right") -> dict[str, np.ndarray]:
  """Stacks prompts into fixed-shape arrays.

  Args:
    prompts: one per example.
    pad_id: id written into padding slots (masked out everywhere).
    length: the padded length S; default: the longest prompt rounded up to `bucket`, so
      a run compiles once per bucket rather than once per batch.
    side: "right" for training/teacher forcing, "left" for batched generation.

  Returns:
    input_ids int32[B, S], attention_mask bool[B, S], loss_mask bool[B, S].
  """
  longest = max(len(p.input_ids) for p in prompts)
  length = round_up(longest, bucket) if length is None else length
  if longest > length:
    raise ValueError(f"a prompt has {longest} tokens, longer than the padded length {length}")
  b = len(prompts)
  ids = np.full((b, length), pad_id, np.int32)
  attn = np.zeros((b, length), bool)
  loss = np.zeros((b, length), bool)
  for i, p in enumerate(prompts):
    n = len(p.input_ids)
    sl = slice(0, n) if side == "right" else slice(length - n, length)
    ids[i, sl], attn[i, sl], loss[i, sl] = p.input_ids, True, p.loss_mask
  return {"input_ids": ids, "attention_mask": attn, "loss_mask": loss}
