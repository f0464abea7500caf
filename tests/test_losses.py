"""Tests for lalmjax.losses.

next_token_loss against optax and PyTorch on the same numbers; chunked_next_token_loss
against next_token_loss on full logits (value and gradients, float32, 1e-5), and its
compiled memory against the full loss's.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from lalmjax.losses import chunked_next_token_loss, next_token_loss

B, S, D, V = 3, 13, 16, 50  # S - 1 = 12 predicted positions


def make_batch(seed=0, dtype=jnp.float32):
  """hidden dtype[B, S, D], head dtype[D, V], input_ids int32[B, S], loss_mask bool[B, S].

  Rows are right-padded to lengths 13, 9, 6; the mask covers a target span after a
  prompt, with holes, and never the padding.
  """
  rng = np.random.default_rng(seed)
  hidden = rng.normal(size=(B, S, D)).astype(np.float32)
  head = (0.5 * rng.normal(size=(D, V))).astype(np.float32)
  input_ids = rng.integers(0, V, size=(B, S)).astype(np.int32)
  lengths = np.array([13, 9, 6])
  prompt = np.array([3, 2, 4])
  pos = np.arange(S)[None]
  real = pos < lengths[:, None]
  input_ids = np.where(real, input_ids, 0)  # pad id 0
  loss_mask = real & (pos >= prompt[:, None])
  loss_mask[0, [5, 6, 10]] = False  # holes inside the target span
  loss_mask[1, 4] = False
  return (jnp.asarray(hidden, dtype), jnp.asarray(head, dtype), jnp.asarray(input_ids),
          jnp.asarray(loss_mask))


# ---- next_token_loss: independent references ----------------------------------------

def random_logits(seed=1):
  return np.random.default_rng(seed).normal(scale=3.0, size=(B, S, V)).astype(np.float32)


def test_next_token_loss_matches_optax():
  _, _, input_ids, loss_mask = make_batch()
  logits = random_logits()
  loss_sum, num_tokens = next_token_loss(jnp.asarray(logits), input_ids, loss_mask)
  per_token = optax.softmax_cross_entropy_with_integer_labels(
      jnp.asarray(logits[:, :-1]), input_ids[:, 1:])
  weight = np.asarray(loss_mask[:, 1:], np.float32)
  np.testing.assert_allclose(loss_sum, np.sum(np.asarray(per_token) * weight), rtol=1e-6)
  assert num_tokens == weight.sum() == 7 + 6 + 2  # targets in rows 0, 1, 2


def test_next_token_loss_matches_torch():
  _, _, input_ids, loss_mask = make_batch()
  logits = random_logits()
  targets = np.where(np.asarray(loss_mask[:, 1:]), np.asarray(input_ids[:, 1:]), -100)
  expected = torch.nn.functional.cross_entropy(
      torch.from_numpy(logits[:, :-1].reshape(-1, V)),
      torch.from_numpy(targets.reshape(-1).astype(np.int64)),
      ignore_index=-100, reduction="sum")
  loss_sum, num_tokens = next_token_loss(jnp.asarray(logits), input_ids, loss_mask)
  np.testing.assert_allclose(loss_sum, expected.item(), rtol=1e-6)
  assert num_tokens == (targets != -100).sum()


def test_next_token_loss_position_predicts_next_token():
  # Logits that put (almost) all mass on the next token: near-zero loss if and only if
  # position s is scored against token s+1.
  _, _, input_ids, loss_mask = make_batch()
  logits = np.zeros((B, S, V), np.float32)
  b, s = np.meshgrid(np.arange(B), np.arange(S - 1), indexing="ij")
  logits[b, s, np.asarray(input_ids)[:, 1:]] = 30.0
  loss_sum, num_tokens = next_token_loss(jnp.asarray(logits), input_ids, loss_mask)
  assert loss_sum / num_tokens < 1e-10


def test_next_token_loss_dtype_and_empty_mask():
  _, _, input_ids, loss_mask = make_batch()
  logits = jnp.asarray(random_logits(), jnp.bfloat16)
  loss_sum, num_tokens = next_token_loss(logits, input_ids, jnp.zeros_like(loss_mask))
  assert loss_sum.dtype == num_tokens.dtype == jnp.float32
  assert loss_sum == 0.0 and num_tokens == 0.0
  loss_sum, _ = next_token_loss(logits, input_ids, loss_mask)
  assert loss_sum.dtype == jnp.float32


# ---- chunked_next_token_loss == next_token_loss on full logits ----------------------

def full_loss(hidden, head, input_ids, loss_mask, head_layout):
  equation = "bsd,dv->bsv" if head_layout == "dv" else "bsd,vd->bsv"
  logits = jnp.einsum(equation, hidden, head, preferred_element_type=jnp.float32)
  return next_token_loss(logits, input_ids, loss_mask)


def value_and_grads(loss_fn, **static):
  """jit(value_and_grad) of loss_sum w.r.t. (hidden, head); num_tokens as aux."""
  fn = functools.partial(loss_fn, **static)
  return jax.jit(jax.value_and_grad(fn, argnums=(0, 1), has_aux=True))


def assert_close(actual, expected, rtol=1e-5):
  expected = np.asarray(expected, np.float32)
  np.testing.assert_allclose(np.asarray(actual, np.float32), expected, rtol=rtol,
                             atol=rtol * np.max(np.abs(expected)))


@pytest.mark.parametrize("head_layout", ["dv", "vd"])
@pytest.mark.parametrize("chunk_size", [1, 4, 5, 12, 13, 64])  # divides 12 or not, >= S
def test_chunked_matches_full(head_layout, chunk_size):
  hidden, head, input_ids, loss_mask = make_batch()
  if head_layout == "vd":
    head = head.T
  (full_sum, full_count), (full_dh, full_dhead) = value_and_grads(
      full_loss, head_layout=head_layout)(hidden, head, input_ids, loss_mask)
  (loss_sum, count), (d_hidden, d_head) = value_and_grads(
      chunked_next_token_loss, chunk_size=chunk_size, head_layout=head_layout)(
          hidden, head, input_ids, loss_mask)
  assert count == full_count
  assert_close(loss_sum, full_sum)
  assert d_hidden.shape == hidden.shape and d_head.shape == head.shape
  assert_close(d_hidden, full_dh)
  assert_close(d_head, full_dhead)
  # The last position predicts nothing, and masked targets give no gradient.
  np.testing.assert_array_equal(d_hidden[:, -1], 0.0)
  np.testing.assert_array_equal(d_hidden[2, 6:], 0.0)  # row 2: length 6, padding after


def test_chunked_bfloat16_keeps_dtypes():
  hidden, head, input_ids, loss_mask = make_batch(dtype=jnp.bfloat16)
  (full_sum, _), (full_dh, full_dhead) = value_and_grads(full_loss, head_layout="dv")(
      hidden, head, input_ids, loss_mask)
  (loss_sum, _), (d_hidden, d_head) = value_and_grads(
      chunked_next_token_loss, chunk_size=5)(hidden, head, input_ids, loss_mask)
  assert loss_sum.dtype == jnp.float32
  assert d_hidden.dtype == d_head.dtype == jnp.bfloat16
  # Same bf16 products, float32 accumulation: the value agrees to float32 rounding; the
  # gradients to bf16 rounding (d logits is cast to bf16 before both matmuls).
  assert_close(loss_sum, full_sum, rtol=1e-5)
  assert_close(d_hidden, full_dh, rtol=2e-2)
  assert_close(d_head, full_dhead, rtol=2e-2)


def test_chunked_single_position_is_empty():
  hidden, head, input_ids, loss_mask = make_batch()
  fn = value_and_grads(chunked_next_token_loss, chunk_size=4)
  (loss_sum, count), (d_hidden, d_head) = fn(hidden[:, :1], head, input_ids[:, :1],
                                             loss_mask[:, :1])
  assert loss_sum == 0.0 and count == 0.0
  np.testing.assert_array_equal(d_hidden, 0.0)
  np.testing.assert_array_equal(d_head, 0.0)


def test_chunked_on_a_mesh():
  # Batch over "data", vocab over "tensor", as the callers constrain them.
  hidden, head, input_ids, loss_mask = make_batch()
  hidden, input_ids, loss_mask = (jnp.concatenate([x, x[:1]]) for x in
                                  (hidden, input_ids, loss_mask))  # B = 4
  head = jnp.pad(head, ((0, 0), (0, 2)))  # V = 52
  expected = value_and_grads(chunked_next_token_loss, chunk_size=5)(
      hidden, head, input_ids, loss_mask)
  mesh = Mesh(np.array(jax.devices()[:8]).reshape(2, 4), ("data", "tensor"))
  put = lambda x, spec: jax.device_put(x, NamedSharding(mesh, spec))
  actual = value_and_grads(chunked_next_token_loss, chunk_size=5)(
      put(hidden, P("data")), put(head, P(None, "tensor")), put(input_ids, P("data")),
      put(loss_mask, P("data")))
  jax.tree.map(assert_close, actual, expected)


def test_chunked_rejects_bad_arguments():
  hidden, head, input_ids, loss_mask = make_batch()
  with pytest.raises(ValueError, match="head_layout"):
    chunked_next_token_loss(hidden, head, input_ids, loss_mask, chunk_size=4,
                            head_layout="vocab")
  with pytest.raises(ValueError, match="chunk_size"):
    chunked_next_token_loss(hidden, head, input_ids, loss_mask, chunk_size=0)
  with pytest.raises(ValueError, match="does not match"):
    chunked_next_token_loss(hidden, head, input_ids, loss_mask, chunk_size=4,
                            head_layout="vd")


# ---- memory: compile only -------------------------------------------------------------

@pytest.mark.parametrize("argnums", [(0, 1), (0,)], ids=["head_trained", "head_frozen"])
def test_chunked_gradient_temp_memory(argnums):
  b, s, d, v, chunk = 1, 512, 256, 32000, 64
  args = (jax.ShapeDtypeStruct((b, s, d), jnp.float32),
          jax.ShapeDtypeStruct((d, v), jnp.float32),
          jax.ShapeDtypeStruct((b, s), jnp.int32),
          jax.ShapeDtypeStruct((b, s), jnp.bool_))

  def temp_bytes(loss_fn):
    fn = jax.value_and_grad(lambda *a: loss_fn(*a)[0], argnums=argnums)
    return jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes

  full = temp_bytes(functools.partial(full_loss, head_layout="dv"))
  chunked = temp_bytes(functools.partial(chunked_next_token_loss, chunk_size=chunk))
  logits_bytes = b * (s - 1) * v * 4
  chunk_logits_bytes = b * chunk * v * 4
  # Training the head adds a float32 [D, V] matmul result, in either program; the rest
  # of the temp memory is what grows with S.
  head_grad_bytes = d * v * 4 if 1 in argnums else 0
  assert full > logits_bytes
  assert chunked - head_grad_bytes < (full - head_grad_bytes) / 4, (chunked, full)
  assert chunked < head_grad_bytes + 4 * chunk_logits_bytes, chunked
