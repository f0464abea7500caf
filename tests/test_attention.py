"""Attention implementations: each equals a plain einsum-softmax reference (values and
gradients, float32, 1e-5 relative); the models with "blocked" equal transformers (Whisper)
and the default path (Qwen2 logits and greedy tokens)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lalmjax import checkpoints
from lalmjax.models import attention, qwen2
from test_whisper import reference_encoder, rel_err, save_tiny_whisper

REL_TOL = 1e-5  # one module, float32 (STYLE.md)
# Odd shapes: S, T not multiples of the blocks; GQA N=4 over K=2.
B, S, T, N, K, H = 2, 37, 53, 4, 2, 8
BLOCKS = dict(block_q=8, block_k=16)  # "blocked" runs 5 query x 4 key blocks


def reference(q, k, v, mask, scale=None):
  """softmax(q k^T) v with kv heads repeated; masked scores at jax's -0.7 * max."""
  g = q.shape[2] // k.shape[2]
  k, v = jnp.repeat(k, g, axis=2), jnp.repeat(v, g, axis=2)
  scale = q.shape[-1] ** -0.5 if scale is None else scale
  scores = jnp.einsum("bsnh,btnh->bnst", q, k) * scale
  if mask is not None:
    scores = jnp.where(mask, scores, -0.7 * jnp.finfo(jnp.float32).max)
  return jnp.einsum("bnst,btnh->bsnh", jax.nn.softmax(scores, axis=-1), v)


def masks():
  """name -> bool mask broadcastable to [B, N or 1, S, T] (or None)."""
  rng = np.random.default_rng(1)
  keys = np.ones((B, T), bool)
  keys[1, 40:] = False  # right padding of row 1's keys
  keys[0, :5] = False  # left padding of row 0's keys
  padding = keys[:, None, None, :].copy()
  padding = np.broadcast_to(padding, (B, 1, S, T)).copy()
  padding[1, 0, 3, :] = False  # a fully masked query row
  causal = np.arange(T)[None, :] <= np.arange(S)[:, None] + (T - S)  # [S, T]
  per_head = rng.random((B, N, S, T)) < 0.7
  per_head[0, 2, 10, :] = False  # fully masked, in one head only
  return {"none": None, "padding": padding, "causal": causal[None, None],
          "padding_and_causal": padding & causal, "per_head": per_head}


MASKS = masks()


def inputs(dtype=jnp.float32, seed=0):
  rng = np.random.default_rng(seed)
  q = rng.standard_normal((B, S, N, H)) * 2  # wide score range: the running max matters
  k = rng.standard_normal((B, T, K, H)) * 2
  v = rng.standard_normal((B, T, K, H))
  return tuple(jnp.asarray(x, dtype) for x in (q, k, v))


def rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.abs(a - b).max() / max(1e-30, np.abs(b).max()))


def run(impl, q, k, v, mask, **kw):
  blocks = BLOCKS if impl == "blocked" else {}
  return attention.dot_product_attention(q, k, v, mask=mask, implementation=impl,
                                         **blocks, **kw)


@pytest.mark.parametrize("mask_name", list(MASKS))
@pytest.mark.parametrize("impl", attention.IMPLEMENTATIONS)
def test_equals_reference(impl, mask_name):
  q, k, v = inputs()
  mask = MASKS[mask_name]
  ours = jax.jit(lambda q, k, v: run(impl, q, k, v, mask))(q, k, v)
  ref = reference(q, k, v, mask)
  assert ours.shape == (B, S, N, H) and ours.dtype == jnp.float32
  err = rel(ours, ref)
  print(f"\n{impl} mask={mask_name}: rel err {err:.2e}")
  assert err <= REL_TOL


