"""lalmjax.checkpoints: safetensors reading, sharded indices, prefixes and error paths."""

import json
import re
import os

import jax
import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers

from lalmjax import checkpoints
from test_whisper import rel_err, reference_encoder, save_tiny_whisper

MEL = np.random.default_rng(0).standard_normal((1, 80, 200)).astype(np.float32)


def _encoder_out(path):
  module, params = checkpoints.load_whisper_encoder(str(path))
  return np.asarray(module.apply({"params": params}, MEL))


def test_sharded_index_loads_like_single_file(tmp_path):
  model = save_tiny_whisper(tmp_path / "single", positions=100)
  model.save_pretrained(str(tmp_path / "sharded"), max_shard_size="40KB")
  files = os.listdir(tmp_path / "sharded")
  assert "model.safetensors.index.json" in files
  assert sum(f.endswith(".safetensors") for f in files) > 2
  np.testing.assert_array_equal(_encoder_out(tmp_path / "sharded"),
                                _encoder_out(tmp_path / "single"))
  assert rel_err(_encoder_out(tmp_path / "sharded"), reference_encoder(model, MEL)) <= 1e-4


@pytest.mark.parametrize("kind", ["WhisperModel", "WhisperEncoder"])
def test_bare_model_and_bare_encoder_folders(tmp_path, kind):
  full = save_tiny_whisper(tmp_path / "full", positions=100)
  part = full.model if kind == "WhisperModel" else full.model.encoder
  part.save_pretrained(str(tmp_path / kind))
  prefix = "encoder." if kind == "WhisperModel" else ""
  assert prefix + "conv1.weight" in checkpoints.SafetensorsReader(str(tmp_path / kind))
  np.testing.assert_array_equal(_encoder_out(tmp_path / kind), _encoder_out(tmp_path / "full"))


def test_reader_handles_bf16_and_fp16(tmp_path):
  x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
  torch_bf16 = torch.from_numpy(x).to(torch.bfloat16)
  import safetensors.torch
  safetensors.torch.save_file({"a": torch_bf16, "b": torch.from_numpy(x).half()},
                              str(tmp_path / "model.safetensors"))
  reader = checkpoints.SafetensorsReader(str(tmp_path))
  assert reader.get("a").dtype == ml_dtypes.bfloat16
  np.testing.assert_array_equal(reader.get("a").astype(np.float32),
                                torch_bf16.float().numpy())
  np.testing.assert_array_equal(reader.get("b"), x.astype(np.float16))


def test_shape_mismatch_names_the_tensor(tmp_path):
  save_tiny_whisper(tmp_path, positions=100)
  cfg = json.load(open(tmp_path / "config.json"))
  cfg["encoder_ffn_dim"] = 96  # the checkpoint has 128
  json.dump(cfg, open(tmp_path / "config.json", "w"))
  with pytest.raises(checkpoints.CheckpointError,
                     match=r"do not fit.*'model\.encoder\.layers\.0\.fc1\.weight' has shape "
                     r"\(128, 64\) \(-> \(64, 128\) for param layers_0/fc1/kernel\), "
                     r"the config expects \(64, 96\)"):
    checkpoints.load_whisper_encoder(str(tmp_path))


def test_missing_tensor_is_named(tmp_path):
  save_tiny_whisper(tmp_path, positions=100)
  cfg = json.load(open(tmp_path / "config.json"))
  cfg["encoder_layers"] = 3  # the checkpoint has 2
  json.dump(cfg, open(tmp_path / "config.json", "w"))
  with pytest.raises(checkpoints.CheckpointError, match=r"missing.*model\.encoder\.layers\.2\."):
    checkpoints.load_whisper_encoder(str(tmp_path))


