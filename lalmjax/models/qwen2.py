"""Qwen2 decoder-only language model (Flax Linen), with a functional KV cache and LoRA.

Axis letters used in shapes and einsums:

  B batch          S positions of this call        T key slots (S, or S_max with a cache)
  D width          N query heads                   K key/value heads (N = K * G)
  H head dim       F MLP width                     V vocab
  L layers         R lora rank

Parameter names follow the Hugging Face checkpoint (``embed_tokens``,
``layers_3/self_attn/q_proj``, ``mlp/gate_proj``, ``input_layernorm``, ``norm``,
``lm_head``) so ``hf_names.default_hf_name`` maps them with only a ``model.`` prefix.
Linear kernels are ``[in, out]`` with the heads fused (q_proj ``[D, N*H]``).

Padding and positions. ``attention_mask`` marks real tokens (1) in a padded batch, left
or right. Positions default to ``cumsum(mask) - 1`` per row, as Hugging Face ``generate``
does, so a row's first real token is at position 0 wherever it sits.

KV cache. ``init_cache`` preallocates ``k, v: [L, B, S_max, K, H]``. All rows share the
slot index (slot = column of the padded batch, so a call with S tokens fills slots
``index .. index+S-1`` of every row with one ``dynamic_update_slice``); per row the cache
keeps which slots hold real tokens (``key_mask``) and the next RoPE position
(``positions``). Padding inside the cache is just masked out, so the cached and the full
forward see the same keys at the same positions. Causality is by slot. The cache is a
plain pytree passed in and returned, so decoding runs inside ``lax.while_loop``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.ad_checkpoint import checkpoint_name

from lalmjax.models import attention, scan
from lalmjax.models.lora import LoraConfig, LoraDense
from lalmjax.models.new_tokens import NewTokens, check_ids, embed_with_rows, write_rows

SUPPORTED_ROPE_TYPES = ("default", "linear")

# Remat policies by name (the config chooses one); the q/k/v projections are tagged with
# checkpoint_name so "save_qkv_proj" can keep them and recompute the rest.
REMAT_POLICIES = {
    "nothing_saveable": jax.checkpoint_policies.nothing_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "save_qkv_proj": jax.checkpoint_policies.save_only_these_names(
        "query_proj", "key_proj", "value_proj"),
}

BLOCK_AXES = ("activation_batch", "activation_length", "activation_embed")
CACHE_AXES = (None, "cache_batch", "cache_length", "cache_kv_heads", "cache_head_dim")


# ---------------------------------------------------------------------------------------
# Config.


@dataclasses.dataclass(frozen=True)
class Qwen2Config:
  """Qwen2 architecture (the fields of a Hugging Face ``config.json``) plus remat.

  Attributes:
    vocab_size: V, rows of the token embedding.
    hidden_size: D, the residual width.
    intermediate_size: F, the SwiGLU MLP width.
    num_hidden_layers: L, decoder blocks.
    num_attention_heads: N, query heads.
    num_key_value_heads: K, key/value heads (grouped-query attention when K < N).
    head_dim: H, width of one head (HF default D // N).
    rms_norm_eps: epsilon inside RMSNorm's rsqrt.
    rope_theta: RoPE base frequency.
    rope_type: "default" or "linear" (position interpolation).
    rope_factor: the linear scaling factor (positions are divided by it).
    tie_word_embeddings: the LM head reuses the token embedding (no lm_head param).
    max_position_embeddings: context length the model was trained for (informational).
    remat_policy: None (no remat) or a key of REMAT_POLICIES, applied per block.
    attention: the attention implementation, one of ``attention.IMPLEMENTATIONS``.
    attention_batch_block: "blocked": batch rows per step of its loop over the batch
      (0 = the whole batch, -1 = auto: a loop on the CPU only; `attention.batch_rows`).
    scan_layers: run the blocks under ``nn.scan``: params (and lora) stacked as
      ``layers/...`` with a leading L axis (`models.scan`); the KV cache is scanned along.
  """
  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_hidden_layers: int
  num_attention_heads: int
  num_key_value_heads: int
  head_dim: int
  rms_norm_eps: float = 1e-6
  rope_theta: float = 10000.0
  rope_type: str = "default"
  rope_factor: float = 1.0
  tie_word_embeddings: bool = False
  max_position_embeddings: int = 32768
  remat_policy: str | None = None
  attention: str = "blocked"
  attention_batch_block: int = -1
  scan_layers: bool = False

  @classmethod
  def from_hf(cls, hf: Mapping[str, Any], **overrides) -> "Qwen2Config":
    """Reads a Hugging Face Qwen2 ``config.json`` dict; ``overrides`` set our own fields.

    RoPE settings live under ``rope_parameters`` (transformers >= 5) or in
    ``rope_theta`` + ``rope_scaling`` (older files); both are read.

    Raises:
      ValueError naming the field for a missing value or an unsupported feature.
    """
    def need(key):
      if hf.get(key) is None:
        raise ValueError(f"Qwen2 config: field {key!r} is missing")
      return hf[key]

    if hf.get("hidden_act", "silu") != "silu":
      raise ValueError(f"Qwen2 config: hidden_act={hf['hidden_act']!r} is not supported "
                       "(only 'silu')")
    layer_types = hf.get("layer_types") or []
    if "sliding_attention" in layer_types or (hf.get("use_sliding_window") and
                                              not layer_types):
      raise ValueError("Qwen2 config: use_sliding_window / sliding_attention layers are "
                       "not supported")

    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in SUPPORTED_ROPE_TYPES:
      field = "rope_parameters" if "rope_parameters" in hf else "rope_scaling"
      raise ValueError(f"Qwen2 config: {field} has rope_type {rope_type!r}, which is not "
                       f"supported (supported: {list(SUPPORTED_ROPE_TYPES)})")
    if rope.get("partial_rotary_factor", 1.0) != 1.0:
      raise ValueError("Qwen2 config: rope partial_rotary_factor != 1 is not supported")
    rope_theta = rope.get("rope_theta", hf.get("rope_theta", 10000.0))

    hidden, heads = need("hidden_size"), need("num_attention_heads")
    fields = dict(
        vocab_size=need("vocab_size"),
        hidden_size=hidden,
        intermediate_size=need("intermediate_size"),
        num_hidden_layers=need("num_hidden_layers"),
        num_attention_heads=heads,
        num_key_value_heads=hf.get("num_key_value_heads") or heads,
        head_dim=hf.get("head_dim") or hidden // heads,
        rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        rope_theta=float(rope_theta),
        rope_type=rope_type,
        rope_factor=float(rope.get("factor", 1.0)) if rope_type == "linear" else 1.0,
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        max_position_embeddings=int(hf.get("max_position_embeddings", 32768)),
    )
    fields.update(overrides)
    config = cls(**fields)
    config.validate()
    return config

  def validate(self):
    """Raises ValueError naming the field that does not make a valid model."""
    for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                 "num_attention_heads", "num_key_value_heads", "head_dim"):
      value = getattr(self, name)
      if not isinstance(value, int) or value < 1:
        raise ValueError(f"Qwen2Config.{name} must be a positive int, got {value!r}")
    if self.num_attention_heads % self.num_key_value_heads:
      raise ValueError(
          f"Qwen2Config: num_attention_heads={self.num_attention_heads} is not divisible by "
          f"num_key_value_heads={self.num_key_value_heads}")
    if self.head_dim % 2:
      raise ValueError(f"Qwen2Config.head_dim must be even for RoPE, got {self.head_dim}")
    if self.rope_type not in SUPPORTED_ROPE_TYPES:
      raise ValueError(f"Qwen2Config.rope_type {self.rope_type!r} is not supported "
                       f"(supported: {list(SUPPORTED_ROPE_TYPES)})")
    if not self.rope_factor > 0 or not self.rope_theta > 0:
      raise ValueError("Qwen2Config: rope_theta and rope_factor must be > 0")
    if self.rms_norm_eps <= 0:
      raise ValueError(f"Qwen2Config.rms_norm_eps must be > 0, got {self.rms_norm_eps}")
    if self.remat_policy is not None and self.remat_policy not in REMAT_POLICIES:
      raise ValueError(f"Qwen2Config.remat_policy {self.remat_policy!r} is not one of "
                       f"{[None, *REMAT_POLICIES]}")
    attention.check_implementation(self.attention, "Qwen2Config.attention")
    attention.check_batch_block(self.attention_batch_block, "Qwen2Config.attention_batch_block")
    if not isinstance(self.scan_layers, bool):
      raise ValueError(f"Qwen2Config.scan_layers must be a bool, got {self.scan_layers!r}")

  def linear_shapes(self) -> dict[str, tuple[int, int]]:
    """{linear layer name: (in, out)} for one decoder block (what LoRA can target)."""
    d, f = self.hidden_size, self.intermediate_size
    q, kv = self.num_attention_heads * self.head_dim, self.num_key_value_heads * self.head_dim
    return {"q_proj": (d, q), "k_proj": (d, kv), "v_proj": (d, kv), "o_proj": (q, d),
            "gate_proj": (d, f), "up_proj": (d, f), "down_proj": (f, d)}


# ---------------------------------------------------------------------------------------
# KV cache and outputs.


@struct.dataclass
class KVCache:
  """Preallocated keys/values for incremental decoding.

  Attributes:
    k: dtype[L, B, S_max, K, H], keys after RoPE.
    v: dtype[L, B, S_max, K, H].
    key_mask: bool[B, S_max], slot holds a real token.
    positions: int32[B], RoPE position of each row's next real token.
    index: int32[], next slot to write (shared by all rows).
  """
  k: jax.Array
  v: jax.Array
  key_mask: jax.Array
  positions: jax.Array
  index: jax.Array

  @property
  def max_length(self) -> int:
    return self.k.shape[2]


def init_cache(config: Qwen2Config, batch_size: int, max_length: int,
               dtype=jnp.float32) -> KVCache:
  """An empty cache for ``batch_size`` rows and ``max_length`` slots (prompt + new tokens).

  Writes past ``max_length`` are clamped by ``dynamic_update_slice``: size it for the
  longest prompt plus the most tokens to generate.
  """
  shape = (config.num_hidden_layers, batch_size, max_length, config.num_key_value_heads,
           config.head_dim)
  return KVCache(
      k=jnp.zeros(shape, dtype),
      v=jnp.zeros(shape, dtype),
      key_mask=jnp.zeros((batch_size, max_length), bool),
      positions=jnp.zeros((batch_size,), jnp.int32),
      index=jnp.zeros((), jnp.int32),
  )


@struct.dataclass
class Qwen2Output:
  """What a call with a cache returns.

  Attributes:
    logits: float32[B, S, V].
    cache: the cache with this call's tokens written.
  """
  logits: jax.Array
  cache: KVCache


# ---------------------------------------------------------------------------------------
# Rotary embeddings.


def rope_inv_freq(config: Qwen2Config) -> np.ndarray:
  """float32[H/2]: theta^(-2i/H), divided by the factor for "linear" scaling."""
  h = config.head_dim
  inv_freq = 1.0 / (config.rope_theta ** (np.arange(0, h, 2, dtype=np.float32) / h))
  return (inv_freq / config.rope_factor).astype(np.float32)


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: np.ndarray) -> jax.Array:
  """Rotates pairs (i, i + H/2) of each head by position * inv_freq (HF's rotate_half).

  Args:
    x: dtype[B, S, N, H].
    positions: int32[B, S].
    inv_freq: float32[H/2].
  Returns:
    dtype[B, S, N, H], computed in float32.
  """
  angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, S, H/2]
  angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]  # [B, S, 1, H]
  xf = x.astype(jnp.float32)
  x1, x2 = jnp.split(xf, 2, axis=-1)
  rotated = jnp.concatenate([-x2, x1], axis=-1)
  return (xf * jnp.cos(angles) + rotated * jnp.sin(angles)).astype(x.dtype)


# ---------------------------------------------------------------------------------------
# Layers.


class RMSNorm(nn.Module):
  """x / rms(x) * scale, computed in float32."""
  eps: float
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: dtype[..., D] -> dtype[..., D]."""
    scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
                       (x.shape[-1],), self.param_dtype)
    xf = x.astype(jnp.float32)
    xf = xf * jax.lax.rsqrt(jnp.mean(jnp.square(xf), axis=-1, keepdims=True) + self.eps)
    return (xf * scale.astype(jnp.float32)).astype(self.dtype)


def _linear(lora: LoraConfig | None, name: str, features: int, axes: tuple[str, str],
            use_bias: bool, dtype, param_dtype) -> LoraDense:
  """The linear layer ``name``, with an adapter when the LoRA config targets it."""
  lora = lora if lora is not None and name in lora.targets else None
  return LoraDense(features=features, kernel_axes=axes, use_bias=use_bias, lora=lora,
                   dtype=dtype, param_dtype=param_dtype, name=name)


class Attention(nn.Module):
  """Grouped-query self-attention with RoPE; q/k/v have biases, o_proj does not."""
  config: Qwen2Config
  lora: LoraConfig | None = None
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, positions, mask, kv_cache=None, index=None, deterministic=True):
    """Attends over this call's tokens, and the cache's if given.

    Args:
      x: dtype[B, S, D].
      positions: int32[B, S], RoPE positions.
      mask: bool[B, 1, S, T], query s may attend to key slot t.
      kv_cache: None, or this layer's (k, v), each [B, S_max, K, H].
      index: int32[], the slot of this call's first token (with a cache).
      deterministic: no dropout (LoRA) when True.
    Returns:
      (dtype[B, S, D], the updated (k, v) or None).
    """
    cfg = self.config
    n, k, h = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    dense = functools.partial(_linear, self.lora, dtype=self.dtype,
                              param_dtype=self.param_dtype)
    b, s, _ = x.shape

    q = dense("q_proj", n * h, ("embed", "heads"), True)(x, deterministic)
    key = dense("k_proj", k * h, ("embed", "kv_heads"), True)(x, deterministic)
    value = dense("v_proj", k * h, ("embed", "kv_heads"), True)(x, deterministic)
    q = checkpoint_name(q.reshape(b, s, n, h), "query_proj")
    key = checkpoint_name(key.reshape(b, s, k, h), "key_proj")
    value = checkpoint_name(value.reshape(b, s, k, h), "value_proj")
    q = nn.with_logical_constraint(
        q, ("activation_batch", "activation_length", "activation_heads", None))
    key = nn.with_logical_constraint(
        key, ("activation_batch", "activation_length", "activation_kv_heads", None))

    inv_freq = rope_inv_freq(cfg)
    q = apply_rope(q, positions, inv_freq)
    key = apply_rope(key, positions, inv_freq)

    if kv_cache is not None:
      cache_k, cache_v = kv_cache
      start = (0, index, 0, 0)
      cache_k = jax.lax.dynamic_update_slice(cache_k, key.astype(cache_k.dtype), start)
      cache_v = jax.lax.dynamic_update_slice(cache_v, value.astype(cache_v.dtype), start)
      kv_cache = (cache_k, cache_v)
      key, value = cache_k.astype(self.dtype), cache_v.astype(self.dtype)

    # GQA: the N query heads are grouped over the K kv heads (head n uses kv head n // G,
    # as HF's repeat_kv); scale 1/sqrt(H); softmax in float32.
    out = attention.dot_product_attention(
        q, key, value, mask=mask, implementation=cfg.attention,
        batch_block=cfg.attention_batch_block)  # [B, S, N, H]
    out = nn.with_logical_constraint(
        out, ("activation_batch", "activation_length", "activation_heads", None))
    out = dense("o_proj", cfg.hidden_size, ("heads", "embed"), False)(
        out.reshape(b, s, n * h), deterministic)
    return out, kv_cache


