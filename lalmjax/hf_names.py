"""Flax parameter paths <-> Hugging Face tensor names: the generic rule.

The Flax modules name their parameters after the Hugging Face ones (``q_proj``, ``fc1``,
``layer_norm``), so an HF name follows from a Flax path by one rule (``layers_3`` ->
``layers.3``; ``kernel`` -> ``weight`` transposed; ``scale`` / ``embedding`` ->
``weight``) and each model lists only its exceptions. A leaf module: the loader
(`checkpoints.py`) and the exporters in the models (`models/lora.py`) both use it, and
it imports neither, so the arrows run loader -> models -> names.
"""

from __future__ import annotations

import re
from typing import Callable

import numpy as np

Transform = Callable[[np.ndarray], np.ndarray]


def _transpose(x: np.ndarray) -> np.ndarray:
  return np.transpose(x)


def conv1d_from_torch(x: np.ndarray) -> np.ndarray:
  """torch Conv1d weight [out, in, k] -> flax Conv kernel [k, in, out]."""
  return np.transpose(x, (2, 1, 0))


def default_hf_name(path: tuple[str, ...]) -> tuple[str, Transform | None]:
  """The generic Flax-path -> HF-name rule, and the transform to apply to the HF tensor.

  ``("layers_3", "self_attn", "q_proj", "kernel")`` -> ``"layers.3.self_attn.q_proj.weight"``
  with a transpose ([out, in] in torch, [in, out] in Flax).
  """
  parts = [re.sub(r"^(\w+?)_(\d+)$", r"\1.\2", p) for p in path[:-1]]
  leaf = path[-1]
  if leaf == "kernel":
    return ".".join(parts + ["weight"]), _transpose
  if leaf in ("scale", "embedding", "weight"):
    return ".".join(parts + ["weight"]), None
  return ".".join(parts + [leaf]), None
