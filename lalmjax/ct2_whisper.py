"""CTranslate2 Whisper exports (faster-whisper's ``model.bin``) -> Flax encoder params.

A CTranslate2 export is a folder with ``model.bin`` (all weights), ``config.json``
(decoding options only: alignment heads, language and suppressed token ids; no
architecture sizes) and ``tokenizer.json`` / ``vocabulary.txt``. ``model.bin`` is
little-endian, written by ``ctranslate2.specs.ModelSpec`` (binary version 6):

    uint32 binary version (6)
    string spec name ("WhisperSpec")        string = uint16 length incl. NUL, bytes, NUL
    uint32 spec revision (3 for Whisper)
    uint32 variable count, then per variable:
      string name, uint8 rank, uint32 dims[rank], uint8 dtype id, uint32 num_bytes, raw data
    uint32 alias count, then per alias: string alias, string variable name

Dtype ids: 0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16. Scalars (rank 0)
hold options: ``encoder/num_heads`` (int16), ``decoder/activation`` (int8), ... A
quantized export stores an integer ``weight`` with a float ``weight_scale``; only float
exports are read here.

The export may be split into ``model.bin.part1``, ``model.bin.part2``, ... (byte ranges
of one ``model.bin``, e.g. to fit a package index's size limit); the reader joins them
as if concatenated, so a tensor is a view of a memory map unless it straddles two parts,
and then only that tensor is copied.

The Whisper encoder's variables map onto `models.whisper.WhisperEncoder` as:

    encoder/conv{1,2}/weight [D, C, 3], bias     -> conv{1,2}/kernel [3, C, D], bias
    encoder/position_encodings/encodings [T, D]  -> embed_positions/embedding
    encoder/layer_i/self_attention/layer_norm/gamma, beta -> layers_i/self_attn_layer_norm
    encoder/layer_i/self_attention/linear_0 [3D, D] (fused q; k; v) -> self_attn/{q,k,v}_proj
    encoder/layer_i/self_attention/linear_1      -> self_attn/out_proj
    encoder/layer_i/ffn/layer_norm               -> layers_i/final_layer_norm
    encoder/layer_i/ffn/linear_{0,1}             -> layers_i/fc{1,2}
    encoder/layer_norm/gamma, beta               -> layer_norm/scale, bias

Linear weights are [out, in] as in torch (transposed for Flax). The fused bias holds a
k part (zeros from the converter) that Whisper does not have; it is dropped, which is
exact for any value: a key bias adds q.b to every logit of a query, and softmax ignores
a constant shift. Sizes come from the tensor shapes (conv1's weight gives D and the mel
bins), the head count from ``encoder/num_heads``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import struct

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import flax.linen as nn
from flax import traverse_util

from lalmjax import checkpoints
from lalmjax import hf_names
from lalmjax.checkpoints import CheckpointError

CT2_BINARY_VERSION = 6  # What ctranslate2 writes (CURRENT_BINARY_VERSION, 4.x).
# Index = dtype id (ctranslate2's DataType enum).
_CT2_DTYPES = (np.dtype(np.float32), np.dtype(np.int8), np.dtype(np.int16),
               np.dtype(np.int32), np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16))
_PART_RE = re.compile(r"^model\.bin\.part(\w+)$")


@dataclasses.dataclass(frozen=True)
class Ct2Variable:
  """Where one variable's data sit in the (joined) model.bin."""

  name: str
  shape: tuple[int, ...]
  dtype: np.dtype
  offset: int  # byte offset of the data in the joined file
  nbytes: int


def model_bin_files(folder: str) -> list[str]:
  """The files that make ``model.bin`` in ``folder``: itself, or its parts in order.

  Parts are ``model.bin.part<suffix>``: numeric suffixes sort as numbers and must be
  consecutive (part1, part2, ...); others sort as strings (split's partaa, partab).

  Raises:
    CheckpointError if there is neither, or a numbered part is missing.
  """
  single = os.path.join(folder, "model.bin")
  if os.path.isfile(single):
    return [single]
  if not os.path.isdir(folder):
    raise CheckpointError(f"{folder}: CTranslate2 model folder does not exist")
  suffixes = [m.group(1) for f in os.listdir(folder) if (m := _PART_RE.match(f))]
  if not suffixes:
    raise CheckpointError(f"{folder}: no model.bin (or model.bin.part1, part2, ...) in "
                          "this folder")
  if all(s.isdigit() for s in suffixes):
    numbers = sorted(int(s) for s in suffixes)
    start = 0 if numbers[0] == 0 else 1
    gaps = sorted(set(range(start, numbers[-1] + 1)) - set(numbers))
    if gaps:
      raise CheckpointError(f"{folder}: model.bin is split in parts, but "
                            f"model.bin.part{gaps[0]} is missing (found parts {numbers})")
    suffixes = [str(n) for n in numbers]
  else:
    suffixes = sorted(suffixes)
  return [os.path.join(folder, f"model.bin.part{s}") for s in suffixes]


