"""Layers under ``nn.scan``: the lifted block, and the per-layer <-> stacked parameter trees.

With a config's ``scan_layers`` on, a model's L identical blocks run as one ``nn.scan``
(compile time no longer grows with depth). Their variables ("params", and "lora" for
the LLM's adapters) are then one subtree ``layers`` whose leaves carry a leading axis of
size L (logical axis name ``"layers"``, replicated by the sharding rules), in place of
the subtrees ``layers_0 .. layers_{L-1}`` of the unscanned model:

    layers_3/self_attn/q_proj/kernel [D, N*H]  <->  layers/self_attn/q_proj/kernel [L, D, N*H]

Checkpoints in the Hugging Face layout load per layer and are stacked (`stack_layers`);
exports unstack (`unstack_layers`) and name per-layer tensors as before. Both walk a
whole tree (params, a lora tree, a full variables dict) and rewrite every level that
holds numbered layers, so one call serves the encoder and the LLM.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util
from jax.sharding import NamedSharding, PartitionSpec

LAYERS = "layers"  # the stacked subtree, and the logical name of its leading axis
_NUMBERED = re.compile(r"^layers_(\d+)$")


def scan_blocks(block: type[nn.Module], length: int, in_axes: Any = 0) -> type[nn.Module]:
  """``block`` (called as ``block(carry, *xs) -> (carry, ys)``) scanned ``length`` times.

  Each layer's "params" and "lora" are slices of arrays stacked on axis 0; "params"
  and "dropout" rngs are split per layer. ``in_axes`` says how the arguments after the
  carry are fed: ``nn.broadcast`` (the same for every layer) or 0 (sliced per layer).
  """
  return nn.scan(block, variable_axes={"params": 0, "lora": 0},
                 split_rngs={"params": True, "dropout": True}, in_axes=in_axes,
                 length=length, metadata_params={nn.PARTITION_NAME: LAYERS})


def _numbered(tree: Mapping) -> list[str]:
  """The keys layers_0 .. layers_{L-1} of one level, in order (ValueError on a gap)."""
  found = sorted((int(m.group(1)), k) for k in tree if (m := _NUMBERED.match(str(k))))
  if [i for i, _ in found] != list(range(len(found))):
    raise ValueError(f"layers are not numbered 0..L-1: {[k for _, k in found]}")
  if found and LAYERS in tree:
    raise ValueError(f"a tree level holds both {LAYERS!r} and {found[0][1]!r}")
  return [k for _, k in found]


def stack_layers(tree: Any, shardings: Any = None, consume: bool = False) -> Any:
  """Every level's ``layers_0 .. layers_{L-1}`` -> one ``layers`` with leaves [L, ...].

  Args:
    tree: nested dicts of arrays (unboxed), e.g. loaded per-layer params.
    shardings: optional shardings of the stacked result (same structure); each leaf is
      stacked straight into its sharding.
    consume: delete each per-layer device array once its leaf is stacked, so a loader
      holds one parameter's layers twice at most, never the whole model (``tree`` is
      unusable afterwards).
  Returns:
    The stacked tree (other keys unchanged).
  """
  if not isinstance(tree, Mapping):
    return tree
  names = _numbered(tree)
  sub = lambda k: None if shardings is None else shardings.get(k)
  out = {k: stack_layers(v, sub(k), consume) for k, v in tree.items() if k not in names}
  if names:
    flats = [traverse_util.flatten_dict(tree[k]) for k in names]
    flat_shardings = (traverse_util.flatten_dict(nn.unbox(sub(LAYERS)))
                      if sub(LAYERS) is not None else {})
    if any(f.keys() != flats[0].keys() for f in flats):
      raise ValueError(f"stack_layers: {names[0]} .. {names[-1]} hold different parameters")
    stacked = {}
    for path in flats[0]:
      sharding = flat_shardings.get(path)
      stack = jax.jit(lambda *xs: jnp.stack(xs),
                      **({"out_shardings": sharding} if sharding is not None else {}))
      parts = [f[path] for f in flats]
      stacked[path] = stack(*parts)
      if consume:
        for x in parts:
          if isinstance(x, jax.Array):
            x.delete()
    out[LAYERS] = traverse_util.unflatten_dict(stacked)
  return out


def unstack_layers(tree: Any) -> Any:
  """The inverse of `stack_layers`: every ``layers`` [L, ...] -> ``layers_0 .. layers_{L-1}``."""
  if not isinstance(tree, Mapping):
    return tree
  out = {k: unstack_layers(v) for k, v in tree.items() if k != LAYERS}
  if LAYERS in tree:
    _numbered(tree)  # a level must not mix both layouts
    leaves = jax.tree.leaves(tree[LAYERS])
    for i in range(leaves[0].shape[0] if leaves else 0):
      out[f"layers_{i}"] = jax.tree.map(lambda x, i=i: x[i], tree[LAYERS])
  return out


def unstack_shardings(shardings: Any, num_layers: int) -> Any:
  """Shardings of a stacked tree -> those of the per-layer tree (leading axis dropped)."""
  if not isinstance(shardings, Mapping):
    return shardings
  out = {k: unstack_shardings(v, num_layers) for k, v in shardings.items() if k != LAYERS}
  if LAYERS in shardings:
    def drop(s):
      if isinstance(s, NamedSharding):
        return NamedSharding(s.mesh, PartitionSpec(*tuple(s.spec)[1:]))
      return s
    per_layer = jax.tree.map(drop, nn.unbox(shardings[LAYERS]))
    out.update({f"layers_{i}": per_layer for i in range(num_layers)})
  return out
