"""Qwen2: parity with transformers.Qwen2ForCausalLM, loading, KV cache, greedy generation.

Tiny random checkpoints are made here with transformers + save_pretrained (no download).
Parity tolerance (float32, whole model): max |ours - ref| <= 1e-4 * max(1, max |ref|),
compared at real (unpadded) positions only. Never loosened to make a test pass.
"""

import functools
import json
import os
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file
from transformers import Qwen2Config as HFQwen2Config
from transformers import Qwen2ForCausalLM, Qwen2Model

from lalmjax import checkpoints, generation, sharding
from lalmjax.checkpoints import CheckpointError
from lalmjax.models import qwen2

REL_TOL = 1e-4  # whole-model float32 parity, relative to the logit scale

BASE = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            max_position_embeddings=128)
CONFIGS = {
    # GQA ratio 1 (multi-head), tied embeddings.
    "mha_tied": dict(num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=True),
    # GQA ratio 2, untied LM head.
    "gqa2_untied": dict(num_attention_heads=4, num_key_value_heads=2,
                        tie_word_embeddings=False),
    # GQA ratio 4, head_dim != D / N, linear RoPE scaling, another theta.
    "gqa4_linear_rope": dict(num_attention_heads=4, num_key_value_heads=1, head_dim=32,
                             tie_word_embeddings=False,
                             rope_parameters={"rope_type": "linear", "factor": 2.0,
                                              "rope_theta": 1000.0}),
}
QWEN2_7B = dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944,
                num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                max_position_embeddings=131072, rms_norm_eps=1e-6, rope_theta=1000000.0,
                tie_word_embeddings=False, hidden_act="silu")
QWEN2_7B_PARAMS = 7_615_616_512  # Qwen/Qwen2-7B, embeddings and untied lm_head included


