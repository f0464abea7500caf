"""lalmjax.qwen2_export: Flax Qwen2 -> Hugging Face folder, read back by both loaders.

Parity tolerance (float32, whole model) as tests/test_qwen2.py: max |ours - ref| <=
1e-4 * max(1, max |ref|).
"""

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import load_file

from lalmjax import checkpoints, qwen2_export
from lalmjax.models import qwen2
from test_whisper import rel_err

REL_TOL = 1e-4


def random_qwen2(tied: bool, **overrides):
  """(config, params) of a tiny Qwen2 whose every weight is ~N(0, 0.1) (norms 1 + that):
  no zero bias or unit norm hides a wrong name or a missing transpose."""
  fields = dict(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                tie_word_embeddings=tied, rope_theta=5000.0, rms_norm_eps=1e-5)
  config = qwen2.Qwen2Config(**{**fields, **overrides})
  params = nn.unbox(qwen2.Qwen2(config).init(jax.random.PRNGKey(0),
                                             jnp.ones((1, 2), jnp.int32))["params"])
  leaves, treedef = jax.tree.flatten_with_path(params)
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  noisy = [(1.0 if path[-1].key == "scale" else 0.0) + 0.1 * jax.random.normal(k, x.shape)
           for (path, x), k in zip(leaves, keys)]
  return config, jax.tree.unflatten(treedef, noisy)


@pytest.mark.parametrize("tied", [True, False])
def test_both_loaders_read_what_is_written(tmp_path, tied):
  config, params = random_qwen2(tied, rope_type="linear", rope_factor=2.0)
  path = str(tmp_path)
  names = qwen2_export.save_qwen2(path, config, params, eos_token_id=5, pad_token_id=0)
  assert ("lm_head.weight" in names) == (not tied)
  assert "model.layers.1.self_attn.q_proj.bias" in names

  module, loaded = checkpoints.load_qwen2(path)
  assert module.config == config
  jax.tree.map(np.testing.assert_array_equal, loaded, jax.device_get(params))

  hf = transformers.Qwen2ForCausalLM.from_pretrained(path).eval()
  assert hf.config.tie_word_embeddings == tied and hf.config.eos_token_id == 5
  ids = np.random.default_rng(0).integers(0, config.vocab_size, (2, 11))
  with torch.no_grad():
    ref = hf(torch.tensor(ids)).logits.numpy()
  ours = qwen2.Qwen2(config).apply({"params": params}, jnp.asarray(ids, jnp.int32))
  assert rel_err(ours, ref) <= REL_TOL


def test_torch_layout_and_config_fields(tmp_path):
  config, params = random_qwen2(True)
  qwen2_export.save_qwen2(str(tmp_path), config, params)
  tensors = load_file(str(tmp_path / "model.safetensors"))
  # [out, in] as torch.nn.Linear; 1-D tensors as they are.
  np.testing.assert_array_equal(tensors["model.layers.0.mlp.up_proj.weight"],
                                np.asarray(params["layers_0"]["mlp"]["up_proj"]["kernel"]).T)
  assert tensors["model.norm.weight"].shape == (32,)
  with open(tmp_path / "config.json") as f:
    hf = json.load(f)
  assert hf["architectures"] == ["Qwen2ForCausalLM"] and hf["model_type"] == "qwen2"
  assert qwen2.Qwen2Config.from_hf(hf) == config


def test_params_a_causal_lm_does_not_hold_are_refused(tmp_path):
  config, params = random_qwen2(True)
  with pytest.raises(ValueError, match="new_tokens"):
    qwen2_export.save_qwen2(str(tmp_path), config,
                            {**params, "new_tokens": {"embedding": np.zeros((2, 32))}})
  untied, _ = random_qwen2(False)
  with pytest.raises(ValueError, match="lm_head"):
    qwen2_export.save_qwen2(str(tmp_path), untied, params)
  assert not os.path.exists(tmp_path / "model.safetensors")
