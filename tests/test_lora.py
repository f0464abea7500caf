"""LoRA: the "lora" collection, zero init, merge, PEFT export, parameter counts.

Tiny random Qwen2 checkpoints are made here with transformers + save_pretrained. Parity
with PyTorch peft uses the whole-model tolerance of test_qwen2: max |ours - ref| <=
1e-4 * max(1, max |ref|) at real positions.
"""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import peft
import pytest
import torch
from safetensors.numpy import load_file
from transformers import Qwen2Config as HFQwen2Config
from transformers import Qwen2ForCausalLM

from lalmjax import checkpoints
from lalmjax.models import lora as lora_lib
from lalmjax.models import qwen2
from lalmjax.models.lora import LoraConfig

REL_TOL = 1e-4

TINY = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
            max_position_embeddings=128)
QWEN2_7B = dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944,
                num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                max_position_embeddings=131072, rope_theta=1000000.0,
                tie_word_embeddings=False)
# 28 layers * 16 * ((3584 + 3584) for q_proj + (3584 + 512) for k_proj).
QWEN2_7B_LORA_QK_R16 = 5_046_272

ALL_TARGETS = LoraConfig(rank=4, alpha=8.0, targets=lora_lib.LINEAR_LAYERS)


def make_hf(seed=0):
  torch.manual_seed(seed)
  model = Qwen2ForCausalLM(HFQwen2Config(**TINY)).eval()
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():  # random everything (biases, norms), as in test_qwen2
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=g) * 0.1
      p.copy_(1.0 + noise if "norm" in name else noise)
  return model


@pytest.fixture(scope="module")
def base(tmp_path_factory):
  """(folder, torch model, params) of one tiny Qwen2."""
  model = make_hf()
  path = str(tmp_path_factory.mktemp("qwen2"))
  model.save_pretrained(path)
  _, params = checkpoints.load_qwen2(path)
  return path, model, params


def batch():
  rng = np.random.RandomState(0)
  ids = rng.randint(1, 256, (2, 9)).astype(np.int32)
  mask = np.ones((2, 9), np.int32)
  mask[1, :3] = 0  # left padding in row 1
  return np.where(mask == 1, ids, 0).astype(np.int32), mask