def test_missing_folder_config_and_weights(tmp_path):
  with pytest.raises(checkpoints.CheckpointError, match="does not exist"):
    checkpoints.load_whisper_encoder(str(tmp_path / "nope"))
  with pytest.raises(checkpoints.CheckpointError, match="config.json: missing"):
    checkpoints.load_whisper_encoder(str(tmp_path))
  save_tiny_whisper(tmp_path, positions=100)
  os.remove(tmp_path / "model.safetensors")
  with pytest.raises(checkpoints.CheckpointError, match="no model.safetensors"):
    checkpoints.load_whisper_encoder(str(tmp_path))
  (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
  with pytest.raises(checkpoints.CheckpointError, match="PyTorch pickles"):
    checkpoints.load_whisper_encoder(str(tmp_path))


def test_corrupt_and_empty_safetensors(tmp_path):
  save_tiny_whisper(tmp_path, positions=100)
  weights = tmp_path / "model.safetensors"
  data = weights.read_bytes()
  weights.write_bytes(data[:8] + b"{not json" + data[17:])
  with pytest.raises(checkpoints.CheckpointError, match="model.safetensors: corrupt"):
    checkpoints.load_whisper_encoder(str(tmp_path))
  weights.write_bytes(b"")
  with pytest.raises(checkpoints.CheckpointError, match="empty or truncated"):
    checkpoints.load_whisper_encoder(str(tmp_path))
  weights.write_bytes(data[: len(data) // 2])  # header fine, buffers cut off
  with pytest.raises(checkpoints.CheckpointError, match="model.safetensors: truncated, tensor"):
    checkpoints.load_whisper_encoder(str(tmp_path))


def test_not_a_whisper_checkpoint(tmp_path):
  safetensors.numpy.save_file({"foo.weight": np.zeros((2, 2), np.float32)},
                              str(tmp_path / "model.safetensors"))
  json.dump(transformers.WhisperConfig(d_model=64, encoder_attention_heads=4).to_dict(),
            open(tmp_path / "config.json", "w"))
  with pytest.raises(checkpoints.CheckpointError, match="no Whisper encoder found"):
    checkpoints.load_whisper_encoder(str(tmp_path))


def test_load_into_shardings_on_a_mesh(tmp_path):
  """Parameters land directly in the sharding the logical rules give them."""
  from lalmjax import sharding
  from lalmjax.models import whisper
  import flax.linen as nn
  save_tiny_whisper(tmp_path, positions=100)
  mesh = sharding.create_mesh((1, -1, 1))
  cfg = whisper.WhisperEncoderConfig.from_hf(checkpoints.read_config(str(tmp_path)))
  abstract = jax.eval_shape(whisper.WhisperEncoder(cfg).init, jax.random.PRNGKey(0),
                            jax.ShapeDtypeStruct((1, 80, 200), np.float32))["params"]
  shardings = sharding.logical_to_mesh_sharding(nn.get_partition_spec(abstract), mesh)
  module, params = checkpoints.load_whisper_encoder(str(tmp_path), shardings=shardings)
  kernel = params["layers_0"]["fc1"]["kernel"]
  assert kernel.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
  # Sharded matmuls sum in another order: equal to float32 rounding.
  np.testing.assert_allclose(np.asarray(module.apply({"params": params}, MEL)),
                             _encoder_out(tmp_path), atol=1e-5)


def _sharded(tmp_path):
  """A tiny Whisper saved in several shards: (folder, index dict)."""
  model = save_tiny_whisper(tmp_path / "single", positions=100)
  model.save_pretrained(str(tmp_path / "sharded"), max_shard_size="40KB")
  index = json.loads((tmp_path / "sharded" / "model.safetensors.index.json").read_text())
  return tmp_path / "sharded", index


def test_index_listing_tensors_missing_from_their_shards(tmp_path):
  folder, index = _sharded(tmp_path)
  index_file = folder / "model.safetensors.index.json"
  shards = sorted(set(index["weight_map"].values()))
  # A tensor no shard holds.
  broken = {**index, "weight_map": {**index["weight_map"],
                                    "model.encoder.extra.weight": shards[0]}}
  index_file.write_text(json.dumps(broken))
  with pytest.raises(checkpoints.CheckpointError,
                     match=r"index\.json: 1 tensor\(s\) listed but not found in their shards: "
                     rf"'model\.encoder\.extra\.weight' \(in {shards[0]}\)"):
    checkpoints.load_whisper_encoder(str(folder))
  # A tensor that exists, but not in the shard the index names.
  name, shard = next((n, s) for n, s in index["weight_map"].items() if s != shards[0])
  broken = {**index, "weight_map": {**index["weight_map"], name: shards[0]}}
  index_file.write_text(json.dumps(broken))
  with pytest.raises(checkpoints.CheckpointError, match=rf"'{re.escape(name)}' \(in {shards[0]}\)"):
    checkpoints.load_whisper_encoder(str(folder))


def test_missing_shard_file_is_named(tmp_path):
  folder, index = _sharded(tmp_path)
  shard = sorted(set(index["weight_map"].values()))[-1]
  os.remove(folder / shard)
  with pytest.raises(checkpoints.CheckpointError, match=rf"{shard}: shard file missing"):
    checkpoints.load_whisper_encoder(str(folder))


def _write_safetensors(path, header: dict, data: bytes):
  """A safetensors file from a raw header: 8-byte length, JSON, buffers."""
  raw = json.dumps(header).encode()
  path.write_bytes(len(raw).to_bytes(8, "little") + raw + data)


@pytest.mark.parametrize("entry,message", [
    ({"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]},
     r"unsupported dtype 'F8_E4M3'"),
    ({"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}, r"unsupported dtype 'C64'"),
    ({"shape": [2], "data_offsets": [0, 8]}, r"unsupported dtype None"),
    ({"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}, r"bad data_offsets \[8, 0\]"),
    ({"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}, r"bad data_offsets \[-8, 0\]"),
    ({"dtype": "F32", "shape": [2], "data_offsets": [0]}, r"bad data_offsets \[0\]"),
    ({"dtype": "F32", "shape": [2], "data_offsets": ["0", "8"]}, r"bad data_offsets"),
    ({"dtype": "F32", "shape": [2]}, r"bad data_offsets None"),
    ({"dtype": "F32", "shape": [2], "data_offsets": [0, 12]},
     r"data_offsets \[0, 12\] \(12 bytes\), but F32\[2\] needs 8"),
    ({"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}, r"bad shape \[-2\]"),
    ({"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
     r"truncated, tensor 'w' ends at byte"),
], ids=["f8", "c64", "no_dtype", "reversed", "negative", "one_offset", "strings",
        "no_offsets", "wrong_size", "bad_shape", "past_the_end"])
def test_bad_safetensors_header_names_file_and_tensor(tmp_path, entry, message):
  """Header problems are found when the file is opened, before any tensor is read, and
  the error names the file and the tensor."""
  path = tmp_path / "model.safetensors"
  _write_safetensors(path, {"__metadata__": {"format": "pt"}, "w": entry},
                     np.arange(2, dtype=np.float32).tobytes())
  with pytest.raises(checkpoints.CheckpointError,
                     match=r"model\.safetensors: (tensor 'w' .*)?" + message):
    checkpoints.SafetensorsReader(str(tmp_path))
  # A well-formed header over the same bytes reads fine.
  _write_safetensors(path, {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}},
                     np.arange(2, dtype=np.float32).tobytes())
  np.testing.assert_array_equal(checkpoints.SafetensorsReader(str(path)).get("w"), [0, 1])