def randomise_(model: torch.nn.Module, seed: int):
  """Every weight ~ N(0, 0.1) (biases too), norm weights ~ 1 + N(0, 0.1): no zero or
  trivial parameter hides a bug, and logit gaps are wide enough for greedy parity."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=g) * 0.1
      p.copy_(1.0 + noise if "norm" in name else noise)


def make_hf(name: str, seed: int = 0, cls=Qwen2ForCausalLM, **overrides):
  config = HFQwen2Config(**{**BASE, **CONFIGS[name], **overrides})
  torch.manual_seed(seed)
  model = cls(config).eval()
  randomise_(model, seed)
  return model


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
  """name -> (folder, torch model, module, params), built once per config."""
  cache = {}

  def get(name):
    if name not in cache:
      model = make_hf(name)
      path = str(tmp_path_factory.mktemp(name))
      model.save_pretrained(path)
      module, params = checkpoints.load_qwen2(path)
      cache[name] = (path, model, module, params)
    return cache[name]

  return get


@functools.partial(jax.jit, static_argnums=0)
def forward(module, params, ids, mask):
  return module.apply({"params": params}, ids, mask)


def batch(padding: str, b: int = 3, s: int = 12, vocab: int = 256, seed: int = 0):
  """ids int32[B, S], mask int32[B, S]: rows of real length s, s-4, s-7 padded on `padding`."""
  rng = np.random.RandomState(seed)
  ids = rng.randint(1, vocab, (b, s)).astype(np.int32)
  mask = np.ones((b, s), np.int32)
  if padding != "none":
    for row, n_pad in zip(range(b), (0, 4, 7)):
      if padding == "right":
        mask[row, s - n_pad:] = 0
      else:
        mask[row, :n_pad] = 0
  ids = np.where(mask == 1, ids, 0).astype(np.int32)
  return ids, mask


def hf_logits(model, ids, mask):
  """HF logits with generate's positions (cumsum - 1; HF's forward would use arange)."""
  pos = np.maximum(np.cumsum(mask, 1) - 1, 0)
  with torch.no_grad():
    return model(input_ids=torch.tensor(ids, dtype=torch.long),
                 attention_mask=torch.tensor(mask),
                 position_ids=torch.tensor(pos, dtype=torch.long)).logits.numpy()


def parity_error(ours, ref, mask) -> tuple[float, float]:
  """(max abs diff at real positions, allowed = REL_TOL * max(1, max |ref|))."""
  real = np.asarray(mask).astype(bool)
  err = float(np.abs(np.asarray(ours)[real] - ref[real]).max())
  return err, REL_TOL * max(1.0, float(np.abs(ref[real]).max()))


# ---------------------------------------------------------------------------------------
# Parity.


@pytest.mark.parametrize("padding", ["none", "right", "left"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_logits_parity(ckpt, name, padding):
  _, model, module, params = ckpt(name)
  ids, mask = batch(padding)
  ours = forward(module, params, ids, mask)
  assert ours.dtype == jnp.float32 and ours.shape == (3, 12, 256)
  err, tol = parity_error(ours, hf_logits(model, ids, mask), mask)
  print(f"\nparity {name} padding={padding}: max abs diff {err:.3e} (allowed {tol:.3e})")
  assert err <= tol


def test_public_api_no_mask(ckpt):
  """DESIGN.md: module.apply({"params": params}, input_ids) -> logits [B, T, vocab]."""
  _, model, module, params = ckpt("gqa2_untied")
  ids, mask = batch("none")
  ours = module.apply({"params": params}, jnp.asarray(ids))
  with torch.no_grad():
    ref = model(torch.tensor(ids, dtype=torch.long)).logits.numpy()
  err, tol = parity_error(ours, ref, mask)
  print(f"\nparity public API (no mask): {err:.3e} (allowed {tol:.3e})")
  assert err <= tol


def test_explicit_position_ids_and_inputs_embeds(ckpt):
  _, model, module, params = ckpt("gqa2_untied")
  ids, mask = batch("none")
  pos = np.arange(12)[None].repeat(3, 0) + np.array([[0], [5], [17]])
  with torch.no_grad():
    ref = model(torch.tensor(ids, dtype=torch.long),
                position_ids=torch.tensor(pos, dtype=torch.long)).logits.numpy()
  embeds = module.apply({"params": params}, jnp.asarray(ids), method=qwen2.Qwen2.embed)
  assert embeds.shape == (3, 12, 64)
  ours = module.apply({"params": params}, inputs_embeds=embeds, position_ids=jnp.asarray(pos))
  err, tol = parity_error(ours, ref, mask)
  print(f"\nparity explicit positions + inputs_embeds: {err:.3e} (allowed {tol:.3e})")
  assert err <= tol
  with pytest.raises(ValueError, match="exactly one"):
    module.apply({"params": params}, jnp.asarray(ids), inputs_embeds=embeds)


# ---------------------------------------------------------------------------------------
# Loading.


def test_params_tree_and_tied_head(ckpt):
  _, _, module, params = ckpt("mha_tied")
  assert "lm_head" not in params
  assert set(params["layers_0"]["self_attn"]["q_proj"]) == {"kernel", "bias"}
  assert set(params["layers_0"]["self_attn"]["o_proj"]) == {"kernel"}
  assert params["layers_0"]["self_attn"]["q_proj"]["kernel"].shape == (64, 64)
  _, _, _, untied = ckpt("gqa4_linear_rope")
  assert untied["lm_head"]["kernel"].shape == (64, 256)
  assert untied["layers_1"]["self_attn"]["q_proj"]["kernel"].shape == (64, 4 * 32)
  assert untied["layers_1"]["self_attn"]["k_proj"]["kernel"].shape == (64, 1 * 32)
  assert module.config.rope_type == "default"


def test_sharded_index_loading(ckpt, tmp_path):
  path, model, _, params = ckpt("gqa2_untied")
  model.save_pretrained(tmp_path, max_shard_size="20KB")
  assert os.path.exists(tmp_path / "model.safetensors.index.json")
  assert len([f for f in os.listdir(tmp_path) if f.endswith(".safetensors")]) > 2
  module, sharded = checkpoints.load_qwen2(str(tmp_path))
  jax.tree_util.tree_map(np.testing.assert_array_equal, sharded, params)
  ids, mask = batch("left")
  err, tol = parity_error(forward(module, sharded, ids, mask), hf_logits(model, ids, mask), mask)
  print(f"\nparity sharded index: {err:.3e} (allowed {tol:.3e})")
  assert err <= tol


def test_bare_qwen2model(tmp_path):
  """A Qwen2Model folder (no "model." prefix) loads when the head is tied."""
  causal = make_hf("mha_tied", seed=1)
  bare = Qwen2Model(causal.config)
  bare.load_state_dict(causal.model.state_dict())
  bare.save_pretrained(tmp_path / "tied")
  module, params = checkpoints.load_qwen2(str(tmp_path / "tied"))
  ids, mask = batch("right")
  err, tol = parity_error(forward(module, params, ids, mask), hf_logits(causal, ids, mask), mask)
  print(f"\nparity bare Qwen2Model (tied): {err:.3e} (allowed {tol:.3e})")
  assert err <= tol

  untied = Qwen2Model(HFQwen2Config(**{**BASE, **CONFIGS["gqa2_untied"]}))
  untied.save_pretrained(tmp_path / "untied")
  with pytest.raises(CheckpointError, match="lm_head.weight"):
    checkpoints.load_qwen2(str(tmp_path / "untied"))


@pytest.mark.parametrize("stored_head", ["equal", "different"])
def test_tied_config_with_a_stored_lm_head(ckpt, tmp_path, caplog, stored_head):
  """config.json ties the head, the checkpoint still stores lm_head.weight. Loading does
  what transformers does: a head equal to the embedding is ignored (the model stays
  tied, nothing to report); a different one is used, untied, with a warning. Either way
  the logits are transformers' for the same folder."""
  model = make_hf("gqa2_untied", seed=2)
  if stored_head == "equal":
    with torch.no_grad():
      model.lm_head.weight.copy_(model.model.embed_tokens.weight)
  model.save_pretrained(tmp_path)
  assert "lm_head.weight" in load_file(str(tmp_path / "model.safetensors"))
  config = json.loads((tmp_path / "config.json").read_text())
  config["tie_word_embeddings"] = True
  (tmp_path / "config.json").write_text(json.dumps(config))
  with caplog.at_level("WARNING", logger="lalmjax.checkpoints"):
    module, params = checkpoints.load_qwen2(str(tmp_path))
  warned = [r.getMessage() for r in caplog.records if "lm_head.weight" in r.getMessage()]
  if stored_head == "equal":
    assert module.config.tie_word_embeddings and "lm_head" not in params and not warned
  else:
    assert not module.config.tie_word_embeddings and "lm_head" in params
    assert len(warned) == 1 and "differs from the embedding" in warned[0]
  reference = Qwen2ForCausalLM.from_pretrained(str(tmp_path)).eval()
  ids, mask = batch("left")
  err, tol = parity_error(forward(module, params, ids, mask), hf_logits(reference, ids, mask),
                          mask)
  print(f"\ntied config, {stored_head} stored head: parity {err:.3e} (allowed {tol:.3e})")
  assert err <= tol