class _JoinedBytes:
  """The byte concatenation of one or more files, each memory-mapped (read-only)."""

  def __init__(self, files: list[str]):
    self.files = files
    sizes = [os.path.getsize(f) for f in files]
    self.starts = np.cumsum([0] + sizes).tolist()  # part k holds [starts[k], starts[k+1])
    self.size = self.starts[-1]
    self._maps = [np.memmap(f, np.uint8, mode="r") if s else np.zeros(0, np.uint8)
                  for f, s in zip(files, sizes)]

  def read(self, offset: int, n: int) -> np.ndarray:
    """uint8[n] from ``offset``: a view when inside one part, else a joined copy."""
    pieces = []
    for k, part in enumerate(self._maps):
      lo, hi = max(offset, self.starts[k]), min(offset + n, self.starts[k + 1])
      if lo < hi:
        pieces.append(part[lo - self.starts[k]:hi - self.starts[k]])
    if len(pieces) == 1:
      return pieces[0]
    return np.concatenate(pieces) if pieces else np.zeros(0, np.uint8)

  def part_of(self, offset: int) -> str:
    """The file that holds byte ``offset`` (the last one past the end)."""
    for k, f in enumerate(self.files):
      if offset < self.starts[k + 1]:
        return f
    return self.files[-1]


class _Cursor:
  """Reads the header fields of model.bin in order; truncation is a CheckpointError."""

  def __init__(self, data: _JoinedBytes, label: str):
    self.data, self.label, self.offset = data, label, 0

  def take(self, n: int, what: str) -> bytes:
    if self.offset + n > self.data.size:
      raise CheckpointError(
          f"{self.label}: truncated: {what} needs bytes {self.offset}..{self.offset + n} "
          f"but the file has {self.data.size}" + _part_hint(self.data))
    out = bytes(self.data.read(self.offset, n))
    self.offset += n
    return out

  def uint(self, fmt: str, what: str) -> int:
    return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt), what))[0]

  def string(self, what: str) -> str:
    n = self.uint("H", what)
    raw = self.take(n, what)
    if n == 0 or raw[-1] != 0:
      raise CheckpointError(f"{self.label}: corrupt header: {what} at byte "
                            f"{self.offset - n} is not a NUL-terminated string")
    try:
      return raw[:-1].decode("utf-8")
    except UnicodeDecodeError as e:
      raise CheckpointError(f"{self.label}: corrupt header: {what} is not UTF-8 ({e})")


def _parts(data: _JoinedBytes) -> str:
  """" (joined from 2 parts: model.bin.part1, model.bin.part2)", or "" for a model.bin."""
  names = [os.path.basename(f) for f in data.files]
  if len(names) == 1 and not _PART_RE.match(names[0]):
    return ""
  return f" (joined from {len(names)} part{'s' * (len(names) > 1)}: {', '.join(names)})"


def _part_hint(data: _JoinedBytes) -> str:
  parts = _parts(data)
  return parts[:-1] + "; is a part missing?)" if parts else ""


