"""The projector: compressed audio tokens [B, A, E] -> LLM input embeddings [B, A, D].

Axis letters: B batch, A audio tokens, E audio token width (encoder width, x k for
``stack``), P projector hidden width, D LLM width.

Kinds: ``linear`` (one dense layer) or ``mlp`` (dense -> GELU -> dense). It is trainable
and small, so it stays float32 whatever the LLM's dtype (STYLE.md); its output is cast to
the LLM's compute dtype by the caller.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

PROJECTOR_KINDS = ("linear", "mlp")


def _dense(features: int, axes: tuple[str, str], name: str) -> nn.Dense:
  return nn.Dense(
      features, dtype=jnp.float32, param_dtype=jnp.float32, name=name,
      kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), axes),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (axes[1],)))


class Projector(nn.Module):
  """Attributes: kind ("linear" | "mlp"), out_features D, hidden P (mlp only; 0 -> D)."""

  kind: str
  out_features: int
  hidden: int = 0

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: float[B, A, E] -> float32[B, A, D]."""
    if self.kind not in PROJECTOR_KINDS:
      raise ValueError(f"projector kind {self.kind!r}: expected one of {PROJECTOR_KINDS}")
    x = x.astype(jnp.float32)
    if self.kind == "linear":
      return _dense(self.out_features, ("audio_embed", "embed"), "linear")(x)
    h = _dense(self.hidden or self.out_features, ("audio_embed", "mlp"), "fc1")(x)
    h = nn.gelu(h, approximate=False)
    return _dense(self.out_features, ("mlp", "embed"), "fc2")(h)
