"""Run checkpoints with orbax: what a resumed run needs, and nothing frozen.

A checkpoint at step N (``WORKDIR/checkpoints/N/``) holds three items:

    state   the TrainState: step, trainable trees (projector, LoRA), optimizer state
    data    the input iterator's state (grain's ``get_state()``): the next batch
    meta    JSON: the resolved config, the base checkpoints (path + content hash), the
            LoRA settings, the tokenizer, the mesh

The frozen encoder and LLM are never copied: ``meta`` names them and their content hash,
and a resume whose base checkpoints differ fails with both hashes. RNG needs no item:
every random draw is a function of (config.seed, step).

Resume order (`trainer.train`): the workdir's latest checkpoint, else the pretrained
weights of the config (projector and LoRA initialised).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)

ITEMS = ("state", "data", "meta")


class RunCheckpointer:
  """Saves and restores run checkpoints under ``WORKDIR/checkpoints``.

  Args:
    workdir: the run folder (made absolute: orbax needs absolute paths).
    keep: most recent checkpoints kept.
    use_async: write in a background thread while training continues.
  """

  def __init__(self, workdir: str, keep: int = 3, use_async: bool = True):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    options = ocp.CheckpointManagerOptions(max_to_keep=keep,
                                           enable_async_checkpointing=use_async,
                                           create=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=ITEMS)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def save(self, step: int, state, data_state: dict | None, meta: dict, force: bool = True):
    """Starts writing checkpoint `step` (returns before it is on disk when async)."""
    self.manager.save(int(step), args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave(data_state or {}),
        meta=ocp.args.JsonSave(meta)), force=force)

  def wait(self):
    """Blocks until every started save is on disk."""
    self.manager.wait_until_finished()

  def restore_meta(self, step: int) -> dict:
    return self.manager.restore(step, args=ocp.args.Composite(
        meta=ocp.args.JsonRestore()))["meta"]

  def restore(self, step: int, abstract_state) -> tuple[Any, dict, dict]:
    """(state, data_state, meta) of checkpoint `step`.

    Args:
      abstract_state: the state's tree of `jax.ShapeDtypeStruct` with shardings: arrays
        are read straight into them (and a shape that differs fails, naming the key).
    """
    out = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data=ocp.args.JsonRestore(),
        meta=ocp.args.JsonRestore()))
    return out["state"], out["data"], out["meta"]

  def close(self):
    self.manager.close()


def abstract_like(tree, shardings):
  """ShapeDtypeStructs of `tree` carrying `shardings` (for `RunCheckpointer.restore`)."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)


# How a model runs, not what its params are: a run resumes, or is scored, with another
# attention implementation or remat policy.
EXECUTION_ONLY = ("attention", "remat_policy")


def param_shape(shape: dict, free: tuple[str, ...] = ()) -> dict:
  """A recorded model shape without its execution-only fields (in the LALM, encoder and
  LLM parts), without `free`, and without scan_layers when off and window_frames when 0
  (runs recorded before those fields existed had their defaults)."""
  def clean(part: dict, drop: tuple[str, ...]) -> dict:
    out = {k: v for k, v in part.items() if k not in EXECUTION_ONLY + drop}
    for key, default in (("scan_layers", False), ("window_frames", 0)):
      if key in out and out[key] == default:
        del out[key]
    return out

  out = clean(shape, free)
  for key in ("encoder", "llm"):
    if isinstance(out.get(key), dict):
      out[key] = clean(out[key], ())
  return out


def check_compatible(stored: dict, current: dict, workdir: str,
                     free_shape_keys: tuple[str, ...] = ()):
  """A resume must use the same base checkpoints and model shape as the saved run.

  `free_shape_keys`: fields of the model shape allowed to differ (evaluation at another
  compression rate: "factor", "method", "method_options").

  Raises ValueError naming the first field that differs, with both values.
  """
  if "model_shape" in stored and "model_shape" in current:
    stored = dict(stored, model_shape=param_shape(stored["model_shape"], free_shape_keys))
    current = dict(current, model_shape=param_shape(current["model_shape"], free_shape_keys))
  for key in ("encoder", "llm", "lora", "model_shape", "tokenizer_hash"):
    if key in stored and key in current and stored[key] != current[key]:
      raise ValueError(
          f"{workdir}: cannot resume: the run was saved with {key}={stored[key]!r}, the "
          f"config now gives {key}={current[key]!r}. Use a new --workdir, or restore the "
          "original setting.")
