"""Batched decoding under one ``jax.jit``: greedy and beam search over a KV cache.

Axis letters:

  B batch          K beams (``DecodeConfig.beam_size``)     R decoding rows: B, or B*K
  S prompt slots   M output buffer (``buffer_size``)        C beam candidates per row
  V vocab          L layers                                 E eos ids

Beam rows are batch-major (row ``b * K + k``), so a row's beams sit on the same device
when the batch is split over the mesh's data axes.

Flow. The prompt is prefilled through the KV cache in one call (for the LALM: the audio is
encoded once and spliced into the prompt's embeddings first), which gives each row's
next-token logits ``[B, V]`` and a cache of ``S + M`` slots. One ``lax.while_loop`` then
picks tokens and feeds them back one slot at a time; neither the audio nor the prompt is
recomputed inside the loop. ``max_new_tokens`` is an array, so a new limit reuses the
compiled program; the loop ends when every row is done or the limit is reached. The
decode programs count their traces (``compilations()``), so eval can report them.

Greedy (``beam_size == 1``): argmax; a row is done at its first EOS (any of ``eos_ids``)
and is padded after it.

Beam search (``beam_size == K > 1``) is Hugging Face ``generate``'s (transformers 5,
``early_stopping="never"``), which is fairseq's; the state is T5X's (``t5x/decoding.py``):
the K best alive hypotheses and the K best finished ones with their scores.

  * A finished hypothesis scores ``sum log p / length ** length_penalty``; its length
    counts its EOS. A hypothesis still alive at the limit is finished there, as it stands.
  * Each step takes the best ``C = max(2, 1 + E) * K`` continuations of the alive beams
    by sum log-prob (at most ``E * K`` of them end in an EOS, so at least K go on). The K
    best that did not end become the alive beams; those that ended and rank among the
    best K become candidates for the finished set, which keeps its K best scores.
  * A row is done when it holds K finished hypotheses and its best alive one cannot beat
    the worst of them: a sum of log-probs only falls, so the best it can reach is its
    sum over ``limit ** length_penalty`` (``length_penalty > 0``: longer is better) or
    over its current length (otherwise). The bound is exact: stopping then never changes
    the result.
  * The answer is the best finished hypothesis.

The cache has one row per beam. After each step every cache row is replaced by its
parent beam's (``_gather_beams``: keys, values, ``key_mask`` and ``positions``, within
each batch row), before the chosen tokens are fed in.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from lalmjax.models import qwen2
from lalmjax.models.lalm import LALM

# The score of an empty hypothesis slot or a discarded candidate (Hugging Face uses the
# same): finite, so that sums and quotients of it stay ordinary numbers.
NEG_INF = -1.0e9

LOGITS_AXES = ("activation_batch", "activation_vocab")

_traces = 0


def compilations() -> int:
  """How many times the decode programs have been traced (= compiled) in this process."""
  return _traces


def _count_trace() -> None:
  # Runs in Python only while jax traces a decode function, never on a cache hit.
  global _traces
  _traces += 1


# ---------------------------------------------------------------------------------------
# Configuration and result.


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
  """How to decode. Static: each distinct config compiles its own program.

  Attributes:
    beam_size: K, hypotheses kept per row; 1 is greedy decoding.
    length_penalty: a finished hypothesis scores ``sum log p / length ** length_penalty``
      (length counting its EOS; Hugging Face's convention); > 0 favours longer outputs,
      0 ranks by the plain sum. Greedy decoding only reports it.
    buffer_size: M, the most new tokens: the output buffer's width and the room the
      cache keeps beyond the prompt.
  """
  beam_size: int = 1
  length_penalty: float = 1.0
  buffer_size: int = 128

  def __post_init__(self):
    for name in ("beam_size", "buffer_size"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"DecodeConfig.{name} must be an int >= 1, got {value!r}")
      object.__setattr__(self, name, int(value))
    penalty = self.length_penalty
    if isinstance(penalty, bool) or not isinstance(penalty, (int, float, np.number)) \
        or not math.isfinite(penalty):
      raise ValueError(f"DecodeConfig.length_penalty must be a finite number, got {penalty!r}")
    object.__setattr__(self, "length_penalty", float(penalty))


@struct.dataclass
class DecodeOutput:
  """The hypothesis returned for each row.

  Attributes:
    tokens: int32[B, M], the new tokens, ``pad_id`` after the EOS and past the limit.
    lengths: int32[B], new tokens, the EOS included.
    sum_log_probs: float32[B], the hypothesis's log-probability under the model.
    scores: float32[B], ``sum_log_probs / lengths ** length_penalty`` (what beams rank by).
  """
  tokens: jax.Array
  lengths: jax.Array
  sum_log_probs: jax.Array
  scores: jax.Array


# (int32[R] tokens, cache) -> (float32[R, V] next-token logits, cache with the tokens).
StepFn = Callable[[jax.Array, qwen2.KVCache], tuple[jax.Array, qwen2.KVCache]]


def _output(tokens, lengths, sum_log_probs, limit, pad_id, length_penalty) -> DecodeOutput:
  """DecodeOutput from a chosen hypothesis per row.

  The first token is chosen from the prefill logits before the loop looks at the limit,
  so a limit of 0 is applied here.
  """
  lengths = jnp.where(limit > 0, lengths, 0).astype(jnp.int32)
  tokens = jnp.where(jnp.arange(tokens.shape[1]) < lengths[:, None], tokens, pad_id)
  sum_log_probs = jnp.where(lengths > 0, sum_log_probs, 0.0)
  scores = sum_log_probs / jnp.maximum(lengths, 1).astype(jnp.float32) ** length_penalty
  return DecodeOutput(tokens=tokens.astype(jnp.int32), lengths=lengths,
                      sum_log_probs=sum_log_probs, scores=scores)


# ---------------------------------------------------------------------------------------
# Greedy.


@struct.dataclass
class GreedyState:
  """Loop state of greedy decoding.

  Attributes:
    step: int32[], tokens chosen so far.
    tokens: int32[B, M], the output buffer (pad after a row's EOS).
    last: int32[B], the token just chosen (the next step's input).
    lengths: int32[B], tokens of each row up to and including its EOS.
    sum_log_probs: float32[B], their log-probability.
    done: bool[B], the row has emitted an EOS.
    cache: the KV cache, B rows.
  """
  step: jax.Array
  tokens: jax.Array
  last: jax.Array
  lengths: jax.Array
  sum_log_probs: jax.Array
  done: jax.Array
  cache: qwen2.KVCache


class _Greedy:
  """Greedy search: start, advance by one token, read out."""

  def __init__(self, decode: DecodeConfig, limit, eos_ids, pad_id):
    self.decode, self.limit, self.eos_ids, self.pad_id = decode, limit, eos_ids, pad_id

  def start(self, logits: jax.Array, cache: qwen2.KVCache) -> GreedyState:
    """The state after the first token, chosen from the prefill logits float32[B, V]."""
    b = logits.shape[0]
    state = GreedyState(
        step=jnp.zeros((), jnp.int32),
        tokens=jnp.full((b, self.decode.buffer_size), self.pad_id, jnp.int32),
        last=jnp.full((b,), self.pad_id, jnp.int32),
        lengths=jnp.zeros((b,), jnp.int32),
        sum_log_probs=jnp.zeros((b,), jnp.float32),
        done=jnp.zeros((b,), bool),
        cache=cache)
    return self.advance(state, logits)

  def inputs(self, state: GreedyState) -> jax.Array:
    return state.last

  def advance(self, state: GreedyState, logits: jax.Array) -> GreedyState:
    """Appends each live row's argmax of logits float32[B, V]; finished rows get pads."""
    best = jnp.argmax(logits, axis=-1)
    log_p = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), best[:, None], 1)[:, 0]
    live = ~state.done
    nxt = jnp.where(live, best.astype(jnp.int32), self.pad_id)
    return GreedyState(
        step=state.step + 1,
        tokens=jax.lax.dynamic_update_slice(state.tokens, nxt[:, None], (0, state.step)),
        last=nxt,
        lengths=state.lengths + live,
        sum_log_probs=state.sum_log_probs + jnp.where(live, log_p, 0.0),
        done=state.done | jnp.isin(nxt, self.eos_ids),
        cache=state.cache)

  def output(self, state: GreedyState) -> DecodeOutput:
    return _output(state.tokens, state.lengths, state.sum_log_probs, self.limit,
                   self.pad_id, self.decode.length_penalty)


# ---------------------------------------------------------------------------------------
# Beam search.


@struct.dataclass
class BeamState:
  """Loop state of beam search (see the module docstring).

  Attributes:
    step: int32[], tokens chosen so far (the alive hypotheses' length).
    alive_tokens: int32[B, K, M], best first; pad past ``step``.
    alive_log_probs: float32[B, K], their sum log-probs (NEG_INF: no hypothesis).
    finished_tokens: int32[B, K, M], best first; pad after the EOS.
    finished_log_probs: float32[B, K], their sum log-probs.
    finished_lengths: int32[B, K], their lengths.
    finished_scores: float32[B, K], their length-normalised scores (NEG_INF: empty slot).
    finished: bool[B, K], the slot holds a hypothesis.
    done: bool[B], no alive hypothesis can enter the row's finished set any more.
    cache: the KV cache, B*K rows (row b*K + k is beam k of batch row b).
  """
  step: jax.Array
  alive_tokens: jax.Array
  alive_log_probs: jax.Array
  finished_tokens: jax.Array
  finished_log_probs: jax.Array
  finished_lengths: jax.Array
  finished_scores: jax.Array
  finished: jax.Array
  done: jax.Array
  cache: qwen2.KVCache


def _gather_beams(x: jax.Array, parents: jax.Array, axis: int) -> jax.Array:
  """Row (b, k) of x takes row (b, parents[b, k]): a gather inside each batch row.

  Gathering in the [B, K] view (not with flat indices b*K + parent over B*K) keeps it
  local to each device when B is split over the mesh.

  Args:
    x: [..., B*K, ...] with the rows on ``axis``.
    parents: int32[B, K].
  Returns:
    x's shape.
  """
  b, k = parents.shape
  shape = x.shape
  x = x.reshape(shape[:axis] + (b, k) + shape[axis + 1:])
  index = parents.reshape((1,) * axis + (b, k) + (1,) * (x.ndim - axis - 2))
  return jnp.take_along_axis(x, index, axis=axis + 1).reshape(shape)


def _top_k(x: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  """``lax.top_k`` over the last axis of x [B, N], run on each device's own rows.

  XLA's SPMD partitioner does not split TopK along the batch: on a mesh it would gather
  all rows' candidates ([B, K*V] for the first selection) to every device every step.
  The rows are independent, so under a mesh whose batch axes divide B the selection
  runs per shard (``shard_map``).
  """
  mesh = jax.sharding.get_abstract_mesh()
  spec = nn.logical_to_mesh_axes(("activation_batch", None))
  axes = spec[0] if isinstance(spec[0], tuple) else (spec[0],) if spec[0] else ()
  shards = math.prod(mesh.shape[a] for a in axes) if not mesh.empty else 1
  if shards == 1 or x.shape[0] % shards:
    return jax.lax.top_k(x, k)
  return jax.shard_map(lambda rows: jax.lax.top_k(rows, k), mesh=mesh, in_specs=spec,
                       out_specs=spec)(x)


def _map_cache_rows(fn, cache: qwen2.KVCache) -> qwen2.KVCache:
  """Applies ``fn(leaf, row_axis)`` to every per-row leaf (not the shared slot index)."""
  return cache.replace(
      k=nn.with_logical_constraint(fn(cache.k, 1), qwen2.CACHE_AXES),
      v=nn.with_logical_constraint(fn(cache.v, 1), qwen2.CACHE_AXES),
      key_mask=fn(cache.key_mask, 0),
      positions=fn(cache.positions, 0))


class _Beam:
  """Beam search: start, advance by one token, read out."""

  def __init__(self, decode: DecodeConfig, limit, eos_ids, pad_id):
    self.decode, self.limit, self.eos_ids, self.pad_id = decode, limit, eos_ids, pad_id
    self.k = decode.beam_size
    self.num_candidates = max(2, 1 + eos_ids.shape[0]) * self.k

  def start(self, logits: jax.Array, cache: qwen2.KVCache) -> BeamState:
    """The state after the first token, from the prefill's logits float32[B, V] and
    B-row cache (copied to K rows each)."""
    b, k, m = logits.shape[0], self.k, self.decode.buffer_size
    empty = lambda value, dtype, shape=(b, k): jnp.full(shape, value, dtype)
    # The K copies of a prompt are the same: only the first may extend, or the first
    # step would pick the same token K times.
    first_only = jnp.where(jnp.arange(k) == 0, 0.0, NEG_INF)
    state = BeamState(
        step=jnp.zeros((), jnp.int32),
        alive_tokens=empty(self.pad_id, jnp.int32, (b, k, m)),
        alive_log_probs=jnp.broadcast_to(first_only, (b, k)),
        finished_tokens=empty(self.pad_id, jnp.int32, (b, k, m)),
        finished_log_probs=empty(0.0, jnp.float32),
        finished_lengths=empty(0, jnp.int32),
        finished_scores=empty(NEG_INF, jnp.float32),
        finished=empty(False, bool),
        done=jnp.zeros((b,), bool),
        cache=_map_cache_rows(lambda x, axis: jnp.repeat(x, k, axis=axis), cache))
    return self.advance(state, jnp.repeat(logits, k, axis=0))

  def inputs(self, state: BeamState) -> jax.Array:
    last = jax.lax.dynamic_index_in_dim(state.alive_tokens, state.step - 1, axis=2,
                                        keepdims=False)  # [B, K]
    return last.reshape(-1)

  def advance(self, state: BeamState, logits: jax.Array) -> BeamState:
    """One token for every beam, from logits float32[B*K, V] of the alive beams."""
    b, k, m = state.alive_tokens.shape
    v = logits.shape[-1]
    step, penalty = state.step, self.decode.length_penalty

    log_p = jax.nn.log_softmax(logits.reshape(b, k, v), axis=-1)
    total = (state.alive_log_probs[..., None] + log_p).reshape(b, k * v)
    top, flat = _top_k(total, self.num_candidates)  # [B, C], best first
    parent, token = flat // v, (flat % v).astype(jnp.int32)
    candidates = jnp.take_along_axis(state.alive_tokens, parent[..., None], axis=1)
    candidates = jax.lax.dynamic_update_slice(candidates, token[..., None], (0, 0, step))
    # A candidate ends with an EOS, or at the limit, where it is kept as it stands.
    ends = jnp.isin(token, self.eos_ids) | (step + 1 >= self.limit)

    # Alive: the K best candidates that go on.
    alive_log_probs, pick = _top_k(jnp.where(ends, NEG_INF, top), k)  # [B, K]
    alive_tokens = jnp.take_along_axis(candidates, pick[..., None], axis=1)
    parents = jnp.take_along_axis(parent, pick, axis=1)

    # Finished: the ended candidates among the K best (the rest of the C are only there
    # to keep K alive), then the K best of old and new. (Hugging Face also bars a done
    # row's candidates; with an exact bound none of them can enter anyway.)
    length = (step + 1).astype(jnp.float32)
    new = ends & (jnp.arange(self.num_candidates) < k)
    merged = lambda old, fresh: jnp.concatenate([old, fresh], axis=1)
    scores = merged(state.finished_scores, jnp.where(new, top / length ** penalty, NEG_INF))
    finished_scores, order = _top_k(scores, k)
    keep = lambda x: jnp.take_along_axis(x, order.reshape(order.shape + (1,) * (x.ndim - 2)),
                                         axis=1)
    finished_tokens = keep(merged(state.finished_tokens, candidates))
    finished_log_probs = keep(merged(state.finished_log_probs, top))
    finished_lengths = keep(merged(state.finished_lengths,
                                   jnp.broadcast_to(step + 1, top.shape)))
    finished = keep(merged(state.finished, new))

    # Done when K are finished and the best alive hypothesis, at its best length, cannot
    # beat the worst of them.
    horizon = self.limit if penalty > 0 else step + 1
    bound = alive_log_probs[:, 0] / jnp.maximum(horizon, 1).astype(jnp.float32) ** penalty
    done = state.done | (jnp.all(finished, axis=1) &
                         (bound <= jnp.min(finished_scores, axis=1)))

    cache = _map_cache_rows(lambda x, axis: _gather_beams(x, parents, axis), state.cache)
    return BeamState(step=step + 1, alive_tokens=alive_tokens,
                     alive_log_probs=alive_log_probs, finished_tokens=finished_tokens,
                     finished_log_probs=finished_log_probs, finished_lengths=finished_lengths,
                     finished_scores=finished_scores, finished=finished, done=done,
                     cache=cache)

  def output(self, state: BeamState) -> DecodeOutput:
    # Slot 0 is the best; every row has one when the loop ends (alive hypotheses are
    # finished at the limit), except with a limit of 0, which _output empties.
    return _output(state.finished_tokens[:, 0], state.finished_lengths[:, 0],
                   state.finished_log_probs[:, 0], self.limit, self.pad_id,
                   self.decode.length_penalty)


# ---------------------------------------------------------------------------------------
# The shared loop.


def decode_loop(logits: jax.Array, cache: qwen2.KVCache, step_fn: StepFn,
                decode: DecodeConfig, max_new_tokens: jax.Array, eos_ids: jax.Array,
                pad_id: jax.Array) -> DecodeOutput:
  """Greedy or beam decoding from a prefill result (call inside jit).

  Args:
    logits: float32[B, V], each row's next-token logits after its prompt.
    cache: the prompt's KV cache, B rows, with ``buffer_size`` free slots.
    step_fn: feeds int32[R] tokens through the model with the cache.
    decode: the search.
    max_new_tokens: int32[], clipped to [0, buffer_size].
    eos_ids: int32[E].
    pad_id: int32[], written after the EOS.
  Returns:
    DecodeOutput.
  """
  limit = jnp.clip(max_new_tokens, 0, decode.buffer_size)
  search = (_Greedy if decode.beam_size == 1 else _Beam)(decode, limit, eos_ids, pad_id)
  state = search.start(nn.with_logical_constraint(logits, LOGITS_AXES), cache)

  def cond(st):
    return (st.step < limit) & ~jnp.all(st.done)

  def body(st):
    logits, cache = step_fn(search.inputs(st), st.cache)
    return search.advance(st.replace(cache=cache),
                          nn.with_logical_constraint(logits, LOGITS_AXES))

  return search.output(jax.lax.while_loop(cond, body, state))


def _last_real(hidden: jax.Array, attention_mask: jax.Array) -> jax.Array:
  """dtype[B, S, D] -> dtype[B, D] at each row's last real slot (left or right padding)."""
  s = attention_mask.shape[1]
  last = s - 1 - jnp.argmax(attention_mask[:, ::-1], axis=1)
  return jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]


# ---------------------------------------------------------------------------------------
# The LALM and the LM alone.


def _lalm_prefill(m: LALM, mel, frames, num_frames, input_ids, attention_mask, cache):
  """Encodes the audio, splices it in and prefills the LLM: (float32[B, V], cache)."""
  audio_tokens, _ = m.encode_audio(mel, num_frames, frames=frames)
  embeds = m.embed_inputs(input_ids, audio_tokens)
  hidden, cache = m.llm.hidden(attention_mask=attention_mask, inputs_embeds=embeds,
                               cache=cache)
  return m.llm.logits(_last_real(hidden, attention_mask)), cache


def _lalm_step(m: LALM, tokens, cache):
  # Generated tokens are text: a generated <|AUDIO|> id is embedded as a token.
  out = m.llm(tokens[:, None], cache=cache)
  return out.logits[:, 0], out.cache


def _lm_prefill(m: qwen2.Qwen2, input_ids, attention_mask, cache):
  hidden, cache = m.hidden(input_ids, attention_mask, cache=cache)
  return m.logits(_last_real(hidden, attention_mask)), cache


def _lm_step(m: qwen2.Qwen2, tokens, cache):
  out = m(tokens[:, None], cache=cache)
  return out.logits[:, 0], out.cache


def _check_request(config: qwen2.Qwen2Config, prompt_shape, decode: DecodeConfig) -> None:
  if not isinstance(decode, DecodeConfig):
    raise TypeError(f"decode must be a DecodeConfig, got {type(decode).__name__}")
  if len(prompt_shape) != 2:
    raise ValueError(f"input_ids must be [B, S], got shape {tuple(prompt_shape)}")
  total = prompt_shape[1] + decode.buffer_size
  if total > config.max_position_embeddings:
    raise ValueError(f"prompt length {prompt_shape[1]} + buffer_size {decode.buffer_size} "
                     f"= {total} positions, more than the model's max_position_embeddings="
                     f"{config.max_position_embeddings}")


def _scalars(max_new_tokens, eos_ids, pad_id):
  """The traced arguments in one dtype each, so a Python int and an array of the same
  value do not compile twice."""
  return (jnp.asarray(max_new_tokens, jnp.int32),
          jnp.atleast_1d(jnp.asarray(eos_ids, jnp.int32)),
          jnp.asarray(pad_id, jnp.int32))


def generate_lalm(module: LALM, variables: Mapping, batch: Mapping, decode: DecodeConfig,
                  max_new_tokens, eos_ids, pad_id=0) -> DecodeOutput:
  """Decodes a batch of LALM generation prompts.

  Args:
    module: the LALM (static).
    variables: {"params": ..., ["lora": ...]}.
    batch: ``mel`` float32[B, M_mel, F] (or ``frames`` float[B, T, E], cached encoder
      frames), ``num_frames`` int32[B], ``input_ids`` int32[B, S] generation prompts
      holding the audio placeholders (left-padded; right padding works too),
      ``attention_mask`` bool[B, S]. Other keys are ignored.
    decode: greedy or beam, and the buffer size (static).
    max_new_tokens: int32[] or int, clipped to [0, buffer_size]; changing it does not
      recompile.
    eos_ids: int or int32[E], tokens that end a hypothesis.
    pad_id: written after the EOS.
  Returns:
    DecodeOutput.
  Raises:
    ValueError when the prompt plus ``buffer_size`` is longer than the LLM's context.
  """
  _check_request(module.config.llm, np.shape(batch["input_ids"]), decode)
  inputs = {name: batch.get(name) for name in ("mel", "frames", "num_frames", "input_ids",
                                               "attention_mask")}
  return _generate_lalm(module, variables, inputs, decode,
                        *_scalars(max_new_tokens, eos_ids, pad_id))


@functools.partial(jax.jit, static_argnames=("module", "decode"))
def _generate_lalm(module, variables, inputs, decode, max_new_tokens, eos_ids, pad_id):
  _count_trace()
  b, s = inputs["input_ids"].shape
  cache = qwen2.init_cache(module.config.llm, b, s + decode.buffer_size, module.dtype)
  attention_mask = jnp.asarray(inputs["attention_mask"]).astype(bool)
  logits, cache = module.apply(variables, inputs["mel"], inputs["frames"],
                               inputs["num_frames"], inputs["input_ids"], attention_mask,
                               cache, method=_lalm_prefill)
  step = lambda tokens, cache: module.apply(variables, tokens, cache, method=_lalm_step)
  return decode_loop(logits, cache, step, decode, max_new_tokens, eos_ids, pad_id)


def generate_lm(module: qwen2.Qwen2, variables: Mapping, input_ids, attention_mask,
                decode: DecodeConfig, max_new_tokens, eos_ids, pad_id=0) -> DecodeOutput:
  """Decodes text prompts with the LM alone; arguments as ``generate_lalm``.

  Args:
    input_ids: int32[B, S] prompts (left- or right-padded).
    attention_mask: [B, S], 1 for real tokens.
  """
  _check_request(module.config, np.shape(input_ids), decode)
  return _generate_lm(module, variables, input_ids, attention_mask, decode,
                      *_scalars(max_new_tokens, eos_ids, pad_id))


@functools.partial(jax.jit, static_argnames=("module", "decode"))
def _generate_lm(module, variables, input_ids, attention_mask, decode, max_new_tokens,
                 eos_ids, pad_id):
  _count_trace()
  b, s = input_ids.shape
  cache = qwen2.init_cache(module.config, b, s + decode.buffer_size, module.dtype)
  attention_mask = jnp.asarray(attention_mask).astype(bool)
  logits, cache = module.apply(variables, input_ids, attention_mask, cache,
                               method=_lm_prefill)
  step = lambda tokens, cache: module.apply(variables, tokens, cache, method=_lm_step)
  return decode_loop(logits, cache, step, decode, max_new_tokens, eos_ids, pad_id)
