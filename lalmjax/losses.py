"""Next-token cross-entropy, from full logits or chunked from the hidden states.

The LM head is the largest activation of a training step: Qwen2-7B has V = 152,064, so
at S = 1024 the float32 logits are 0.6 GB per row and their gradient as much again.
``chunked_next_token_loss`` takes the final-norm hidden states and the head instead, and
walks the sequence in chunks, so only one chunk's logits exist at a time, in the
forward and in the backward pass.

Axis letters: B batch, S text positions, D LLM width, V vocab, C positions in a chunk,
G chunks (ceil((S - 1) / C)).

Both losses return sums, so the caller normalises once over however many devices and
micro-batches (correct under padding).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

HEAD_LAYOUTS = ("dv", "vd")  # lm_head kernel [D, V]; tied token embedding [V, D]


def next_token_loss(logits: jax.Array, input_ids: jax.Array, loss_mask: jax.Array):
  """Summed next-token cross-entropy over the positions in `loss_mask`.

  Args:
    logits: float32[B, S, V]; position s predicts token s+1.
    input_ids: int32[B, S].
    loss_mask: bool[B, S], the tokens to predict (target text and EOS).

  Returns:
    (loss_sum float32[], num_tokens float32[]).
  """
  logits = logits[:, :-1].astype(jnp.float32)
  targets = input_ids[:, 1:]
  weight = loss_mask[:, 1:].astype(jnp.float32)
  logz = jax.nn.logsumexp(logits, axis=-1)
  target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  return jnp.sum((logz - target_logit) * weight), jnp.sum(weight)


def chunked_next_token_loss(hidden: jax.Array, head: jax.Array, input_ids: jax.Array,
                            loss_mask: jax.Array, *, chunk_size: int,
                            head_layout: str = "dv"):
  """``next_token_loss(hidden @ head, ...)`` without the [B, S, V] logits.

  Same value and same gradients with respect to `hidden` and `head` (up to float
  summation order), but peak memory O(B * chunk_size * V) for the logits in both
  passes. The logits matmul runs in `hidden`'s dtype with float32 output; the
  logsumexp is float32. A trained head costs, on top, its gradient accumulator (in
  head's dtype) and one chunk's float32 [D, V] matmul result; when the head is not
  differentiated, jit drops both.

  Args:
    hidden: dtype[B, S, D], the final-norm hidden states; position s predicts token s+1.
    head: dtype[D, V] (head_layout "dv", an lm_head kernel) or dtype[V, D] ("vd", a
      tied token embedding, used as hidden @ head.T).
    input_ids: int32[B, S].
    loss_mask: bool[B, S], the tokens to predict (target text and EOS).
    chunk_size: positions per chunk, C. Any value >= 1: S - 1 need not divide by it
      (the last chunk is padded and masked), and C >= S is one chunk.
    head_layout: "dv" or "vd", see `head`.

  Returns:
    (loss_sum float32[], num_tokens float32[]).
  """
  if head_layout not in HEAD_LAYOUTS:
    raise ValueError(f"head_layout must be one of {HEAD_LAYOUTS}, got {head_layout!r}")
  if chunk_size < 1:
    raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
  width = head.shape[0] if head_layout == "dv" else head.shape[1]
  if hidden.ndim != 3 or hidden.shape[-1] != width:
    raise ValueError(f"hidden {hidden.shape} does not match head {head.shape} "
                     f"with head_layout {head_layout!r}")

  # Shift once here, so the chunks need no neighbour: position s predicts token s+1.
  hidden = hidden[:, :-1]
  targets = input_ids[:, 1:]
  weight = loss_mask[:, 1:].astype(jnp.float32)
  batch, length, _ = hidden.shape
  chunk = min(chunk_size, max(length, 1))
  num_chunks = -(-length // chunk)
  pad = num_chunks * chunk - length

  def to_chunks(x):
    # [B, L, ...] -> [G, B, C, ...]. B stays a whole axis (never merged with positions)
    # so a batch-sharded layout carries through; the scan walks G.
    x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
    return jnp.swapaxes(x.reshape((batch, num_chunks, chunk) + x.shape[2:]), 0, 1)

  # Padded positions have weight 0 and target 0 (a valid id), so they add nothing.
  loss_sum = _chunked_loss_sum(to_chunks(hidden), head, to_chunks(targets),
                               to_chunks(weight), head_layout)
  return loss_sum, jnp.sum(weight)


# The three matmuls with the head. Where one contracts the head over its last axis, the
# head is written as the left operand and the chunk-sized result is transposed: the CPU
# compiler otherwise keeps a transposed copy of the whole head for the loop (1 GiB for
# Qwen2-7B's), more than the logits chunking saves. The math is the same either way.


def _logits(h, head, head_layout):
  """h dtype[B, C, D] -> float32[B, C, V]."""
  if head_layout == "dv":
    return jnp.einsum("bcd,dv->bcv", h, head, preferred_element_type=jnp.float32)
  return jnp.einsum("vd,bcd->vbc", head, h,
                    preferred_element_type=jnp.float32).transpose(1, 2, 0)


def _d_hidden(d_logits, head, head_layout):
  """d_logits dtype[B, C, V] -> float32[B, C, D]."""
  if head_layout == "dv":
    return jnp.einsum("dv,bcv->dbc", head, d_logits,
                      preferred_element_type=jnp.float32).transpose(1, 2, 0)
  return jnp.einsum("bcv,vd->bcd", d_logits, head, preferred_element_type=jnp.float32)


def _d_head(h, d_logits, head_layout):
  """(h dtype[B, C, D], d_logits dtype[B, C, V]) -> float32[D, V] or float32[V, D]."""
  equation = "bcd,bcv->dv" if head_layout == "dv" else "bcd,bcv->vd"
  return jnp.einsum(equation, h, d_logits, preferred_element_type=jnp.float32)


# A custom VJP rather than jax.checkpoint around each chunk: the backward then reuses
# the forward's logsumexp, computes d logits in hidden's dtype so both gradient matmuls
# stay in that dtype (autodiff of the float32-output matmul upcasts the head to float32
# for them: a second, twice-as-large copy of the head, 2 GiB at Qwen2-7B), and keeps
# nothing from the forward but its inputs and a float32[G, B, C] logsumexp.
@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _chunked_loss_sum(hidden, head, targets, weight, head_layout):
  """Sum of weight * cross-entropy; hidden dtype[G, B, C, D], targets/weight [G, B, C]."""
  return _chunked_loss_fwd(hidden, head, targets, weight, head_layout)[0]


def _chunked_loss_fwd(hidden, head, targets, weight, head_layout):
  def step(total, xs):
    h, t, w = xs
    logits = _logits(h, head, head_layout)  # the only vocab-sized array of the pass
    logz = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, t[..., None], axis=-1)[..., 0]
    return total + jnp.sum((logz - target_logit) * w), logz

  total, logz = jax.lax.scan(step, jnp.zeros((), jnp.float32), (hidden, targets, weight))
  return total, (hidden, head, targets, weight, logz)


def _chunked_loss_bwd(head_layout, residuals, g):
  hidden, head, targets, weight, logz = residuals
  vocab = head.shape[1] if head_layout == "dv" else head.shape[0]

  def step(d_head, xs):
    h, t, w, z = xs
    logits = _logits(h, head, head_layout)  # recomputed rather than stored
    probs = jnp.exp(logits - z[..., None])
    d_logits = (probs - jax.nn.one_hot(t, vocab, dtype=jnp.float32)) * (w * g)[..., None]
    d_logits = d_logits.astype(h.dtype)
    d_head_chunk = _d_head(h, d_logits, head_layout).astype(head.dtype)
    return d_head + d_head_chunk, _d_hidden(d_logits, head, head_layout).astype(h.dtype)

  # The head gradient is accumulated in head's dtype: a float32 [D, V] accumulator would
  # cost more than the logits chunking saves (2.2 GB for a bf16 Qwen2-7B head). When the
  # head is frozen, jit drops this accumulator and its matmul as dead code.
  d_head, d_hidden = jax.lax.scan(step, jnp.zeros(head.shape, head.dtype),
                                  (hidden, targets, weight, logz))
  return d_hidden, d_head, None, None


_chunked_loss_sum.defvjp(_chunked_loss_fwd, _chunked_loss_bwd)
