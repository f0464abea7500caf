"""Scaled dot-product attention, three interchangeable implementations (one config field).

Axis letters: B batch, S queries, T keys, N query heads, K key/value heads (N = K * G,
query head n uses kv head n // G, as Hugging Face's ``repeat_kv``), G query heads per kv
head, H head dim.

  "xla"        ``jax.nn.dot_product_attention``: [B, N, S, T] scores from einsums in the
               [B, S, N, H] layout.
  "headmajor"  transpose to [B, K, G, S, H] and [B, K, T, H] first, then two batched
               matmuls around a float32 softmax (XLA:CPU runs these much faster).
  "blocked"    flash-style: queries in blocks of ``block_q``; for each, an online softmax
               over key blocks of ``block_k`` (running max and sum, the accumulator
               rescaled when the max grows), so no [S, T] score tensor is ever whole.
               S and T need not be multiples of the blocks (padding is masked). Exact in
               float32 (same maths, different summation order). A custom VJP computes
               the gradients by blocks too (FlashAttention-2's backward: probabilities
               recomputed from the saved row max and sum), so training never holds the
               [S, T] probabilities either. Key blocks that the mask hides from a
               query block are skipped, forward and backward: each query block loops
               over the span of its live key blocks only (`live_blocks`, `live_span`;
               the span of a causal mask's row of blocks ends at the diagonal, a KV
               cache's at the last filled slot). Exact: a hidden block adds
               exp(masked - max) = 0 to every row that has a visible key; a block next
               to a fully masked row (which averages all T values) runs.

Measured on the 2-core CPU (shared with other jobs; CPU ms per call, forward / forward +
backward): Qwen2-7B's attention (S=T=600, N=28, K=4, H=128, causal): xla 160 / 367,
headmajor 130 / 460, blocked 106 / 377. whisper-tiny's (T=1500, N=6, H=64): xla 148,
headmajor 98, blocked 50 (benchmarks/encoder_speed.py for the whole encoder).
Skipping the causal mask's hidden blocks, side by side in one run (load ~5 from other
jobs), blocked without / with the skip: the Qwen2-7B shape 125 -> 99 ms forward,
371 -> 255 fwd + bwd (2 x 2 blocks, 3 live); B=2, S=T=1532, N=12, K=2, H=64: 308 -> 232,
1262 -> 859 (3 x 3 blocks, 6 live).

All three agree on masked keys: a masked score becomes ``-0.7 * finfo(float32).max``
(jax's constant), not -inf, so a query row whose keys are all masked gets the mean of
the values over all T keys (a uniform softmax), exactly as ``jax.nn.dot_product_attention``
returns; padding that "blocked" adds never counts. Scores, softmax and the accumulator
are float32 whatever the input dtype; the probabilities meet V in V's dtype (bfloat16 in,
float32 accumulation), as the xla path does.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

IMPLEMENTATIONS = ("xla", "headmajor", "blocked")

# Upper bounds on the block sizes of "blocked"; the blocks are then evened out (S=1500
# with 512 runs 3 blocks of 500, no padding). Chosen by measurement on the 2-core CPU at
# whisper-tiny's shape (N=6, T=1500, H=64): query blocks of 250-500 beat 750 and 1500
# (the [bq, T] scores of a block stay in cache); key blocks of 500 cost the same as one
# block of 1500 and bound the memory for long contexts.
DEFAULT_BLOCK_Q = 512
DEFAULT_BLOCK_K = 512

# "blocked" on the CPU: when the whole batch's float32 score tile [B, K, G, bq, bk]
# exceeds this, the batch rows run in a loop (`batch_block`), a few rows per step, so
# the tile stays in cache instead of streaming through memory. Measured on the 2-core
# CPU, forward (fwd + bwd): whisper-tiny at B=8 (6 MB of tile per row) 225 -> 139 ms
# (868 -> 683); a 100M Qwen2 at B=2, S=1532, causal (12.5 MB per row) 160 -> 103 ms
# (486 -> 453). Accelerators keep the whole batch in one step (their batch is sharded;
# a loop over it would serialise it), so "auto" loops on the CPU backend only.
CPU_TILE_BYTES = 8 << 20

# jax.nn.dot_product_attention's masked score (finite, so a fully masked row is uniform).
_MASKED = -0.7 * float(np.finfo(np.float32).max)
# Below _MASKED: keys that "blocked" pads on; exp(_PADDED - _MASKED) == 0.
_PADDED = float(np.finfo(np.float32).min)


def check_implementation(name: str, where: str) -> None:
  """Raises ValueError naming ``where`` when ``name`` is not an implementation."""
  if name not in IMPLEMENTATIONS:
    raise ValueError(f"{where}={name!r} is not an attention implementation; expected one "
                     f"of {list(IMPLEMENTATIONS)}")


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, *,
                          mask: jax.Array | None = None, scale: float | None = None,
                          implementation: str = "xla", block_q: int | None = None,
                          block_k: int | None = None, batch_block: int = -1) -> jax.Array:
  """softmax(q k^T * scale, masked) v, per head.

  Args:
    q: dtype[B, S, N, H].
    k, v: dtype[B, T, K, H], N a multiple of K.
    mask: None, or bool broadcastable to [B, N or 1, S, T]: query s may see key t.
    scale: score multiplier (default H ** -0.5).
    implementation: one of IMPLEMENTATIONS.
    block_q, block_k: the largest query / key block of "blocked" (default
      DEFAULT_BLOCK_Q / DEFAULT_BLOCK_K); S is cut into ceil(S / block_q) blocks of
      equal size (padded by at most one row each), T alike.
    batch_block: "blocked" only: batch rows per step of a loop over the batch (0 = the
      whole batch at once; -1 = auto, `batch_rows`).
  Returns:
    dtype[B, S, N, H] in q's dtype.
  """
  check_implementation(implementation, "implementation")
  b, s, n, h = q.shape
  t, kh = k.shape[1], k.shape[2]
  if k.shape != (b, t, kh, h) or v.shape != k.shape or n % kh:
    raise ValueError(f"attention: q {q.shape}, k {k.shape}, v {v.shape} do not make "
                     "[B, S, N, H] and [B, T, K, H] with N a multiple of K")
  scale = h ** -0.5 if scale is None else float(scale)
  if mask is not None:
    mask = jnp.asarray(mask)
    if mask.dtype != jnp.bool_:
      raise ValueError(f"attention: mask must be bool, got {mask.dtype}")
    mask = jnp.broadcast_to(mask, (b, mask.shape[-3] if mask.ndim >= 3 else 1, s, t))
    if mask.shape[1] not in (1, n):
      raise ValueError(f"attention: mask {mask.shape} must broadcast to [B, N or 1, S, T]")
  if implementation == "xla":
    return jax.nn.dot_product_attention(q, k, v, mask=mask, scale=scale)

  g = n // kh
  # [B, S, N, H] -> [B, K, G, S, H]; [B, T, K, H] -> [B, K, T, H].
  qh = q.reshape(b, s, kh, g, h).transpose(0, 2, 3, 1, 4)
  kt, vt = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
  # [B, N or 1, S, T] -> [B, K or 1, G or 1, S, T].
  mh = None if mask is None else (mask.reshape(b, kh, g, s, t) if mask.shape[1] == n
                                  else mask[:, :, None])
  if implementation == "headmajor":
    out = _headmajor(qh, kt, vt, mh, scale)
  else:
    block_q = _even_block(s, DEFAULT_BLOCK_Q if block_q is None else block_q)
    block_k = _even_block(t, DEFAULT_BLOCK_K if block_k is None else block_k)
    rows = batch_rows(b, kh * g * block_q * block_k * 4, batch_block)
    blocked = lambda q_, k_, v_, m_: _blocked(q_, k_, v_, m_, scale, block_q, block_k)
    if rows >= b:
      out = blocked(qh, kt, vt, mh)
    else:  # rows at a time; the loop's body sees one row, given back its batch axis
      one = lambda x: blocked(*(None if a is None else a[None] for a in x))[0]
      out = jax.lax.map(one, (qh, kt, vt, mh), batch_size=rows if rows > 1 else None)
  # [B, K, G, S, H] -> [B, S, N, H].
  return out.transpose(0, 3, 1, 2, 4).reshape(b, s, n, h).astype(q.dtype)


def check_batch_block(value, where: str) -> None:
  """Raises ValueError naming ``where`` unless ``value`` is an int >= -1."""
  if isinstance(value, bool) or not isinstance(value, int) or value < -1:
    raise ValueError(f"{where}={value!r}: expected an int >= -1 (batch rows per step of "
                     "the blocked attention's loop; 0 = the whole batch, -1 = auto)")


def batch_rows(batch: int, row_tile_bytes: int, batch_block: int = -1) -> int:
  """Batch rows per step of "blocked" (``batch`` = no loop).

  ``batch_block`` > 0 is taken as given (at most ``batch``); 0 is the whole batch; -1
  (auto) is the whole batch off the CPU or when ``batch * row_tile_bytes`` fits in
  `CPU_TILE_BYTES`, else as many rows as fit (at least one).
  """
  check_batch_block(batch_block, "batch_block")
  if batch_block > 0:
    return min(batch_block, batch)
  if batch_block == 0 or jax.default_backend() != "cpu":
    return batch
  if batch * row_tile_bytes <= CPU_TILE_BYTES:
    return batch
  return max(1, CPU_TILE_BYTES // row_tile_bytes)


def _even_block(length: int, largest: int) -> int:
  """The block size that cuts ``length`` into as few near-equal blocks as ``largest`` allows."""
  if largest < 1:
    raise ValueError(f"attention: block sizes must be >= 1, got {largest}")
  return -(-length // -(-length // largest))


def _scores(q, k, scale):
  """float32[B, K, G, s, t] from q [B, K, G, s, H] and k [B, K, t, H]."""
  return jnp.einsum("bkgsh,bkth->bkgst", q, k, preferred_element_type=jnp.float32) * scale


def _values(p, v):
  """float32[B, K, G, s, H] from probabilities [B, K, G, s, t] and v [B, K, t, H]."""
  return jnp.einsum("bkgst,bkth->bkgsh", p.astype(v.dtype), v,
                    preferred_element_type=jnp.float32)


def _headmajor(q, k, v, mask, scale):
  logits = _scores(q, k, scale)
  if mask is not None:
    logits = jnp.where(mask, logits, _MASKED)
  return _values(jax.nn.softmax(logits, axis=-1), v)


def _pad(x, axis, size, value=0):
  pad = size - x.shape[axis]
  if not pad:
    return x
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, pad)
  return jnp.pad(x, widths, constant_values=value)


def _blocked(q, k, v, mask, scale, block_q, block_k):
  """Flash-style attention in the head-major layout; see the module docstring.

  Pads S and T to whole blocks, runs `_flash` (forward and backward by blocks, a
  custom VJP) and cuts the query padding off; autodiff handles the pad and the cut.
  """
  s, t = q.shape[3], k.shape[2]
  sp, tp = -(-s // block_q) * block_q, -(-t // block_k) * block_k
  q, k, v = _pad(q, 3, sp), _pad(k, 2, tp), _pad(v, 2, tp)
  if mask is not None:
    mask = _pad(_pad(mask, 3, sp, False), 4, tp, False)
  return _flash(q, k, v, mask, _Blocks(scale, block_q, block_k, s, t, tp))[:, :, :, :s]


@dataclasses.dataclass(frozen=True)
class _Blocks:
  """The static side of `_flash`: score scale, block sizes, real and padded key counts."""
  scale: float
  block_q: int
  block_k: int
  num_queries: int  # S
  num_keys: int  # T
  padded_keys: int  # Tp, whole key blocks

  @staticmethod
  def split(x, axis, block):
    """[..., n * block (at axis), ...] -> [n, ..., block, ...]: blocks on a leading axis."""
    shape = x.shape[:axis] + (x.shape[axis] // block, block) + x.shape[axis + 1:]
    return jnp.moveaxis(x.reshape(shape), axis, 0)

  @staticmethod
  def merge(x, axis):
    """The inverse of `split`."""
    x = jnp.moveaxis(x, 0, axis)
    return x.reshape(x.shape[:axis] + (-1,) + x.shape[axis + 2:])

  def scores(self, qb, kb, mask, i, j):
    """float32[B, K, G, bq, bk], masked: query block i against key block j.

    Returns (scores, where the scores are real: the mask and no key padding, or None).
    """
    scores = _scores(qb, kb, self.scale)
    keep = None
    if mask is not None:
      keep = jax.lax.dynamic_slice_in_dim(mask, i * self.block_q, self.block_q, axis=3)
      keep = jax.lax.dynamic_slice_in_dim(keep, j * self.block_k, self.block_k, axis=4)
      scores = jnp.where(keep, scores, _MASKED)
    if self.padded_keys != self.num_keys:
      real = j * self.block_k + jnp.arange(self.block_k) < self.num_keys  # [bk]
      scores = jnp.where(real, scores, _PADDED)
    return scores, keep


def live_blocks(mask, blocks: _Blocks):
  """bool[nq, nk]: which (query block, key block) pairs `_flash` computes, or None (all).

  Args:
    mask: None, or bool[B, K or 1, G or 1, Sp, Tp], padded with False to whole blocks.

  A pair is skipped when no batch row or head lets any of its queries see any of its
  keys, and none of its real queries is fully masked (such a row's output, the mean of
  all T values as `jax.nn.dot_product_attention` gives, needs every key block). One
  table for the whole batch; under `jax.vmap` (the batch-row loop with several rows per
  step) one table per row, and a loop runs until every row's span is done.
  """
  if mask is None:
    return None
  b, kh, g, sp, tp = mask.shape
  nq, nk = sp // blocks.block_q, tp // blocks.block_k
  seen = mask.reshape(b, kh, g, nq, blocks.block_q, nk, blocks.block_k)
  seen = seen.any(axis=(0, 1, 2, 4, 6))  # [nq, nk]
  dead = ~mask.any(axis=-1) & (jnp.arange(sp) < blocks.num_queries)  # [B, K', G', Sp]
  dead = dead.reshape(b, kh, g, nq, blocks.block_q).any(axis=(0, 1, 2, 4))  # [nq]
  return seen | dead[:, None]


def live_span(live, axis: int, length: int):
  """(first, one past the last) live block along `axis` of the [nq, nk] table, per block
  of the other axis (int32 vectors); (0, length) with no table. The loops run over these
  spans (a `while` with traced bounds), not over every block with a branch inside:
  XLA:TPU hoists a `cond` body's scores out of the loops into one [nq, nk, ..., bq, bk]
  buffer (measured: +2.5 GiB per chip for the paper model at k=1)."""
  if live is None:
    return 0, length
  index = jnp.arange(live.shape[axis])
  index = index[None, :] if axis == 1 else index[:, None]
  first = jnp.where(live, index, live.shape[axis]).min(axis=axis)
  last = jnp.where(live, index + 1, 0).max(axis=axis)
  return first, last


def _span(bounds, i):
  """The span of block i (Python ints pass through: a static loop, a scan)."""
  first, last = bounds
  return (first, last) if isinstance(first, int) else (first[i], last[i])


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _flash(q, k, v, mask, blocks: _Blocks):
  """softmax(q k^T) v by blocks: q [B, K, G, Sp, H], k/v [B, K, Tp, H], whole blocks."""
  return _flash_forward(q, k, v, mask, blocks)[0]


def _flash_forward(q, k, v, mask, blocks: _Blocks):
  """(out [B, K, G, Sp, H] in float32, (max, sum of exp) of each query row [B, K, G, Sp, 2]).

  The row statistics stay apart: their logsumexp would round log(sum) away next to a
  fully masked row's max of -0.7 * float32 max.
  """
  b, kh, g, _, h = q.shape
  bq = blocks.block_q
  nk = k.shape[2] // blocks.block_k
  q_blocks = blocks.split(q, 3, bq)  # [nq, B, K, G, bq, H]
  k_blocks = blocks.split(k, 2, blocks.block_k)  # [nk, B, K, bk, H]
  v_blocks = blocks.split(v, 2, blocks.block_k)
  spans = live_span(live_blocks(mask, blocks), 1, nk)  # key blocks per query block

  def partial_softmax(qb, i, j, m_prev):
    """Query block i against key block j: (max, sum of exp, exp-weighted values)."""
    scores, _ = blocks.scores(qb, k_blocks[j], mask, i, j)
    m = scores.max(axis=-1, keepdims=True)  # [B, K, G, bq, 1]
    if m_prev is not None:
      m = jnp.maximum(m_prev, m)
    p = jnp.exp(scores - m)
    return m, p.sum(axis=-1, keepdims=True), _values(p, v_blocks[j])

  def query_block(args):
    i, qb = args
    if nk == 1:  # one key block: the online softmax is the plain one, normalised last
      m, l, acc = partial_softmax(qb, i, 0, None)
      return acc / l, jnp.concatenate([m, l], axis=-1)

    def update(carry, j):
      m_prev, l_prev, acc = carry  # [B, K, G, bq, 1] x2, [B, K, G, bq, H]
      m, l, values = partial_softmax(qb, i, j, m_prev)
      alpha = jnp.exp(m_prev - m)  # rescales what earlier key blocks summed
      return m, alpha * l_prev + l, alpha * acc + values

    stat = jnp.full((b, kh, g, bq, 1), _PADDED, jnp.float32)
    init = (stat, jnp.zeros_like(stat), jnp.zeros((b, kh, g, bq, h), jnp.float32))
    first, last = _span(spans, i)  # every query block has a live key block
    m, l, acc = jax.lax.fori_loop(first, last, lambda j, c: update(c, j), init)
    return acc / l, jnp.concatenate([m, l], axis=-1)

  out, stats = jax.lax.map(query_block, (jnp.arange(q_blocks.shape[0]), q_blocks))
  return blocks.merge(out, 3), blocks.merge(stats, 3)


def _flash_fwd(q, k, v, mask, blocks):
  out, stats = _flash_forward(q, k, v, mask, blocks)
  return out, (q, k, v, mask, out, stats)


def _flash_bwd(blocks: _Blocks, residuals, d_out):
  """Gradients by blocks: a scan over key blocks j; for each, a loop over the span of
  query blocks i that see it accumulates dK_j and dV_j and adds block j's part of dQ_i
  into dQ (carried whole in float32); probabilities are recomputed from the saved row
  max and sum, never stored whole (FlashAttention-2's backward)."""
  q, k, v, mask, out, stats = residuals
  d_out = d_out.astype(jnp.float32)
  delta = jnp.sum(d_out * out, axis=-1, keepdims=True)  # [B, K, G, Sp, 1]
  bq, bk = blocks.block_q, blocks.block_k
  q_blocks, do_blocks = blocks.split(q, 3, bq), blocks.split(d_out, 3, bq)
  stat_blocks, delta_blocks = blocks.split(stats, 3, bq), blocks.split(delta, 3, bq)
  k_blocks, v_blocks = blocks.split(k, 2, bk), blocks.split(v, 2, bk)
  nq = q_blocks.shape[0]
  f32 = dict(preferred_element_type=jnp.float32)
  spans = live_span(live_blocks(mask, blocks), 0, nq)  # query blocks per key block

  def key_block(dq, args):
    j, kb, vb = args

    def query_block(i, carry):
      dk, dv, dq = carry  # [B, K, bk, H] x2, [nq, B, K, G, bq, H], float32
      qb, dob, stat_b, delta_b = (x[i] for x in (q_blocks, do_blocks, stat_blocks,
                                                 delta_blocks))
      scores, keep = blocks.scores(qb, kb, mask, i, j)
      p = jnp.exp(scores - stat_b[..., :1]) / stat_b[..., 1:]  # [B, K, G, bq, bk]
      dv = dv + jnp.einsum("bkgst,bkgsh->bkth", p.astype(vb.dtype), dob.astype(vb.dtype), **f32)
      dp = jnp.einsum("bkgsh,bkth->bkgst", dob.astype(vb.dtype), vb, **f32)
      ds = p * (dp - delta_b) * blocks.scale
      if keep is not None:
        ds = jnp.where(keep, ds, 0.0)  # a masked score is a constant: no gradient
      ds = ds.astype(qb.dtype)
      dk = dk + jnp.einsum("bkgst,bkgsh->bkth", ds, qb, **f32)
      dq = dq.at[i].add(jnp.einsum("bkgst,bkth->bkgsh", ds, kb, **f32))
      return dk, dv, dq

    zeros = jnp.zeros(kb.shape, jnp.float32)
    first, last = _span(spans, j)
    dk, dv, dq = jax.lax.fori_loop(first, last, query_block, (zeros, zeros, dq))
    return dq, (dk, dv)

  dq = jnp.zeros(q_blocks.shape, jnp.float32)
  dq, (dk, dv) = jax.lax.scan(key_block, dq,
                              (jnp.arange(k_blocks.shape[0]), k_blocks, v_blocks))
  return (blocks.merge(dq, 3).astype(q.dtype), blocks.merge(dk, 2).astype(k.dtype),
          blocks.merge(dv, 2).astype(v.dtype), None)


_flash.defvjp(_flash_fwd, _flash_bwd)