def randomise_b(lora_tree, seed=1):
  """B ~ N(0, 0.1) (it starts at zero, which would make every check trivial)."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(nn.unbox(lora_tree))
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  out = [0.1 * jax.random.normal(k, x.shape, x.dtype) if path[-1].key == "lora_B" else x
         for k, (path, x) in zip(keys, leaves)]
  return jax.tree_util.tree_unflatten(treedef, out)


def lora_model(path, config, dtype=jnp.float32):
  module, params = checkpoints.load_qwen2(path, dtype=dtype, lora_config=config)
  lora = lora_lib.init_lora(module, jax.random.PRNGKey(0), jnp.zeros((1, 1), jnp.int32))
  return module, params, lora


def n_params(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(nn.unbox(tree)))


# ---------------------------------------------------------------------------------------


def test_config_validation():
  assert LoraConfig().targets == ("q_proj", "k_proj")
  assert LoraConfig(rank=16, alpha=32.0).scaling == 2.0
  with pytest.raises(ValueError, match="rank"):
    LoraConfig(rank=0)
  with pytest.raises(ValueError, match="alpha"):
    LoraConfig(alpha=0.0)
  with pytest.raises(ValueError, match="dropout"):
    LoraConfig(dropout=1.0)
  with pytest.raises(ValueError, match="unknown linear layer.*'qproj'"):
    LoraConfig(targets=("qproj",))
  with pytest.raises(ValueError, match="empty"):
    LoraConfig(targets=())
  assert LoraConfig(targets=["v_proj"]).targets == ("v_proj",)  # lists become tuples


def test_lora_collection_layout_and_zero_init(base):
  path, _, params = base
  module, _, lora = lora_model(path, LoraConfig(rank=4, alpha=8.0))
  # A separate tree with only the targeted layers; logical names on A and B.
  assert set(lora) == {"layers_0", "layers_1"}
  assert set(lora["layers_0"]["self_attn"]) == {"q_proj", "k_proj"}
  a = lora["layers_0"]["self_attn"]["k_proj"]["lora_A"]
  b = lora["layers_0"]["self_attn"]["k_proj"]["lora_B"]
  assert isinstance(a, nn.Partitioned) and a.names == ("embed", "lora_rank")
  assert isinstance(b, nn.Partitioned) and b.names == ("lora_rank", "kv_heads")
  assert a.value.shape == (64, 4) and b.value.shape == (4, 32)
  assert np.abs(np.asarray(a.value)).max() <= 1 / np.sqrt(64)  # PEFT's kaiming bound
  assert not np.asarray(b.value).any()
  ids, mask = batch()
  plain = qwen2.Qwen2(module.config).apply({"params": params}, ids, mask)
  with_lora = module.apply({"params": params, "lora": lora}, ids, mask)
  np.testing.assert_array_equal(with_lora, plain)  # B = 0: exactly the base model


def test_merged_equals_unmerged(base):
  path, _, params = base
  module, _, lora = lora_model(path, ALL_TARGETS)
  lora = randomise_b(lora)
  ids, mask = batch()
  unmerged = np.asarray(module.apply({"params": params, "lora": lora}, ids, mask))
  merged_params = lora_lib.merge_lora(params, lora, ALL_TARGETS)
  merged = np.asarray(qwen2.Qwen2(module.config).apply({"params": merged_params}, ids, mask))
  plain = np.asarray(qwen2.Qwen2(module.config).apply({"params": params}, ids, mask))
  real = mask.astype(bool)
  err = float(np.abs(merged - unmerged)[real].max())
  tol = REL_TOL * max(1.0, float(np.abs(unmerged[real]).max()))
  print(f"\nmerged vs unmerged: max abs diff {err:.3e} (allowed {tol:.3e}); "
        f"adapter moved logits by {np.abs(unmerged - plain)[real].max():.3e}")
  assert err <= tol
  assert np.abs(unmerged - plain)[real].max() > 100 * tol  # the adapter does something


@pytest.mark.parametrize("config", [LoraConfig(rank=4, alpha=8.0), ALL_TARGETS],
                         ids=["q_k", "all_linear"])
def test_export_peft_loads_in_pytorch(base, tmp_path, config):
  path, model, params = base
  module, _, lora = lora_model(path, config)
  lora = randomise_b(lora)
  names = lora_lib.export_peft(lora, config, str(tmp_path / "ours"),
                               base_model_name_or_path=path)

  # Same tensor names and shapes as an adapter saved by peft itself.
  reference = peft.get_peft_model(
      make_hf(), peft.LoraConfig(r=config.rank, lora_alpha=config.alpha,
                                 target_modules=list(config.targets), task_type="CAUSAL_LM"))
  reference.save_pretrained(str(tmp_path / "peft"))
  theirs = load_file(str(tmp_path / "peft" / "adapter_model.safetensors"))
  ours = load_file(str(tmp_path / "ours" / "adapter_model.safetensors"))
  assert sorted(theirs) == names == sorted(ours)
  assert {k: v.shape for k, v in theirs.items()} == {k: v.shape for k, v in ours.items()}
  written = json.loads((tmp_path / "ours" / "adapter_config.json").read_text())
  assert written["r"] == config.rank and written["lora_alpha"] == config.alpha

  # peft loads it onto the reference model and gives our logits.
  peft_model = peft.PeftModel.from_pretrained(make_hf(), str(tmp_path / "ours")).eval()
  ids, mask = batch()
  pos = np.maximum(np.cumsum(mask, 1) - 1, 0)
  with torch.no_grad():
    ref = peft_model(input_ids=torch.tensor(ids, dtype=torch.long),
                     attention_mask=torch.tensor(mask),
                     position_ids=torch.tensor(pos, dtype=torch.long)).logits.numpy()
  got = np.asarray(module.apply({"params": params, "lora": lora}, ids, mask))
  real = mask.astype(bool)
  err = float(np.abs(got - ref)[real].max())
  tol = REL_TOL * max(1.0, float(np.abs(ref[real]).max()))
  print(f"\nparity with peft ({'+'.join(config.targets)}): max abs diff {err:.3e} "
        f"(allowed {tol:.3e})")
  assert err <= tol

  # Trainable parameters: ours, the closed form and peft's own count agree.
  count = n_params(lora)
  trainable, _ = reference.get_nb_trainable_parameters()  # a peft model made for training
  print(f"LoRA trainable parameters ({'+'.join(config.targets)}, r={config.rank}): {count:,}")
  assert count == lora_lib.count_lora_params(module.config, config) == trainable


def test_lora_float32_over_bfloat16_base_and_gradients(base):
  path, _, _ = base
  config = LoraConfig(rank=4, alpha=8.0, dropout=0.1)
  module, params, lora = lora_model(path, config, dtype=jnp.bfloat16)
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree_util.tree_leaves(params))
  assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(nn.unbox(lora)))
  lora = randomise_b(lora)
  ids, mask = batch()

  def loss(lora_tree, rng=None, deterministic=True):
    logits = module.apply({"params": params, "lora": lora_tree}, ids, mask,
                          deterministic=deterministic, rngs={} if rng is None else {"dropout": rng})
    return jnp.mean(jax.nn.logsumexp(logits, axis=-1))

  # Gradients are taken for the lora tree alone: same structure, float32.
  grads = jax.jit(jax.grad(loss))(lora)
  assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(lora)
  assert all(x.dtype == jnp.float32 and np.isfinite(x).all()
             for x in jax.tree_util.tree_leaves(grads))
  # Dropout acts only when not deterministic, and only through the adapters: with B = 0
  # the training-mode loss is exactly the base model's whatever the key.
  train = jax.jit(lambda l, r: loss(l, r, False))
  assert float(train(lora, jax.random.PRNGKey(1))) != float(train(lora, jax.random.PRNGKey(2)))
  assert float(loss(lora, jax.random.PRNGKey(1))) == float(loss(lora))
  zero_b = jax.tree_util.tree_map_with_path(
      lambda p, x: jnp.zeros_like(x) if p[-1].key == "lora_B" else x, lora)
  assert float(train(zero_b, jax.random.PRNGKey(1))) == float(jax.jit(loss)(zero_b))


def test_lora_dropout_drops_only_the_adapter_input():
  """y = x W + b + (alpha / r) dropout(x) A B. With A = B = I and alpha = r, y - (x W + b)
  is dropout(x) itself: every entry is 0 (dropped, at the configured rate) or x / (1 -
  rate) (kept), so the base path saw the whole x and only the adapter's input dropped."""
  d, rate = 16, 0.25
  config = LoraConfig(rank=d, alpha=float(d), dropout=rate)
  layer = lora_lib.LoraDense(features=d, kernel_axes=("embed", "heads"), use_bias=True,
                             lora=config)
  x = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (4096, d)))
  variables = nn.unbox(layer.init(jax.random.PRNGKey(1), x))
  variables["params"]["bias"] = jax.random.normal(jax.random.PRNGKey(2), (d,))
  variables["lora"] = {"lora_A": jnp.eye(d), "lora_B": jnp.eye(d)}
  base = x @ np.asarray(variables["params"]["kernel"]) + np.asarray(variables["params"]["bias"])
  apply = jax.jit(lambda v, key: layer.apply(v, x, deterministic=False, rngs={"dropout": key}))

  delta = np.asarray(apply(variables, jax.random.PRNGKey(3))) - base
  dropped = np.abs(delta) < 1e-4
  print(f"\nLoRA dropout: {dropped.mean():.4f} of adapter inputs dropped (rate {rate})")
  assert abs(dropped.mean() - rate) < 0.01  # 65,536 draws: the std is 0.0017
  np.testing.assert_allclose(delta[~dropped], x[~dropped] / (1 - rate), rtol=1e-4, atol=1e-4)
  # Deterministic: no dropout anywhere.
  np.testing.assert_allclose(np.asarray(layer.apply(variables, x)) - base, x, atol=1e-4)
  # With B = 0 the output under dropout is the base path's, bit for bit.
  variables["lora"]["lora_B"] = jnp.zeros((d, d))
  np.testing.assert_array_equal(apply(variables, jax.random.PRNGKey(3)),
                                layer.apply(variables, x))