class Ct2Reader:
  """Lazy, variable-at-a-time access to a CTranslate2 ``model.bin`` (or its parts).

  The same read interface as `checkpoints.SafetensorsReader` (``path``, ``keys``,
  ``in``, ``shape``, ``get``), so `checkpoints.load_params` fills a Flax tree from it.
  Aliases (e.g. ``decoder/projection/weight`` -> ``decoder/embeddings/weight``) are
  names too.

  Args:
    path: a folder holding ``model.bin`` or ``model.bin.part*``, or a model.bin file.

  Attributes:
    path: a label for messages (the model.bin file, or the folder and its parts).
    files: the files read, in order.
    binary_version, spec_name, spec_revision: from the header.
    aliases: alias -> variable name.
  """

  def __init__(self, path: str):
    if os.path.isfile(path):
      files = [path]
    elif os.path.isdir(path):
      files = model_bin_files(path)
    else:
      raise CheckpointError(f"{path}: CTranslate2 model path does not exist")
    self.files = files
    self._data = _JoinedBytes(files)
    self.path = files[0] if not _parts(self._data) else (
        os.path.join(os.path.dirname(files[0]), "model.bin") + _parts(self._data))
    self._variables: dict[str, Ct2Variable] = {}
    self.aliases: dict[str, str] = {}
    self._parse()

  def _parse(self):
    cur = _Cursor(self._data, self.path)
    self.binary_version = cur.uint("I", "the binary version")
    if self.binary_version != CT2_BINARY_VERSION:
      raise CheckpointError(
          f"{self.path}: CTranslate2 binary version {self.binary_version} is not supported "
          f"(this reader knows version {CT2_BINARY_VERSION}); is this a CTranslate2 model.bin?")
    self.spec_name = cur.string("the spec name")
    self.spec_revision = cur.uint("I", "the spec revision")
    count = cur.uint("I", "the variable count")
    previous = "the header"
    for i in range(count):
      where = f"variable #{i} (after {previous!r})"
      name = cur.string(f"the name of {where}")
      rank = cur.uint("B", f"the rank of {name!r}")
      shape = tuple(cur.uint("I", f"the dims of {name!r}") for _ in range(rank))
      dtype_id = cur.uint("B", f"the dtype of {name!r}")
      nbytes = cur.uint("I", f"the size of {name!r}")
      if dtype_id >= len(_CT2_DTYPES):
        raise CheckpointError(
            f"{self.path}: variable {name!r} has unknown dtype id {dtype_id} (known: "
            + ", ".join(f"{k} {d.name}" for k, d in enumerate(_CT2_DTYPES)) + ")")
      dtype = _CT2_DTYPES[dtype_id]
      want = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
      if nbytes != want:
        raise CheckpointError(f"{self.path}: variable {name!r} has {nbytes} bytes, but "
                              f"{dtype.name}{list(shape)} needs {want}")
      if cur.offset + nbytes > self._data.size:
        raise CheckpointError(
            f"{self._data.part_of(cur.offset)}: truncated: variable {name!r} ends at byte "
            f"{cur.offset + nbytes} but the file has {self._data.size}"
            + _part_hint(self._data))
      if name in self._variables:
        raise CheckpointError(f"{self.path}: variable {name!r} is stored twice")
      self._variables[name] = Ct2Variable(name, shape, dtype, cur.offset, nbytes)
      cur.offset += nbytes
      previous = name
    count = cur.uint("I", "the alias count")
    for i in range(count):
      alias = cur.string(f"alias #{i}")
      self.aliases[alias] = cur.string(f"the target of alias {alias!r}")
    for alias, target in self.aliases.items():
      if target not in self._variables:
        raise CheckpointError(f"{self.path}: alias {alias!r} points to {target!r}, "
                              "which is not a variable")
    if cur.offset != self._data.size:
      raise CheckpointError(
          f"{self.path}: {self._data.size - cur.offset} unexpected bytes after the last "
          f"alias (at byte {cur.offset})" + _part_hint(self._data))

  def variable(self, name: str) -> Ct2Variable:
    """The variable (or an alias's target) called ``name``."""
    name = self.aliases.get(name, name)
    if name not in self._variables:
      raise CheckpointError(f"{self.path}: no variable named {name!r}")
    return self._variables[name]

  def keys(self) -> list[str]:
    return sorted([*self._variables, *self.aliases])

  def __contains__(self, name: str) -> bool:
    return name in self._variables or name in self.aliases

  def shape(self, name: str) -> tuple[int, ...]:
    return self.variable(name).shape

  def dtype(self, name: str) -> np.dtype:
    return self.variable(name).dtype

  def get(self, name: str) -> np.ndarray:
    """One variable: a memory-mapped view (a copy if it straddles two parts)."""
    var = self.variable(name)
    raw = self._data.read(var.offset, var.nbytes)
    return raw.view(var.dtype).reshape(var.shape)


def read_ct2(path: str) -> dict[str, np.ndarray]:
  """Every variable (and alias) of a CTranslate2 model.bin, name -> array.

  Lazy: each array is a view of a memory map of the file (tensors that straddle two
  parts of a split model.bin are copied), so nothing is read until it is used.

  Args:
    path: a folder with ``model.bin`` or ``model.bin.part*``, or a model.bin file.
  """
  reader = Ct2Reader(path)
  return {name: reader.get(name) for name in reader.keys()}