def _copy(src, dst):
  shutil.copytree(src, dst)
  return dst


def test_error_wrong_shape_names_tensor(ckpt, tmp_path):
  path, *_ = ckpt("gqa2_untied")
  bad = _copy(path, tmp_path / "bad")
  config = json.loads((bad / "config.json").read_text())
  config["intermediate_size"] = 96
  (bad / "config.json").write_text(json.dumps(config))
  with pytest.raises(CheckpointError, match=r"model\.layers\.0\.mlp\.gate_proj\.weight"):
    checkpoints.load_qwen2(str(bad))


def test_error_missing_tensor(ckpt, tmp_path):
  path, *_ = ckpt("gqa2_untied")
  bad = _copy(path, tmp_path / "bad")
  tensors = load_file(str(bad / "model.safetensors"))
  del tensors["model.layers.1.self_attn.k_proj.bias"]
  save_file(tensors, str(bad / "model.safetensors"))
  with pytest.raises(CheckpointError, match=r"model\.layers\.1\.self_attn\.k_proj\.bias"):
    checkpoints.load_qwen2(str(bad))
  del tensors["lm_head.weight"]
  save_file(tensors, str(bad / "model.safetensors"))
  with pytest.raises(CheckpointError, match="lm_head.weight"):
    checkpoints.load_qwen2(str(bad))