def test_fully_masked_row_is_the_mean_of_the_values():
  """What jax.nn.dot_product_attention returns (uniform softmax), and so do all three."""
  q, k, v = inputs()
  mask = MASKS["padding"]
  g = N // K
  mean_v = np.repeat(np.asarray(v[1]).mean(axis=0), g, axis=0)  # [N, H] over all T keys
  for impl in attention.IMPLEMENTATIONS:
    out = np.asarray(run(impl, q, k, v, mask))
    np.testing.assert_allclose(out[1, 3], mean_v, rtol=1e-5, atol=1e-6, err_msg=impl)


@pytest.mark.parametrize("mask_name", ["padding_and_causal", "per_head"])
@pytest.mark.parametrize("impl", attention.IMPLEMENTATIONS)
def test_gradients_equal_reference(impl, mask_name):
  q, k, v = inputs()
  mask = MASKS[mask_name]
  cotangent = jnp.asarray(np.random.default_rng(2).standard_normal((B, S, N, H)), jnp.float32)

  def loss(fn):
    return lambda q, k, v: jnp.sum(fn(q, k, v) * cotangent)

  ours = jax.jit(jax.grad(loss(lambda *a: run(impl, *a, mask)), argnums=(0, 1, 2)))(q, k, v)
  ref = jax.grad(loss(lambda *a: reference(*a, mask)), argnums=(0, 1, 2))(q, k, v)
  for name, a, b in zip("qkv", ours, ref):
    err = rel(a, b)
    print(f"\n{impl} mask={mask_name} d{name}: rel err {err:.2e}")
    assert err <= REL_TOL, name


@pytest.mark.parametrize("block_q,block_k", [(1, 1), (37, 53), (64, 64), (5, 60), (13, 7)])
def test_blocked_any_block_size(block_q, block_k):
  """Values and (custom VJP) gradients, one block or many, padded or not."""
  q, k, v = inputs()
  mask = MASKS["padding_and_causal"]

  def loss(fn):
    return lambda q, k, v: jnp.sum(jnp.sin(fn(q, k, v)))

  blocked = lambda q, k, v: attention.dot_product_attention(
      q, k, v, mask=mask, implementation="blocked", block_q=block_q, block_k=block_k)
  assert rel(jax.jit(blocked)(q, k, v), reference(q, k, v, mask)) <= REL_TOL
  ours = jax.jit(jax.grad(loss(blocked), argnums=(0, 1, 2)))(q, k, v)
  ref = jax.grad(loss(lambda *a: reference(*a, mask)), argnums=(0, 1, 2))(q, k, v)
  for name, a, b in zip("qkv", ours, ref):
    assert rel(a, b) <= REL_TOL, name


@pytest.mark.parametrize("batch_block", [1, 2])
@pytest.mark.parametrize("mask_name", ["none", "padding_and_causal", "per_head"])
def test_blocked_batch_loop_equals_reference(batch_block, mask_name):
  """The loop over batch rows (`batch_block`; the CPU's auto choice) changes nothing:
  values and gradients equal the reference, with B=3 so that 2 rows per step leave one."""
  q, k, v = (jnp.concatenate([x, 0.5 * x[:1]], axis=0) for x in inputs())
  mask = MASKS[mask_name]
  if mask is not None:
    mask = np.broadcast_to(mask, (B,) + mask.shape[1:])
    mask = np.concatenate([mask, ~mask[:1]], axis=0)  # row 3: another mask than row 1
  f = lambda q, k, v: attention.dot_product_attention(
      q, k, v, mask=mask, implementation="blocked", batch_block=batch_block, **BLOCKS)
  assert rel(f(q, k, v), reference(q, k, v, mask)) < REL_TOL
  w = jnp.asarray(np.random.default_rng(3).standard_normal(q.shape), jnp.float32)
  ours = jax.grad(lambda *a: (f(*a) * w).sum(), argnums=(0, 1, 2))(q, k, v)
  ref = jax.grad(lambda *a: (reference(*a, mask) * w).sum(), argnums=(0, 1, 2))(q, k, v)
  for a, b in zip(ours, ref):
    assert rel(a, b) < REL_TOL
  if batch_block == 1:  # the rows really run in a loop: a scan over the 3 rows
    jaxpr = jax.make_jaxpr(f)(q, k, v)
    assert 3 in [e.params["length"] for e in jaxpr.eqns if e.primitive.name == "scan"]


