"""LoRA: low-rank adapters on named linear layers, kept in their own variable collection.

A ``LoraDense`` is an ``nn.Dense`` (kernel ``[in, out]``, optional bias, both in
``"params"``) plus, when given a ``LoraConfig``, two float32 factors in the ``"lora"``
collection::

    y = x @ W + b + (alpha / r) * dropout(x) @ A @ B       A: [in, r], B: [r, out]

A starts random (PEFT's kaiming-uniform), B at zero, so an untrained adapter leaves the
base model unchanged. Because A and B live in ``"lora"``, the frozen base and the
trainable adapters are separate pytrees: ``apply({"params": base, "lora": lora}, ...)``,
and gradients / optimizer state / checkpoints of a finetune hold only the lora tree.

``merge_lora`` folds the adapters into the base kernels; ``export_peft`` writes a
PyTorch ``peft`` adapter folder that ``peft.PeftModel.from_pretrained`` loads onto the
Hugging Face reference model.

Axis letters: D input width, F output width, R lora rank.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from lalmjax import hf_names
from lalmjax.models import scan

# The linear layers of the decoder LM, by their Hugging Face names; LoRA may target any.
LINEAR_LAYERS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclasses.dataclass(frozen=True)
class LoraConfig:
  """Which linear layers get adapters, and their size.

  Attributes:
    rank: r, the inner dimension of A [in, r] and B [r, out].
    alpha: the adapter output is scaled by alpha / rank (PEFT's ``lora_alpha``).
    targets: names of the linear layers that get adapters (a subset of LINEAR_LAYERS).
    dropout: dropout rate on the adapter input during training (0 = none).
  """
  rank: int = 16
  alpha: float = 32.0
  targets: tuple[str, ...] = ("q_proj", "k_proj")
  dropout: float = 0.0

  def __post_init__(self):
    # A list from a config file becomes a tuple, so the config stays hashable (the
    # module that holds it is a static argument to jit).
    object.__setattr__(self, "targets", tuple(self.targets))
    self.validate()

  def validate(self):
    if not isinstance(self.rank, int) or self.rank < 1:
      raise ValueError(f"LoraConfig.rank must be an int >= 1, got {self.rank!r}")
    if not self.alpha > 0:
      raise ValueError(f"LoraConfig.alpha must be > 0, got {self.alpha!r}")
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"LoraConfig.dropout must be in [0, 1), got {self.dropout!r}")
    if not self.targets:
      raise ValueError("LoraConfig.targets is empty: name at least one linear layer")
    unknown = sorted(set(self.targets) - set(LINEAR_LAYERS))
    if unknown:
      raise ValueError(f"LoraConfig.targets: unknown linear layer(s) {unknown}; "
                       f"choose from {list(LINEAR_LAYERS)}")

  @property
  def scaling(self) -> float:
    return self.alpha / self.rank


class LoraDense(nn.Module):
  """A dense layer ``[..., D] -> [..., F]`` with an optional LoRA adapter.

  Attributes:
    features: F.
    kernel_axes: logical axis names of the kernel [D, F], e.g. ("embed", "heads").
    use_bias: whether there is a bias [F] (logical axis ``kernel_axes[1]``).
    lora: adapter config, or None for a plain dense layer.
    dtype: compute dtype.
    param_dtype: storage dtype of kernel and bias (A and B are always float32).
  """
  features: int
  kernel_axes: tuple[str, str]
  use_bias: bool = False
  lora: LoraConfig | None = None
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernel_init: Callable = nn.initializers.normal(stddev=0.02)

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
    """x: dtype[..., D] -> dtype[..., F]."""
    d = x.shape[-1]
    kernel = self.param("kernel", nn.with_logical_partitioning(self.kernel_init, self.kernel_axes),
                        (d, self.features), self.param_dtype)
    x = x.astype(self.dtype)
    y = jnp.einsum("...d,df->...f", x, kernel.astype(self.dtype))
    if self.use_bias:
      bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros,
                                                             (self.kernel_axes[1],)),
                        (self.features,), self.param_dtype)
      y = y + bias.astype(self.dtype)
    if self.lora is None:
      return y

    r = self.lora.rank
    # PEFT initialises A with kaiming_uniform(a=sqrt(5)) on its [r, in] weight, i.e.
    # U(-1/sqrt(in), 1/sqrt(in)); variance_scaling(1/3, fan_in, uniform) is the same bound.
    a_init = nn.with_logical_partitioning(
        nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"),
        (self.kernel_axes[0], "lora_rank"))
    b_init = nn.with_logical_partitioning(nn.initializers.zeros,
                                          ("lora_rank", self.kernel_axes[1]))
    # The lambdas defer make_rng to initialisation: apply() needs no "params" rng.
    a = self.variable("lora", "lora_A",
                      lambda: a_init(self.make_rng("params"), (d, r), jnp.float32)).value
    b = self.variable("lora", "lora_B",
                      lambda: b_init(self.make_rng("params"), (r, self.features),
                                     jnp.float32)).value
    h = nn.Dropout(rate=self.lora.dropout)(x, deterministic=deterministic)
    # [..., D] @ [D, R] @ [R, F]: the rank-R bottleneck keeps this cheap.
    delta = jnp.einsum("...d,dr->...r", h, a.astype(self.dtype))
    delta = jnp.einsum("...r,rf->...f", delta, b.astype(self.dtype))
    return y + (self.lora.scaling * delta).astype(self.dtype)


# ---------------------------------------------------------------------------------------
# Working with the lora tree.


def init_lora(module: nn.Module, rng: jax.Array, *args, **kwargs):
  """Initialises only the "lora" collection of ``module``.

  ``module.init`` also initialises the base weights, but under ``jax.jit`` only the lora
  tree is an output, so XLA drops the base initialisers: no full-size random weights are
  ever built. ``args``/``kwargs`` are example inputs for ``module.init``.

  Returns:
    The lora tree (leaves boxed with their logical axis names, like ``init``'s params).
  """
  return jax.jit(lambda r: module.init(r, *args, **kwargs)["lora"])(rng)


def _adapters(lora_params: Mapping) -> dict[tuple[str, ...], tuple[jax.Array, jax.Array]]:
  """{module path: (A [D, R], B [R, F])} for every adapter in the tree."""
  flat = traverse_util.flatten_dict(nn.unbox(lora_params))
  out = {}
  for path in flat:
    if path[-1] == "lora_A":
      module_path = path[:-1]
      b_path = module_path + ("lora_B",)
      if b_path not in flat:
        raise ValueError(f"lora tree: {'/'.join(module_path)} has lora_A but no lora_B")
      out[module_path] = (flat[path], flat[b_path])
  return out


def merge_lora(base_params: Mapping, lora_params: Mapping, lora_config: LoraConfig) -> dict:
  """Folds the adapters into the base kernels: W + (alpha / r) A @ B.

  Args:
    base_params: the "params" tree (boxed or not).
    lora_params: the "lora" tree whose paths mirror the base modules.
    lora_config: gives the scaling alpha / r.

  Returns:
    A new params tree (kernels in their own dtype) for a module without LoRA.
  """
  flat = traverse_util.flatten_dict(nn.unbox(base_params))
  for module_path, (a, b) in _adapters(lora_params).items():
    kernel_path = module_path + ("kernel",)
    if kernel_path not in flat:
      raise ValueError(f"merge_lora: adapter {'/'.join(module_path)} has no base kernel")
    kernel = flat[kernel_path]
    delta = lora_config.scaling * (a.astype(jnp.float32) @ b.astype(jnp.float32))
    flat[kernel_path] = (kernel.astype(jnp.float32) + delta).astype(kernel.dtype)
  return traverse_util.unflatten_dict(flat)


def count_lora_params(model_config, lora_config: LoraConfig) -> int:
  """Closed-form number of LoRA parameters: layers * sum over targets of r * (in + out).

  ``model_config`` is any config with ``num_hidden_layers`` and ``linear_shapes()`` ->
  {layer name: (in, out)} (e.g. ``qwen2.Qwen2Config``).
  """
  shapes = model_config.linear_shapes()
  per_layer = sum(lora_config.rank * (shapes[t][0] + shapes[t][1]) for t in lora_config.targets)
  return model_config.num_hidden_layers * per_layer


def peft_adapter_config(lora_config: LoraConfig | None,
                        base_model_name_or_path: str | None = None,
                        new_token_ids: Sequence[int] = ()) -> dict:
  """The ``adapter_config.json`` contents PEFT needs (it fills the rest with defaults).

  New tokens' rows go in as ``trainable_token_indices`` of the LoRA adapter, or, with no
  LoRA, as a ``TRAINABLE_TOKENS`` adapter of their own.
  """
  if lora_config is None:
    return {
        "peft_type": "TRAINABLE_TOKENS",
        "token_indices": [int(i) for i in new_token_ids],
        "target_modules": ["embed_tokens"],
        "init_weights": True,
        "inference_mode": True,
        "base_model_name_or_path": base_model_name_or_path,
    }
  return {
      "peft_type": "LORA",
      "task_type": "CAUSAL_LM",
      "r": lora_config.rank,
      "lora_alpha": lora_config.alpha,
      "lora_dropout": lora_config.dropout,
      "target_modules": sorted(lora_config.targets),
      "bias": "none",
      "fan_in_fan_out": False,
      "use_rslora": False,
      "use_dora": False,
      "init_lora_weights": True,
      "inference_mode": True,
      "modules_to_save": None,
      "trainable_token_indices": [int(i) for i in new_token_ids] or None,
      "base_model_name_or_path": base_model_name_or_path,
  }


def export_peft(lora_params: Mapping | None, lora_config: LoraConfig | None, out_dir: str,
                base_model_name_or_path: str | None = None,
                prefix: str = "base_model.model.model.", *,
                new_token_ids: Sequence[int] = (), new_token_rows=None) -> list[str]:
  """Writes ``adapter_config.json`` + ``adapter_model.safetensors`` for PyTorch peft.

  A Flax path ``layers_0/self_attn/q_proj/lora_A`` ([D, R]) becomes
  ``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`` ([R, D], torch
  layout); a scanned tree (``layers/...`` [L, D, R], `models.scan`) is unstacked to
  these per-layer names first. ``prefix`` is PEFT's wrapper (``base_model.model.``) plus
  the path of the decoder inside ``Qwen2ForCausalLM`` (``model.``).

  The trained rows of new tokens (`models.new_tokens`; float32 [n, D] for the ids
  ``new_token_ids``) go in as peft's trainable tokens: ``trainable_token_indices`` and
  ``embed_tokens.token_adapter.trainable_tokens_delta`` (peft writes these values over
  the embedding's rows, and over a tied LM head's). With ``lora_params=None`` they make
  a ``TRAINABLE_TOKENS`` adapter alone. A grown vocabulary must be grown on the
  transformers model too (``resize_token_embeddings``) before peft loads the adapter.

  Returns:
    The tensor names written.
  """
  from safetensors.numpy import save_file  # local: only exporting needs it

  if (new_token_rows is None) != (not new_token_ids):
    raise ValueError("export_peft: pass new_token_ids and new_token_rows together")
  if new_token_rows is not None and np.shape(new_token_rows)[0] != len(new_token_ids):
    raise ValueError(f"export_peft: {np.shape(new_token_rows)[0]} new token rows for "
                     f"{len(new_token_ids)} ids")
  if lora_params is None and new_token_rows is None:
    raise ValueError("export_peft: nothing to export (no lora tree, no new token rows)")
  tensors = {}
  if lora_params is not None:
    adapters = _adapters(scan.unstack_layers(nn.unbox(lora_params)))
    if not adapters:
      raise ValueError("export_peft: the lora tree holds no adapters")
    found = {p[-1] for p in adapters}
    if found != set(lora_config.targets):
      raise ValueError(f"export_peft: the lora tree adapts {sorted(found)}, but the config "
                       f"targets {sorted(lora_config.targets)}")
    for module_path, (a, b) in adapters.items():
      for leaf, value in (("lora_A", a), ("lora_B", b)):
        # The generic HF rule: layers_0 -> layers.0, kernel -> weight transposed.
        name, transform = hf_names.default_hf_name(module_path + (leaf, "kernel"))
        array = transform(np.asarray(jax.device_get(value), np.float32))
        tensors[prefix + name] = np.ascontiguousarray(array)
  if new_token_rows is not None:
    # LoRA wraps the embedding in a token_adapter; a TRAINABLE_TOKENS adapter replaces it.
    wrapper = "token_adapter." if lora_params is not None else ""
    tensors[prefix + f"embed_tokens.{wrapper}trainable_tokens_delta"] = np.ascontiguousarray(
        np.asarray(jax.device_get(new_token_rows), np.float32))
  os.makedirs(out_dir, exist_ok=True)
  save_file(tensors, os.path.join(out_dir, "adapter_model.safetensors"),
            metadata={"format": "pt"})
  config = peft_adapter_config(lora_config if lora_params is not None else None,
                               base_model_name_or_path, new_token_ids)
  with open(os.path.join(out_dir, "adapter_config.json"), "w") as f:
    json.dump(config, f, indent=2)
  return sorted(tensors)
