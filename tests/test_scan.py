"""scan_layers: blocks under nn.scan equal the unrolled model (outputs, gradients, cached
greedy/beam tokens, the LALM loss), the loaders stack per-layer checkpoints (HF, and
CTranslate2 for Whisper) into layers/... [L, ...] straight into their shardings, and the
PEFT export of a stacked lora tree equals the unstacked one's."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from safetensors.numpy import load_file

from configs import base
from lalmjax import checkpoints, generation, sharding
from lalmjax.models import lalm, lora as lora_lib, qwen2, scan
from lalmjax.models.lora import LoraConfig
from test_ct2_whisper import whisper_ct2_variables, write_ct2
from test_lalm import builder, frozen_lm_scaled, make_batch, make_config  # noqa: F401 (fixture)
from test_qwen2 import batch, make_hf
from test_whisper import save_tiny_whisper

REL_TOL = 1e-5  # the same maths in another loop: float32 summation-order differences only
LORA = LoraConfig(rank=4, alpha=8.0, targets=("q_proj", "k_proj"))


def rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.abs(a - b).max() / max(1e-30, np.abs(b).max()))


def assert_trees_close(scanned, unscanned, what):
  """`scanned` (layers/... [L, ...]) equals `unscanned` (layers_i/...) leaf by leaf."""
  a = traverse_util.flatten_dict(scanned)
  b = traverse_util.flatten_dict(scan.stack_layers(unscanned))
  assert a.keys() == b.keys(), what
  for path in a:
    err = rel(a[path], b[path])
    assert err <= REL_TOL, f"{what} {'/'.join(path)}: rel err {err:.2e}"


def with_scan(module, **changes):
  return module.clone(config=dataclasses.replace(module.config, scan_layers=True, **changes))


def test_stack_and_unstack_are_inverse():
  tree = {"a": {"layers_0": {"w": np.zeros((2, 3))}, "layers_1": {"w": np.ones((2, 3))},
                "norm": np.ones(3)}, "b": np.arange(4)}
  stacked = scan.stack_layers(tree)
  assert stacked["a"]["layers"]["w"].shape == (2, 2, 3) and "layers_0" not in stacked["a"]
  back = scan.unstack_layers(stacked)
  assert jax.tree.structure(back) == jax.tree.structure(tree)
  np.testing.assert_array_equal(back["a"]["layers_1"]["w"], 1.0)
  with pytest.raises(ValueError, match="not numbered 0..L-1"):
    scan.stack_layers({"layers_0": {}, "layers_2": {}})


# ---------------------------------------------------------------------------------------
# Whisper.


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory):
  path = tmp_path_factory.mktemp("whisper")
  model = save_tiny_whisper(path, n_mels=80, d=32, layers=3, heads=2, ffn=64, positions=100)
  return str(path), model


@pytest.mark.parametrize("remat", [False, True])
def test_whisper_scanned_equals_unscanned(tiny_whisper, remat):
  path, _ = tiny_whisper
  module, params = checkpoints.load_whisper_encoder(path, remat=remat)
  module_s, params_s = checkpoints.load_whisper_encoder(path, remat=remat, scan_layers=True)
  assert module_s.config.scan_layers and not module.config.scan_layers
  assert params_s["layers"]["fc1"]["kernel"].shape == (3, 32, 64)
  assert not any(k.startswith("layers_") for k in params_s)
  assert_trees_close(params_s, params, "loaded params")

  mel = jnp.asarray(np.random.default_rng(0).standard_normal((2, 80, 200)), jnp.float32)
  cot = jnp.asarray(np.random.default_rng(1).standard_normal((2, 100, 32)), jnp.float32)

  def value_and_grad(m, p):
    return jax.jit(jax.value_and_grad(lambda p: jnp.sum(m.apply({"params": p}, mel) * cot)))(p)

  (v, g), (v_s, g_s) = value_and_grad(module, params), value_and_grad(module_s, params_s)
  out, out_s = (jax.jit(m.apply)({"params": p}, mel)
                for m, p in ((module, params), (module_s, params_s)))
  assert rel(out_s, out) <= REL_TOL
  assert rel(v_s, v) <= REL_TOL
  assert_trees_close(g_s, g, "gradient")


def test_whisper_ct2_export_loads_stacked(tiny_whisper, tmp_path):
  path, model = tiny_whisper
  write_ct2(tmp_path / "model.bin", whisper_ct2_variables(model))
  _, hf = checkpoints.load_whisper_encoder(path)
  module, params = checkpoints.load_whisper_encoder(str(tmp_path), scan_layers=True)
  assert module.config.scan_layers
  assert_trees_close(params, hf, "CTranslate2 params")


# ---------------------------------------------------------------------------------------
# Qwen2.


@pytest.fixture(scope="module")
def tiny_qwen2(tmp_path_factory):
  """(path, unscanned module, params, lora, scanned module, params, lora); the lora B
  factors are random, so the adapters change the output."""
  path = str(tmp_path_factory.mktemp("qwen2"))
  make_hf("gqa2_untied", num_hidden_layers=3).save_pretrained(path)
  module, params = checkpoints.load_qwen2(path, lora_config=LORA, remat_policy="save_qkv_proj")
  module_s, params_s = checkpoints.load_qwen2(path, lora_config=LORA,
                                              remat_policy="save_qkv_proj", scan_layers=True)
  lora = nn.unbox(lora_lib.init_lora(module, jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32)))
  lora = jax.tree_util.tree_map_with_path(
      lambda p, x: x + 0.05 * jax.random.normal(jax.random.PRNGKey(len(str(p))), x.shape)
      if "lora_B" in str(p) else x, lora)
  return path, module, params, lora, module_s, params_s, scan.stack_layers(lora)


def test_qwen2_scanned_lora_layout(tiny_qwen2):
  _, _, _, lora, module_s, params_s, _ = tiny_qwen2
  assert params_s["layers"]["self_attn"]["q_proj"]["kernel"].shape == (3, 64, 64)
  abstract = jax.eval_shape(module_s.init, jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))
  spec = nn.get_partition_spec(abstract)
  assert spec["lora"]["layers"]["self_attn"]["q_proj"]["lora_A"] == jax.sharding.PartitionSpec(
      "layers", "embed", "lora_rank")
  shapes = jax.tree.map(lambda x: x.shape, nn.unbox(abstract["lora"]))
  assert shapes == jax.tree.map(lambda x: x.shape, scan.stack_layers(lora))


def test_qwen2_scanned_logits_and_gradients(tiny_qwen2):
  _, module, params, lora, module_s, params_s, lora_s = tiny_qwen2
  ids, mask = batch("left")
  cot = jnp.asarray(np.random.default_rng(0).standard_normal((3, 12, 256)), jnp.float32)

  def value_and_grad(m, p, l):
    f = lambda l: jnp.sum(m.apply({"params": p, "lora": l}, ids, mask) * cot)
    return jax.jit(jax.value_and_grad(f))(l)

  logits = jax.jit(module.apply)({"params": params, "lora": lora}, ids, mask)
  logits_s = jax.jit(module_s.apply)({"params": params_s, "lora": lora_s}, ids, mask)
  assert rel(logits_s, logits) <= REL_TOL
  (v, g), (v_s, g_s) = value_and_grad(module, params, lora), value_and_grad(module_s, params_s,
                                                                            lora_s)
  assert rel(v_s, v) <= REL_TOL
  assert_trees_close(g_s, g, "lora gradient")


@pytest.mark.parametrize("beam_size", [1, 2])
def test_qwen2_scanned_generation_tokens_equal(tiny_qwen2, beam_size):
  """Greedy and beam search through the KV cache ([L, B, S_max, K, H], scanned along)."""
  _, module, params, lora, module_s, params_s, lora_s = tiny_qwen2
  ids, mask = batch("left", s=10)
  decode = generation.DecodeConfig(beam_size=beam_size, buffer_size=12)
  never = jnp.array([-1])
  outs = [generation.generate_lm(m, v, ids, mask, decode, jnp.int32(12), never, 0).tokens
          for m, v in ((module, {"params": params, "lora": lora}),
                       (module_s, {"params": params_s, "lora": lora_s}))]
  print(f"\nbeam={beam_size} unscanned {np.asarray(outs[0]).tolist()}\n"
        f"beam={beam_size} scanned   {np.asarray(outs[1]).tolist()}")
  np.testing.assert_array_equal(outs[0], outs[1])


def test_qwen2_cache_under_scan_equals_full_forward(tiny_qwen2):
  _, _, _, _, module_s, params_s, lora_s = tiny_qwen2
  variables = {"params": params_s, "lora": lora_s}
  ids, mask = batch("right", s=12)
  full = np.asarray(jax.jit(module_s.apply)(variables, ids, mask))
  call = jax.jit(lambda i, m, c: module_s.apply(variables, i, m, cache=c))
  out = call(ids[:, :5], mask[:, :5], qwen2.init_cache(module_s.config, 3, 16))
  steps = [out.logits]
  for t in range(5, 12):
    out = call(ids[:, t:t + 1], mask[:, t:t + 1], out.cache)
    steps.append(out.logits)
  cached = np.concatenate([np.asarray(x) for x in steps], axis=1)
  real = mask.astype(bool)
  assert rel(cached[real], full[real]) <= 1e-5


def test_qwen2_scanned_sharded_load(tiny_qwen2):
  """Shardings of the stacked layout (logical "layers" -> None) load straight in."""
  path, _, params, _, module_s, _, _ = tiny_qwen2
  abstract = jax.eval_shape(module_s.init, jax.random.PRNGKey(0), jnp.zeros((1, 1), jnp.int32))
  specs = nn.get_partition_spec(abstract)["params"]
  mesh = sharding.create_mesh((2, 2, 2))
  shardings = sharding.logical_to_mesh_sharding(specs, mesh)
  _, placed = checkpoints.load_qwen2(path, shardings=shardings, scan_layers=True)
  kernel = placed["layers"]["self_attn"]["q_proj"]["kernel"]
  assert kernel.sharding == shardings["layers"]["self_attn"]["q_proj"]["kernel"]
  assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
  assert_trees_close(jax.device_get(placed), params, "sharded params")


def test_peft_export_of_stacked_lora_equals_unstacked(tiny_qwen2, tmp_path):
  _, _, _, lora, _, _, lora_s = tiny_qwen2
  names = lora_lib.export_peft(lora, LORA, str(tmp_path / "unscanned"))
  names_s = lora_lib.export_peft(lora_s, LORA, str(tmp_path / "scanned"))
  assert names == names_s and "base_model.model.model.layers.2.self_attn.k_proj.lora_B.weight" \
      in names
  a = load_file(str(tmp_path / "unscanned" / "adapter_model.safetensors"))
  b = load_file(str(tmp_path / "scanned" / "adapter_model.safetensors"))
  for name in names:
    np.testing.assert_array_equal(a[name], b[name])
  assert ((tmp_path / "unscanned" / "adapter_config.json").read_text() ==
          (tmp_path / "scanned" / "adapter_config.json").read_text())
  # Merging works on the stacked layout too.
  _, _, params, _, _, params_s, _ = tiny_qwen2
  assert_trees_close(lora_lib.merge_lora(params_s, lora_s, LORA),
                     lora_lib.merge_lora(params, lora, LORA), "merged")


# ---------------------------------------------------------------------------------------
# The LALM.


def test_lalm_loss_and_gradients_scanned(builder):  # noqa: F811 (fixture)
  config = make_config(builder)
  config_s = dataclasses.replace(
      config, encoder=dataclasses.replace(config.encoder, scan_layers=True),
      llm=dataclasses.replace(config.llm, scan_layers=True, remat_policy="nothing_saveable"))
  module, module_s = lalm.LALM(config), lalm.LALM(config_s, encoder_remat=True)
  variables = frozen_lm_scaled(lalm.init_variables(module, jax.random.PRNGKey(0)))
  variables["lora"] = jax.tree.map(lambda x: x + 0.01, variables["lora"])
  variables_s = scan.stack_layers(variables)
  shapes = jax.tree.map(lambda x: x.shape, lalm.init_variables(module_s, jax.random.PRNGKey(0)))
  assert shapes == jax.tree.map(lambda x: x.shape, variables_s)
  b = make_batch(config, builder, [32000, 24000, 16000, 9000])

  def loss_and_grads(m, v):
    def f(trainable):
      return lalm.lalm_loss(m, {"params": {**v["params"], "projector": trainable["projector"]},
                                "lora": trainable["lora"]}, b)[0]
    return jax.jit(jax.value_and_grad(f))({"projector": v["params"]["projector"],
                                           "lora": v["lora"]})

  (loss, g), (loss_s, g_s) = loss_and_grads(module, variables), loss_and_grads(module_s,
                                                                              variables_s)
  print(f"\nLALM loss unscanned {float(loss):.6f} scanned {float(loss_s):.6f}")
  assert rel(loss_s, loss) <= REL_TOL
  assert_trees_close(g_s, g, "LALM gradient")


def test_config_scan_layers():
  c = base.get_base_config()
  assert c.model.scan_layers is False
  c.model.scan_layers = True
  base.validate(c, 1, check_files=False)
  with pytest.raises(TypeError, match="scan_layers"):  # a locked schema: bools only
    c.model.scan_layers = "yes"