def test_count_for_qwen2_7b_without_memory():
  config = qwen2.Qwen2Config.from_hf(QWEN2_7B)
  lora_config = LoraConfig(rank=16, alpha=32.0, targets=("q_proj", "k_proj"))
  module = qwen2.Qwen2(config, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16, lora=lora_config)
  shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((1, 1), jnp.int32))
  count = n_params(shapes["lora"])
  print(f"\nQwen2-7B LoRA r=16 on q_proj,k_proj: {count:,} trainable parameters "
        f"(base {n_params(shapes['params']):,})")
  assert count == lora_lib.count_lora_params(config, lora_config) == QWEN2_7B_LORA_QK_R16
  assert {x.dtype for x in jax.tree_util.tree_leaves(nn.unbox(shapes["lora"]))} == {
      jnp.dtype(jnp.float32)}


def test_merge_and_export_errors(base, tmp_path):
  path, _, params = base
  _, _, lora = lora_model(path, LoraConfig(rank=2, alpha=4.0))
  with pytest.raises(ValueError, match="targets"):
    lora_lib.export_peft(lora, LoraConfig(rank=2, targets=("v_proj",)), str(tmp_path))
  broken = jax.tree_util.tree_map(lambda x: x, nn.unbox(lora))
  del broken["layers_0"]["self_attn"]["q_proj"]["lora_B"]
  with pytest.raises(ValueError, match="no lora_B"):
    lora_lib.merge_lora(params, broken, LoraConfig(rank=2))
