"""Flax Qwen2 params -> a Hugging Face ``Qwen2ForCausalLM`` folder: `checkpoints.load_qwen2`
run backwards.

The names come from the same rule the loader uses (`hf_names.default_hf_name`,
``layers_3/self_attn/q_proj/kernel`` -> ``model.layers.3.self_attn.q_proj.weight``), with
the loader's transform undone: a Flax kernel ``[in, out]`` is written ``[out, in]``. A
tied model has no ``lm_head.weight`` (transformers ties it to the embedding). One
``model.safetensors`` (float32 by default), written with ``safetensors.numpy``: meant
for models that fit in host memory, such as the demo's.
"""

from __future__ import annotations

import json
import os
from typing import Mapping

import flax.linen as nn
import numpy as np
from flax import traverse_util

from lalmjax.hf_names import default_hf_name
from lalmjax.models import scan
from lalmjax.models.qwen2 import Qwen2Config


def hf_config(config: Qwen2Config, *, bos_token_id: int | None = None,
              eos_token_id: int | None = None, pad_token_id: int | None = None,
              dtype: str = "float32") -> dict:
  """The ``config.json`` of a ``Qwen2ForCausalLM`` with this architecture.

  RoPE settings are written both ways transformers has read them (``rope_theta`` +
  ``rope_scaling`` before v5, ``rope_parameters`` since), so either version loads it.
  """
  rope = {"rope_type": config.rope_type, "rope_theta": config.rope_theta}
  if config.rope_type == "linear":
    rope["factor"] = config.rope_factor
  return {
      "architectures": ["Qwen2ForCausalLM"],
      "model_type": "qwen2",
      "vocab_size": config.vocab_size,
      "hidden_size": config.hidden_size,
      "intermediate_size": config.intermediate_size,
      "num_hidden_layers": config.num_hidden_layers,
      "num_attention_heads": config.num_attention_heads,
      "num_key_value_heads": config.num_key_value_heads,
      "head_dim": config.head_dim,
      "hidden_act": "silu",
      "rms_norm_eps": config.rms_norm_eps,
      "rope_theta": config.rope_theta,
      "rope_scaling": None if config.rope_type == "default" else dict(rope, type="linear"),
      "rope_parameters": rope,
      "max_position_embeddings": config.max_position_embeddings,
      "tie_word_embeddings": config.tie_word_embeddings,
      "use_sliding_window": False,
      "sliding_window": None,
      "max_window_layers": config.num_hidden_layers,
      "attention_dropout": 0.0,
      "initializer_range": 0.02,
      "use_cache": True,
      "bos_token_id": bos_token_id,
      "eos_token_id": eos_token_id,
      "pad_token_id": pad_token_id,
      "torch_dtype": dtype,
  }


def hf_tensors(params: Mapping, dtype=np.float32) -> dict[str, np.ndarray]:
  """{HF tensor name: array in torch layout} for the params of a plain `qwen2.Qwen2`.

  Raises:
    ValueError for params a Qwen2ForCausalLM does not hold (new-token rows, adapters),
    or a transform other than the kernels' transpose.
  """
  # init's boxes off, if any; scanned layers (layers/... [L, ...]) back to layers_i.
  flat = traverse_util.flatten_dict(scan.unstack_layers(dict(nn.unbox(params))))
  extra = sorted("/".join(p) for p in flat if p[0] in ("new_tokens", "lora"))
  if extra:
    raise ValueError(f"save_qwen2: {extra[:3]} are not Qwen2ForCausalLM weights (merge new "
                     "token rows and LoRA into the base params first)")
  out = {}
  for path, value in flat.items():
    name, transform = default_hf_name(path)
    name = name if path[0] == "lm_head" else "model." + name  # as load_qwen2 reads it
    array = np.asarray(value, dtype)
    if transform is not None:
      if path[-1] != "kernel" or array.ndim != 2:
        raise ValueError(f"save_qwen2: no inverse for the transform of {'/'.join(path)}")
      array = array.T  # the loader transposes [out, in] to [in, out]
    out[name] = np.ascontiguousarray(array)
  return out


def save_qwen2(out_dir: str, config: Qwen2Config, params: Mapping, *,
               bos_token_id: int | None = None, eos_token_id: int | None = None,
               pad_token_id: int | None = None) -> list[str]:
  """Writes ``config.json`` and ``model.safetensors`` (float32) into `out_dir`.

  Args:
    out_dir: the folder (created if missing); a tokenizer may be saved beside.
    config: the architecture of `params`.
    params: the ``"params"`` collection of a `qwen2.Qwen2` (host or device arrays).
    bos_token_id, eos_token_id, pad_token_id: written to config.json for transformers.

  Returns:
    The tensor names written, sorted.
  """
  from safetensors.numpy import save_file  # local: only exporting needs it

  tensors = hf_tensors(params)
  if config.tie_word_embeddings == ("lm_head.weight" in tensors):
    raise ValueError(f"save_qwen2: tie_word_embeddings={config.tie_word_embeddings}, but the "
                     f"params {'have' if 'lm_head.weight' in tensors else 'lack'} an lm_head")
  os.makedirs(out_dir, exist_ok=True)
  # transformers refuses safetensors files without a format in their metadata.
  save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
  with open(os.path.join(out_dir, "config.json"), "w") as f:
    json.dump(hf_config(config, bos_token_id=bos_token_id, eos_token_id=eos_token_id,
                        pad_token_id=pad_token_id), f, indent=2)
  return sorted(tensors)
