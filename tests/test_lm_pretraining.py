"""lalmjax.lm_pretraining: the demo LM stage, on the tiny option of configs/demo_lm.py.

One tiny LM (width 32, 2 layers, 30 steps, a few seconds) is pretrained per module; the
tests read its folder. Parity with transformers at 1e-4 relative (float32).
"""

import json
import os
import re
import time

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from configs import demo_lm
from lalmjax import checkpoints, lm_pretraining, prompts
from lalmjax.data import lm_text, textgen
from lalmjax.models import qwen2
from test_lm_text import every_held_out_text
from test_whisper import rel_err

REL_TOL = 1e-4


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """(config, folder, the batches the LM trained on), from one pretraining."""
  config = demo_lm.get_config("tiny")
  out = str(tmp_path_factory.mktemp("runs") / "lm")
  seen = {}
  sample = lm_text.sample_batches

  def spy(*args, **kwargs):
    seen["batches"], seen["counts"] = sample(*args, **kwargs)
    return seen["batches"], seen["counts"]

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(lm_text, "sample_batches", spy)
    path = lm_pretraining.pretrain_lm(config, out)
  return config, path, seen["batches"]


def test_folder_holds_a_finished_model(run):
  config, path, _ = run
  assert lm_pretraining.is_done(path)
  assert not os.path.exists(path + ".partial")
  with open(os.path.join(path, "pretraining.json")) as f:
    record = json.load(f)
  assert record["steps"] == config.total_steps
  assert record["text"]["dropped_held_out"] > 0  # the filter ran on this config's text
  assert set(record["seconds"]) >= {"text", "tokenizer", "compile", "train", "save"}


def test_loss_falls(run):
  _, path, _ = run
  with open(os.path.join(path, "pretraining.json")) as f:
    history = json.load(f)["loss_history"]
  first, last = history[0][1], history[-1][1]
  assert last < first - 0.5, history
  assert history[0][1] < np.log(512) + 1.0  # starts near uniform over the vocabulary


def test_both_loaders_give_the_same_logits(run):
  _, path, _ = run
  module, params = checkpoints.load_qwen2(path)
  hf = transformers.Qwen2ForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
  assert hf.config.tie_word_embeddings and module.config.tie_word_embeddings
  ids = np.random.default_rng(0).integers(0, module.config.vocab_size, (3, 17))
  ours = module.apply({"params": params}, jnp.asarray(ids, jnp.int32))
  with torch.no_grad():
    ref = hf(torch.tensor(ids)).logits.numpy()
  assert rel_err(ours, ref) <= REL_TOL


def test_tokenizer_has_the_audio_markers_inside_the_embedding(run):
  _, path, _ = run
  tok = prompts.load_tokenizer(path)
  with open(os.path.join(path, "tokenizer.json")) as f:
    stored = {t["content"] for t in json.load(f)["added_tokens"]}
  # In the file itself, not appended by load_tokenizer.
  assert {prompts.AUDIO_BOS, prompts.AUDIO_TOKEN, prompts.AUDIO_EOS, prompts.IM_START,
          prompts.IM_END, prompts.ENDOFTEXT} <= stored
  rows = checkpoints.read_config(path)["vocab_size"]
  assert max(tok.get_vocab().values()) < rows and len(tok) <= rows
  # Nothing to grow: only the markers the LALM always trains are new to it.
  vocab = tok.get_vocab()
  assert prompts.new_token_ids(tok, rows) == tuple(sorted((vocab[prompts.AUDIO_BOS],
                                                           vocab[prompts.AUDIO_EOS])))
  builder = prompts.PromptBuilder(tok)
  assert builder.encode("asr", 3, "Der Hund schläft.").input_ids.max() < rows


def test_no_dev_or_test_sentence_in_what_the_lm_read(run):
  """Every row the LM trained on, decoded and cut at the special tokens and newlines:
  no piece is a dev/test transcript or translation (normalized)."""
  _, path, batches = run
  tok = prompts.load_tokenizer(path)
  held_out = every_held_out_text()
  specials = "|".join(re.escape(t) for t in (prompts.ENDOFTEXT, prompts.IM_START,
                                             prompts.IM_END, prompts.AUDIO_BOS,
                                             prompts.AUDIO_EOS, prompts.AUDIO_TOKEN, "\n"))
  pieces = set()
  ids, mask = batches["input_ids"], batches["attention_mask"]
  for row, real in zip(ids.reshape(-1, ids.shape[-1]), mask.reshape(-1, mask.shape[-1])):
    pieces |= {textgen.normalize(p) for p in re.split(specials, tok.decode(row[real]))}
  assert len(pieces) > 150  # the rows were read (30 steps x 8 rows, 1-2 sentences each)
  assert not pieces & held_out
  # Nor in what the tokenizer was trained on.
  t = demo_lm.get_config("tiny").text
  text = lm_text.build_text([lm_pretraining._resolve(p) for p in t.train_manifests],
                            [lm_pretraining._resolve(p) for p in t.held_out_manifests],
                            t.seed, t.en_de_pairs, t.es_sentences, t.fr_sentences)
  tokenizer_text = lm_text.tokenizer_texts(text, t.system_prompt)
  assert not {textgen.normalize(s) for s in tokenizer_text} & held_out
  # The cut gave whole sentences (so a held-out one would have shown).
  assert len(pieces & {textgen.normalize(s) for s in text.texts()}) > 100


def test_second_call_reuses_the_folder(run, monkeypatch):
  config, path, _ = run

  def no_training(*args, **kwargs):
    raise AssertionError("trained again")

  monkeypatch.setattr(lm_pretraining, "train", no_training)
  monkeypatch.setattr(lm_text, "build_text", no_training)
  t0 = time.perf_counter()
  assert lm_pretraining.pretrain_lm(config, path) == path
  assert time.perf_counter() - t0 < 1.0
  # log_every does not change the model; the number of steps does.
  config = demo_lm.get_config("tiny")
  config.log_every = 1
  assert lm_pretraining.pretrain_lm(config, path) == path
  config.total_steps = 31
  with pytest.raises(ValueError, match="total_steps"):
    lm_pretraining.pretrain_lm(config, path)


def test_a_folder_that_is_not_a_finished_lm_is_not_overwritten(tmp_path):
  (tmp_path / "notes.txt").write_text("mine")
  with pytest.raises(ValueError, match="no finished LM"):
    lm_pretraining.pretrain_lm(demo_lm.get_config("tiny"), str(tmp_path))
  assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("key, value, message", [
    ("total_steps", 0, "total_steps"),
    ("model.num_key_value_heads", 3, "num_key_value_heads"),
    ("text.seed", 0, "text.seed=0: is the seed of the corpus"),
    ("optim.warmup_steps", 30, "warmup_steps"),
])
def test_bad_configs_fail_naming_the_key(tmp_path, key, value, message):
  config = demo_lm.get_config("tiny")
  node = config
  *parents, leaf = key.split(".")
  for p in parents:
    node = node[p]
  node[leaf] = value
  with pytest.raises(ValueError, match=message):
    lm_pretraining.pretrain_lm(config, str(tmp_path / "lm"))
  assert not os.path.exists(tmp_path / "lm")


def test_demo_config_is_valid():
  config = demo_lm.get_config()
  lm_pretraining.validate(config)
  cfg = lm_pretraining.model_config(config, config.tokenizer_vocab_size)
  assert cfg.vocab_size == config.tokenizer_vocab_size and cfg.tie_word_embeddings
  assert isinstance(cfg, qwen2.Qwen2Config)
