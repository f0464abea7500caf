"""Tokens new to the LLM: a vocabulary grown to fit the tokenizer, and their trained rows.

The project gives the LLM tokens its checkpoint never saw: the audio markers
``<|audio_bos|>``, ``<|AUDIO|>``, ``<|audio_eos|>`` that `prompts.load_tokenizer` appends
to a tokenizer lacking them (and any token a config names). Two things follow.

Growth. A tokenizer may hold ids past the embedding: tokenizers converted from GGUF pad
their vocabulary with ``[PADnnnnnn]`` entries up to ``vocab_size``, so the markers land
at ``vocab_size`` and beyond. The vocabulary then grows to ``grown_vocab_size`` (a
multiple of 64, so the vocab axis still shards): new embedding rows, and new LM-head
rows when the head is untied, each set to the mean of the checkpoint's rows
(``transformers``' ``resize_token_embeddings`` draws them from N(mean, 1e-9 covariance),
a hair away). Old rows are untouched, so every old token's logit is unchanged.

Trained rows. A new token's row is untrained (a mean row, or a spare row the base model
never used), and the LLM is frozen. `NewTokens` holds float32 ``[n, D]`` copies of the
rows of those ids as their own small parameter (``params/llm/new_tokens/embedding``),
which trains with the projector and LoRA; the LLM's embedding lookup writes them over
the frozen rows (and a tied LM head reads them too), so the optimizer never sees the
``[V, D]`` embedding. ``peft``'s ``trainable_token_indices`` is the same idea, and
`lora.export_peft` writes these rows in its format.

Axis letters: V vocab, D width, n new tokens, B batch, S positions.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

VOCAB_MULTIPLE = 64  # a grown vocabulary is rounded up to this, so it shards evenly


def grown_vocab_size(vocab_size: int, num_tokens: int, multiple: int = VOCAB_MULTIPLE) -> int:
  """Rows the LLM needs for a tokenizer of `num_tokens` ids (`len(tokenizer)`).

  `vocab_size` itself when the tokenizer fits (spare rows stay as they are), else
  `num_tokens` rounded up to `multiple`.
  """
  if num_tokens <= vocab_size:
    return vocab_size
  return -(-num_tokens // multiple) * multiple


def pad_rows(x: np.ndarray, size: int, block: int = 8192) -> np.ndarray:
  """x: [V, D] token rows -> [size, D], the new rows set to the mean of the old ones.

  The mean is summed in float64, `block` rows at a time, so a memory-mapped bf16
  embedding is never copied whole to compute it. Returns x's dtype.
  """
  v = x.shape[0]
  if size < v:
    raise ValueError(f"pad_rows: cannot shrink {v} rows to {size}")
  total = np.zeros(x.shape[1:], np.float64)
  for i in range(0, v, block):
    total += np.asarray(x[i:i + block], np.float64).sum(axis=0)
  mean = (total / max(v, 1)).astype(x.dtype)
  return np.concatenate([np.asarray(x), np.broadcast_to(mean, (size - v,) + x.shape[1:])])


def check_ids(ids: Sequence[int], vocab_size: int, what: str = "new_token_ids"):
  """Raises ValueError unless `ids` are distinct ints in [0, vocab_size)."""
  bad = [i for i in ids if not isinstance(i, (int, np.integer)) or not 0 <= i < vocab_size]
  if bad:
    raise ValueError(f"{what}: {bad} outside the LLM vocabulary [0, {vocab_size})")
  if len(set(ids)) != len(ids):
    raise ValueError(f"{what}: {list(ids)} repeats an id")


def write_rows(table: jax.Array, ids: Sequence[int], rows: jax.Array) -> jax.Array:
  """table: [V, D] with rows `ids` replaced by rows [n, D] (in table's dtype)."""
  return table.at[np.asarray(ids, np.int32)].set(rows.astype(table.dtype))


def embed_with_rows(embeds: jax.Array, input_ids: jax.Array, ids: Sequence[int],
                    rows: jax.Array) -> jax.Array:
  """embeds [B, S, D] of input_ids int32[B, S], with each of `ids` taking its row.

  Fixed shapes: one compare against the n static ids, a gather of the matching row and a
  `where`; gradients reach `rows` only at the positions that hold a new token.
  """
  match = input_ids[..., None] == jnp.asarray(ids, jnp.int32)  # [B, S, n]
  which = jnp.argmax(match, axis=-1)  # [B, S], 0 where nothing matches (masked below)
  picked = jnp.take(rows.astype(embeds.dtype), which, axis=0)  # [B, S, D]
  return jnp.where(jnp.any(match, axis=-1)[..., None], picked, embeds)


class NewTokens(nn.Module):
  """The trainable rows of the new tokens: ``embedding`` float32[n, D].

  Initialised as copies of the frozen embedding's rows at `ids`, so a model with them
  computes exactly what it computed without them until they train.

  Attributes:
    ids: the token ids (static).
  """
  ids: tuple[int, ...]

  @nn.compact
  def __call__(self, table: jax.Array) -> jax.Array:
    """table: the frozen embedding [V, D] (read only at init) -> float32[n, D]."""
    ids = np.asarray(self.ids, np.int32)
    init = nn.with_logical_partitioning(
        lambda _, t: jnp.asarray(t)[ids].astype(jnp.float32), (None, "embed"))
    return self.param("embedding", init, table)
