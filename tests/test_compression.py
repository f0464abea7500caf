"""Tests for lalmjax.compression against plain-numpy references written here.

Shapes are fixed (B, T, D) = (3, 24, 5) so the module-level jitted functions compile
once per (method, k, options) and hypothesis only varies data, masks and k.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lalmjax import compression
from lalmjax.compression import (
  assign_segments,
  compress,
  num_output_tokens,
  register_method,
  registered_methods,
  tokens_per_second,
)

B, T, D = 3, 24, 5
FACTORS = (1, 2, 3, 4, 7, 30)  # 30 > T: one slot, a single token from the whole row
METHODS = ("uniavg", "unisamp", "unseg", "stack")
SETTINGS = settings(max_examples=40, deadline=None)

_STATIC = ("method", "factor")
_jit_compress = jax.jit(compress, static_argnames=_STATIC)
_jit_compress_smooth3 = jax.jit(functools.partial(compress, smooth=3), static_argnames=_STATIC)
_jit_assign = jax.jit(assign_segments, static_argnames=_STATIC)
_jit_assign_smooth3 = jax.jit(functools.partial(assign_segments, smooth=3), static_argnames=_STATIC)


def run(x, mask, method, k, **options):
  fn = _jit_compress_smooth3 if options == {"smooth": 3} else _jit_compress
  assert options in ({}, {"smooth": 3})
  y, y_mask = fn(jnp.asarray(x), jnp.asarray(mask), method=method, factor=k)
  return np.asarray(y), np.asarray(y_mask)


# ------------------------------------------------------------------ numpy references


def ref_groups(n, k):
  """Index lists of the uniform groups of n valid frames."""
  return [list(range(s, min(s + k, n))) for s in range(0, n, k)]


def ref_unseg_groups(v, k, smooth=1):
  """The documented unseg rule, with loops, in float64."""
  n = len(v)
  m = math.ceil(n / k)
  d = {}
  for j in range(1, n):
    a, b = v[j], v[j - 1]
    d[j] = 1.0 - float(a @ b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-8)
  half = smooth // 2
  w = [math.comb(smooth - 1, i) for i in range(smooth)]
  s = {}
  for j in range(1, n):
    num = den = 0.0
    for i in range(-half, half + 1):
      if 1 <= j + i <= n - 1:
        num += w[i + half] * d[j + i]
        den += w[i + half]
    s[j] = num / den
  cuts = sorted(sorted(range(1, n), key=lambda j: (-s[j], j))[: max(m - 1, 0)])
  starts = [0] + cuts
  ends = cuts + [n]
  return [list(range(a, e)) for a, e in zip(starts, ends)] if n else []


def reference(x, mask, method, k, smooth=1):
  """y float64[B, A, D or k*D], y_mask bool[B, A]."""
  batch, frames, width = x.shape
  slots = math.ceil(frames / k)
  out_width = k * width if method == "stack" else width
  y = np.zeros((batch, slots, out_width))
  y_mask = np.zeros((batch, slots), bool)
  for b in range(batch):
    v = x[b][mask[b]].astype(np.float64)  # valid frames, compacted in order
    if method == "unseg":
      groups = ref_unseg_groups(v, k, smooth)
    else:
      groups = ref_groups(len(v), k)
    for a, g in enumerate(groups):
      y_mask[b, a] = True
      if method == "uniavg" or method == "unseg":
        y[b, a] = v[g].mean(axis=0)
      elif method == "unisamp":
        y[b, a] = v[g[0]]
      elif method == "stack":
        flat = v[g].reshape(-1)
        y[b, a, : flat.size] = flat
  return y, y_mask


# ------------------------------------------------------------------ strategies


@st.composite
def masks(draw, batch=B, frames=T):
  rows = []
  for _ in range(batch):
    kind = draw(st.sampled_from(["prefix", "prefix", "holes", "empty", "full"]))
    if kind == "prefix":  # the normal case: audio, then padding
      rows.append(np.arange(frames) < draw(st.integers(0, frames)))
    elif kind == "holes":
      rows.append(np.array(draw(st.lists(st.booleans(), min_size=frames, max_size=frames))))
    elif kind == "empty":
      rows.append(np.zeros(frames, bool))
    else:
      rows.append(np.ones(frames, bool))
  return np.stack(rows)


def random_x(seed, shape=(B, T, D)):
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


seeds = st.integers(0, 2**32 - 1)


def check_token_layout(y, y_mask, mask, k):
  """ceil(valid / k) real tokens per row, packed at the front; padding slots are zero."""
  want = -(-mask.sum(axis=1) // k)
  np.testing.assert_array_equal(y_mask.sum(axis=1), want)
  np.testing.assert_array_equal(y_mask, np.arange(y_mask.shape[1])[None, :] < want[:, None])
  assert not np.any(y[~y_mask])


# ------------------------------------------------------------------ tests


@pytest.mark.parametrize(
  "method,options",
  [("uniavg", {}), ("unisamp", {}), ("unseg", {}), ("unseg", {"smooth": 3}), ("stack", {})],
)
@SETTINGS
@given(seed=seeds, mask=masks(), k=st.sampled_from(FACTORS))
def test_matches_numpy_reference(method, options, seed, mask, k):
  x = random_x(seed)
  y, y_mask = run(x, mask, method, k, **options)
  want_y, want_mask = reference(x, mask, method, k, **options)
  assert y.dtype == np.float32
  assert y.shape == want_y.shape == (B, math.ceil(T / k), (k if method == "stack" else 1) * D)
  np.testing.assert_array_equal(y_mask, want_mask)
  np.testing.assert_allclose(y, want_y, rtol=1e-5, atol=1e-5)
  check_token_layout(y, y_mask, mask, k)


@pytest.mark.parametrize("method", METHODS)
@SETTINGS
@given(seed=seeds, mask=masks(), k=st.sampled_from(FACTORS))
def test_holes_equal_compacted_prefix(method, seed, mask, k):
  """Padding anywhere is ignored: same result as the valid frames moved to the front."""
  x = random_x(seed)
  order = np.argsort(~mask, axis=1, kind="stable")
  x_compact = np.take_along_axis(x, order[..., None], axis=1)
  prefix = np.arange(T)[None, :] < mask.sum(axis=1, keepdims=True)
  # Garbage in the padding frames must not leak either.
  x_compact = np.where(prefix[..., None], x_compact, 1e6).astype(np.float32)
  y, y_mask = run(x, mask, method, k)
  y2, y_mask2 = run(x_compact, prefix, method, k)
  np.testing.assert_array_equal(y_mask, y_mask2)
  np.testing.assert_allclose(y, y2, rtol=1e-6, atol=1e-6)


def test_holes_example():
  x = np.arange(1, 9, dtype=np.float32).reshape(1, 8, 1)  # frames 1..8
  mask = np.array([[False, True, True, False, True, False, True, True]])  # valid: 2 3 5 7 8
  y, y_mask = compress(x, mask, "uniavg", 2)
  np.testing.assert_allclose(np.asarray(y)[0, :, 0], [2.5, 6.0, 8.0, 0.0])
  np.testing.assert_array_equal(y_mask[0], [True, True, True, False])
  y, _ = compress(x, mask, "unisamp", 2)
  np.testing.assert_allclose(np.asarray(y)[0, :, 0], [2.0, 5.0, 8.0, 0.0])
  y, _ = compress(x, mask, "stack", 2)
  np.testing.assert_allclose(np.asarray(y)[0], [[2, 3], [5, 7], [8, 0], [0, 0]])


@pytest.mark.parametrize("method", METHODS)
def test_compiles_once_for_any_mask(method):
  traces = []

  @functools.partial(jax.jit, static_argnames=("factor",))
  def f(x, mask, factor):
    traces.append(None)  # runs only while tracing
    return compress(x, mask, method, factor)

  x = jnp.asarray(random_x(0))
  rng = np.random.default_rng(1)
  patterns = [
    np.arange(T)[None, :] < np.array([[24], [10], [0]]),
    np.arange(T)[None, :] < np.array([[1], [2], [3]]),
    rng.random((B, T)) < 0.5,
    np.zeros((B, T), bool),
    np.ones((B, T), bool),
  ]
  for mask in patterns:
    y, y_mask = f(x, jnp.asarray(mask), factor=3)
    check_token_layout(np.asarray(y), np.asarray(y_mask), mask, 3)
  assert len(traces) == 1


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mask_seed", [0, 1, 2])
def test_factor_one_is_identity(method, mask_seed):
  x = random_x(mask_seed)
  mask = np.random.default_rng(mask_seed).random((B, T)) < 0.7
  mask[0] = True
  y, y_mask = run(x, mask, method, 1)
  assert y.shape == (B, T, D)
  for b in range(B):
    n = mask[b].sum()
    np.testing.assert_array_equal(y[b, :n], x[b][mask[b]])
    assert not y[b, n:].any() and not y_mask[b, n:].any() and y_mask[b, :n].all()


@SETTINGS
@given(seed=seeds, mask=masks(), k=st.sampled_from(FACTORS), smooth=st.sampled_from([1, 3]))
def test_unseg_segments_are_contiguous_and_counted(seed, mask, k, smooth):
  fn = _jit_assign if smooth == 1 else _jit_assign_smooth3
  ids, num_tokens = fn(jnp.asarray(random_x(seed)), jnp.asarray(mask), method="unseg", factor=k)
  ids, num_tokens = np.asarray(ids), np.asarray(num_tokens)
  for b in range(B):
    n = mask[b].sum()
    assert num_tokens[b] == math.ceil(n / k)
    seg = ids[b][mask[b]]  # in valid-frame order
    assert np.all(ids[b][~mask[b]] == math.ceil(T / k))  # padding -> dump id
    if n:
      # Starts at 0, steps by 0 or 1: contiguous, non-empty, exactly ceil(n/k) of them.
      assert seg[0] == 0
      assert set(np.diff(seg)) <= {0, 1}
      assert seg[-1] == num_tokens[b] - 1


@SETTINGS
@given(data=st.data(), k=st.sampled_from((2, 3, 4, 7)), holes=st.booleans())
def test_unseg_cuts_exactly_at_block_changes(data, k, holes):
  """Piecewise-constant rows with ceil(n/k) blocks: boundaries land on the block changes."""
  x = np.zeros((B, T, D), np.float32)
  mask = np.zeros((B, T), bool)
  want_ids = []
  for b in range(B):
    n = data.draw(st.integers(0, T), label="n")
    m = math.ceil(n / k)
    # m blocks of random lengths >= 1 summing to n: choose m-1 distinct cut points.
    cut_points = st.sets(st.integers(1, n - 1), min_size=m - 1, max_size=m - 1)
    cuts = sorted(data.draw(cut_points, label="cuts")) if m > 1 else []
    block = np.searchsorted(cuts, np.arange(n), side="right")  # block index of each valid frame
    rng = np.random.default_rng(data.draw(seeds, label="seed"))
    values = rng.standard_normal((max(m, 1), D)).astype(np.float32)
    if holes:
      positions = np.sort(rng.choice(T, size=n, replace=False))
    else:
      positions = np.arange(n)
    mask[b, positions] = True
    x[b, positions] = values[block]
    x[b, ~mask[b]] = rng.standard_normal((T - n, D))  # padding content must not matter
    want_ids.append((positions, block, values))
  ids, _ = _jit_assign(jnp.asarray(x), jnp.asarray(mask), method="unseg", factor=k)
  y, y_mask = run(x, mask, "unseg", k)
  for b, (positions, block, values) in enumerate(want_ids):
    np.testing.assert_array_equal(np.asarray(ids)[b, positions], block)
    m = len(set(block.tolist()))
    np.testing.assert_allclose(y[b, :m], values[:m], rtol=1e-6, atol=1e-6)


def test_unseg_smoothing_keeps_isolated_peaks():
  # Orthogonal one-hot blocks of length >= 3: every change has d = 1, so the 1-2-1
  # smoothed score peaks on the change (0.5) and its neighbours get 0.25.
  lengths = [3, 5, 4, 3, 6, 3]
  frames = np.concatenate([np.full(n, i % D) for i, n in enumerate(lengths)])
  x = np.eye(D, dtype=np.float32)[frames][None]
  x = np.concatenate([x, np.zeros((1, T - x.shape[1], D), np.float32)], axis=1)
  mask = np.arange(T)[None, :] < len(frames)
  k = 4  # ceil(24 / 4) = 6 blocks
  ids, _ = assign_segments(x, mask, "unseg", k, smooth=3)
  np.testing.assert_array_equal(np.asarray(ids)[0], np.repeat(np.arange(6), lengths))


def _unseg_ids(rows, k, smooth=1):
  """Runs unseg on rows of (valid frames float[n, D], positions of the n valid frames):
  ids of the valid frames, in order, per row."""
  x = np.random.default_rng(7).standard_normal((B, T, D)).astype(np.float32)  # padding junk
  mask = np.zeros((B, T), bool)
  for b, (v, positions) in enumerate(rows):
    x[b, positions], mask[b, positions] = v, True
  fn = _jit_assign if smooth == 1 else _jit_assign_smooth3
  ids, _ = fn(jnp.asarray(x), jnp.asarray(mask), method="unseg", factor=k)
  return [np.asarray(ids)[b, positions] for b, (_, positions) in enumerate(rows)]


def _ids_of_groups(groups):
  return np.concatenate([np.full(len(g), i) for i, g in enumerate(groups)])


@pytest.mark.parametrize("smooth", [1, 3])
def test_unseg_ties_go_to_the_earlier_frame(smooth):
  """Equal scores cut at the smaller j (rule 3), on rows of 8 valid frames, k = 3 (two
  cuts), where the ties are exact:

  - silence (an all-zero row): cos = 0 / max(0, 1e-8), so d = 1 everywhere and the cuts
    are the first two positions;
  - repeated frames A A B B A A B B (A, B orthogonal): d is 1 at every change and 0
    inside runs, so the two earlier changes are cut (with smooth=3 the scores form a
    plateau of equal 0.5s, cut at its start);
  - A A A A B B B B, its valid frames in holes of the row: the one change, then the
    earliest of the tied zeros (with smooth=3, the earlier of the two 0.25 shoulders).
  """
  a, b = np.eye(D, dtype=np.float32)[:2]
  rows = [(np.zeros((8, D), np.float32), np.arange(8)),
          (np.stack([a, a, b, b, a, a, b, b]), np.arange(3, 11)),
          (np.stack([a] * 4 + [b] * 4), np.array([0, 2, 5, 6, 11, 15, 16, 23]))]
  want = {1: [[0, 1, 2, 2, 2, 2, 2, 2], [0, 0, 1, 1, 2, 2, 2, 2], [0, 1, 1, 1, 2, 2, 2, 2]],
          3: [[0, 1, 2, 2, 2, 2, 2, 2], [0, 0, 1, 2, 2, 2, 2, 2], [0, 0, 0, 1, 2, 2, 2, 2]]}
  got = _unseg_ids(rows, 3, smooth)
  for r, (v, _) in enumerate(rows):
    np.testing.assert_array_equal(got[r], want[smooth][r], err_msg=f"row {r}")
    np.testing.assert_array_equal(got[r], _ids_of_groups(ref_unseg_groups(v, 3, smooth)))


def test_unseg_short_rows():
  x = random_x(3)
  mask = np.arange(T)[None, :] < np.array([[1], [2], [5]])
  y, y_mask = run(x, mask, "unseg", 7)  # n <= k: one token, the mean of the row
  for b, n in enumerate([1, 2, 5]):
    np.testing.assert_allclose(y[b, 0], x[b, :n].mean(axis=0), rtol=1e-6, atol=1e-6)
    assert y_mask[b].sum() == 1


@pytest.mark.parametrize("method", METHODS)
def test_bfloat16_under_jit(method):
  x = random_x(4).astype(jnp.bfloat16)
  mask = np.arange(T)[None, :] < np.array([[24], [13], [0]])
  y, y_mask = _jit_compress(jnp.asarray(x), jnp.asarray(mask), method=method, factor=3)
  assert y.dtype == jnp.bfloat16
  want, want_mask = reference(np.asarray(x, np.float32), mask, method, 3)
  np.testing.assert_array_equal(np.asarray(y_mask), want_mask)
  np.testing.assert_allclose(np.asarray(y, np.float32), want, rtol=1e-2, atol=1e-2)
  if method in ("unisamp", "stack"):  # pure selection: bit-exact
    np.testing.assert_array_equal(np.asarray(y, np.float32), want)


@pytest.mark.parametrize(
  "kwargs,match",
  [
    (dict(method="avg", factor=2), r"unknown compression method 'avg'; registered: .*uniavg"),
    (dict(method="uniavg", factor=0), r"factor must be >= 1, got 0"),
    (dict(method="uniavg", factor=-2), r"factor must be >= 1"),
    (dict(method="uniavg", factor=2.0), r"factor must be a static Python int"),
    (dict(method="uniavg", factor=True), r"factor must be a static Python int"),
    (dict(method="uniavg", factor=2, smooth=3), r"'uniavg' got unknown option\(s\)"),
    (dict(method="unseg", factor=2, smooth=2), r"unseg: smooth must be an odd int >= 1"),
    (dict(method="unseg", factor=2, smooth=0), r"unseg: smooth must be an odd int >= 1"),
  ],
)
def test_bad_arguments(kwargs, match):
  x, mask = random_x(0), np.ones((B, T), bool)
  with pytest.raises(ValueError, match=match):
    compress(x, mask, **kwargs)


def test_options_are_validated_without_data():
  """validate_options checks names and values with no array in sight (configs call it
  when they are built)."""
  assert compression.validate_options("unseg", smooth=3).name == "unseg"
  assert compression.validate_options("uniavg").name == "uniavg"
  for smooth in (0, 2, 3.0, True, "3"):
    with pytest.raises(ValueError, match="unseg: smooth must be an odd int >= 1"):
      compression.validate_options("unseg", smooth=smooth)
  with pytest.raises(ValueError, match=r"'stack' got unknown option\(s\) \['smooth'\]"):
    compression.validate_options("stack", smooth=3)
  with pytest.raises(ValueError, match="unknown compression method 'avg'"):
    compression.validate_options("avg")


def test_unknown_method_lists_every_registered_name():
  with pytest.raises(ValueError) as info:
    compress(random_x(0), np.ones((B, T), bool), "avg", 2)
  for name in registered_methods():
    assert name in str(info.value)


def test_bad_shapes_and_dtypes():
  x, mask = random_x(0), np.ones((B, T), bool)
  with pytest.raises(ValueError, match=r"mask shape \(3, 23\) does not match x shape \(3, 24"):
    compress(x, mask[:, :-1], "uniavg", 2)
  with pytest.raises(ValueError, match=r"mask shape"):
    compress(x, mask[:2], "uniavg", 2)
  with pytest.raises(ValueError, match=r"x must be \[B, T, D\]"):
    compress(x[0], mask[0], "uniavg", 2)
  with pytest.raises(ValueError, match=r"mask must be bool"):
    compress(x, mask.astype(np.int32), "uniavg", 2)
  with pytest.raises(ValueError, match=r"x must be floating point"):
    compress(x.astype(np.int32), mask, "uniavg", 2)


def test_token_counts_and_rate():
  assert [num_output_tokens(n, 3) for n in (0, 1, 3, 4, 1500)] == [0, 1, 1, 2, 500]
  np.testing.assert_array_equal(num_output_tokens(np.array([0, 5, 6]), 2), [0, 3, 3])
  assert num_output_tokens(1500, 1) == 1500
  for method in METHODS:
    assert tokens_per_second(method, 1) == 50.0
    assert tokens_per_second(method, 2) == 25.0
  assert tokens_per_second("uniavg", 4, frame_rate_hz=100.0) == 25.0
  with pytest.raises(ValueError, match="factor must be >= 1"):
    num_output_tokens(10, 0)
  with pytest.raises(ValueError, match="unknown compression method 'nope'"):
    tokens_per_second("nope", 2)


def test_registry_plugs_in_new_methods(monkeypatch):
  assert set(METHODS) <= set(registered_methods())
  monkeypatch.setattr(compression, "_METHODS", dict(compression._METHODS))

  @register_method("lastframe")
  def _last(x, mask, k):
    """One token: the last valid frame of the row."""
    rank = jnp.cumsum(mask, axis=1) - 1
    is_last = mask & (rank == mask.sum(axis=1, keepdims=True) - 1)
    dump = -(-mask.shape[1] // k)
    num_tokens = jnp.minimum(mask.sum(axis=1), 1).astype(jnp.int32)
    return jnp.where(is_last, 0, dump).astype(jnp.int32), num_tokens

  assert "lastframe" in registered_methods()
  x = random_x(5)
  mask = np.arange(T)[None, :] < np.array([[4], [0], [24]])
  y, y_mask = compress(x, mask, "lastframe", T)
  np.testing.assert_array_equal(np.asarray(y)[:, 0], [x[0, 3], np.zeros(D), x[2, 23]])
  np.testing.assert_array_equal(np.asarray(y_mask)[:, 0], [True, False, True])
  with pytest.raises(ValueError, match="already registered"):
    register_method("uniavg")(_last)
  with pytest.raises(ValueError, match="pooling must be"):
    register_method("other", pooling="max")
