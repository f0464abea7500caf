"""Hugging Face safetensors checkpoints <-> Flax parameter pytrees.

A checkpoint folder holds ``config.json`` and either ``model.safetensors`` or a sharded
``model.safetensors.index.json`` with its shard files. Tensors are read one at a time
through a memory map of the safetensors file (the format is an 8-byte header length, a
JSON header, then raw little-endian buffers), so the whole state dict is never held in
host RAM and no torch is needed at run time. bfloat16 is read through ``ml_dtypes``.

Conversion is declarative: the Flax module names its parameters after the Hugging Face
ones (``q_proj``, ``fc1``, ``layer_norm``), so an HF name follows from a Flax path by a
generic rule (``layers_3`` -> ``layers.3``; ``kernel`` -> ``weight`` transposed;
``scale`` -> ``weight``; ``embedding`` -> ``weight``), and each model lists only its
exceptions. The expected tree (names, shapes) comes from ``jax.eval_shape`` of the
module's init, so a checkpoint that does not fit the config fails with the tensor's
name, its shape and the expected one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from typing import Callable, Iterable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import traverse_util

from lalmjax import hf_names
from lalmjax.models import new_tokens

log = logging.getLogger(__name__)

_ST_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16,
    "BF16": ml_dtypes.bfloat16, "I64": np.int64, "I32": np.int32, "I16": np.int16,
    "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}


class CheckpointError(ValueError):
  """A checkpoint folder or tensor that does not fit what the config expects."""


class SafetensorsReader:
  """Lazy, tensor-at-a-time access to a single or sharded safetensors checkpoint.

  Args:
    path: a folder holding ``model.safetensors`` or ``model.safetensors.index.json``,
      or the path of one ``.safetensors`` file.
  """

  def __init__(self, path: str):
    self.path = path
    self._entries: dict[str, tuple[str, dict, int]] = {}  # name -> (file, meta, data start)
    if os.path.isdir(path):
      index = os.path.join(path, "model.safetensors.index.json")
      single = os.path.join(path, "model.safetensors")
      if os.path.exists(index):
        try:
          with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
          raise CheckpointError(f"{index}: not a safetensors index with a 'weight_map' ({e})")
        if not isinstance(weight_map, dict):
          raise CheckpointError(f"{index}: 'weight_map' is not a mapping of tensor -> shard")
        in_shard = {shard: self._add_file(os.path.join(path, shard))
                    for shard in sorted(set(weight_map.values()))}
        missing = sorted(f"{n!r} (in {shard})" for n, shard in weight_map.items()
                         if n not in in_shard[shard])
        if missing:
          raise CheckpointError(f"{index}: {len(missing)} tensor(s) listed but not found in "
                                f"their shards: {', '.join(missing[:5])}")
      elif os.path.exists(single):
        self._add_file(single)
      else:
        hint = (" (it has PyTorch pickles: re-save with save_pretrained(..., "
                "safe_serialization=True))"
                if any(f.startswith("pytorch_model") for f in os.listdir(path)) else "")
        raise CheckpointError(
            f"{path}: no model.safetensors or model.safetensors.index.json in this folder"
            + hint)
    elif os.path.isfile(path):
      self._add_file(path)
    else:
      raise CheckpointError(f"{path}: checkpoint path does not exist")

  def _add_file(self, filename: str) -> set[str]:
    """Reads and checks one file's header; returns the tensor names it holds."""
    if not os.path.exists(filename):
      raise CheckpointError(f"{filename}: shard file missing")
    size = os.path.getsize(filename)
    with open(filename, "rb") as f:
      head = f.read(8)
      if len(head) != 8:
        raise CheckpointError(f"{filename}: empty or truncated safetensors file")
      n = int.from_bytes(head, "little")
      if n <= 0 or 8 + n > size:
        raise CheckpointError(f"{filename}: corrupt safetensors header (length {n})")
      try:
        header = json.loads(f.read(n))
      except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{filename}: corrupt safetensors header ({e})")
    if not isinstance(header, dict):
      raise CheckpointError(f"{filename}: corrupt safetensors header (not a JSON object)")
    names = set()
    for name, meta in header.items():
      if name == "__metadata__":
        continue
      _check_entry(filename, name, meta, 8 + n, size)
      self._entries[name] = (filename, meta, 8 + n)
      names.add(name)
    return names

  def keys(self) -> list[str]:
    return sorted(self._entries)

  def __contains__(self, name: str) -> bool:
    return name in self._entries

  def shape(self, name: str) -> tuple[int, ...]:
    return tuple(self._entries[name][1]["shape"])

  def get(self, name: str) -> np.ndarray:
    """Reads one tensor (a memory-mapped view; copy it before the file goes away)."""
    if name not in self._entries:
      raise CheckpointError(f"{self.path}: no tensor named {name!r}")
    filename, meta, start = self._entries[name]
    begin, _ = meta["data_offsets"]
    dtype = np.dtype(_ST_DTYPES[meta["dtype"]])
    shape = tuple(meta["shape"])
    if 0 in shape:
      return np.zeros(shape, dtype)
    return np.memmap(filename, dtype=dtype, mode="r", offset=start + begin, shape=shape)


