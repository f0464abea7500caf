"""Compiled memory of the LM loss's value_and_grad: full logits vs chunked.

At Qwen2-7B's head (V = 152,064, D = 3584, bf16 hidden states and head), for the full
loss (`next_token_loss` on float32[B, S, V] logits) and `chunked_next_token_loss` at a
few chunk sizes; with the head trained (gradients w.r.t. hidden and head) and frozen
(w.r.t. hidden only, lalmjax's LoRA default). Compile only, from jax.ShapeDtypeStruct
inputs: nothing is allocated. Prints `compiled.memory_analysis()` in GiB and the temp
ratio to the full loss.

These are the CPU backend's numbers (XLA:CPU has no bf16 matmul). Read from its
buffer assignment (--xla_dump_to) with jax 0.10.2: the full program's temp holds a
float32 copy of the head (2.03 GiB) beside two float32 [B, S, V] buffers, for the
logits and their gradient (0.58 GiB each at S = 1024); the chunked program with the head trained holds the
float32 [D, V] head gradient of one chunk (2.03 GiB) plus chunk-sized buffers, and with
the head frozen only chunk-sized buffers.

  python benchmarks/loss_memory.py [--seq-len 1024] [--batch 1] [--chunk-sizes 128,256,512]
"""

import argparse
import functools
import os
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from lalmjax.losses import (  # pylint: disable=g-import-not-at-top
  chunked_next_token_loss,
  next_token_loss,
)

VOCAB, WIDTH = 152064, 3584  # Qwen2-7B
GIB = 2.0**30


def full_loss(hidden, head, input_ids, loss_mask):
  """The [B, S, V] logits as Qwen2.logits makes them (bf16 matmul, float32 out)."""
  logits = jnp.einsum("bsd,dv->bsv", hidden, head, preferred_element_type=jnp.float32)
  return next_token_loss(logits, input_ids, loss_mask)


def memory(loss_fn, args, argnums):
  """(memory_analysis, compile seconds) of jit(value_and_grad(loss_sum))."""
  fn = jax.jit(jax.value_and_grad(lambda *a: loss_fn(*a)[0], argnums=argnums))
  t0 = time.perf_counter()
  compiled = fn.lower(*args).compile()
  return compiled.memory_analysis(), time.perf_counter() - t0


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--seq-len", type=int, default=1024)
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--chunk-sizes", default="128,256,512")
  args = parser.parse_args()

  b, s = args.batch, args.seq_len
  inputs = (jax.ShapeDtypeStruct((b, s, WIDTH), jnp.bfloat16),
            jax.ShapeDtypeStruct((WIDTH, VOCAB), jnp.bfloat16),
            jax.ShapeDtypeStruct((b, s), jnp.int32),
            jax.ShapeDtypeStruct((b, s), jnp.bool_))
  losses = [("full logits", full_loss)] + [
      (f"chunk {c}", functools.partial(chunked_next_token_loss, chunk_size=int(c)))
      for c in args.chunk_sizes.split(",")]
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}; B={b} S={s} D={WIDTH} "
        f"V={VOCAB}, bf16 hidden and head; float32 logits [B, S, V] = "
        f"{b * s * VOCAB * 4 / GIB:.2f} GiB")
  print(f"{'grads':<14} {'loss':<12} {'argument':>9} {'output':>8} {'temp':>8} "
        f"{'temp/full':>9} {'compile':>8}")
  for grads, argnums in (("hidden, head", (0, 1)), ("hidden", (0,))):
    full_temp = None
    for name, loss_fn in losses:
      m, seconds = memory(loss_fn, inputs, argnums)
      full_temp = full_temp or m.temp_size_in_bytes
      print(f"{grads:<14} {name:<12} {m.argument_size_in_bytes / GIB:9.3f} "
            f"{m.output_size_in_bytes / GIB:8.3f} {m.temp_size_in_bytes / GIB:8.3f} "
            f"{m.temp_size_in_bytes / full_temp:9.2f} {seconds:7.1f}s")


if __name__ == "__main__":
  main()