def is_ct2_folder(path: str) -> bool:
  """Whether ``path`` is a CTranslate2 export: model.bin (or parts), no safetensors."""
  if not os.path.isdir(path):
    return False
  names = os.listdir(path)
  if "model.safetensors" in names or "model.safetensors.index.json" in names:
    return False
  return "model.bin" in names or any(_PART_RE.match(f) for f in names)


# ---------------------------------------------------------------------------------------
# Whisper encoder.


def encoder_config(reader: Ct2Reader, folder: str | None = None):
  """The `WhisperEncoderConfig` of a CTranslate2 Whisper export, from its tensor shapes.

  D and the mel bins come from ``encoder/conv1/weight`` [D, M, 3], the layer count from
  the ``encoder/layer_<i>/`` names, the MLP width from layer 0's ``ffn/linear_0``, the
  positions from ``encoder/position_encodings/encodings`` and the heads from
  ``encoder/num_heads``. A ``preprocessor_config.json`` beside model.bin, if any, must
  agree on the mel bins.
  """
  from lalmjax.models import whisper  # local: as in checkpoints, no model at import

  if reader.spec_name != "WhisperSpec":
    raise CheckpointError(f"{reader.path}: a CTranslate2 {reader.spec_name!r} model, not "
                          "a Whisper one ('WhisperSpec')")
  need = ("encoder/conv1/weight", "encoder/position_encodings/encodings",
          "encoder/layer_0/ffn/linear_0/weight", "encoder/num_heads")
  missing = [n for n in need if n not in reader]
  if missing:
    raise CheckpointError(f"{reader.path}: no Whisper encoder: missing {missing}")
  conv1 = reader.shape("encoder/conv1/weight")
  if len(conv1) != 3:
    raise CheckpointError(f"{reader.path}: 'encoder/conv1/weight' has shape {conv1}, "
                          "expected [d_model, num_mel_bins, 3]")
  d_model, num_mel_bins = conv1[0], conv1[1]
  layers = sorted({int(m.group(1)) for k in reader.keys()
                   if (m := re.match(r"^encoder/layer_(\d+)/", k))})
  if layers != list(range(len(layers))):
    raise CheckpointError(f"{reader.path}: encoder layers are not numbered 0..L-1 "
                          f"(found {layers})")
  heads = reader.get("encoder/num_heads")
  if heads.shape != () or heads.dtype.kind not in "iu":
    raise CheckpointError(f"{reader.path}: 'encoder/num_heads' is {heads.dtype.name}"
                          f"{list(heads.shape)}, expected an integer scalar")
  if folder is not None:
    _check_preprocessor(folder, num_mel_bins)
  config = whisper.WhisperEncoderConfig(
      num_mel_bins=num_mel_bins, d_model=d_model, encoder_layers=len(layers),
      encoder_attention_heads=int(heads),
      encoder_ffn_dim=reader.shape("encoder/layer_0/ffn/linear_0/weight")[0],
      max_source_positions=reader.shape("encoder/position_encodings/encodings")[0])
  try:
    config.validate()
  except ValueError as e:
    raise CheckpointError(f"{reader.path}: {e}") from e
  return config


def _check_preprocessor(folder: str, num_mel_bins: int):
  filename = os.path.join(folder, "preprocessor_config.json")
  if not os.path.exists(filename):
    return
  try:
    with open(filename) as f:
      feature_size = json.load(f).get("feature_size")
  except (json.JSONDecodeError, AttributeError) as e:
    raise CheckpointError(f"{filename}: not a JSON object ({e})")
  if feature_size is not None and feature_size != num_mel_bins:
    raise CheckpointError(f"{filename}: feature_size={feature_size}, but the encoder's "
                          f"conv1 takes {num_mel_bins} mel bins")


def _rows(x: np.ndarray, start: int, stop: int) -> np.ndarray:
  return x[start:stop]


# Flax module inside layers_<i> -> CTranslate2 scope inside encoder/layer_<i>.
_LAYER_SCOPES = {
    ("self_attn_layer_norm",): "self_attention/layer_norm",
    ("self_attn", "q_proj"): "self_attention/linear_0",
    ("self_attn", "k_proj"): "self_attention/linear_0",
    ("self_attn", "v_proj"): "self_attention/linear_0",
    ("self_attn", "out_proj"): "self_attention/linear_1",
    ("final_layer_norm",): "ffn/layer_norm",
    ("fc1",): "ffn/linear_0",
    ("fc2",): "ffn/linear_1",
}
_FUSED_QKV = {"q_proj": 0, "k_proj": 1, "v_proj": 2}  # thirds of the fused linear_0