class MLP(nn.Module):
  """SwiGLU: down(silu(gate(x)) * up(x))."""
  config: Qwen2Config
  lora: LoraConfig | None = None
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
    """x: dtype[B, S, D] -> dtype[B, S, D]."""
    dense = functools.partial(_linear, self.lora, dtype=self.dtype,
                              param_dtype=self.param_dtype, use_bias=False)
    f = self.config.intermediate_size
    gate = dense("gate_proj", f, ("embed", "mlp"))(x, deterministic)
    up = dense("up_proj", f, ("embed", "mlp"))(x, deterministic)
    hidden = nn.with_logical_constraint(
        nn.silu(gate) * up, ("activation_batch", "activation_length", "activation_mlp"))
    return dense("down_proj", self.config.hidden_size, ("mlp", "embed"))(hidden, deterministic)


class DecoderLayer(nn.Module):
  """Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x))."""
  config: Qwen2Config
  lora: LoraConfig | None = None
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, positions, mask, kv_cache=None, index=None, deterministic=True):
    """x: dtype[B, S, D] -> (dtype[B, S, D], updated layer cache or None); see Attention."""
    norm = functools.partial(RMSNorm, self.config.rms_norm_eps, dtype=self.dtype,
                             param_dtype=self.param_dtype)
    kw = dict(config=self.config, lora=self.lora, dtype=self.dtype,
              param_dtype=self.param_dtype)
    h, kv_cache = Attention(**kw, name="self_attn")(
        norm(name="input_layernorm")(x), positions, mask, kv_cache, index, deterministic)
    x = nn.with_logical_constraint(x + h, BLOCK_AXES)
    h = MLP(**kw, name="mlp")(norm(name="post_attention_layernorm")(x), deterministic)
    return nn.with_logical_constraint(x + h, BLOCK_AXES), kv_cache


