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
               float32 (same maths, different summation order). Differentiable by
               autodiff through the loops.

All three agree on masked keys: a masked score becomes ``-0.7 * finfo(float32).max``
(jax's constant), not -inf, so a query row whose keys are all masked gets the mean of
the values over all T keys (a uniform softmax), exactly as ``jax.nn.dot_product_attention``
returns; padding that "blocked" adds never counts. Scores, softmax and the accumulator
are float32 whatever the input dtype; the probabilities meet V in V's dtype (bfloat16 in,
float32 accumulation), as the xla path does.
"""

from __future__ import annotations

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
                          block_k: int | None = None) -> jax.Array:
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
    out = _blocked(qh, kt, vt, mh, scale, block_q, block_k)
  # [B, K, G, S, H] -> [B, S, N, H].
  return out.transpose(0, 3, 1, 2, 4).reshape(b, s, n, h).astype(q.dtype)


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
  """Flash-style attention in the head-major layout; see the module docstring."""
  b, kh, g, s, h = q.shape
  t = k.shape[2]
  nq, nk = -(-s // block_q), -(-t // block_k)
  sp, tp = nq * block_q, nk * block_k
  q, k, v = _pad(q, 3, sp), _pad(k, 2, tp), _pad(v, 2, tp)
  if mask is not None:
    mask = _pad(_pad(mask, 3, sp, False), 4, tp, False)
  key_real = jnp.arange(tp) < t  # [Tp]: False on padding

  # Blocks on a leading axis, for the loops: q [nq, B, K, G, bq, H], k/v [nk, B, K, bk, H].
  q_blocks = q.reshape(b, kh, g, nq, block_q, h).transpose(3, 0, 1, 2, 4, 5)
  k_blocks = k.reshape(b, kh, nk, block_k, h).transpose(2, 0, 1, 3, 4)
  v_blocks = v.reshape(b, kh, nk, block_k, h).transpose(2, 0, 1, 3, 4)
  real_blocks = key_real.reshape(nk, block_k)

  def masked_scores(qb, kb, i, j, real):
    """float32[B, K, G, bq, bk]: scores of query block i against key block j."""
    scores = _scores(qb, kb, scale)
    if mask is not None:
      m = jax.lax.dynamic_slice_in_dim(mask, i * block_q, block_q, axis=3)
      m = jax.lax.dynamic_slice_in_dim(m, j * block_k, block_k, axis=4)
      scores = jnp.where(m, scores, _MASKED)
    if tp != t:
      scores = jnp.where(real, scores, _PADDED)
    return scores

  def partial_softmax(qb, i, j, m_prev):
    """Query block i against key block j: (max, sum of exp, exp-weighted values)."""
    scores = masked_scores(qb, k_blocks[j], i, j, real_blocks[j])
    m = scores.max(axis=-1, keepdims=True)  # [B, K, G, bq, 1]
    if m_prev is not None:
      m = jnp.maximum(m_prev, m)
    p = jnp.exp(scores - m)
    return m, p.sum(axis=-1, keepdims=True), _values(p, v_blocks[j])

  def query_block(args):
    i, qb = args
    if nk == 1:  # one key block: the online softmax is the plain one, normalised last
      _, l, acc = partial_softmax(qb, i, 0, None)
      return acc / l

    def key_block(carry, j):
      m_prev, l_prev, acc = carry  # [B, K, G, bq, 1] x2, [B, K, G, bq, H]
      m, l, values = partial_softmax(qb, i, j, m_prev)
      alpha = jnp.exp(m_prev - m)  # rescales what earlier key blocks summed
      return (m, alpha * l_prev + l, alpha * acc + values), None

    stat = jnp.full((b, kh, g, block_q, 1), _PADDED, jnp.float32)
    init = (stat, jnp.zeros_like(stat), jnp.zeros((b, kh, g, block_q, h), jnp.float32))
    (_, l, acc), _ = jax.lax.scan(key_block, init, jnp.arange(nk))
    return acc / l

  # [nq, B, K, G, bq, H] -> [B, K, G, Sp, H], then the query padding cut off.
  out = jax.lax.map(query_block, (jnp.arange(nq), q_blocks))
  out = out.transpose(1, 2, 3, 0, 4, 5).reshape(b, kh, g, sp, h)
  return out[:, :, :, :s]