def test_error_missing_config_and_folder(ckpt, tmp_path):
  path, *_ = ckpt("gqa2_untied")
  bad = _copy(path, tmp_path / "bad")
  os.remove(bad / "config.json")
  with pytest.raises(CheckpointError, match="config.json"):
    checkpoints.load_qwen2(str(bad))
  with pytest.raises(CheckpointError, match="does not exist"):
    checkpoints.load_qwen2(str(tmp_path / "nowhere"))


def test_error_unsupported_config(ckpt, tmp_path):
  path, *_ = ckpt("gqa2_untied")
  bad = _copy(path, tmp_path / "bad")
  config = json.loads((bad / "config.json").read_text())
  config["rope_parameters"] = {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4}
  (bad / "config.json").write_text(json.dumps(config))
  with pytest.raises(CheckpointError, match=r"rope_parameters.*'yarn'.*not supported"):
    checkpoints.load_qwen2(str(bad))
  # Older config.json layout: rope_theta at top level, rope_scaling with "type".
  old = {**QWEN2_7B, "rope_scaling": {"type": "dynamic", "factor": 2.0}}
  with pytest.raises(ValueError, match=r"rope_scaling.*'dynamic'"):
    qwen2.Qwen2Config.from_hf(old)
  linear = qwen2.Qwen2Config.from_hf({**QWEN2_7B, "rope_scaling": {"type": "linear",
                                                                   "factor": 4.0}})
  assert (linear.rope_type, linear.rope_factor, linear.rope_theta) == ("linear", 4.0, 1e6)
  with pytest.raises(ValueError, match="num_attention_heads=28 is not divisible by "
                                       "num_key_value_heads=3"):
    qwen2.Qwen2Config.from_hf({**QWEN2_7B, "num_key_value_heads": 3})
  with pytest.raises(ValueError, match="'vocab_size' is missing"):
    qwen2.Qwen2Config.from_hf({k: v for k, v in QWEN2_7B.items() if k != "vocab_size"})
  with pytest.raises(ValueError, match="remat_policy"):
    qwen2.Qwen2Config.from_hf(QWEN2_7B, remat_policy="everything")
  with pytest.raises(ValueError, match="sliding"):
    qwen2.Qwen2Config.from_hf({**QWEN2_7B, "use_sliding_window": True})


# ---------------------------------------------------------------------------------------
# KV cache and generation.


@functools.partial(jax.jit, static_argnums=0)
def cached_call(module, params, ids, mask, cache):
  return module.apply({"params": params}, ids, mask, cache=cache)


