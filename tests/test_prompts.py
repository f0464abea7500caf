"""lalmjax.prompts: chat-template prompts with audio placeholders, loss masks, padding."""

import numpy as np
import pytest

from lalmjax import prompts

TEXTS = ["the quick brown fox", "jumps over the lazy dog", "hallo welt", "bonjour le monde"]


@pytest.fixture(scope="module")
def builder(tmp_path_factory):
  path = prompts.build_tiny_tokenizer(str(tmp_path_factory.mktemp("tok")), TEXTS, 300)
  return prompts.PromptBuilder(prompts.load_tokenizer(path))


def test_prompt_layout_and_loss_mask(builder):
  p = builder.encode("asr", 5, "the quick brown fox")
  tok = builder.tokenizer
  text = tok.decode(p.input_ids)
  assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                  "<|im_start|>user\n<|audio_bos|>" + "<|AUDIO|>" * 5 + "<|audio_eos|>\n"
                  "Transcribe the audio.<|im_end|>\n<|im_start|>assistant\n"
                  "the quick brown fox<|im_end|>")
  assert int((p.input_ids == builder.audio_token_id).sum()) == 5
  # The loss covers exactly the target and the closing EOS.
  assert tok.decode(p.input_ids[p.loss_mask]) == "the quick brown fox<|im_end|>"
  assert p.input_ids[-1] == builder.eos_id and p.loss_mask[-1]


@pytest.mark.parametrize("n", [0, 1, 37])
def test_placeholder_count_is_exact(builder, n):
  p = builder.encode("s2tt", n, "hallo welt", "English", "German")
  assert int((p.input_ids == builder.audio_token_id).sum()) == n
  assert "Translate the audio from English into German." in builder.tokenizer.decode(p.input_ids)


def test_generation_prompt_has_no_target(builder):
  p = builder.encode("asr", 3)
  assert not p.loss_mask.any()
  assert builder.tokenizer.decode(p.input_ids).endswith("<|im_start|>assistant\n")


def test_unknown_task_and_negative_count(builder):
  with pytest.raises(ValueError, match="task 'qa'"):
    builder.encode("qa", 3, "x")
  with pytest.raises(ValueError, match="num_audio=-1"):
    builder.encode("asr", -1, "x")


@pytest.mark.parametrize("side", ["right", "left"])
def test_pad_prompts_buckets_and_sides(builder, side):
  ps = [builder.encode("asr", n, t) for n, t in zip([3, 10], TEXTS)]
  b = prompts.pad_prompts(ps, builder.pad_id, bucket=32, side=side)
  longest = max(len(p.input_ids) for p in ps)
  assert b["input_ids"].shape == (2, -(-longest // 32) * 32)
  for i, p in enumerate(ps):
    row = b["input_ids"][i][b["attention_mask"][i]]
    np.testing.assert_array_equal(row, p.input_ids)
    np.testing.assert_array_equal(b["loss_mask"][i][b["attention_mask"][i]], p.loss_mask)
    real = np.flatnonzero(b["attention_mask"][i])
    assert (real[0] == 0) if side == "right" else (real[-1] == b["input_ids"].shape[1] - 1)
  with pytest.raises(ValueError, match="longer than the padded length"):
    prompts.pad_prompts(ps, builder.pad_id, length=8)


def test_tokenizer_without_audio_tokens_gets_them(tmp_path):
  from tokenizers import Tokenizer, models, pre_tokenizers
  from transformers import PreTrainedTokenizerFast
  base = Tokenizer(models.WordLevel({"a": 0, "<unk>": 1, "<|im_start|>": 2, "<|im_end|>": 3},
                                    unk_token="<unk>"))
  base.pre_tokenizer = pre_tokenizers.Whitespace()
  PreTrainedTokenizerFast(tokenizer_object=base).save_pretrained(str(tmp_path))
  tok = prompts.load_tokenizer(str(tmp_path))
  for t in (prompts.AUDIO_BOS, prompts.AUDIO_TOKEN, prompts.AUDIO_EOS):
    assert t in tok.get_vocab()
  assert tok.chat_template == prompts.QWEN2_CHAT_TEMPLATE


def test_missing_tokenizer_folder(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    prompts.load_tokenizer(str(tmp_path / "nope"))
  with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
    prompts.load_tokenizer(str(tmp_path))
