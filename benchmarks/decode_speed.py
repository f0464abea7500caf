"""Batched greedy decoding: ours (jit, KV cache, lax.while_loop) vs transformers generate.

    python benchmarks/decode_speed.py [--batch 8] [--new 64] [--prompt 32] [--size tiny|small]

The same random Qwen2 checkpoint (saved with save_pretrained, loaded by both sides), the
same prompts, exactly `--new` tokens per row on both sides (no EOS), greedy; median of 5
after a warm-up; compile time reported apart. Prints generated tokens/s and the ratio
(> 1: ours is faster).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

SIZES = {  # hidden, intermediate, layers, heads, kv heads, vocab
    "tiny": (64, 128, 2, 4, 2, 1024),
    "small": (512, 1536, 8, 8, 2, 32000),
}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--new", type=int, default=64)
  parser.add_argument("--prompt", type=int, default=32)
  parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args(argv)

  import jax
  import torch
  import transformers

  from lalmjax import checkpoints, generation

  d, f, layers, heads, kv, vocab = SIZES[args.size]
  path = tempfile.mkdtemp()
  torch.manual_seed(0)
  cfg = transformers.Qwen2Config(vocab_size=vocab, hidden_size=d, intermediate_size=f,
                                 num_hidden_layers=layers, num_attention_heads=heads,
                                 num_key_value_heads=kv, max_position_embeddings=4096,
                                 tie_word_embeddings=True)
  ref = transformers.Qwen2ForCausalLM(cfg).eval()
  ref.save_pretrained(path)
  module, params = checkpoints.load_qwen2(path)
  rng = np.random.default_rng(0)
  ids = rng.integers(0, vocab, (args.batch, args.prompt)).astype(np.int32)
  mask = np.ones_like(ids, bool)
  decode = generation.DecodeConfig(beam_size=1, buffer_size=args.new)
  no_eos = np.asarray([-1], np.int32)  # never produced: every row decodes --new tokens
  variables = {"params": params}
  ids_dev, mask_dev = jax.device_put(ids), jax.device_put(mask)

  def ours():
    out = generation.generate_lm(module, variables, ids_dev, mask_dev, decode, args.new,
                                 no_eos, 0)
    return jax.block_until_ready(out.tokens)

  t0 = time.perf_counter()
  ours_tokens = np.asarray(ours())
  compile_s = time.perf_counter() - t0

  ids_t, mask_t = torch.from_numpy(ids.astype(np.int64)), torch.ones(ids.shape, dtype=torch.long)

  def theirs():
    with torch.no_grad():
      return ref.generate(input_ids=ids_t, attention_mask=mask_t, max_new_tokens=args.new,
                          min_new_tokens=args.new, do_sample=False, eos_token_id=None,
                          pad_token_id=0)

  ref_tokens = theirs()[:, args.prompt:].numpy()
  same = float((ours_tokens == ref_tokens).mean())

  def median_time(fn):
    times = []
    for _ in range(args.repeats):
      t = time.perf_counter()
      fn()
      times.append(time.perf_counter() - t)
    return statistics.median(times)

  t_ours, t_ref = median_time(ours), median_time(theirs)
  n = args.batch * args.new
  print(f"Qwen2 {args.size} (D={d}, L={layers}, V={vocab}), batch {args.batch}, prompt "
        f"{args.prompt}, {args.new} new tokens, greedy; torch threads {torch.get_num_threads()}")
  print(f"tokens equal to transformers: {same:.1%}; our compile {compile_s:.1f} s (apart)")
  print(f"{'':28s} {'ms':>9s} {'tokens/s':>10s}")
  print(f"{'lalmjax (jit, while_loop)':28s} {1e3 * t_ours:9.1f} {n / t_ours:10.0f}")
  print(f"{'transformers generate':28s} {1e3 * t_ref:9.1f} {n / t_ref:10.0f}")
  print(f"ratio (ours tokens/s / transformers tokens/s): {t_ref / t_ours:.2f}x")


if __name__ == "__main__":
  main()