@pytest.mark.parametrize("padding", ["right", "left"])
def test_cached_decoding_equals_full_forward(ckpt, padding):
  """Prefill 5 slots, then one slot at a time (pads included): every real position's
  logits equal the full forward's."""
  _, _, module, params = ckpt("gqa2_untied")
  ids, mask = batch(padding, s=12)
  full = np.asarray(forward(module, params, ids, mask))
  cache = qwen2.init_cache(module.config, batch_size=3, max_length=16)
  out = cached_call(module, params, ids[:, :5], mask[:, :5], cache)
  steps = [out.logits]
  for t in range(5, 12):
    out = cached_call(module, params, ids[:, t:t + 1], mask[:, t:t + 1], out.cache)
    steps.append(out.logits)
  cached = np.concatenate([np.asarray(x) for x in steps], axis=1)
  real = mask.astype(bool)
  err = float(np.abs(cached[real] - full[real]).max())
  tol = REL_TOL * max(1.0, float(np.abs(full[real]).max()))
  print(f"\ncached vs full ({padding} padding): max abs diff {err:.3e} (allowed {tol:.3e})")
  assert err <= tol
  assert int(out.cache.index) == 12
  np.testing.assert_array_equal(out.cache.positions, mask.sum(1))
  np.testing.assert_array_equal(out.cache.key_mask[:, :12], real)


def hf_generate(model, ids, mask, n, eos=None, pad=0):
  with torch.no_grad():
    out = model.generate(input_ids=torch.tensor(ids, dtype=torch.long),
                         attention_mask=torch.tensor(mask), do_sample=False,
                         max_new_tokens=n, min_new_tokens=0, eos_token_id=eos,
                         pad_token_id=pad)
  return out[:, ids.shape[1]:].numpy()


def test_greedy_matches_hf_generate(ckpt):
  """20 greedy tokens, token for token, left-padded (HF's layout) and right-padded."""
  _, model, module, params = ckpt("gqa2_untied")
  ids, mask = batch("left", s=10)
  ref = hf_generate(model, ids, mask, 20)
  assert ref.shape == (3, 20)
  never = jnp.array([-1])  # an EOS that cannot occur: all 20 tokens are generated
  out = qwen2.greedy_generate(module, {"params": params}, ids, mask, jnp.int32(20), never,
                              buffer_size=24)
  print(f"\ngreedy ours: {np.asarray(out.tokens)[:, :20].tolist()}\ngreedy HF:   {ref.tolist()}")
  np.testing.assert_array_equal(out.tokens[:, :20], ref)
  np.testing.assert_array_equal(out.lengths, [20, 20, 20])
  assert (np.asarray(out.tokens)[:, 20:] == 0).all()

  # The same prompts right-padded give the same tokens (positions and cache slots agree).
  right_ids, right_mask = batch("right", s=10)
  for row in range(3):
    n = right_mask[row].sum()
    right_ids[row, :n] = ids[row, 10 - n:]
  out_right = qwen2.greedy_generate(module, {"params": params}, right_ids, right_mask,
                                    jnp.int32(20), never, buffer_size=24)
  np.testing.assert_array_equal(out_right.tokens, out.tokens)

  # max_new_tokens is an array: a new limit reuses the compiled loop.
  compiled = generation.compilations()
  short = qwen2.greedy_generate(module, {"params": params}, ids, mask, jnp.int32(5), never,
                                buffer_size=24)
  assert generation.compilations() == compiled
  np.testing.assert_array_equal(short.tokens[:, :5], ref[:, :5])
  assert (np.asarray(short.tokens)[:, 5:] == 0).all()
  np.testing.assert_array_equal(short.lengths, [5, 5, 5])


def test_greedy_per_row_eos(ckpt):
  """A row stops at its EOS (then pads) while the others go on, as HF does."""
  _, model, module, params = ckpt("gqa2_untied")
  ids, mask = batch("left", s=10)
  free = hf_generate(model, ids, mask, 20)
  # An EOS that row 0 emits first, early, and some other row emits later or never.
  candidates = [(list(free[0]).index(t), t) for t in set(free[0].tolist())]
  eos = None
  for first0, tok in sorted(candidates):
    later = [list(free[r]).index(tok) if tok in free[r] else 99 for r in (1, 2)]
    if 2 <= first0 < 15 and max(later) > first0:
      eos = int(tok)
      break
  assert eos is not None, free
  ref = hf_generate(model, ids, mask, 20, eos=eos, pad=0)
  out = qwen2.greedy_generate(module, {"params": params}, ids, mask, jnp.int32(20),
                              jnp.array([eos]), buffer_size=20)
  tokens = np.asarray(out.tokens)
  print(f"\ngreedy with eos={eos}: ours {tokens.tolist()}\n  HF {ref.tolist()}")
  np.testing.assert_array_equal(tokens[:, :ref.shape[1]], ref)
  assert (tokens[:, ref.shape[1]:] == 0).all()
  for row in range(3):
    hits = np.flatnonzero(free[row] == eos)
    expected = hits[0] + 1 if hits.size else 20
    assert out.lengths[row] == expected