# ---------------------------------------------------------------------------------------
# The model.


def default_positions(mask: jax.Array, start: jax.Array | int = 0) -> jax.Array:
  """int32[B, S]: start + (number of real tokens before each one), as HF generate does.

  Args:
    mask: bool[B, S].
    start: int32[B] or scalar, position of the first real token of this call.
  """
  count = jnp.cumsum(mask.astype(jnp.int32), axis=1) - 1
  return jnp.asarray(start, jnp.int32).reshape(-1, 1) + jnp.maximum(count, 0)


def attention_mask_4d(key_mask: jax.Array, query_slots: jax.Array) -> jax.Array:
  """bool[B, 1, S, T]: key slot t is real and not after query slot s.

  Args:
    key_mask: bool[B, T].
    query_slots: int32[S], the slot of each query.
  """
  causal = jnp.arange(key_mask.shape[1])[None, :] <= query_slots[:, None]  # [S, T]
  return (key_mask[:, None, None, :] & causal[None, None])


class Qwen2(nn.Module):
  """Qwen2ForCausalLM.

  ``apply({"params": p}, input_ids)`` -> float32[B, S, V] logits; with ``cache=`` it
  returns ``Qwen2Output(logits, cache)``. With a ``lora`` config the targeted linear
  layers carry adapters in the "lora" collection: ``apply({"params": p, "lora": l}, ...)``.
  With ``new_token_ids`` the rows of those tokens are their own float32 parameter
  ``new_tokens/embedding`` [n, D] (`NewTokens`), written over the embedding's
  rows in the lookup and, when tied, in the LM head.

  Attributes:
    config: the architecture.
    dtype: compute dtype (norms, RoPE and softmax run in float32 regardless).
    param_dtype: storage dtype of the base weights.
    lora: adapters on ``lora.targets``, or None.
    new_token_ids: ids whose embedding rows are trained apart from the frozen table.
  """
  config: Qwen2Config
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  lora: LoraConfig | None = None
  new_token_ids: tuple[int, ...] = ()

  def setup(self):
    cfg = self.config
    cfg.validate()
    check_ids(self.new_token_ids, cfg.vocab_size, "Qwen2.new_token_ids")
    self.embed_tokens = nn.Embed(
        cfg.vocab_size, cfg.hidden_size, dtype=self.dtype, param_dtype=self.param_dtype,
        embedding_init=nn.with_logical_partitioning(nn.initializers.normal(0.02),
                                                    ("vocab", "embed")))
    block = DecoderLayer
    if cfg.remat_policy is not None:
      # Arg 6 (counting self) is `deterministic`, a Python bool.
      block = nn.remat(DecoderLayer, policy=REMAT_POLICIES[cfg.remat_policy],
                       static_argnums=(6,))
    kw = dict(config=cfg, lora=self.lora, dtype=self.dtype, param_dtype=self.param_dtype)
    if cfg.scan_layers:
      # Carry x; positions, mask, index and deterministic are the same for every layer;
      # the cache's (k, v) [L, ...] is sliced per layer and stacked back.
      self.layers = scan.scan_blocks(
          block, cfg.num_hidden_layers,
          in_axes=(nn.broadcast, nn.broadcast, 0, nn.broadcast, nn.broadcast))(**kw)
    else:
      self.layers = [block(**kw) for _ in range(cfg.num_hidden_layers)]
    self.norm = RMSNorm(cfg.rms_norm_eps, dtype=self.dtype, param_dtype=self.param_dtype)
    if not cfg.tie_word_embeddings:
      self.lm_head = nn.Dense(
          cfg.vocab_size, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype,
          kernel_init=nn.with_logical_partitioning(nn.initializers.normal(0.02),
                                                   ("embed", "vocab")))
    if self.new_token_ids:
      self.new_tokens = NewTokens(tuple(self.new_token_ids))

  def embed(self, input_ids: jax.Array) -> jax.Array:
    """int32[B, S] -> dtype[B, S, D] token embeddings (the LALM splices audio in here)."""
    x = self.embed_tokens(input_ids)
    if self.new_token_ids:
      rows = self.new_tokens(self.embed_tokens.embedding)
      x = embed_with_rows(x, input_ids, self.new_token_ids, rows)
    return x

  def hidden(self, input_ids=None, attention_mask=None, position_ids=None, *,
             inputs_embeds=None, cache: KVCache | None = None, deterministic: bool = True):
    """The final-norm hidden states, and the updated cache.

    Args:
      input_ids: int32[B, S], or None when ``inputs_embeds`` is given.
      attention_mask: [B, S], 1 for real tokens (default all real).
      position_ids: int32[B, S] (default ``default_positions`` from the mask, continuing
        from the cache's per-row positions).
      inputs_embeds: dtype[B, S, D] instead of ``input_ids``.
      cache: a ``KVCache``; this call's tokens go to slots ``cache.index ..``.
      deterministic: False enables LoRA dropout (needs a "dropout" rng).
    Returns:
      (dtype[B, S, D], the updated cache or None).
    """
    if (input_ids is None) == (inputs_embeds is None):
      raise ValueError("Qwen2: pass exactly one of input_ids and inputs_embeds")
    x = self.embed(input_ids) if inputs_embeds is None else inputs_embeds.astype(self.dtype)
    b, s, _ = x.shape
    mask = (jnp.ones((b, s), bool) if attention_mask is None
            else jnp.asarray(attention_mask).astype(bool))

    if cache is None:
      start, index, key_mask = 0, None, mask
      query_slots = jnp.arange(s)
    else:
      start, index = cache.positions, cache.index
      key_mask = jax.lax.dynamic_update_slice(cache.key_mask, mask, (0, index))
      query_slots = index + jnp.arange(s)
    positions = (default_positions(mask, start) if position_ids is None
                 else jnp.asarray(position_ids, jnp.int32))
    attn_mask = attention_mask_4d(key_mask, query_slots)
    x = nn.with_logical_constraint(x, BLOCK_AXES)

    new_k, new_v = (None, None) if cache is None else (cache.k, cache.v)
    if self.config.scan_layers:
      kv = None if cache is None else (new_k, new_v)
      x, kv = self.layers(x, positions, attn_mask, kv, index, deterministic)
      new_k, new_v = (None, None) if cache is None else kv
    else:
      for i, layer in enumerate(self.layers):
        layer_cache = None if cache is None else (new_k[i], new_v[i])
        x, layer_cache = layer(x, positions, attn_mask, layer_cache, index, deterministic)
        if cache is not None:
          new_k = new_k.at[i].set(layer_cache[0])
          new_v = new_v.at[i].set(layer_cache[1])
    x = self.norm(x)

    if cache is None:
      return x, None
    # Next position per row: one past the last real position (unchanged if none).
    last = jnp.max(jnp.where(mask, positions + 1, 0), axis=1)
    cache = KVCache(
        k=nn.with_logical_constraint(new_k, CACHE_AXES),
        v=nn.with_logical_constraint(new_v, CACHE_AXES),
        key_mask=key_mask,
        positions=jnp.maximum(cache.positions, last),
        index=cache.index + s,
    )
    return x, cache

  def logits(self, hidden: jax.Array) -> jax.Array:
    """dtype[..., D] -> float32[..., V], through the tied embedding or lm_head."""
    if self.config.tie_word_embeddings and self.new_token_ids:
      # The tied head is the embedding with the new tokens' rows written in (as peft
      # ties its trainable tokens to the LM head).
      table = write_rows(self.embed_tokens.embedding, self.new_token_ids,
                         self.new_tokens(self.embed_tokens.embedding))
      logits = jnp.einsum("...d,vd->...v", hidden.astype(self.dtype), table.astype(self.dtype))
    elif self.config.tie_word_embeddings:
      logits = self.embed_tokens.attend(hidden)
    else:
      logits = self.lm_head(hidden)
    logits = logits.astype(jnp.float32)
    if logits.ndim == 3:
      logits = nn.with_logical_constraint(
          logits, ("activation_batch", "activation_length", "activation_vocab"))
    return logits

  def __call__(self, input_ids=None, attention_mask=None, position_ids=None, *,
               inputs_embeds=None, cache: KVCache | None = None, deterministic: bool = True):
    """Logits float32[B, S, V]; with ``cache``, ``Qwen2Output(logits, cache)``.

    Arguments as in ``hidden``.
    """
    x, new_cache = self.hidden(input_ids, attention_mask, position_ids,
                               inputs_embeds=inputs_embeds, cache=cache,
                               deterministic=deterministic)
    logits = self.logits(x)
    return logits if cache is None else Qwen2Output(logits=logits, cache=new_cache)