def test_live_blocks_skip_what_no_query_sees():
  """A causal mask's upper triangle is skipped; a query block with a fully masked row
  runs every key block (that row averages all T values); query padding does not count."""
  s, t, bq, bk = 30, 32, 8, 8  # S padded to 32: query rows 30, 31 are padding
  blocks = attention._Blocks(1.0, bq, bk, s, t, t)
  causal = np.arange(t)[None, :] <= np.arange(t)[:, None]  # [Sp, Tp]
  causal[s:] = False  # the padding rows `_blocked` adds
  mask = jnp.asarray(np.broadcast_to(causal, (2, 1, 1, t, t)))
  live = np.asarray(attention.live_blocks(mask, blocks))
  np.testing.assert_array_equal(live, np.tril(np.ones((4, 4), bool)))
  dead_row = np.array(mask)
  dead_row[1, 0, 0, 9] = False  # batch row 1, query 9 (query block 1) sees nothing
  live = np.asarray(attention.live_blocks(jnp.asarray(dead_row), blocks))
  expected = np.tril(np.ones((4, 4), bool))
  expected[1] = True
  np.testing.assert_array_equal(live, expected)
  assert attention.live_blocks(None, blocks) is None
  # The loops' spans: key blocks per query block, query blocks per key block.
  first, last = attention.live_span(jnp.asarray(expected), 1, 4)
  np.testing.assert_array_equal(first, [0, 0, 0, 0])
  np.testing.assert_array_equal(last, [1, 4, 3, 4])
  first, last = attention.live_span(jnp.asarray(expected), 0, 4)
  np.testing.assert_array_equal(first, [0, 1, 1, 1])
  np.testing.assert_array_equal(last, [4, 4, 4, 4])
  hidden = np.zeros((2, 3), bool)
  hidden[1, 1] = True
  first, last = attention.live_span(jnp.asarray(hidden), 0, 2)  # key blocks 0, 2: none
  assert list(np.asarray(last - first).clip(0)) == [0, 1, 0]
  assert attention.live_span(None, 1, 4) == (0, 4)


@pytest.mark.parametrize("batch_block", [0, 1])
def test_blocked_never_touches_keys_no_query_sees(batch_block):
  """Keys masked for every query hold NaN: the blocks that hold only such keys are
  skipped (forward and backward), so values and gradients stay finite and equal the
  reference on the same inputs with those keys zeroed."""
  q, k, v = inputs()
  mask = np.broadcast_to(MASKS["padding_and_causal"], (B, 1, S, T)).copy()
  mask[1, 0, 3, :] = True  # no fully masked row (it would need every key block)
  mask[..., 28:] = False  # key blocks 2 and 3 (of 14 keys each: keys 28..52) seen by none
  poison = (jnp.arange(T) >= 28)[None, :, None, None]
  k_nan, v_nan = jnp.where(poison, jnp.nan, k), jnp.where(poison, jnp.nan, v)
  k0, v0 = jnp.where(poison, 0.0, k), jnp.where(poison, 0.0, v)
  f = lambda q, k, v: attention.dot_product_attention(
      q, k, v, mask=mask, implementation="blocked", batch_block=batch_block, **BLOCKS)
  out = jax.jit(f)(q, k_nan, v_nan)
  assert np.isfinite(np.asarray(out)).all()
  assert rel(out, reference(q, k0, v0, mask)) <= REL_TOL
  w = jnp.asarray(np.random.default_rng(4).standard_normal(q.shape), jnp.float32)
  grads = jax.jit(jax.grad(lambda *a: (f(*a) * w).sum(), argnums=(0, 1, 2)))(q, k_nan, v_nan)
  ref = jax.grad(lambda *a: (reference(*a, mask) * w).sum(), argnums=(0, 1, 2))(q, k0, v0)
  for name, a, b in zip("qkv", grads, ref):
    a = np.asarray(a)
    if name != "q":
      assert np.isfinite(a[:, :28]).all() and rel(a[:, :28], b[:, :28]) <= REL_TOL, name
    else:
      assert np.isfinite(a).all() and rel(a, b) <= REL_TOL, name