def test_greedy_zero_new_tokens(ckpt):
  _, _, module, params = ckpt("gqa2_untied")
  ids, mask = batch("left", s=10)
  out = qwen2.greedy_generate(module, {"params": params}, ids, mask, jnp.int32(0),
                              jnp.array([-1]), buffer_size=24, pad_id=7)
  np.testing.assert_array_equal(out.lengths, [0, 0, 0])
  assert (np.asarray(out.tokens) == 7).all()


def test_greedy_eos_as_first_token_and_several_eos_ids(ckpt):
  """A row whose first token is an EOS stops at length 1 while the others go on; with
  several EOS ids a row stops at whichever comes first. Token for token as HF generate."""
  _, model, module, params = ckpt("gqa2_untied")
  ids, mask = batch("left", s=10)
  free = hf_generate(model, ids, mask, 20)
  other = next(int(t) for t in free[2, 5:] if t != free[1, 3])
  cases = {"row 0's first token": [int(free[0, 0])], "two ids": [int(free[1, 3]), other]}
  for name, eos in cases.items():
    ref = hf_generate(model, ids, mask, 20, eos=eos, pad=0)
    out = qwen2.greedy_generate(module, {"params": params}, ids, mask, jnp.int32(20),
                                jnp.array(eos + [-1] * (2 - len(eos))), buffer_size=24)
    tokens = np.asarray(out.tokens)
    np.testing.assert_array_equal(tokens[:, :ref.shape[1]], ref, err_msg=name)
    assert (tokens[:, ref.shape[1]:] == 0).all(), name
    hits = [np.flatnonzero(np.isin(free[r], eos)) for r in range(3)]
    expected = [h[0] + 1 if h.size else 20 for h in hits]
    np.testing.assert_array_equal(out.lengths, expected, err_msg=name)
    print(f"\neos {eos} ({name}): lengths {np.asarray(out.lengths).tolist()}")
    if name == "row 0's first token":
      assert expected[0] == 1 and max(expected) > 1


def test_greedy_request_longer_than_the_buffer_fails_before_tracing(ckpt):
  _, _, module, params = ckpt("gqa2_untied")
  ids, mask = batch("left", s=10)
  compiled = generation.compilations()
  for limit in (25, np.int64(25), jnp.int32(25), np.array(100)):
    with pytest.raises(ValueError, match=r"max_new_tokens=\d+ does not fit the output "
                                         r"buffer: it must be in \[0, buffer_size=24\]"):
      qwen2.greedy_generate(module, {"params": params}, ids, mask, limit, jnp.array([-1]),
                            buffer_size=24)
  with pytest.raises(ValueError, match=r"max_new_tokens=-1"):
    qwen2.greedy_generate(module, {"params": params}, ids, mask, -1, jnp.array([-1]),
                          buffer_size=24)
  with pytest.raises(ValueError, match="max_new_tokens must be a scalar int"):
    qwen2.greedy_generate(module, {"params": params}, ids, mask, 2.5, jnp.array([-1]),
                          buffer_size=24)
  with pytest.raises(ValueError, match="buffer_size must be a static int >= 1"):
    qwen2.greedy_generate(module, {"params": params}, ids, mask, 0, jnp.array([-1]),
                          buffer_size=0)
  # The context: 10 prompt slots + 119 new ones > max_position_embeddings = 128.
  with pytest.raises(ValueError, match=r"prompt length 10 \+ buffer_size 119 = 129 positions, "
                                       r"more than the model's max_position_embeddings=128"):
    qwen2.greedy_generate(module, {"params": params}, ids, mask, 5, jnp.array([-1]),
                          buffer_size=119)
  assert generation.compilations() == compiled  # nothing was traced


