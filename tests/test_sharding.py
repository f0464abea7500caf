"""Meshes on 8 CPU devices: the logical rules shard every model, and results do not change."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
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


def test_lalm_train_step_on_a_mesh_matches_single_device():
  """A jitted grad step with params on (data 2, fsdp 2, tensor 2) gives the single-device
  loss and update; the batch is split over data x fsdp."""
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
  rng = np.random.default_rng(0)
  ids = rng.integers(6, 128, (4, 32)).astype(np.int32)
  ids[:, 2:2 + 25] = 5  # 25 placeholders = ceil(50 / 2) tokens of a full window
  batch = {"mel": rng.standard_normal(mel.shape).astype(np.float32),
           "num_frames": np.full((4,), 50, np.int32), "input_ids": ids,
           "attention_mask": np.ones((4, 32), bool),
           "loss_mask": np.arange(32)[None].repeat(4, 0) >= 27}
  opt = optax.adam(1e-2)

  def step(trainable, frozen, batch):
    loss, grads = jax.value_and_grad(
        lambda t: lalm.lalm_loss(module, training.combine(t, frozen), batch)[0])(trainable)
    updates, _ = opt.update(grads, opt.init(trainable), trainable)
    return loss, optax.apply_updates(trainable, updates)

  trainable, frozen = training.partition(nn.unbox(boxed))
  loss1, new1 = jax.jit(step)(trainable, frozen, batch)

  mesh = sharding.create_mesh((2, 2, 2))
  variables, shardings = _shard(boxed, mesh)
  trainable, frozen = training.partition(variables)
  t_shard, f_shard = training.partition(shardings)
  batch_shard = jax.tree.map(lambda x: NamedSharding(mesh, P(("data", "fsdp"))), batch)
  assert frozen["params"]["llm"]["layers_0"]["mlp"]["up_proj"]["kernel"].sharding.spec == \
      P("fsdp", "tensor")
  with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.LOGICAL_AXIS_RULES):
    compiled = jax.jit(step, in_shardings=(t_shard, f_shard, batch_shard),
                       out_shardings=(sharding.replicated(mesh), t_shard)).lower(
                           trainable, frozen, batch).compile()
    loss8, new8 = compiled(trainable, frozen, batch)
  np.testing.assert_allclose(loss8, loss1, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(new8), jax.tree.leaves(new1)):
    np.testing.assert_allclose(a, b, atol=1e-5)
