"""From a config to the things a run needs: tokenizer, model, sharded variables, data.

Shared by `train.py`, `eval.py` and `transcribe`, so they build the same model from the
same config. Variables are placed straight into their shardings: the logical axis
names of `jax.eval_shape(module.init)` go through the one rules table
(`sharding.LOGICAL_AXIS_RULES`) to `NamedSharding`s on the mesh; pretrained tensors load
one at a time into them; only what no checkpoint holds (projector, LoRA, or a whole
random tiny model) is initialised, inside a jit whose outputs are already sharded.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lalmjax import checkpoints, prompts, sharding, training
from lalmjax.data import manifest
from lalmjax.models import lalm, new_tokens, qwen2, whisper
from lalmjax.models.lora import LoraConfig

log = logging.getLogger(__name__)

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def resolve(path: str, workdir: str | None = None) -> str:
  """Config paths: absolute as given, else relative to the repository root."""
  from configs import base  # local: the configs package sits beside lalmjax

  return base.resolve_path(path, workdir)


def tokenizer_path(config: ml_collections.ConfigDict, workdir: str) -> str:
  """The run's tokenizer folder; a tiny one is trained into the workdir when the config
  names neither a tokenizer nor an LLM (random tiny models)."""
  m = config.model
  path = resolve(m.tokenizer_path or m.llm_path)
  if path:
    return path
  path = os.path.join(workdir, "tokenizer")
  if not os.path.exists(os.path.join(path, "tokenizer.json")):
    texts = []
    for p in config.data.train_manifests:
      for u in manifest.read_manifest(resolve(p), on_error="skip").utterances:
        texts += [u.text] + ([u.translation] if u.translation else [])
    if jax.process_index() == 0:
      prompts.build_tiny_tokenizer(path, texts, vocab_size=1024)
    _sync("tokenizer")
  return path


def _sync(name: str):
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


def lora_config(config) -> LoraConfig | None:
  m = config.model
  if not m.use_lora:
    return None
  return LoraConfig(rank=m.lora_rank, alpha=float(m.lora_alpha),
                    targets=tuple(m.lora_targets), dropout=float(m.lora_dropout))


def lalm_config(config, builder: prompts.PromptBuilder) -> lalm.LALMConfig:
  """The model's shape: from the checkpoints' config.json files, or the config's shapes.

  The LLM's vocabulary grows to fit the tokenizer when its ids reach past the embedding
  (`new_tokens.grown_vocab_size`); with `model.train_new_tokens`, the tokens new to the
  LLM (`prompts.new_token_ids`) get trainable rows.
  """
  m = config.model
  remat = None if m.remat_policy == "none" else m.remat_policy
  attn = dict(attention=m.attention, attention_batch_block=m.attention_batch_block)
  if m.encoder_path:
    enc = checkpoints.whisper_encoder_config(resolve(m.encoder_path))  # HF or CTranslate2
    enc = dataclasses.replace(enc, **attn, scan_layers=m.scan_layers)
  else:
    enc = whisper.WhisperEncoderConfig(**m.encoder.to_dict(), **attn, scan_layers=m.scan_layers)
  enc.validate()
  if m.llm_path:
    llm = qwen2.Qwen2Config.from_hf(checkpoints.read_config(resolve(m.llm_path)),
                                    remat_policy=remat, **attn, scan_layers=m.scan_layers)
  else:
    shape = m.llm.to_dict()
    shape["vocab_size"] = shape["vocab_size"] or prompts.round_up(builder.vocab_size, 64)
    llm = qwen2.Qwen2Config(**shape, remat_policy=remat, **attn, scan_layers=m.scan_layers)
  rows = llm.vocab_size  # the checkpoint's own rows
  llm = dataclasses.replace(llm, vocab_size=new_tokens.grown_vocab_size(rows,
                                                                         builder.vocab_size))
  new_ids = (prompts.new_token_ids(builder.tokenizer, rows, tuple(m.new_tokens))
             if m.train_new_tokens else ())
  return lalm.LALMConfig(enc, llm, builder.audio_token_id, lora=lora_config(config),
                         method=m.method, factor=m.factor,
                         method_options=dict(m.method_options), projector=m.projector,
                         projector_hidden=m.projector_hidden,
                         window_overlap=int(round(m.window_overlap_seconds * 50)),
                         window_frames=int(round(m.encoder_window_seconds * 50)),
                         new_token_ids=new_ids)


def trainable_patterns(config) -> tuple[str, ...]:
  """`config.trainable`, plus the new tokens' rows when `model.train_new_tokens`."""
  patterns = tuple(config.trainable)
  if config.model.train_new_tokens and training.NEW_TOKENS not in patterns:
    patterns += (training.NEW_TOKENS,)
  return patterns