def ct2_encoder_name(path: tuple[str, ...], d_model: int):
  """Flax param path of `WhisperEncoder` -> (CTranslate2 variable, transform or None).

  ``("layers_2", "self_attn", "v_proj", "kernel")`` ->
  ``"encoder/layer_2/self_attention/linear_0/weight"`` with rows [2D, 3D) transposed.
  """
  module, leaf = path[:-1], path[-1]
  transform = None
  if module in (("conv1",), ("conv2",)):
    scope = f"encoder/{module[0]}"
    if leaf == "kernel":
      return f"{scope}/weight", hf_names.conv1d_from_torch
  elif module == ("embed_positions",):
    return "encoder/position_encodings/encodings", None
  elif module == ("layer_norm",):
    scope = "encoder/layer_norm"
  else:
    m = re.match(r"^layers_(\d+)$", module[0])
    if not m or module[1:] not in _LAYER_SCOPES:
      raise CheckpointError(f"no CTranslate2 name for Whisper param {'/'.join(path)}")
    scope = f"encoder/layer_{m.group(1)}/{_LAYER_SCOPES[module[1:]]}"
    if module[-1] in _FUSED_QKV:
      third = _FUSED_QKV[module[-1]]
      transform = functools.partial(_rows, start=third * d_model, stop=(third + 1) * d_model)
  if leaf == "kernel":  # torch [out, in] -> flax [in, out]
    if transform is None:
      return f"{scope}/weight", np.transpose
    return f"{scope}/weight", lambda x: np.transpose(transform(x))
  if leaf == "scale":
    return f"{scope}/gamma", None
  if leaf == "bias":
    return f"{scope}/beta" if scope.endswith("layer_norm") else f"{scope}/bias", transform
  raise CheckpointError(f"no CTranslate2 name for Whisper param {'/'.join(path)}")


def _check_float(reader: Ct2Reader, names):
  """Rejects quantized (integer) weights, naming the file and the variable."""
  for name in sorted(set(names)):
    dtype = reader.dtype(name)
    if dtype.kind in "iu":
      scale = f", with {name + '_scale'!r}" if name + "_scale" in reader else ""
      raise CheckpointError(
          f"{reader.path}: variable {name!r} is {dtype.name} (a quantized export{scale}): "
          f"{dtype.name} quantized CTranslate2 models are not supported; convert with "
          "--quantization float16 (or float32, bfloat16)")


def load_ct2_whisper_encoder(path: str, dtype=jnp.float32, param_dtype=None,
                             remat: bool = False, shardings=None):
  """Loads the encoder of a CTranslate2 Whisper export (e.g. faster-whisper's).

  The same result as `checkpoints.load_whisper_encoder` on the Hugging Face folder the
  export came from (which dispatches here for a folder with model.bin and no
  safetensors). Decoder variables are never read.

  Args:
    path: folder with ``model.bin`` (or ``model.bin.part1``, ``part2``, ...).
    dtype: compute dtype of the returned module.
    param_dtype: storage dtype of the loaded parameters (default: ``dtype``); float16
      and bfloat16 exports cast to it (float16 -> float32 is exact).
    remat: rematerialise encoder blocks in the backward pass.
    shardings: optional pytree of shardings (as the params) to load straight into.

  Returns:
    (module, params): ``module.apply({"params": params}, mel)`` with ``mel``
    float32[B, n_mels, 3000] gives the last hidden state [B, 1500, d].

  Raises:
    CheckpointError naming the file and the variable that cannot be used (quantized
    weights, a missing or misshapen variable, a truncated file or a missing part).
  """
  from lalmjax.models import whisper  # local: as in checkpoints, no model at import

  param_dtype = dtype if param_dtype is None else param_dtype
  reader = Ct2Reader(path)
  config = encoder_config(reader, path if os.path.isdir(path) else os.path.dirname(path))
  module = whisper.WhisperEncoder(config, dtype=dtype, param_dtype=param_dtype, remat=remat)
  mel = jax.ShapeDtypeStruct((1, config.num_mel_bins, config.num_mel_frames), jnp.float32)
  expected = jax.eval_shape(module.init, jax.random.PRNGKey(0), mel)["params"]
  name = functools.partial(ct2_encoder_name, d_model=config.d_model)
  names = [name(p)[0] for p in traverse_util.flatten_dict(nn.unbox(expected))]
  _check_float(reader, [n for n in names if n in reader])
  params = checkpoints.load_params(
      reader, expected, name, param_dtype, shardings, "Whisper encoder",
      report_unused_under="encoder/", expected_unused=("encoder/num_heads",))
  return module, params