# ---------------------------------------------------------------------------------------
# Precision, remat, sharding, scale.


def test_bfloat16_forward_close_to_float32(ckpt):
  path, _, module, params = ckpt("gqa2_untied")
  module16, params16 = checkpoints.load_qwen2(path, dtype=jnp.bfloat16)
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree_util.tree_leaves(params16))
  ids, mask = batch("left")
  ref = np.asarray(forward(module, params, ids, mask))
  ours = forward(module16, params16, ids, mask)
  assert ours.dtype == jnp.float32
  real = mask.astype(bool)
  err = float(np.abs(np.asarray(ours)[real] - ref[real]).max())
  scale = float(np.abs(ref[real]).max())
  print(f"\nbfloat16 vs float32: max abs diff {err:.3e}, logit scale {scale:.3e}")
  assert np.isfinite(np.asarray(ours)).all()
  assert err <= 0.05 * scale  # loose: bf16 has 8 mantissa bits


def test_remat_matches(ckpt):
  path, _, module, params = ckpt("gqa2_untied")
  module_remat, _ = checkpoints.load_qwen2(path, remat_policy="save_qkv_proj")
  ids, mask = batch("right")

  def loss(m, p):
    return jnp.sum(jnp.where(mask[..., None] == 1, m.apply({"params": p}, ids, mask), 0.0) ** 2)

  grads = jax.jit(jax.grad(functools.partial(loss, module)))(params)
  grads_remat = jax.jit(jax.grad(functools.partial(loss, module_remat)))(params)
  # Recomputation reorders float sums: compare each gradient relative to its own scale.
  for a, b in zip(jax.tree_util.tree_leaves(grads_remat), jax.tree_util.tree_leaves(grads)):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 * float(np.abs(b).max()))


def test_sharded_load_and_apply(ckpt):
  """Logical names on every param resolve through the rules table; apply under a mesh."""
  path, model, module, params = ckpt("gqa2_untied")
  abstract = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((1, 1), jnp.int32))
  boxed = jax.tree_util.tree_leaves(abstract["params"],
                                    is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert boxed and all(isinstance(x, nn.Partitioned) for x in boxed)
  specs = nn.get_partition_spec(abstract)["params"]
  assert specs["layers_0"]["self_attn"]["q_proj"]["kernel"] == jax.sharding.PartitionSpec(
      "embed", "heads")
  assert specs["embed_tokens"]["embedding"] == jax.sharding.PartitionSpec("vocab", "embed")
  mesh = sharding.create_mesh((-1, 1, 1))
  shardings = sharding.logical_to_mesh_sharding(specs, mesh)
  _, placed = checkpoints.load_qwen2(path, shardings=shardings)
  ids, mask = batch("left")
  with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.LOGICAL_AXIS_RULES):
    ours = jax.jit(lambda p: module.apply({"params": p}, ids, mask))(placed)
  err, tol = parity_error(ours, hf_logits(model, ids, mask), mask)
  assert err <= tol


def test_qwen2_7b_param_count_without_memory():
  config = qwen2.Qwen2Config.from_hf(QWEN2_7B)
  module = qwen2.Qwen2(config, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
  shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((1, 1), jnp.int32))
  count = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(nn.unbox(shapes)))
  print(f"\nQwen2-7B parameters (eval_shape): {count:,}")
  assert count == QWEN2_7B_PARAMS
  assert config.head_dim == 128
