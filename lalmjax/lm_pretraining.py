"""Stage one of the demo: a small Qwen2 pretrained on the corpus's text, saved for the LALM.

    python -m lalmjax.lm_pretraining --config=configs/demo_lm.py --out=runs/demo/lm

The paper finetunes an LALM around a frozen, pretrained Qwen2-7B. The demo cannot ship
one, so it makes one: a random Qwen2-shaped model (`configs/demo_lm.py`) learns the
demo's languages in a few CPU minutes, and is saved as a Hugging Face Qwen2ForCausalLM
folder with its tokenizer. The LALM then loads it through `checkpoints.load_qwen2`,
exactly as it would load a real Qwen2 folder, and keeps it frozen.

What it reads and how (`data/lm_text.py`): the corpus's training transcripts and
translations plus generated sentences from the same grammars, never a dev/test
sentence; as LALM prompts without audio, as LALM prompts with the source text (or its
words shuffled) in the audio slot, and as plain sentences. The tokenizer (byte-level
BPE with the audio markers) is trained on that same text.

`out_dir` receives config.json, model.safetensors, the tokenizer files,
pretraining.json (config, steps, losses, text sizes, timings) and, last, a ``DONE``
marker. The folder is built beside `out_dir` and renamed into place, so a folder with
that name is always whole; a second call with the same config returns at once.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
import zlib
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from lalmjax import losses, prompts, qwen2_export, training
from lalmjax.data import lm_text
from lalmjax.models import qwen2

log = logging.getLogger(__name__)

DONE = "DONE"
# What a finished folder holds (besides the tokenizer files and DONE).
OUTPUTS = ("config.json", "model.safetensors", "tokenizer.json", "pretraining.json")
# Config keys that do not change the model: a finished folder is reused across them.
_NOT_IN_RESULT = ("log_every",)


def _fail(key: str, value, expected: str):
  raise ValueError(f"config.{key}={value!r}: {expected}")


def validate(config) -> None:
  """Checks the config before anything runs; ValueError naming the key at fault."""
  for key in ("total_steps", "batch_size", "max_length", "log_every", "tokenizer_vocab_size"):
    if isinstance(config[key], bool) or not isinstance(config[key], int) or config[key] < 1:
      _fail(key, config[key], "expected an int >= 1")
  if config.tokenizer_vocab_size < 257 + 6:
    _fail("tokenizer_vocab_size", config.tokenizer_vocab_size,
          "expected >= 263 (256 bytes, 6 special tokens, one merge)")
  if config.model.vocab_size and config.model.vocab_size < config.tokenizer_vocab_size:
    _fail("model.vocab_size", config.model.vocab_size,
          "expected 0 (the tokenizer's size) or at least tokenizer_vocab_size")
  try:
    model_config(config, 1).validate()
  except (ValueError, TypeError) as e:
    raise ValueError(f"config.model: {e}") from None
  t = config.text
  if not t.train_manifests and not (t.en_de_pairs or t.es_sentences or t.fr_sentences):
    _fail("text", "(empty)", "no manifests and no generated sentences: nothing to read")
  for key in ("train_manifests", "held_out_manifests"):
    for path in t[key]:
      if not os.path.exists(_resolve(path)):
        _fail(f"text.{key}", path, "file does not exist")
  for path in t.train_manifests:
    if lm_text.corpus_seed(_resolve(path)) == t.seed:
      _fail("text.seed", t.seed, f"is the seed of the corpus of {path} (its meta.json): the "
            "generated text would replay the corpus's streams, dev and test included")
  for key in ("en_de_pairs", "es_sentences", "fr_sentences"):
    if not isinstance(t[key], int) or t[key] < 0:
      _fail(f"text.{key}", t[key], "expected an int >= 0")
  if isinstance(t.max_sentences, bool) or not isinstance(t.max_sentences, int) or \
      t.max_sentences < 1:
    _fail("text.max_sentences", t.max_sentences, "expected an int >= 1")
  weights = dict(t.formats)
  if set(weights) != set(lm_text.FORMATS) or min(weights.values()) < 0 or \
      not sum(weights.values()) > 0:
    _fail("text.formats", weights, f"expected weights >= 0 for {list(lm_text.FORMATS)}, "
          "not all 0")
  lo, hi = (tuple(t.stretch) + (0, 0))[:2]
  if len(t.stretch) != 2 or not 1 <= lo <= hi:
    _fail("text.stretch", t.stretch, "expected (min, max) repeats with 1 <= min <= max")
  if config.optim.grad_accum_steps != 1:
    _fail("optim.grad_accum_steps", config.optim.grad_accum_steps, "expected 1 (rows are "
          "few and short: raise batch_size instead)")
  for key in ("kernel_scale", "embedding_std"):
    if not isinstance(config.init[key], (int, float)) or config.init[key] < 0:
      _fail(f"init.{key}", config.init[key], "expected a number >= 0 (0 = 0.02)")
  if config.optim.warmup_steps >= config.total_steps:
    _fail("optim.warmup_steps", config.optim.warmup_steps, "expected < total_steps")


def _resolve(path: str) -> str:
  from configs import base  # local: the configs package sits beside lalmjax

  return base.resolve_path(path)


def model_config(config, tokenizer_size: int) -> qwen2.Qwen2Config:
  """The architecture: the config's fields, vocab_size 0 = tokenizer size rounded to 64."""
  fields = config.model.to_dict()
  fields["vocab_size"] = fields["vocab_size"] or prompts.round_up(tokenizer_size, 64)
  return qwen2.Qwen2Config(**fields)