def test_batch_rows_auto_loops_on_the_cpu_only(monkeypatch):
  mib = 1 << 20
  budget = attention.CPU_TILE_BYTES // mib
  assert attention.batch_rows(8, budget * mib // 8) == 8  # the whole tile fits
  assert attention.batch_rows(8, budget * mib // 2) == 2  # two rows fit per step
  assert attention.batch_rows(8, 2 * budget * mib) == 1  # not even one row fits
  assert attention.batch_rows(8, 2 * budget * mib, batch_block=0) == 8  # no loop
  assert attention.batch_rows(8, mib, batch_block=3) == 3  # as given
  assert attention.batch_rows(2, mib, batch_block=5) == 2
  monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
  assert attention.batch_rows(8, 2 * budget * mib) == 8  # accelerators: never a loop
  for bad in (-2, True, 1.5):
    with pytest.raises(ValueError, match="batch_block"):
      attention.batch_rows(8, mib, batch_block=bad)


def test_scale_and_single_query():
  """A decode step (S=1) against a long cache, and an explicit scale."""
  q, k, v = inputs()
  q1, mask1 = q[:, :1], MASKS["padding"][:, :, :1]
  for impl in attention.IMPLEMENTATIONS:
    ours = run(impl, q1, k, v, mask1, scale=0.3)
    assert rel(ours, reference(q1, k, v, mask1, scale=0.3)) <= REL_TOL, impl


def test_bfloat16_inputs_accumulate_in_float32():
  q, k, v = inputs(jnp.bfloat16)
  mask = MASKS["padding_and_causal"]
  ref = reference(*(x.astype(jnp.float32) for x in (q, k, v)), mask)
  xla = run("xla", q, k, v, mask)
  for impl in attention.IMPLEMENTATIONS:
    out = run(impl, q, k, v, mask)
    assert out.dtype == jnp.bfloat16
    # bf16 rounding of the inputs' products and of the probabilities (as the xla path).
    print(f"\n{impl} bf16: rel err vs f32 {rel(out, ref):.2e}, vs xla bf16 {rel(out, xla):.2e}")
    assert rel(out, ref) <= 2e-2, impl

  # Gradients of bf16 inputs come back bf16, close to the float32 ones.
  f32 = tuple(x.astype(jnp.float32) for x in (q, k, v))
  ref_grads = jax.grad(lambda *a: jnp.sum(reference(*a, mask) ** 2), argnums=(0, 1, 2))(*f32)
  grads = jax.grad(lambda *a: jnp.sum(run("blocked", *a, mask).astype(jnp.float32) ** 2),
                   argnums=(0, 1, 2))(q, k, v)
  for name, a, b in zip("qkv", grads, ref_grads):
    assert a.dtype == jnp.bfloat16
    print(f"blocked bf16 d{name}: rel err vs f32 {rel(a, b):.2e}")
    assert rel(a, b) <= 5e-2, name


def test_bad_arguments_are_rejected():
  q, k, v = inputs()
  with pytest.raises(ValueError, match="not an attention implementation"):
    attention.dot_product_attention(q, k, v, implementation="flash")
  with pytest.raises(ValueError, match="N a multiple of K"):
    attention.dot_product_attention(q[:, :, :3], k, v)
  with pytest.raises(ValueError, match="mask must be bool"):
    attention.dot_product_attention(q, k, v, mask=jnp.ones((S, T), jnp.int32))


# ---------------------------------------------------------------------------------------
# In the models.


@pytest.mark.parametrize("impl", attention.IMPLEMENTATIONS)
def test_whisper_encoder_equals_transformers(tmp_path, impl):
  """30 s (1500 frames: 3 x 3 blocks of 500 with the default blocks) vs transformers."""
  model = save_tiny_whisper(tmp_path, n_mels=80, d=64, layers=2, heads=4, ffn=128)
  module, params = checkpoints.load_whisper_encoder(str(tmp_path))
  module = module.clone(config=dataclasses.replace(module.config, attention=impl))
  mel = np.random.default_rng(0).standard_normal((2, 80, 3000)).astype(np.float32)
  ours = jax.jit(module.apply)({"params": params}, mel)
  err = rel_err(ours, reference_encoder(model, mel))
  print(f"\nwhisper attention={impl}: rel err {err:.2e}")
  assert err <= 1e-4


def test_whisper_config_rejects_unknown_attention(tmp_path):
  save_tiny_whisper(tmp_path, n_mels=80, d=64, layers=1, heads=4, ffn=128, positions=100)
  config = checkpoints.whisper_encoder_config(str(tmp_path))
  assert config.attention == "blocked"  # the default, from_hf included
  with pytest.raises(ValueError, match="WhisperEncoderConfig.attention='flash'"):
    dataclasses.replace(config, attention="flash").validate()


@pytest.fixture(scope="module")
def tiny_qwen2():
  config = qwen2.Qwen2Config(vocab_size=97, hidden_size=32, intermediate_size=64,
                             num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, head_dim=8, attention="xla")
  module = qwen2.Qwen2(config)
  params = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"]
  # Wider weights, so logits differ enough for greedy ties to be impossible.
  params = jax.tree.map(lambda p: p * 3.0 if p.ndim == 2 else p, params)
  return module, params


def left_padded(b=3, s=23, vocab=97):
  rng = np.random.default_rng(0)
  ids = rng.integers(1, vocab, (b, s)).astype(np.int32)
  mask = np.ones((b, s), np.int32)
  mask[1, :6] = 0
  mask[2, :15] = 0
  return np.where(mask == 1, ids, 0).astype(np.int32), mask


def test_qwen2_blocked_equals_xla(tiny_qwen2, monkeypatch):
  """Logits over a left-padded batch (blocks of 4: several per row, a padded last one),
  and 12 greedy tokens through the KV cache (decode: one query against the cache)."""
  module, params = tiny_qwen2
  monkeypatch.setattr(attention, "DEFAULT_BLOCK_Q", 4)
  monkeypatch.setattr(attention, "DEFAULT_BLOCK_K", 5)
  blocked = module.clone(config=dataclasses.replace(module.config, attention="blocked"))
  ids, mask = left_padded()
  ref = module.apply({"params": params}, ids, mask)
  ours = blocked.apply({"params": params}, ids, mask)
  real = mask.astype(bool)
  assert rel(np.asarray(ours)[real], np.asarray(ref)[real]) <= 1e-5

  never = jnp.array([-1])
  gen = [qwen2.greedy_generate(m, {"params": params}, ids, mask, jnp.int32(12), never,
                               buffer_size=12).tokens for m in (module, blocked)]
  print(f"\ngreedy xla:     {np.asarray(gen[0]).tolist()}\ngreedy blocked: "
        f"{np.asarray(gen[1]).tolist()}")
  np.testing.assert_array_equal(gen[0], gen[1])


def test_qwen2_config_attention():
  base = dict(vocab_size=8, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
              num_attention_heads=2, num_key_value_heads=1, head_dim=4)
  assert qwen2.Qwen2Config(**base).attention == "blocked"
  with pytest.raises(ValueError, match="Qwen2Config.attention='sdpa'"):
    qwen2.Qwen2Config(**base, attention="sdpa").validate()
