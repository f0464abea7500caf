"""Training: which variables train (data, not code), and the pure loss/grad step pieces.

Trainable and frozen variables are split by regexes over '/'-joined paths that start with
the collection name, e.g. ``params/projector/linear/kernel`` or
``lora/llm/layers_0/self_attn/q_proj/lora_A``. The optimizer, the gradient and the
checkpoint of a finetune see only the trainable tree, never the frozen weights.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import optax
from flax import struct, traverse_util

# The paper's recipe: projector + LoRA train, Whisper and Qwen2 stay frozen. Adding
# "params/encoder/.*" unfreezes the encoder; NEW_TOKENS trains the rows of the tokens
# new to the LLM (the audio markers), a small [n, D] tree beside the frozen embedding.
DEFAULT_TRAINABLE = ("params/projector/.*", "lora/.*")
ENCODER = "params/encoder/.*"
NEW_TOKENS = "params/llm/new_tokens/.*"


def trainable_patterns(train_encoder: bool = False, extra: Sequence[str] = ()) -> tuple[str, ...]:
  """The default trainable set, plus the Whisper encoder when `train_encoder`."""
  return DEFAULT_TRAINABLE + ((ENCODER,) if train_encoder else ()) + tuple(extra)


def partition(variables: Mapping, trainable: Sequence[str] = DEFAULT_TRAINABLE):
  """Splits variables into (trainable, frozen) trees of the same nesting.

  Args:
    variables: {"params": ..., "lora": ...} (any collections).
    trainable: regexes; a leaf trains if its path fully matches any of them.

  Returns:
    (trainable, frozen): nested dicts holding disjoint subsets of the leaves.

  Raises:
    ValueError when a pattern matches nothing (a typo must not silently freeze a part).
  """
  flat = traverse_util.flatten_dict(variables, sep="/")
  patterns = [re.compile(p) for p in trainable]
  unused = [p.pattern for p in patterns if not any(p.fullmatch(k) for k in flat)]
  if unused:
    raise ValueError(f"trainable pattern(s) {unused} match no variable; paths look like "
                     f"{sorted(flat)[:3]}")
  is_trainable = {k: any(p.fullmatch(k) for p in patterns) for k in flat}
  train = {k: v for k, v in flat.items() if is_trainable[k]}
  frozen = {k: v for k, v in flat.items() if not is_trainable[k]}
  return (traverse_util.unflatten_dict(train, sep="/"),
          traverse_util.unflatten_dict(frozen, sep="/"))


def combine(*trees: Mapping) -> dict:
  """Merges disjoint nested dicts (the inverse of `partition`)."""
  out = {}
  for tree in trees:
    for k, v in traverse_util.flatten_dict(tree, sep="/").items():
      if k in out:
        raise ValueError(f"combine: variable {k} is in more than one tree")
      out[k] = v
  return traverse_util.unflatten_dict(out, sep="/")


# ---------------------------------------------------------------------------------------
# Optimizer, train state and the train step (pure functions; the loop is trainer.py).


def learning_rate_schedule(optim, total_steps: int) -> optax.Schedule:
  """Linear warmup from 0 to `optim.learning_rate`, then cosine to peak * end_factor."""
  peak = float(optim.learning_rate)
  warmup = int(optim.warmup_steps)
  decay = max(int(total_steps) - warmup, 1)
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak, max(warmup, 1)),
       optax.cosine_decay_schedule(peak, decay, alpha=float(optim.end_factor))],
      boundaries=[warmup])


def make_optimizer(optim, total_steps: int) -> optax.GradientTransformation:
  """Global-norm clipping, then AdamW on the warmup + cosine schedule."""
  schedule = learning_rate_schedule(optim, total_steps)
  parts = []
  if optim.clip_norm > 0:
    parts.append(optax.clip_by_global_norm(float(optim.clip_norm)))
  parts.append(optax.adamw(schedule, b1=float(optim.b1), b2=float(optim.b2),
                           eps=float(optim.eps), weight_decay=float(optim.weight_decay)))
  return optax.chain(*parts)


@struct.dataclass
class TrainState:
  """What a finetune updates and checkpoints: never the frozen weights.

  Attributes:
    step: int32[], optimizer steps taken.
    trainable: the trainable variables (`partition`), float32.
    opt_state: the optimizer's state for them.
  """

  step: jax.Array
  trainable: Any
  opt_state: Any


def init_train_state(trainable, tx: optax.GradientTransformation) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), trainable=trainable,
                    opt_state=tx.init(trainable))


def split_micro_batches(batch: Mapping[str, jax.Array], n: int) -> dict[str, jax.Array]:
  """[B, ...] -> [n, B/n, ...]; micro-batch i holds rows i, i+n, i+2n, ...

  Strided rather than contiguous, so each device's block of a batch-sharded array
  holds the same number of rows of every micro-batch: no data moves between devices.
  """
  def split(x):
    b = x.shape[0]
    if b % n:
      raise ValueError(f"a batch of {b} rows does not split into {n} micro-batches")
    return jnp.swapaxes(x.reshape((b // n, n) + x.shape[1:]), 0, 1)

  return {k: split(v) for k, v in batch.items()}


def make_train_step(module, tx: optax.GradientTransformation, *, grad_accum_steps: int = 1,
                    vocab_chunk: int = 0, seed: int = 0, lr_schedule=None):
  """The pure train step: (state, frozen, batch) -> (new state, metrics).

  The loss is a sum over target tokens divided once by the global token count, so the
  gradient is the same for any split of the batch over devices or micro-batches. LoRA
  dropout keys are `fold_in(PRNGKey(seed), step)`: a function of the step, so a
  resumed run draws the same masks without storing an RNG.

  Returns metrics (float32 scalars): loss, loss_sum, num_tokens, grad_norm,
  learning_rate, placeholder_mismatch, finite (1.0 when loss and gradient are finite).
  """
  from lalmjax.models import lalm  # local: training.partition stays importable alone

  base_key = jax.random.PRNGKey(seed)

  def loss_sum(trainable, frozen, micro, rng):
    variables = combine(trainable, frozen)
    rngs = {"dropout": rng} if rng is not None else None
    _, metrics = lalm.lalm_loss(module, variables, micro, rngs=rngs, vocab_chunk=vocab_chunk)
    return metrics["loss_sum"], metrics

  grad_fn = jax.grad(loss_sum, has_aux=True)
  dropout = module.config.lora is not None and module.config.lora.dropout > 0

  def step(state: TrainState, frozen, batch):
    rng = jax.random.fold_in(base_key, state.step) if dropout else None
    zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), state.trainable)
    if grad_accum_steps == 1:
      grads, metrics = grad_fn(state.trainable, frozen, batch, rng)
      sums = {k: metrics[k] for k in ("loss_sum", "num_tokens", "placeholder_mismatch")}
    else:
      micro = split_micro_batches(batch, grad_accum_steps)

      def body(carry, xs):
        g_acc, m_acc = carry
        i, mb = xs
        key = None if rng is None else jax.random.fold_in(rng, i)
        g, metrics = grad_fn(state.trainable, frozen, mb, key)
        g_acc = jax.tree.map(lambda a, b: a + b.astype(jnp.float32), g_acc, g)
        m_acc = {k: m_acc[k] + metrics[k].astype(jnp.float32) for k in m_acc}
        return (g_acc, m_acc), None

      m0 = {k: jnp.zeros((), jnp.float32)
            for k in ("loss_sum", "num_tokens", "placeholder_mismatch")}
      (grads, sums), _ = jax.lax.scan(body, (zeros, m0),
                                      (jnp.arange(grad_accum_steps), micro))
    count = jnp.maximum(sums["num_tokens"].astype(jnp.float32), 1.0)
    grads = jax.tree.map(lambda g: g.astype(jnp.float32) / count, grads)
    grad_norm = optax.tree.norm(grads)
    loss = sums["loss_sum"] / count
    updates, opt_state = tx.update(grads, state.opt_state, state.trainable)
    trainable = optax.apply_updates(state.trainable, updates)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    metrics = {
        "loss": loss,
        "loss_sum": sums["loss_sum"].astype(jnp.float32),
        "num_tokens": sums["num_tokens"].astype(jnp.float32),
        "grad_norm": grad_norm,
        "placeholder_mismatch": sums["placeholder_mismatch"].astype(jnp.float32),
        "finite": finite.astype(jnp.float32),
    }
    if lr_schedule is not None:
      metrics["learning_rate"] = jnp.asarray(lr_schedule(state.step), jnp.float32)
    return TrainState(step=state.step + 1, trainable=trainable, opt_state=opt_state), metrics

  return step


def loss_and_grads(module, trainable, frozen, batch, *, vocab_chunk: int = 0):
  """(mean loss, gradient of the mean loss) of one batch: for tests and checks."""
  from lalmjax.models import lalm

  def mean_loss(t):
    return lalm.lalm_loss(module, combine(t, frozen), batch, vocab_chunk=vocab_chunk)[0]

  return jax.value_and_grad(mean_loss)(trainable)