def init_params(module: qwen2.Qwen2, init, seed: int):
  """Random params of `module`: kernels ~ N(0, init.kernel_scale^2 / fan_in), the
  embedding ~ N(0, init.embedding_std^2) (a 0 keeps the module's N(0, 0.02^2)); biases
  0, norms 1. One key per parameter, folded in by its path, so a change of shape
  elsewhere does not change a parameter's values."""
  def draw(key):
    params = nn.unbox(module.init(key, jnp.ones((1, 1), jnp.int32))["params"])
    flat = traverse_util.flatten_dict(params, sep="/")
    for path, x in flat.items():
      k = jax.random.fold_in(key, zlib.crc32(path.encode()))
      if path.endswith("kernel") and init.kernel_scale:
        flat[path] = jax.random.normal(k, x.shape, x.dtype) * (
            init.kernel_scale / math.sqrt(x.shape[0]))
      elif path.endswith("embedding") and init.embedding_std:
        flat[path] = jax.random.normal(k, x.shape, x.dtype) * init.embedding_std
    return traverse_util.unflatten_dict(flat, sep="/")

  return jax.jit(draw)(jax.random.PRNGKey(seed))


# ---------------------------------------------------------------------------------------
# Reuse.


def is_done(out_dir: str) -> bool:
  """Whether `out_dir` holds a finished model (the DONE marker and every output)."""
  return all(os.path.exists(os.path.join(out_dir, f)) for f in (DONE,) + OUTPUTS)


def _result_config(config) -> dict:
  return {k: v for k, v in config.to_dict().items() if k not in _NOT_IN_RESULT}


def _check_reuse(config, out_dir: str) -> None:
  """Raises when the finished model in `out_dir` was made with another config."""
  with open(os.path.join(out_dir, "pretraining.json")) as f:
    stored = json.load(f)["config"]
  # Through JSON, so that tuples compare as the stored lists.
  wanted = json.loads(json.dumps(_result_config(config)))
  stored = {k: v for k, v in stored.items() if k not in _NOT_IN_RESULT}
  if stored != wanted:
    keys = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
    raise ValueError(f"{out_dir} holds an LM pretrained with another config (differs in "
                     f"{keys}); remove the folder or choose another --out")


# ---------------------------------------------------------------------------------------
# Training.


