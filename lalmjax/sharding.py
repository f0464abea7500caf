"""Device mesh and the one table mapping logical axis names to mesh axes.

Every parameter in lalmjax carries logical axis names (``nn.with_logical_partitioning``)
and the big activations carry ``activation_*`` names (``nn.with_logical_constraint``).
This module is the only place that says how those names map onto the mesh axes
``data``, ``fsdp`` and ``tensor``; moving from one CPU to a pod changes the mesh shape in
the config, never model code.

Logical names used by the models:

  weights      embed, heads, kv_heads, head_dim, mlp, vocab, mel, conv_kernel, conv_in,
               position, norm, lora_rank, audio_embed, layers (scan_layers)
  activations  activation_batch, activation_length, activation_embed,
               activation_heads, activation_kv_heads, activation_mlp, activation_vocab
  KV cache     cache_batch, cache_length, cache_kv_heads, cache_head_dim
"""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

# (logical name, mesh axis or axes or None). The first rule whose mesh axes are free in a
# given array wins (flax semantics), so a name may appear once with a fallback of None.
LOGICAL_AXIS_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    # Weights: FSDP shards the model width, tensor parallelism the heads / MLP / vocab.
    ("embed", "fsdp"),
    ("audio_embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    ("head_dim", None),
    ("mel", None),
    ("conv_kernel", None),
    ("conv_in", None),
    ("position", None),
    ("norm", None),
    ("lora_rank", None),
    ("layers", None),  # the stacked axis of nn.scan'd blocks (models/scan.py)
    # Activations: the batch over data x fsdp; heads / mlp / vocab over tensor.
    ("activation_batch", ("data", "fsdp")),
    ("activation_length", None),
    ("activation_embed", None),
    ("activation_heads", "tensor"),
    ("activation_kv_heads", "tensor"),
    ("activation_mlp", "tensor"),
    ("activation_vocab", "tensor"),
    # KV cache [B, S_max, K, H].
    ("cache_batch", ("data", "fsdp")),
    ("cache_length", None),
    ("cache_kv_heads", "tensor"),
    ("cache_head_dim", None),
)


def mesh_shape(axis_sizes: Sequence[int], num_devices: int | None = None) -> tuple[int, ...]:
  """Resolves a (data, fsdp, tensor) shape in which at most one entry is -1 ("the rest").

  Raises ValueError naming the mesh when the sizes do not multiply to the device count.
  """
  num_devices = jax.device_count() if num_devices is None else num_devices
  sizes = [int(s) for s in axis_sizes]
  if len(sizes) != len(MESH_AXES):
    raise ValueError(f"mesh shape {tuple(sizes)} must have {len(MESH_AXES)} entries {MESH_AXES}")
  if sizes.count(-1) > 1:
    raise ValueError(f"mesh shape {tuple(sizes)}: at most one axis may be -1")
  if any(s == 0 or s < -1 for s in sizes):
    raise ValueError(f"mesh shape {tuple(sizes)}: sizes must be positive or -1")
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if num_devices % known:
      raise ValueError(
          f"mesh shape {tuple(sizes)}: {num_devices} devices are not divisible by {known}")
    sizes[sizes.index(-1)] = num_devices // known
  if int(np.prod(sizes)) != num_devices:
    raise ValueError(
        f"mesh shape {tuple(sizes)} multiplies to {int(np.prod(sizes))}, "
        f"but there are {num_devices} devices")
  return tuple(sizes)


def create_mesh(axis_sizes: Sequence[int] = (-1, 1, 1), devices=None) -> Mesh:
  """A Mesh over all (or the given) devices with axes ("data", "fsdp", "tensor")."""
  devices = jax.devices() if devices is None else list(devices)
  shape = mesh_shape(axis_sizes, len(devices))
  try:
    device_array = mesh_utils.create_device_mesh(shape, devices=devices)
  except Exception:  # pylint: disable=broad-except
    # Fallback for device kinds mesh_utils has no topology for (e.g. forced CPU devices).
    device_array = np.asarray(devices).reshape(shape)
  return Mesh(device_array, MESH_AXES)


def logical_to_mesh_sharding(logical_specs, mesh: Mesh, rules=LOGICAL_AXIS_RULES):
  """Maps a pytree of logical PartitionSpecs to NamedShardings on `mesh`."""
  import flax.linen as nn  # local: keep this module importable without flax

  return nn.logical_to_mesh_sharding(logical_specs, mesh, rules)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())
