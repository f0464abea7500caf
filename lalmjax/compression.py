"""Audio-token compression: encoder frames [B, T, D] -> audio tokens [B, A, D].

Every method is a *segment assignment* followed by one shared reduction. A method gives
each valid encoder frame the id of the output slot it goes to; ``jax.ops.segment_sum``
then builds the tokens, as a mean (``pooling="mean"``: ``uniavg``, ``unisamp``,
``unseg``) or by placing each frame in its own slot and reshaping k slots into one
token (``pooling="concat"``: ``stack``). All shapes are static: a row's number of valid
frames only changes which ids are written, so one compilation serves every mask of a
given (B, T, D, k).

Methods are registered by name with ``@register_method(name)``; later ones (CTC- or
CIF-driven segments, similarity merging) plug in beside these four. Learned reducers
(strided conv, window Q-Former) belong in a module, not here.

Axis letters: B batch, T encoder frames, A = ceil(T / k) audio-token slots, D width.

Contract for a method ``assign(x, mask, k, **options) -> (segment_ids, num_tokens)``:

  x: float32[B, T, D]        encoder frames (float32 or wider: the compute dtype)
  mask: bool[B, T]           valid frames; anywhere in the row, taken in order
  segment_ids: int32[B, T]   slot of each valid frame, in [0, num_slots); frames that
                             contribute nothing (padding, skipped frames) get the dump id
                             ``num_slots``, a slot the reduction computes and then drops
  num_tokens: int32[B]       real tokens in the row, ceil(valid / k) for every method here;
                             slots [0, num_tokens) are filled, the rest are padding

``num_slots`` is A for ``pooling="mean"`` and A * k for ``pooling="concat"``.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from typing import Callable, Literal

import jax
import jax.numpy as jnp
import numpy as np

Pooling = Literal["mean", "concat"]

# (x: float32[B, T, D], mask: bool[B, T], k: int, **options)
#   -> (segment_ids: int32[B, T], num_tokens: int32[B])
AssignFn = Callable[..., tuple[jax.Array, jax.Array]]

WHISPER_FRAME_RATE_HZ = 50.0  # Whisper encoder: 1500 frames per 30 s window.


@dataclasses.dataclass(frozen=True)
class Method:
  """A registered compression method."""

  name: str
  assign: AssignFn  # segment assignment, see the module docstring
  pooling: Pooling  # how the shared reduction turns segments into tokens
  options: tuple[str, ...]  # keyword-only options `assign` accepts
  check_options: Callable[..., None] | None = None  # raises ValueError on a bad value


_METHODS: dict[str, Method] = {}


def register_method(name: str, *, pooling: Pooling = "mean",
                    check_options: Callable[..., None] | None = None):
  """Decorator registering ``assign(x, mask, k, *, **options)`` as method ``name``.

  Options are the function's keyword-only parameters; ``compress`` forwards them.
  ``check_options(**options)``, if given, raises ValueError on a bad value; it runs
  in ``validate_options``, before anything is traced.
  """
  if pooling not in ("mean", "concat"):
    raise ValueError(
      f"register_method({name!r}): pooling must be 'mean' or 'concat', got {pooling!r}"
    )

  def decorator(assign: AssignFn) -> AssignFn:
    if name in _METHODS:
      raise ValueError(f"compression method {name!r} is already registered")
    params = inspect.signature(assign).parameters.values()
    options = tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)
    _METHODS[name] = Method(name=name, assign=assign, pooling=pooling, options=options,
                            check_options=check_options)
    return assign

  return decorator


def registered_methods() -> tuple[str, ...]:
  """Names of the registered methods, sorted."""
  return tuple(sorted(_METHODS))


def num_output_tokens(num_valid, factor: int):
  """ceil(num_valid / factor): real tokens from ``num_valid`` valid frames (int or int array)."""
  _check_factor(factor)
  return (num_valid + factor - 1) // factor


def tokens_per_second(
  method: str, factor: int, frame_rate_hz: float = WHISPER_FRAME_RATE_HZ
) -> float:
  """Audio tokens per second of audio: frame_rate_hz / factor for every method here.

  ``unseg`` segments vary in length, but a row of n frames always gets ceil(n / k)
  tokens, so its rate is the same as the uniform methods'. k = 1 gives 50 for Whisper.
  """
  get_method(method)
  _check_factor(factor)
  return frame_rate_hz / factor


def compress(x, mask, method: str, factor: int, **options) -> tuple[jax.Array, jax.Array]:
  """Compresses encoder frames into audio tokens.

  Valid frames are taken in order wherever they are in the row; padding frames never
  reach a token. Row b gets exactly ceil(valid_b / k) real tokens, packed at the front;
  padding slots are zeros. k = 1 is the identity on the valid frames (compacted).

  Under ``jax.jit`` mark ``method``, ``factor`` and any options static
  (``static_argnames=("method", "factor")``; bind options with ``functools.partial``).
  Shapes depend only on (B, T, D, k), so changing the mask never recompiles.

  Args:
    x: float[B, T, D] encoder frames (any float dtype; reductions run in float32).
    mask: bool[B, T] valid frames.
    method: a registered name: "uniavg", "unisamp", "unseg", "stack", ...
    factor: static int k >= 1.
    **options: keyword options of the method, e.g. ``smooth=3`` for "unseg".

  Returns:
    y: x.dtype[B, A, D] tokens, A = ceil(T / k) (``[B, A, k * D]`` for "stack").
    y_mask: bool[B, A] real tokens.
  """
  spec, xf, mask, factor = _prepare(x, mask, method, factor, options)
  batch, frames, width = xf.shape
  num_slots = _num_slots(frames, factor)  # A = ceil(T / k)
  segment_ids, num_tokens = spec.assign(xf, mask, factor, **options)
  # bool[B, A]
  y_mask = jnp.arange(num_slots)[None, :] < num_tokens[:, None]

  if spec.pooling == "mean":
    sums = _segment_sum(xf, segment_ids, num_slots)  # [B, A, D]
    counts = _segment_sum(jnp.ones((batch, frames), xf.dtype), segment_ids, num_slots)  # [B, A]
    y = sums / jnp.maximum(counts, 1)[..., None]
  else:  # "concat": one frame per slot, k consecutive slots make a token.
    y = _segment_sum(xf, segment_ids, num_slots * factor)  # [B, A * k, D]
    y = y.reshape(batch, num_slots, factor * width)
  # Empty slots are already zero; the where keeps the contract for any plugged-in method.
  y = jnp.where(y_mask[..., None], y, 0)
  return y.astype(jnp.result_type(x)), y_mask


def assign_segments(x, mask, method: str, factor: int, **options) -> tuple[jax.Array, jax.Array]:
  """The segment assignment alone: (segment_ids int32[B, T], num_tokens int32[B]).

  For inspecting where a method puts its boundaries; see the module docstring.
  """
  spec, xf, mask, factor = _prepare(x, mask, method, factor, options)
  return spec.assign(xf, mask, factor, **options)


def _prepare(x, mask, method, factor, options):
  """Validates the arguments; returns (method, x in float32 or wider, mask, int factor).

  Reductions run in float32 (or float64 if that is what came in); outputs go back to
  x's dtype.
  """
  spec = _validate(x, mask, method, factor, options)
  x = jnp.asarray(x)
  return spec, x.astype(jnp.promote_types(x.dtype, jnp.float32)), jnp.asarray(mask), int(factor)


# ----------------------------------------------------------------------------- methods


@register_method("uniavg")
def _uniavg(x, mask, k):
  """Token a = mean of valid frames a*k .. a*k + k - 1; the last run may be shorter."""
  rank = _valid_rank(mask)
  return jnp.where(mask, rank // k, _num_slots(mask.shape[1], k)), _num_tokens(mask, k)


@register_method("unisamp")
def _unisamp(x, mask, k):
  """Token a = valid frame a*k: a one-frame segment, so its mean is the frame itself."""
  rank = _valid_rank(mask)
  keep = mask & (rank % k == 0)
  return jnp.where(keep, rank // k, _num_slots(mask.shape[1], k)), _num_tokens(mask, k)


@register_method("stack", pooling="concat")
def _stack(x, mask, k):
  """Token a = concat(valid frames a*k .. a*k + k - 1), zero-padded (SLAM-ASR, Ultravox).

  The ids are frame slots, not tokens: valid frame r goes to slot r, and the concat
  pooling reshapes slots [B, A*k, D] -> [B, A, k*D].
  """
  rank = _valid_rank(mask)
  return jnp.where(mask, rank, _num_slots(mask.shape[1], k) * k), _num_tokens(mask, k)


def _check_unseg_options(*, smooth: int = 1):
  is_int = isinstance(smooth, (int, np.integer)) and not isinstance(smooth, bool)
  if not is_int or smooth < 1 or smooth % 2 == 0:
    raise ValueError(f"unseg: smooth must be an odd int >= 1, got {smooth!r}")


@register_method("unseg", check_options=_check_unseg_options)
def _unseg(x, mask, k, *, smooth: int = 1):
  """Unsupervised segmentation: cut where adjacent frames differ most, mean-pool segments.

  The rule, per row, with v_0 .. v_{n-1} its valid frames in order and m = ceil(n / k)
  (the uniform methods' token budget, so the mean segment length is k):

    1. d_j = 1 - cos(v_j, v_{j-1}) for j = 1 .. n-1, where
       cos(a, b) = a.b / max(|a| |b|, 1e-8), in float32.
    2. If smooth > 1 (odd): s_j = sum_i w_i d_{j+i} / sum_i w_i over the i in
       [-smooth//2, smooth//2] with 1 <= j+i <= n-1, w = binomial weights
       C(smooth-1, i + smooth//2) (1-2-1 for smooth=3). Otherwise s_j = d_j.
    3. Boundaries: the m-1 positions j in [1, n-1] with the largest s_j; equal scores go
       to the smaller j. A boundary at j means v_j starts a new segment.
    4. v_j belongs to segment (number of boundaries <= j); each segment is mean-pooled.

  Segments are contiguous and non-empty, and there are exactly m of them. n <= k gives
  one segment (the mean of the row); k = 1 cuts everywhere (the identity).

  Option ``smooth`` (default 1, no smoothing): with 1 the boundaries sit exactly on the
  m-1 largest changes. A larger window ignores one-frame spikes in noisy features but
  blurs changes closer together than the window. Weights are binomial, not a box,
  because a box turns a one-frame spike into a flat run of equal scores and the
  earliest-wins tie rule would then cut smooth//2 frames early.

  Static shapes: the per-row top-(m-1) is a rank from a stable argsort, not a top_k
  with a data-dependent k.
  """
  frames = mask.shape[1]
  num_valid = jnp.sum(mask, axis=1, dtype=jnp.int32)  # [B]
  num_tokens = _num_tokens(mask, k)

  # Work in valid-frame order: a stable sort on ~mask moves the valid frames to the
  # front in their order, so "adjacent" means adjacent among valid frames, holes skipped.
  order = jnp.argsort(~mask, axis=1, stable=True)  # int32[B, T]
  xc = jnp.take_along_axis(x, order[..., None], axis=1)  # [B, T, D]

  # Position j is a candidate boundary between compacted frames j-1 and j. bool[B, T]
  j = jnp.arange(frames)[None, :]
  candidate = (j >= 1) & (j < num_valid[:, None])
  # d[:, j] = 1 - cos(xc[:, j], xc[:, j-1]); column 0 is a placeholder. [B, T]
  d = jnp.pad(_cosine_dissimilarity(xc[:, 1:], xc[:, :-1]), ((0, 0), (1, 0)))
  if smooth > 1:
    d = _binomial_smooth(d, candidate, smooth)

  # rank 0 = largest score; the stable sort keeps the earlier of equal scores first.
  score = jnp.where(candidate, d, -jnp.inf)
  by_score = jnp.argsort(-score, axis=1, stable=True)
  rank = jnp.argsort(by_score, axis=1, stable=True)  # inverse permutation, [B, T]
  boundary = candidate & (rank < (num_tokens - 1)[:, None])

  # Segment of the j-th valid frame, then back to original frame positions.
  segment_of_rank = jnp.cumsum(boundary, axis=1, dtype=jnp.int32)  # [B, T]
  ids = jnp.take_along_axis(segment_of_rank, jnp.maximum(_valid_rank(mask), 0), axis=1)
  return jnp.where(mask, ids, _num_slots(frames, k)), num_tokens


# ----------------------------------------------------------------------------- helpers


def _num_slots(frames: int, k: int) -> int:
  """A = ceil(T / k) token slots; also the dump id of the "mean" methods."""
  return -(-frames // k)


def _valid_rank(mask):
  """int32[B, T]: index of each frame among its row's valid frames (meaningless on padding)."""
  return jnp.cumsum(mask, axis=1, dtype=jnp.int32) - 1


def _num_tokens(mask, k):
  """int32[B]: ceil(valid / k)."""
  return (jnp.sum(mask, axis=1, dtype=jnp.int32) + k - 1) // k


def _segment_sum(data, segment_ids, num_slots):
  """Per-row segment sum. data: [B, T, ...], segment_ids: int32[B, T] -> [B, num_slots, ...].

  One extra slot (id ``num_slots``) collects the dump frames and is sliced off.
  """

  def row_sum(row, ids):
    return jax.ops.segment_sum(row, ids, num_segments=num_slots + 1)

  return jax.vmap(row_sum)(data, segment_ids)[:, :num_slots]


def _cosine_dissimilarity(a, b, eps=1e-8):
  """1 - cos(a, b) over the last axis. a, b: float32[..., D] -> float32[...]."""
  dot = jnp.sum(a * b, axis=-1)
  norms = jnp.sqrt(jnp.sum(a * a, axis=-1)) * jnp.sqrt(jnp.sum(b * b, axis=-1))
  return 1.0 - dot / jnp.maximum(norms, eps)


def _binomial_smooth(d, valid, window):
  """Binomial-weighted moving average of d over the valid positions only.

  d: float32[B, T], valid: bool[B, T]. Weights are renormalised over the valid
  neighbours, so row edges and padding do not pull scores toward zero.
  """
  half = window // 2
  weights = [math.comb(window - 1, i) for i in range(window)]
  frames = d.shape[1]
  num = jnp.pad(jnp.where(valid, d, 0.0), ((0, 0), (half, half)))
  den = jnp.pad(valid.astype(d.dtype), ((0, 0), (half, half)))
  num = sum(w * num[:, i : i + frames] for i, w in enumerate(weights))
  den = sum(w * den[:, i : i + frames] for i, w in enumerate(weights))
  return num / jnp.maximum(den, 1.0)  # den >= the centre weight at every valid position


def get_method(method) -> Method:
  """The registered method called `method`; ValueError listing the names otherwise."""
  if not isinstance(method, str) or method not in _METHODS:
    names = ", ".join(registered_methods())
    raise ValueError(f"unknown compression method {method!r}; registered: {names}")
  return _METHODS[method]


def _check_factor(factor):
  if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)):
    raise ValueError(
      f"compression factor must be a static Python int (static under jit), got {factor!r}"
    )
  if factor < 1:
    raise ValueError(f"compression factor must be >= 1, got {factor}")


def validate_options(method: str, **options) -> Method:
  """Checks a method's options without data: names it accepts, values its check allows.

  Configs call this when they are built (e.g. ``LALMConfig``), so a bad option fails
  there rather than at trace time. Returns the method.
  """
  spec = get_method(method)
  unknown = sorted(set(options) - set(spec.options))
  if unknown:
    accepted = ", ".join(spec.options) or "none"
    raise ValueError(
      f"compression method {method!r} got unknown option(s) {unknown}; it accepts: {accepted}"
    )
  if spec.check_options is not None:
    spec.check_options(**options)
  return spec


def _validate(x, mask, method, factor, options) -> Method:
  spec = validate_options(method, **options)
  _check_factor(factor)
  x_shape, x_dtype = np.shape(x), jnp.result_type(x)
  m_shape, m_dtype = np.shape(mask), jnp.result_type(mask)
  if len(x_shape) != 3:
    raise ValueError(f"compress: x must be [B, T, D], got shape {x_shape}")
  if not jnp.issubdtype(x_dtype, jnp.floating):
    raise ValueError(f"compress: x must be floating point, got {x_dtype}")
  if m_shape != x_shape[:2]:
    raise ValueError(
      f"compress: mask shape {m_shape} does not match x shape {x_shape} (want [B, T])"
    )
  if m_dtype != jnp.bool_:
    raise ValueError(f"compress: mask must be bool, got {m_dtype}")
  return spec