def _check_entry(filename: str, name: str, meta, data_start: int, size: int):
  """Raises CheckpointError unless a header entry describes a readable tensor.

  ``data_start`` is where the buffers begin (offsets count from there); ``size`` is the
  file's size in bytes.
  """
  if not isinstance(meta, dict):
    raise CheckpointError(f"{filename}: tensor {name!r} has a malformed header entry {meta!r}")
  if meta.get("dtype") not in _ST_DTYPES:
    raise CheckpointError(f"{filename}: tensor {name!r} has unsupported dtype "
                          f"{meta.get('dtype')!r} (supported: {sorted(_ST_DTYPES)})")
  shape = meta.get("shape")
  if not (isinstance(shape, list) and
          all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
    raise CheckpointError(f"{filename}: tensor {name!r} has bad shape {shape!r}")
  offsets = meta.get("data_offsets")
  if not (isinstance(offsets, list) and len(offsets) == 2 and
          all(isinstance(o, int) and not isinstance(o, bool) for o in offsets) and
          0 <= offsets[0] <= offsets[1]):
    raise CheckpointError(f"{filename}: tensor {name!r} has bad data_offsets {offsets!r}")
  nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(_ST_DTYPES[meta["dtype"]]).itemsize
  if offsets[1] - offsets[0] != nbytes:
    raise CheckpointError(f"{filename}: tensor {name!r} has data_offsets {offsets} "
                          f"({offsets[1] - offsets[0]} bytes), but {meta['dtype']}{shape} "
                          f"needs {nbytes}")
  if data_start + offsets[1] > size:
    raise CheckpointError(f"{filename}: truncated, tensor {name!r} ends at byte "
                          f"{data_start + offsets[1]} but the file has {size}")


def read_config(path: str) -> dict:
  """Reads ``config.json`` of a local Hugging Face folder, with a clear error."""
  filename = os.path.join(path, "config.json")
  if not os.path.isdir(path):
    raise CheckpointError(f"{path}: checkpoint folder does not exist")
  if not os.path.exists(filename):
    raise CheckpointError(f"{filename}: missing (a Hugging Face folder needs config.json)")
  try:
    with open(filename) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise CheckpointError(f"{filename}: not valid JSON ({e})")


# ---------------------------------------------------------------------------------------
# Flax path <-> HF name: the generic rule lives in hf_names (the models use it too).

Transform = hf_names.Transform
_transpose = hf_names._transpose  # pylint: disable=protected-access
conv1d_from_torch = hf_names.conv1d_from_torch
default_hf_name = hf_names.default_hf_name


def load_params(
    reader: SafetensorsReader,
    expected: Mapping,
    hf_name: Callable[[tuple[str, ...]], tuple[str, Transform | None]],
    dtype=jnp.float32,
    shardings=None,
    what: str = "checkpoint",
    report_unused_under: str | None = None,
    expected_unused: Iterable[str] = (),
) -> dict:
  """Fills the tree of ``expected`` shapes with tensors from ``reader``.

  Args:
    reader: the checkpoint.
    expected: a pytree of ``jax.ShapeDtypeStruct`` (from ``jax.eval_shape`` of init; boxed
      logical-partitioning metadata is unboxed here).
    hf_name: maps a Flax path to (HF tensor name, transform or None).
    dtype: target dtype of every loaded array.
    shardings: optional pytree (same structure) of ``jax.sharding.Sharding``; each tensor is
      placed straight into its sharding.
    what: a label for error and log messages.
    report_unused_under: if set, checkpoint tensors whose names start with this prefix
      and that no parameter used are logged (a warning, not an error: e.g. a checkpoint
      with more layers than its config).
    expected_unused: names never reported (e.g. a tied ``lm_head.weight``).

  Returns:
    The parameter tree (nested dicts of ``jax.Array``).

  Raises:
    CheckpointError naming each missing tensor, or every tensor whose shape does not
    fit the config.
  """
  flat = traverse_util.flatten_dict(nn.unbox(expected))
  flat_shardings = (traverse_util.flatten_dict(nn.unbox(shardings))
                    if shardings is not None else {})
  names = {path: hf_name(path) for path in flat}
  missing = [n for n, _ in names.values() if n not in reader]
  if missing:
    raise CheckpointError(
        f"{reader.path}: {what} is missing {len(missing)} tensor(s) the config needs, "
        f"e.g. {missing[:8]}")
  # Check every shape from the headers before reading any data, and report them all.
  mismatched = []
  for path, spec in flat.items():
    name, transform = names[path]
    shape = _transformed_shape(transform, reader.shape(name))
    if tuple(shape) != tuple(spec.shape):
      mismatched.append(f"{name!r} has shape {reader.shape(name)} (-> {tuple(shape)} for "
                        f"param {'/'.join(path)}), the config expects {tuple(spec.shape)}")
  if mismatched:
    raise CheckpointError(
        f"{reader.path}: {len(mismatched)} tensor(s) of the {what} do not fit the config: "
        + "; ".join(mismatched[:6]))
  out = {}
  for path, spec in flat.items():
    name, transform = names[path]
    array = reader.get(name)
    if transform is not None:
      array = transform(array)
    array = np.asarray(array).astype(dtype)
    sharding = flat_shardings.get(path)
    out[path] = jax.device_put(array, sharding) if sharding is not None else jnp.asarray(array)
  if report_unused_under is not None:
    used = {n for n, _ in names.values()} | set(expected_unused)
    extra = [k for k in reader.keys() if k.startswith(report_unused_under) and k not in used]
    if extra:
      log.warning("%s: %d %s tensors not used, e.g. %s", reader.path, len(extra), what,
                  extra[:5])
  return traverse_util.unflatten_dict(out)


def _transformed_shape(transform: Transform | None, shape: tuple[int, ...]) -> tuple[int, ...]:
  """The shape a tensor of `shape` has after `transform`, without reading its data."""
  if transform is None:
    return tuple(shape)
  if hasattr(transform, "output_shape"):  # e.g. GrowRows: more rows than it reads
    return tuple(transform.output_shape(shape))
  # A zero-stride stand-in: the transform's output shape without touching the data.
  return tuple(transform(np.broadcast_to(np.zeros((), np.float32), shape)).shape)


@dataclasses.dataclass(frozen=True)
class GrowRows:
  """Transform: a token matrix [V, D] (embedding or LM head, torch layout) grown to
  [size, D] with mean rows (`new_tokens.pad_rows`), then `then` (e.g. a transpose)."""

  size: int
  then: Transform | None = None

  def __call__(self, x: np.ndarray) -> np.ndarray:
    x = new_tokens.pad_rows(x, self.size)
    return x if self.then is None else self.then(x)

  def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
    return _transformed_shape(self.then, (self.size,) + tuple(shape[1:]))


# ---------------------------------------------------------------------------------------
# Whisper encoder.

_WHISPER_PREFIXES = ("model.encoder.", "encoder.", "")  # full model, WhisperModel, bare encoder


def _whisper_encoder_prefix(reader: SafetensorsReader) -> str:
  for prefix in _WHISPER_PREFIXES:
    if prefix + "conv1.weight" in reader:
      return prefix
  raise CheckpointError(
      f"{reader.path}: no Whisper encoder found (looked for "
      f"{[p + 'conv1.weight' for p in _WHISPER_PREFIXES]})")


def whisper_encoder_config(path: str):
  """The `WhisperEncoderConfig` of a Whisper folder: Hugging Face (config.json) or a
  CTranslate2 export (from its tensor shapes, `ct2_whisper.encoder_config`)."""
  from lalmjax import ct2_whisper  # local: it imports this module
  from lalmjax.models import whisper  # local: checkpoints must not import every model

  if ct2_whisper.is_ct2_folder(path):
    return ct2_whisper.encoder_config(ct2_whisper.Ct2Reader(path), path)
  return whisper.WhisperEncoderConfig.from_hf(read_config(path))


def load_whisper_encoder(path: str, dtype=jnp.float32, param_dtype=None, remat: bool = False,
                         shardings=None, scan_layers: bool = False):
  """Loads the encoder of a local Hugging Face (or CTranslate2) Whisper checkpoint.

  Accepts a full ``WhisperForConditionalGeneration`` (``model.encoder.*``), a
  ``WhisperModel`` (``encoder.*``) or a bare ``WhisperEncoder`` folder. Decoder tensors
  are never read. A CTranslate2 export (model.bin, no safetensors: faster-whisper's
  format) goes to `ct2_whisper.load_ct2_whisper_encoder`.

  Args:
    path: folder with config.json and model.safetensors (or a sharded index), or a
      CTranslate2 export folder.
    dtype: compute dtype of the returned module.
    param_dtype: storage dtype of the loaded parameters (default: ``dtype``).
    remat: rematerialise encoder blocks in the backward pass.
    shardings: optional pytree of shardings (as the params) to load straight into.
    scan_layers: a module whose blocks run under nn.scan; the per-layer tensors are
      stacked into ``layers/...`` [L, ...] (`models.scan.stack_layers`).

  Returns:
    (module, params): ``module.apply({"params": params}, mel)`` with ``mel``
    float32[B, n_mels, 3000] gives the last hidden state [B, 1500, d].
  """
  from lalmjax import ct2_whisper  # local: it imports this module
  from lalmjax.models import scan, whisper  # local: checkpoints must not import every model

  if scan_layers:
    config = whisper_encoder_config(path)
    module, params = load_whisper_encoder(
        path, dtype, param_dtype, remat,
        scan.unstack_shardings(shardings, config.encoder_layers))
    module = module.clone(config=dataclasses.replace(module.config, scan_layers=True))
    return module, scan.stack_layers(params, shardings, consume=True)
  if ct2_whisper.is_ct2_folder(path):
    return ct2_whisper.load_ct2_whisper_encoder(path, dtype, param_dtype, remat, shardings)
  param_dtype = dtype if param_dtype is None else param_dtype
  config = whisper.WhisperEncoderConfig.from_hf(read_config(path))
  module = whisper.WhisperEncoder(config, dtype=dtype, param_dtype=param_dtype, remat=remat)
  reader = SafetensorsReader(path)
  prefix = _whisper_encoder_prefix(reader)

  def hf_name(p):
    name, transform = default_hf_name(p)
    if p[0] in ("conv1", "conv2") and p[-1] == "kernel":
      transform = conv1d_from_torch
    return prefix + name, transform

  mel = jax.ShapeDtypeStruct((1, config.num_mel_bins, config.num_mel_frames), jnp.float32)
  expected = jax.eval_shape(module.init, jax.random.PRNGKey(0), mel)["params"]
  params = load_params(reader, expected, hf_name, param_dtype, shardings, "Whisper encoder",
                       report_unused_under=prefix)
  return module, params


# ---------------------------------------------------------------------------------------
# Qwen2.

def _qwen2_prefix(reader: SafetensorsReader) -> str:
  """"model." for Qwen2ForCausalLM, "" for a bare Qwen2Model."""
  for prefix in ("model.", ""):
    if prefix + "embed_tokens.weight" in reader:
      return prefix
  raise CheckpointError(f"{reader.path}: no Qwen2 model found (looked for "
                        "'model.embed_tokens.weight' and 'embed_tokens.weight')")


def load_qwen2(path: str, dtype=jnp.float32, param_dtype=None, lora_config=None,
               remat_policy: str | None = None, shardings=None, vocab_size: int | None = None,
               new_token_ids: Sequence[int] = (), scan_layers: bool = False):
  """Loads a local Hugging Face Qwen2 checkpoint (single file or sharded index).

  Accepts ``Qwen2ForCausalLM`` (``model.*`` + ``lm_head.weight``) and a bare
  ``Qwen2Model`` (no prefix; its config must tie the LM head to the embedding). With
  ``tie_word_embeddings`` there is no lm_head param. A tied config whose checkpoint also
  stores an ``lm_head.weight`` is treated as transformers treats it: a stored head equal
  to the embedding is ignored (the model stays tied); a different one is loaded as an
  untied head (``module.config.tie_word_embeddings`` is then False), with a warning.

  A larger ``vocab_size`` grows the vocabulary (`models.new_tokens`): the embedding and
  an untied LM head get rows set to the mean of the checkpoint's, each tensor padded as
  it is read; nothing else changes, so old tokens keep their logits.

  Args:
    path: folder with config.json and model.safetensors or model.safetensors.index.json.
    dtype: compute dtype of the module.
    param_dtype: storage dtype of the loaded parameters (default: ``dtype``).
    lora_config: a ``lora.LoraConfig`` to give the module adapters; the lora tree is not
      loaded here (``lora.init_lora`` makes one).
    remat_policy: None or a name in ``qwen2.REMAT_POLICIES``.
    shardings: optional pytree of shardings (as the params) to load straight into.
    vocab_size: rows of the model's vocabulary, at least the checkpoint's (None: the
      checkpoint's).
    new_token_ids: tokens whose rows train apart from the frozen embedding; their
      ``new_tokens/embedding`` param starts as a float32 copy of the loaded rows.
    scan_layers: a module whose blocks run under nn.scan; the per-layer tensors are
      stacked into ``layers/...`` [L, ...] (`models.scan.stack_layers`).

  Returns:
    (module, params): ``module.apply({"params": params}, input_ids)`` with int32 [B, S]
    gives float32 logits [B, S, V].

  Raises:
    CheckpointError naming the file, field or tensor that does not fit.
  """
  from lalmjax.models import qwen2, scan  # local: checkpoints must not import every model

  if scan_layers:
    layers = int(read_config(path).get("num_hidden_layers") or 0)  # 0: from_hf says why
    module, params = load_qwen2(path, dtype, param_dtype, lora_config, remat_policy,
                                scan.unstack_shardings(shardings, layers), vocab_size,
                                new_token_ids)
    module = module.clone(config=dataclasses.replace(module.config, scan_layers=True))
    return module, scan.stack_layers(params, shardings, consume=True)
  param_dtype = dtype if param_dtype is None else param_dtype
  hf_config = read_config(path)
  try:
    config = qwen2.Qwen2Config.from_hf(hf_config, remat_policy=remat_policy)
  except (ValueError, TypeError) as e:
    raise CheckpointError(f"{os.path.join(path, 'config.json')}: {e}") from e
  stored_vocab = config.vocab_size
  if vocab_size is not None and vocab_size < stored_vocab:
    raise CheckpointError(f"{path}: vocab_size={vocab_size} is smaller than the "
                          f"checkpoint's {stored_vocab} rows (a vocabulary only grows)")
  if vocab_size is not None and vocab_size > stored_vocab:
    log.info("%s: vocabulary grown from %d to %d rows (mean rows)", path, stored_vocab,
             vocab_size)
    config = dataclasses.replace(config, vocab_size=vocab_size)
  reader = SafetensorsReader(path)
  prefix = _qwen2_prefix(reader)
  if not config.tie_word_embeddings and "lm_head.weight" not in reader:
    kind = "a bare Qwen2Model" if prefix == "" else "a Qwen2 checkpoint"
    raise CheckpointError(f"{path}: {kind} without 'lm_head.weight', but config.json has "
                          "tie_word_embeddings=false: there is no LM head to load")
  if (config.tie_word_embeddings and "lm_head.weight" in reader and
      not _same_tensor(reader, "lm_head.weight", prefix + "embed_tokens.weight")):
    log.warning("%s: config.json has tie_word_embeddings=true, but the checkpoint stores an "
                "lm_head.weight that differs from the embedding; loading it as an untied "
                "LM head, as transformers does (set tie_word_embeddings=false in "
                "config.json to silence this)", path)
    config = dataclasses.replace(config, tie_word_embeddings=False)
  try:
    module = qwen2.Qwen2(config, dtype=dtype, param_dtype=param_dtype, lora=lora_config,
                         new_token_ids=tuple(int(i) for i in new_token_ids))
    new_tokens.check_ids(module.new_token_ids, config.vocab_size, "new_token_ids")
  except ValueError as e:
    raise CheckpointError(f"{path}: {e}") from e

  def hf_name(p):
    name, transform = default_hf_name(p)
    if config.vocab_size != stored_vocab and p in (("embed_tokens", "embedding"),
                                                    ("lm_head", "kernel")):
      transform = GrowRows(config.vocab_size, then=transform)  # grown in torch layout
    return (name if p[0] == "lm_head" else prefix + name), transform

  ids = jax.ShapeDtypeStruct((1, 1), jnp.int32)
  expected = dict(jax.eval_shape(module.init, jax.random.PRNGKey(0), ids)["params"])
  expected.pop("new_tokens", None)  # no checkpoint holds them: copied below
  shardings = dict(shardings) if shardings is not None else None
  rows_sharding = shardings.pop("new_tokens", None) if shardings is not None else None
  # Still tied here means a stored lm_head.weight (if any) equals the embedding.
  params = load_params(reader, expected, hf_name, param_dtype, shardings, "Qwen2",
                       report_unused_under="", expected_unused=("lm_head.weight",))
  if module.new_token_ids:
    ids = np.asarray(module.new_token_ids, np.int32)
    placed = {} if rows_sharding is None else {"out_shardings": rows_sharding["embedding"]}
    copy = jax.jit(lambda table: table[ids].astype(jnp.float32), **placed)
    params["new_tokens"] = {"embedding": copy(params["embed_tokens"]["embedding"])}
  return module, params


def _same_tensor(reader: SafetensorsReader, a: str, b: str, rows: int = 8192) -> bool:
  """Whether tensors ``a`` and ``b`` hold equal values, read a block of rows at a time."""
  if reader.shape(a) != reader.shape(b):
    return False
  x, y = reader.get(a), reader.get(b)
  if x.ndim == 0:
    return bool(np.asarray(x) == np.asarray(y))
  return all(np.array_equal(np.asarray(x[i:i + rows], np.float32),
                            np.asarray(y[i:i + rows], np.float32))
             for i in range(0, x.shape[0], rows))


# ---------------------------------------------------------------------------------------
# The assembled LALM.


def load_lalm(encoder_path: str, llm_path: str, audio_token_id: int, *,
              tokenizer_size: int | None = None, dtype=jnp.float32, param_dtype=None, rng=None,
              encoder_remat: bool = False, scan_layers: bool = False, **lalm_options):
  """Pretrained Whisper encoder + Qwen2 from local folders; projector and LoRA initialised.

  The pretrained parts load first; then only what no checkpoint holds (the projector and
  the LoRA adapters) is initialised, inside one jit whose unused random base weights XLA
  drops, so no full-size random LLM is ever built.

  Args:
    encoder_path: a Whisper folder (see `load_whisper_encoder`).
    llm_path: a Qwen2 folder (see `load_qwen2`).
    audio_token_id: the tokenizer's <|AUDIO|> id (`prompts.PromptBuilder.audio_token_id`).
    tokenizer_size: ``len(tokenizer)``; when its ids reach past the LLM's embedding, the
      vocabulary grows to fit (`models.new_tokens.grown_vocab_size`, mean rows).
    dtype, param_dtype: compute / storage dtype of encoder and LLM.
    rng: key for the new parts (default PRNGKey(0)).
    encoder_remat: rematerialise encoder blocks.
    scan_layers: encoder and LLM blocks under nn.scan (params and lora stacked).
    **lalm_options: the other `LALMConfig` fields (lora, method, factor, method_options,
      projector, projector_hidden, new_token_ids — e.g. `prompts.new_token_ids`, whose
      rows then train: a float32 copy of the loaded rows).

  Returns:
    (module, variables) with variables = {"params": {"encoder", "projector", "llm"},
    "lora": {"llm": ...}} ("lora" absent when lora=None).
  """
  from lalmjax.models import lalm  # local: checkpoints must not import every model

  param_dtype = dtype if param_dtype is None else param_dtype
  enc_module, enc_params = load_whisper_encoder(encoder_path, dtype, param_dtype,
                                                scan_layers=scan_layers)
  stored_vocab = read_config(llm_path).get("vocab_size")
  vocab_size = (new_tokens.grown_vocab_size(stored_vocab, tokenizer_size)
                if tokenizer_size is not None and isinstance(stored_vocab, int) else None)
  llm_module, llm_params = load_qwen2(llm_path, dtype, param_dtype, vocab_size=vocab_size,
                                      new_token_ids=lalm_options.get("new_token_ids", ()),
                                      scan_layers=scan_layers)
  try:
    config = lalm.LALMConfig(enc_module.config, llm_module.config, audio_token_id,
                             **lalm_options)
  except ValueError as e:
    hint = (" (pass tokenizer_size=len(tokenizer) to grow the vocabulary to fit)"
            if tokenizer_size is None and audio_token_id >= llm_module.config.vocab_size
            else "")
    raise CheckpointError(f"{llm_path}: {e}{hint}") from e
  module = lalm.LALM(config, dtype=dtype, param_dtype=param_dtype, encoder_remat=encoder_remat)

  def init_new_parts(key):
    variables = lalm.init_variables(module, key)
    return variables["params"]["projector"], variables.get("lora")

  projector, lora = jax.jit(init_new_parts)(jax.random.PRNGKey(0) if rng is None else rng)
  variables = {"params": {"encoder": enc_params, "projector": projector, "llm": llm_params}}
  if lora is not None:
    variables["lora"] = lora
  return module, variables
