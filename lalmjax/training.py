"""Training: which variables train (data, not code), and the pure loss/grad step pieces.

Trainable and frozen variables are split by regexes over '/'-joined paths that start with
the collection name, e.g. ``params/projector/linear/kernel`` or
``lora/llm/layers_0/self_attn/q_proj/lora_A``. The optimizer, the gradient and the
checkpoint of a finetune see only the trainable tree, never the frozen weights.
"""

from __future__ import annotations

import re
from typing import Mapping, Sequence

from flax import traverse_util

# The paper's recipe: projector + LoRA train, Whisper and Qwen2 stay frozen. Adding
# "params/encoder/.*" unfreezes the encoder.
DEFAULT_TRAINABLE = ("params/projector/.*", "lora/.*")
ENCODER = "params/encoder/.*"


def trainable_patterns(train_encoder: bool = False, extra: Sequence[str] = ()) -> tuple[str, ...]:
  """The default trainable set, plus the Whisper encoder when `train_encoder`."""
  return DEFAULT_TRAINABLE + ((ENCODER,) if train_encoder else ()) + tuple(extra)


def partition(variables: Mapping, trainable: Sequence[str] = DEFAULT_TRAINABLE):
  """Splits variables into (trainable, frozen) trees of the same nesting.

  Args:
    variables: {"params": ..., "lora": ...} (any collections).
    trainable: regexes; a leaf trains if its path fully matches any of them.

  Returns:
    (trainable, frozen): nested dicts holding disjoint subsets of the leaves.

  Raises:
    ValueError when a pattern matches nothing (a typo must not silently freeze a part).
  """
  flat = traverse_util.flatten_dict(variables, sep="/")
  patterns = [re.compile(p) for p in trainable]
  unused = [p.pattern for p in patterns if not any(p.fullmatch(k) for k in flat)]
  if unused:
    raise ValueError(f"trainable pattern(s) {unused} match no variable; paths look like "
                     f"{sorted(flat)[:3]}")
  is_trainable = {k: any(p.fullmatch(k) for p in patterns) for k in flat}
  train = {k: v for k, v in flat.items() if is_trainable[k]}
  frozen = {k: v for k, v in flat.items() if not is_trainable[k]}
  return (traverse_util.unflatten_dict(train, sep="/"),
          traverse_util.unflatten_dict(frozen, sep="/"))


def combine(*trees: Mapping) -> dict:
  """Merges disjoint nested dicts (the inverse of `partition`)."""
  out = {}
  for tree in trees:
    for k, v in traverse_util.flatten_dict(tree, sep="/").items():
      if k in out:
        raise ValueError(f"combine: variable {k} is in more than one tree")
      out[k] = v
  return traverse_util.unflatten_dict(out, sep="/")