# ---------------------------------------------------------------------------------------
# Greedy generation.


@struct.dataclass
class GenerateOutput:
  """tokens: int32[B, M] (pad after EOS and past the limit); lengths: int32[B] incl. EOS."""
  tokens: jax.Array
  lengths: jax.Array


def greedy_generate(module: Qwen2, variables: Mapping, input_ids: jax.Array,
                    attention_mask: jax.Array, max_new_tokens: jax.Array, eos_ids: jax.Array,
                    *, buffer_size: int, pad_id: int | jax.Array = 0) -> GenerateOutput:
  """Greedy decoding of up to ``max_new_tokens`` tokens per row (left or right padding).

  The request is checked before anything is traced; the loop is
  ``lalmjax.generation``'s (one jit per module, shapes and buffer size).

  Args:
    module: the Qwen2 module (static).
    variables: {"params": ..., ["lora": ...]}.
    input_ids: int32[B, S] prompts.
    attention_mask: [B, S], 1 for real prompt tokens.
    max_new_tokens: int32[], an array so that changing it does not recompile; at most
      ``buffer_size``. (Only a traced value, from an outer jit, cannot be checked: it is
      clipped to [0, buffer_size].)
    eos_ids: int32[E], tokens that end a row.
    buffer_size: M, static size of the output buffer (and of the cache beyond the prompt).
    pad_id: written after a row's EOS.
  Returns:
    GenerateOutput.
  Raises:
    ValueError when ``max_new_tokens`` is negative or more than ``buffer_size``, or the
    prompt plus ``buffer_size`` is longer than ``max_position_embeddings``.
  """
  _check_generate_request(module.config, np.shape(input_ids), max_new_tokens, buffer_size)
  from lalmjax import generation  # local: the decoding library sits above the models

  out = generation.generate_lm(module, variables, input_ids, attention_mask,
                               generation.DecodeConfig(beam_size=1, buffer_size=buffer_size),
                               max_new_tokens, eos_ids, pad_id)
  return GenerateOutput(tokens=out.tokens, lengths=out.lengths)


