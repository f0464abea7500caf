"""Meshes on 8 CPU devices: the logical rules shard every model, and results do not change."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from lalmjax import sharding, training
from lalmjax.models import lalm, qwen2, whisper
from lalmjax.models.lora import LoraConfig


def test_eight_devices():
  assert jax.device_count() == 8, "tests/conftest.py forces 8 host devices"


@pytest.mark.parametrize("shape,expected", [((-1, 1, 1), (8, 1, 1)), ((2, -1, 2), (2, 2, 2)),
                                            ((1, 1, 8), (1, 1, 8))])
def test_mesh_shape_resolves_minus_one(shape, expected):
  assert sharding.mesh_shape(shape, 8) == expected
  assert sharding.create_mesh(shape).devices.shape == expected


@pytest.mark.parametrize("shape,message", [((3, -1, 1), "not divisible by 3"),
                                           ((2, 2, 1), "multiplies to 4"),
                                           ((-1, -1, 1), "at most one"),
                                           ((2, 4), "3 entries"), ((0, -1, 1), "positive")])
def test_bad_mesh_shapes(shape, message):
  with pytest.raises(ValueError, match=message):
    sharding.mesh_shape(shape, 8)


def _shard(tree_boxed, mesh):
  """Places a boxed (logically annotated) tree by the rules table."""
  specs = nn.get_partition_spec(tree_boxed)
  shardings = sharding.logical_to_mesh_sharding(specs, mesh)
  return jax.device_put(nn.unbox(tree_boxed), shardings), shardings


def test_whisper_encoder_sharded_matches_single_device():
  cfg = whisper.WhisperEncoderConfig(80, 64, 2, 4, 128, 100)
  module = whisper.WhisperEncoder(cfg)
  mel = np.random.default_rng(0).standard_normal((4, 80, 200)).astype(np.float32)
  boxed = module.init(jax.random.PRNGKey(0), mel)["params"]
  expected = module.apply({"params": nn.unbox(boxed)}, mel)
  mesh = sharding.create_mesh((2, 2, 2))
  params, _ = _shard(boxed, mesh)
  assert params["layers_0"]["fc1"]["kernel"].sharding.spec == P("fsdp", "tensor")
  assert params["layers_0"]["self_attn"]["out_proj"]["kernel"].sharding.spec == P("tensor", "fsdp")
  mel_s = jax.device_put(mel, NamedSharding(mesh, P(("data", "fsdp"))))
  with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.LOGICAL_AXIS_RULES):
    out = jax.jit(module.apply)({"params": params}, mel_s)
  np.testing.assert_allclose(out, expected, atol=1e-5)


def test_lalm_loss_and_gradients_on_a_mesh_match_single_device():
  """The jitted loss and gradient with params on (data 2, fsdp 2, tensor 2) and the batch
  split over data x fsdp equal the single-device ones, leaf by leaf. (Gradients, not
  parameters after an optimizer step: Adam's first step is about -lr * sign(g), blind to
  a gradient scaled by any positive factor.)"""
  enc = whisper.WhisperEncoderConfig(80, 32, 1, 2, 64, 50)
  llm = qwen2.Qwen2Config(vocab_size=128, hidden_size=64, intermediate_size=128,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                          head_dim=16)
  config = lalm.LALMConfig(enc, llm, audio_token_id=5, lora=LoraConfig(rank=4, alpha=8.0),
                           method="uniavg", factor=2)
  module = lalm.LALM(config)
  mel, frames, ids = lalm.dummy_inputs(config, batch=4, length=32)
  boxed = module.init(jax.random.PRNGKey(0), jnp.zeros(mel.shape), jnp.zeros(frames.shape, jnp.int32),
                      jnp.zeros(ids.shape, jnp.int32))
  # B != 0, so the LoRA A factors get gradients too.
  boxed = jax.tree_util.tree_map_with_path(
      lambda p, x: x.replace_boxed(0.1 * jnp.ones_like(x.value))
      if "lora_B" in jax.tree_util.keystr(p) else x,
      boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  rng = np.random.default_rng(0)
  ids = rng.integers(6, 128, (4, 32)).astype(np.int32)
  ids[:, 2:2 + 25] = 5  # 25 placeholders = ceil(50 / 2) tokens of a full window
  loss_mask = np.arange(32)[None].repeat(4, 0) >= 27
  loss_mask[1, 30:] = False  # rows with different token counts
  batch = {"mel": rng.standard_normal(mel.shape).astype(np.float32),
           "num_frames": np.full((4,), 50, np.int32), "input_ids": ids,
           "attention_mask": np.ones((4, 32), bool), "loss_mask": loss_mask}

  def loss_and_grads(trainable, frozen, batch):
    return jax.value_and_grad(
        lambda t: lalm.lalm_loss(module, training.combine(t, frozen), batch)[0])(trainable)

  trainable, frozen = training.partition(nn.unbox(boxed))
  loss1, grads1 = jax.jit(loss_and_grads)(trainable, frozen, batch)

  mesh = sharding.create_mesh((2, 2, 2))
  variables, shardings = _shard(boxed, mesh)
  trainable, frozen = training.partition(variables)
  t_shard, f_shard = training.partition(shardings)
  batch_shard = jax.tree.map(lambda x: NamedSharding(mesh, P(("data", "fsdp"))), batch)
  assert frozen["params"]["llm"]["layers_0"]["mlp"]["up_proj"]["kernel"].sharding.spec == \
      P("fsdp", "tensor")
  with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.LOGICAL_AXIS_RULES):
    compiled = jax.jit(loss_and_grads, in_shardings=(t_shard, f_shard, batch_shard),
                       out_shardings=(sharding.replicated(mesh), t_shard)).lower(
                           trainable, frozen, batch).compile()
    loss8, grads8 = compiled(trainable, frozen, batch)
  np.testing.assert_allclose(loss8, loss1, rtol=1e-5)
  flat1 = jax.tree_util.tree_flatten_with_path(grads1)[0]
  flat8 = jax.tree.leaves(grads8)
  assert len(flat1) == len(flat8)
  for (path, g1), g8 in zip(flat1, flat8):
    scale = float(np.abs(g1).max())
    assert scale > 0, jax.tree_util.keystr(path)
    # Sharded matmuls sum in another order: equal to float32 rounding of the leaf's scale.
    np.testing.assert_allclose(g8, g1, rtol=1e-4, atol=1e-5 * scale,
                               err_msg=jax.tree_util.keystr(path))
