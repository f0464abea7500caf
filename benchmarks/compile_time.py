"""Compile time of the paper-size LALM train step: blocks unrolled vs nn.scan (scan_layers).

Whisper-large-v3 encoder (32 blocks, frozen) + Qwen2-7B (hidden 3584, 28 blocks, 28 / 4
heads, head dim 128, MLP 18944, vocab 152064) with LoRA r=16 on q_proj, k_proj, UniAvg
k=3 (30 s -> 500 audio tokens), bf16 weights and compute, remat per block; the real
train step (`training.make_train_step`: loss, gradient of projector + LoRA, AdamW
update). Everything is abstract (`jax.ShapeDtypeStruct`): nothing is allocated, only
`jax.jit(step).lower(...)` (tracing) and `.compile()` (XLA) are timed, on this backend.
Prints both times per setting and the ratio unrolled / scanned.

  python benchmarks/compile_time.py [--seq-len 600] [--batch 1] [--remat nothing_saveable]
"""

import argparse
import dataclasses
import os
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from configs import base  # pylint: disable=g-import-not-at-top
from lalmjax import training  # pylint: disable=g-import-not-at-top
from lalmjax.models import lalm, qwen2, whisper  # pylint: disable=g-import-not-at-top
from lalmjax.models.lora import LoraConfig  # pylint: disable=g-import-not-at-top

QWEN2_7B = qwen2.Qwen2Config(vocab_size=152064, hidden_size=3584, intermediate_size=18944,
                             num_hidden_layers=28, num_attention_heads=28,
                             num_key_value_heads=4, head_dim=128, rope_theta=1e6,
                             max_position_embeddings=131072)
AUDIO_TOKEN_ID = 151646  # any id below the vocabulary size


def abstract_step(scan_layers: bool, args):
  """(jitted step, abstract state, frozen, batch) for one setting."""
  enc = dataclasses.replace(whisper.WHISPER_LARGE_V3, scan_layers=scan_layers)
  llm = dataclasses.replace(QWEN2_7B, scan_layers=scan_layers,
                            remat_policy=None if args.remat == "none" else args.remat)
  config = lalm.LALMConfig(enc, llm, AUDIO_TOKEN_ID, lora=LoraConfig(16, 32.0, ("q_proj", "k_proj")),
                           method="uniavg", factor=3)
  module = lalm.LALM(config, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
  variables = jax.eval_shape(lambda r: lalm.init_variables(module, r), jax.random.PRNGKey(0))
  trainable, frozen = training.partition(variables)
  optim = base.get_base_config().optim
  tx = training.make_optimizer(optim, total_steps=1000)
  state = jax.eval_shape(lambda t: training.init_train_state(t, tx), trainable)
  b, s = args.batch, args.seq_len
  batch = {
      "mel": jax.ShapeDtypeStruct((b, enc.num_mel_bins, enc.num_mel_frames), jnp.float32),
      "num_frames": jax.ShapeDtypeStruct((b,), jnp.int32),
      "input_ids": jax.ShapeDtypeStruct((b, s), jnp.int32),
      "attention_mask": jax.ShapeDtypeStruct((b, s), jnp.bool_),
      "loss_mask": jax.ShapeDtypeStruct((b, s), jnp.bool_),
  }
  step = jax.jit(training.make_train_step(module, tx), donate_argnums=0)
  return step, state, frozen, batch


def measure(scan_layers: bool, args) -> tuple[float, float]:
  """(trace + lower seconds, compile seconds)."""
  step, state, frozen, batch = abstract_step(scan_layers, args)
  t0 = time.perf_counter()
  lowered = step.lower(state, frozen, batch)
  t1 = time.perf_counter()
  lowered.compile()
  t2 = time.perf_counter()
  return t1 - t0, t2 - t1


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--seq-len", type=int, default=600)
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--remat", default="nothing_saveable",
                      choices=("none", *qwen2.REMAT_POLICIES))
  args = parser.parse_args()
  print(f"backend={jax.default_backend()} Whisper-large-v3 + Qwen2-7B LALM train step, "
        f"batch {args.batch}, seq {args.seq_len}, bf16, remat={args.remat}")
  times = {}
  with nn.logical_axis_rules(()):
    for scan_layers in (False, True):
      lower_s, compile_s = measure(scan_layers, args)
      times[scan_layers] = lower_s + compile_s
      print(f"scan_layers={scan_layers!s:5}: trace+lower {lower_s:7.1f} s, compile "
            f"{compile_s:7.1f} s, total {lower_s + compile_s:7.1f} s", flush=True)
  print(f"ratio unrolled / scanned (total): {times[False] / times[True]:.1f}x")


if __name__ == "__main__":
  main()