def _check_generate_request(config: Qwen2Config, prompt_shape, max_new_tokens,
                            buffer_size) -> None:
  """Raises ValueError for a request the output buffer or the context cannot hold."""
  if isinstance(buffer_size, bool) or not isinstance(buffer_size, (int, np.integer)) \
      or buffer_size < 1:
    raise ValueError(f"greedy_generate: buffer_size must be a static int >= 1, "
                     f"got {buffer_size!r}")
  if len(prompt_shape) != 2:
    raise ValueError(f"greedy_generate: input_ids must be [B, S], got shape {prompt_shape}")
  if not isinstance(max_new_tokens, jax.core.Tracer):
    limit = np.asarray(max_new_tokens)
    if limit.shape != () or not np.issubdtype(limit.dtype, np.integer):
      raise ValueError(f"greedy_generate: max_new_tokens must be a scalar int, got "
                       f"{max_new_tokens!r}")
    if not 0 <= int(limit) <= buffer_size:
      raise ValueError(f"greedy_generate: max_new_tokens={int(limit)} does not fit the "
                       f"output buffer: it must be in [0, buffer_size={buffer_size}]")
  total = prompt_shape[1] + buffer_size
  if total > config.max_position_embeddings:
    raise ValueError(f"greedy_generate: prompt length {prompt_shape[1]} + buffer_size "
                     f"{buffer_size} = {total} positions, more than the model's "
                     f"max_position_embeddings={config.max_position_embeddings}")