@dataclasses.dataclass
class Model:
  """A built model: module, sharded variables and where they came from."""

  module: lalm.LALM
  variables: dict  # {"params": {"encoder", "projector", "llm"}, "lora": ...}
  shardings: dict  # NamedShardings, same structure as variables
  logical_specs: dict  # PartitionSpecs of logical axis names, same structure
  builder: prompts.PromptBuilder
  tokenizer_path: str
  sources: dict[str, str]  # "encoder"/"llm" -> checkpoint folder or "random(seed)"


def build_mesh(config) -> Mesh:
  return sharding.create_mesh(tuple(config.mesh_shape))


def variable_specs(module: lalm.LALM):
  """(abstract boxed variables, logical PartitionSpecs) without allocating anything."""
  abstract = jax.eval_shape(
      lambda r: module.init(r, *(jnp.zeros(s.shape, s.dtype)
                                 for s in lalm.dummy_inputs(module.config))),
      jax.random.PRNGKey(0))
  return abstract, nn.get_partition_spec(abstract)


def build_model(config, workdir: str, mesh: Mesh, *, load_encoder: bool = True) -> Model:
  """Tokenizer, module and variables, sharded on `mesh`.

  Args:
    config: the experiment config (validated).
    workdir: the run folder (a tiny tokenizer is trained into it if needed).
    mesh: the device mesh.
    load_encoder: False skips reading the encoder weights (a feature cache replaces the
      encoder; its params are then zeros of the right shape, never used).
  """
  m = config.model
  tok_path = tokenizer_path(config, workdir)
  builder = prompts.PromptBuilder(prompts.load_tokenizer(tok_path),
                                  system_prompt=config.data.system_prompt)
  cfg = lalm_config(config, builder)
  module = lalm.LALM(cfg, dtype=DTYPES[m.dtype], param_dtype=DTYPES[m.param_dtype],
                     encoder_remat=m.encoder_remat)
  abstract, specs = variable_specs(module)
  shardings = sharding.logical_to_mesh_sharding(specs, mesh)
  abstract = nn.unbox(abstract)

  loaded, sources = {}, {}
  dtype, param_dtype = DTYPES[m.dtype], DTYPES[m.param_dtype]
  if m.encoder_path and load_encoder:
    _, loaded["encoder"] = checkpoints.load_whisper_encoder(
        resolve(m.encoder_path), dtype, param_dtype,
        shardings=shardings["params"]["encoder"], scan_layers=m.scan_layers)
    sources["encoder"] = os.path.abspath(resolve(m.encoder_path))
  if m.llm_path:
    llm_module, loaded["llm"] = checkpoints.load_qwen2(
        resolve(m.llm_path), dtype, param_dtype, shardings=shardings["params"]["llm"],
        vocab_size=cfg.llm.vocab_size, new_token_ids=cfg.new_token_ids,
        scan_layers=m.scan_layers)
    if llm_module.config.tie_word_embeddings != cfg.llm.tie_word_embeddings:
      raise checkpoints.CheckpointError(
          f"{m.llm_path}: the stored lm_head unties a tied config; not supported here")
    sources["llm"] = os.path.abspath(resolve(m.llm_path))

  # Everything no checkpoint gave: initialised in one jit, outputs already sharded;
  # the initialisers of loaded parts are dead code that XLA drops.
  def init_missing(rng):
    variables = nn.unbox(module.init(rng, *(jnp.zeros(s.shape, s.dtype)
                                            for s in lalm.dummy_inputs(cfg))))
    for name in loaded:
      del variables["params"][name]
    if "encoder" in variables["params"] and m.encoder_path:  # not loaded: never used
      variables["params"]["encoder"] = jax.tree.map(jnp.zeros_like,
                                                    variables["params"]["encoder"])
    return variables

  missing_shardings = jax.tree.map(lambda x: x, shardings)
  for name in loaded:
    del missing_shardings["params"][name]
  rng = jax.random.PRNGKey(config.seed)
  variables = jax.jit(init_missing, out_shardings=missing_shardings)(rng)
  variables["params"].update(loaded)
  for part in ("encoder", "llm"):
    sources.setdefault(part, f"random(seed={config.seed})" if part not in loaded
                       else sources[part])
  if m.encoder_path and not load_encoder:
    sources["encoder"] = os.path.abspath(resolve(m.encoder_path)) + " (not loaded: cache)"
  del abstract
  return Model(module, variables, shardings, specs, builder, tok_path, sources)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Rows over the data-parallel axes, as the rules table says for activation_batch."""
  spec = nn.logical_to_mesh_axes(("activation_batch",), sharding.LOGICAL_AXIS_RULES)
  return NamedSharding(mesh, PartitionSpec(*spec))


def global_batch(local: dict[str, Any], mesh: Mesh) -> dict[str, jax.Array]:
  """This host's rows -> global arrays sharded over the batch axes of `mesh`."""
  sh = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sh, v) for k, v in local.items()}