def make_train_step(module: qwen2.Qwen2, tx):
  """(params, opt_state, batch) -> (params, opt_state, (loss_sum, num_tokens)).

  The loss is next-token cross-entropy over `loss_mask` (float32), averaged over the
  batch's target tokens; the sums are returned so the host normalises.
  """
  def mean_loss(params, batch):
    logits = module.apply({"params": params}, batch["input_ids"],
                          batch["attention_mask"])  # [B, S, V]
    loss_sum, count = losses.next_token_loss(logits, batch["input_ids"], batch["loss_mask"])
    return loss_sum / jnp.maximum(count, 1.0), (loss_sum, count)

  def step(params, opt_state, batch):
    grads, sums = jax.grad(mean_loss, has_aux=True)(params, batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, sums

  return jax.jit(step, donate_argnums=(0, 1))


def train(module: qwen2.Qwen2, params, batches: dict[str, np.ndarray], config):
  """Runs `config.total_steps` steps over `batches` ([steps, B, S] arrays).

  The loss of step i is read after step i+1 is dispatched, so the host never stalls
  the device. Stops with the step number on a non-finite loss.

  Returns:
    (params, history: [(step, mean loss over the last log_every steps)], compile
    seconds, train seconds).
  """
  from tqdm import tqdm

  tx = training.make_optimizer(config.optim, config.total_steps)
  opt_state = tx.init(params)
  step_fn = make_train_step(module, tx)
  batch_at = lambda i: {k: v[i] for k, v in batches.items()}

  t0 = time.perf_counter()
  compiled = step_fn.lower(params, opt_state, batch_at(0)).compile()
  compile_seconds = time.perf_counter() - t0

  history, window, pending = [], [0.0, 0.0], None
  t0 = time.perf_counter()
  bar = tqdm(range(config.total_steps), desc="LM pretraining", unit="step")

  def read(step, sums):
    loss_sum, count = (float(x) for x in jax.device_get(sums))
    if not math.isfinite(loss_sum):
      raise FloatingPointError(f"LM pretraining: non-finite loss at step {step}")
    window[0] += loss_sum
    window[1] += count
    if step % config.log_every == 0 or step == config.total_steps:
      loss = window[0] / max(window[1], 1.0)
      history.append((step, loss))
      bar.set_postfix(loss=f"{loss:.3f}")
      window[:] = [0.0, 0.0]

  for i in bar:
    params, opt_state, sums = compiled(params, opt_state, batch_at(i))
    if pending is not None:
      read(*pending)
    pending = (i + 1, sums)
  read(*pending)
  jax.block_until_ready(params)
  bar.close()
  return params, history, compile_seconds, time.perf_counter() - t0


# ---------------------------------------------------------------------------------------
# The stage.


def pretrain_lm(config, out_dir: str) -> str:
  """Pretrains the LM of `config` into `out_dir` (a Hugging Face Qwen2 folder); returns it.

  A finished `out_dir` (`is_done`) made with the same config is returned at once; one
  made with another config, or a non-empty folder without a finished LM, is an error
  (nothing is overwritten).
  """
  out_dir = os.path.abspath(out_dir)
  if is_done(out_dir):
    _check_reuse(config, out_dir)
    log.info("%s: pretrained LM found, reused", out_dir)
    return out_dir
  if os.path.isdir(out_dir) and os.listdir(out_dir):
    raise ValueError(f"{out_dir} exists and holds no finished LM (no {DONE} marker or a "
                     f"missing file of {list(OUTPUTS)}); remove it or choose another --out")
  validate(config)
  timings: dict[str, float] = {}
  start = time.perf_counter()

  t = config.text
  text = lm_text.build_text([_resolve(p) for p in t.train_manifests],
                            [_resolve(p) for p in t.held_out_manifests], t.seed,
                            t.en_de_pairs, t.es_sentences, t.fr_sentences)
  timings["text"] = time.perf_counter() - start
  log.info("LM text: %s", text.sizes())

  # Built beside out_dir and renamed at the end, so out_dir is never half written.
  work = f"{out_dir}.partial"
  shutil.rmtree(work, ignore_errors=True)  # a run that stopped half way
  os.makedirs(work)
  t0 = time.perf_counter()
  prompts.build_tiny_tokenizer(work, lm_text.tokenizer_texts(text, t.system_prompt),
                               vocab_size=config.tokenizer_vocab_size)
  tokenizer = prompts.load_tokenizer(work)
  builder = prompts.PromptBuilder(tokenizer, system_prompt=t.system_prompt)
  timings["tokenizer"] = time.perf_counter() - t0

  t0 = time.perf_counter()
  batches, counts = lm_text.sample_batches(
      text, builder, steps=config.total_steps, batch_size=config.batch_size,
      max_length=config.max_length, max_sentences=t.max_sentences, weights=dict(t.formats),
      seed=config.seed, stretch=tuple(t.stretch))
  timings["examples"] = time.perf_counter() - t0

  cfg = model_config(config, len(tokenizer))
  module = qwen2.Qwen2(cfg)
  params = init_params(module, config.init, config.seed)
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
  log.info("LM: %s, %d parameters; %d steps of %d x %d tokens", cfg, n_params,
           config.total_steps, config.batch_size, config.max_length)
  params, history, timings["compile"], timings["train"] = train(module, params, batches,
                                                                config)

  t0 = time.perf_counter()
  vocab = tokenizer.get_vocab()
  qwen2_export.save_qwen2(work, cfg, jax.device_get(params),
                          bos_token_id=vocab[prompts.ENDOFTEXT],
                          eos_token_id=vocab[prompts.IM_END],
                          pad_token_id=vocab[prompts.ENDOFTEXT])
  timings["save"] = time.perf_counter() - t0
  timings["total"] = time.perf_counter() - start
  record: dict[str, Any] = {
      "config": _result_config(config),
      "steps": config.total_steps,
      "final_loss": history[-1][1],
      "loss_history": history,
      "seed": config.seed,
      "text_seed": t.seed,
      "parameters": n_params,
      "tokenizer_size": len(tokenizer),
      "text": text.sizes(),
      "examples": counts,
      "seconds": {k: round(v, 2) for k, v in timings.items()},
      "devices": [str(d) for d in jax.devices()],
  }
  with open(os.path.join(work, "pretraining.json"), "w") as f:
    json.dump(record, f, indent=2)
  with open(os.path.join(work, DONE), "w") as f:
    f.write("finished\n")
  if os.path.isdir(out_dir):
    os.rmdir(out_dir)  # empty (checked above)
  os.replace(work, out_dir)
  log.info("LM pretrained in %.0f s, final loss %.3f: %s", timings["total"], history[-1][1],
           out_dir)
  return out_dir


def main(argv):
  from absl import app

  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.getLogger("lalmjax").setLevel(logging.INFO)
  out = pretrain_lm(_CONFIG.value, _OUT.value)
  with open(os.path.join(out, "pretraining.json")) as f:
    record = json.load(f)
  print(f"done: {out}; {record['steps']} steps, final loss {record['final_loss']:.4f}, "
        f"{record['seconds']['total']:.0f} s")


if __name__ == "__main__":
  from absl import app, flags
  from ml_collections import config_flags

  _CONFIG = config_flags.DEFINE_config_file("config", None, "LM pretraining config file",
                                            lock_config=True)
  _OUT = flags.DEFINE_string("out", None, "output folder (a Hugging Face Qwen2 folder)")
  flags.mark_flags_as_required(["config", "out"])
  app.run(main)
