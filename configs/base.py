"""The config schema every experiment shares, and its one validation.

Every experiment file (`configs/<name>.py`) starts from `get_base_config()` and changes
values; it never adds keys, so a typo in `--config.x=y` fails (configs are locked) and
the schema lives here, in one place. `validate(config)` runs before anything compiles
and names the key at fault.

Paths: relative paths in a config are relative to the repository root (`REPO`), so a
command works from any folder.
"""

from __future__ import annotations

import os
import re

import ml_collections

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MESH_AXES = ("data", "fsdp", "tensor")
DTYPES = ("float32", "bfloat16", "float16")
REMAT_POLICIES = ("none", "nothing_saveable", "dots_saveable", "save_qkv_proj")


def get_base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0  # RNG seed: model init of new parts, LoRA dropout, data order.
  c.total_steps = 100  # optimizer steps to train for.
  c.log_every = 10  # steps between metric lines (metrics.jsonl, TensorBoard, progress bar).
  c.checkpoint_every = 50  # steps between run checkpoints (and one at the end).
  c.keep_checkpoints = 3  # most recent run checkpoints kept on disk.
  c.async_checkpoints = True  # write checkpoints in the background where orbax can.
  c.mesh_shape = (-1, 1, 1)  # (data, fsdp, tensor) device counts; one -1 = the rest.
  c.multiprocess = False  # call jax.distributed.initialize() (TPU pods, GPU clusters).
  c.coordinator_address = ""  # host:port of process 0 ("" = auto-detect on TPU/SLURM).
  c.num_processes = 0  # processes in the job (0 = auto-detect).
  c.process_id = -1  # this process's index (-1 = auto-detect).

  # The model: pretrained folders, or random shapes when a path is "".
  c.model = m = ml_collections.ConfigDict()
  m.encoder_path = ""  # Whisper folder: Hugging Face safetensors or a CTranslate2
  #                     export; "pip:tiny.en" / "pip:base" = a pip-installed export;
  #                     "" = random, shape below.
  m.encoder = ml_collections.ConfigDict(dict(  # used only when encoder_path is "".
      num_mel_bins=80,  # mel bins (80; 128 for large-v3).
      d_model=64,  # encoder width.
      encoder_layers=2,  # transformer blocks.
      encoder_attention_heads=2,  # attention heads.
      encoder_ffn_dim=128,  # MLP width.
      max_source_positions=1500,  # encoder frames per window (1500 = 30 s).
  ))
  m.llm_path = ""  # local Hugging Face Qwen2 folder ("" = random, shape below).
  m.llm = ml_collections.ConfigDict(dict(  # used only when llm_path is "".
      vocab_size=0,  # 0 = the tokenizer's size rounded up to 64.
      hidden_size=64,  # model width D.
      intermediate_size=128,  # SwiGLU width.
      num_hidden_layers=2,  # decoder blocks.
      num_attention_heads=4,  # query heads.
      num_key_value_heads=2,  # key/value heads (GQA).
      head_dim=16,  # width of one head.
      tie_word_embeddings=True,  # LM head shares the embedding.
  ))
  m.tokenizer_path = ""  # tokenizer folder ("" = llm_path; if that is "" too, a tiny
  #                        byte-level BPE is trained on the train manifests' text into
  #                        WORKDIR/tokenizer).
  m.method = "uniavg"  # compression: uniavg | unisamp | unseg | stack.
  m.factor = 2  # compression factor k >= 1 (1 = frame level, 50 audio tokens/s).
  m.method_options = ml_collections.ConfigDict()  # method keyword options, e.g. smooth=3.
  m.train_factors = ()  # elastic rate: each training step's k is drawn from these (e.g.
  #                      (1, 2, 3, 4, 6); a function of seed and step), one model for
  #                      every rate; () = model.factor always. eval.py uses model.factor
  #                      (--config.model.factor=k scores another rate). Not with stack.
  m.projector = "linear"  # audio-token projector: linear | mlp.
  m.projector_hidden = 0  # hidden width of the mlp projector (0 = LLM width).
  m.window_overlap_seconds = 0.0  # long-form audio: seconds shared by consecutive
  #                                 encoder windows (0 = back to back).
  m.encoder_window_seconds = 0.0  # encoder window in seconds (0 = the encoder's own,
  #                                 30 s for Whisper). Shorter (whisper.cpp's audio_ctx)
  #                                 costs less for short utterances; its frames differ a
  #                                 little from the 30-s window's. A multiple of 0.02 s.
  m.use_lora = True  # LoRA adapters on the LLM (False: projector only).
  m.lora_rank = 16  # LoRA rank r.
  m.lora_alpha = 32.0  # LoRA alpha (scale alpha / r).
  m.lora_targets = ("q_proj", "k_proj")  # linear layers that get adapters.
  m.lora_dropout = 0.0  # dropout on the adapter input while training.
  m.train_new_tokens = True  # train the embedding rows of the tokens new to the LLM (the
  #                            audio markers, model.new_tokens, and any token past the
  #                            checkpoint's rows) with the projector and LoRA; they are a
  #                            small [n, D] tree (params/llm/new_tokens/.*), added to
  #                            `trainable` by this switch.
  m.new_tokens = ()  # more tokens (strings in the tokenizer) whose rows train, e.g.
  #                    ("<|im_start|>", "<|im_end|>") for a base model that never saw them.
  m.dtype = "float32"  # compute dtype of encoder and LLM (norms, softmax: float32).
  m.param_dtype = "float32"  # storage dtype of the frozen weights (LoRA, projector: f32).
  m.remat_policy = "none"  # LLM block remat: none | nothing_saveable | dots_saveable |
  #                          save_qkv_proj.
  m.encoder_remat = False  # rematerialise encoder blocks (when the encoder trains).
  m.attention = "blocked"  # attention of encoder and LLM: xla (jax.nn.dot_product_attention)
  #                          | headmajor | blocked (flash-style; fastest on CPU, exact).
  m.attention_batch_block = -1  # blocked: batch rows per step of a loop over the batch
  #                               (0 = the whole batch at once; -1 = auto: a loop on the
  #                               CPU only, where it keeps the score tile in cache).
  m.scan_layers = False  # encoder and LLM blocks under nn.scan (compile time independent
  #                        of depth); params and LoRA stacked as layers/... [L, ...].

  # Which variables train: regexes over '/'-joined paths ("params/projector/.*"); with
  # model.train_new_tokens, "params/llm/new_tokens/.*" trains too.
  c.trainable = ("params/projector/.*", "lora/.*")

  c.data = d = ml_collections.ConfigDict()
  d.train_manifests = ()  # JSON Lines manifests to train on.
  d.test_manifests = ()  # manifests eval.py scores by default.
  # Static batch shapes: (max seconds of audio, global batch size, prompt tokens).
  d.buckets = ((10.0, 8, 256), (30.0, 4, 1024))
  d.eval_buckets = ()  # buckets for eval.py (() = the training buckets).
  d.max_seconds = 0.0  # skip audio longer than this at load time (0 = its bucket's
  #                     max_seconds; audio past the encoder window is cut into windows).
  d.max_audio_tokens = 0  # skip (and count) utterances needing more audio tokens (0 = no cap).
  d.num_threads = 2  # grain reader threads per process.
  d.num_workers = 0  # grain worker processes (0 = threads only).
  d.prefetch = 2  # batches read ahead.
  d.feature_cache = ""  # folder of cached encoder frames ("" = encode on the fly);
  #                       only with a frozen encoder. Relative: under the workdir.
  d.system_prompt = "You are a helpful assistant."  # the chat system turn.

  c.optim = o = ml_collections.ConfigDict()
  o.learning_rate = 1e-4  # peak learning rate.
  o.warmup_steps = 10  # linear warmup from 0 to the peak, in steps.
  o.end_factor = 0.1  # cosine decay ends at peak * end_factor at total_steps.
  o.weight_decay = 0.0  # AdamW decoupled weight decay.
  o.b1 = 0.9  # Adam beta1.
  o.b2 = 0.999  # Adam beta2.
  o.eps = 1e-8  # Adam epsilon.
  o.clip_norm = 1.0  # global gradient-norm clip (0 = none).
  o.grad_accum_steps = 1  # micro-batches per optimizer step (batch rows split evenly).

  c.loss = ml_collections.ConfigDict()
  c.loss.vocab_chunk = 0  # positions per cross-entropy chunk (0 = full [B, S, V] logits).

  c.eval = e = ml_collections.ConfigDict()
  e.max_new_tokens = 128  # generated tokens per utterance at most.
  e.beam_size = 1  # 1 = greedy.
  e.length_penalty = 1.0  # beam scores divided by length ** length_penalty.
  return c


def resolve_path(path: str, workdir: str | None = None) -> str:
  """A config path: absolute as given; relative to REPO (or `workdir` if given);
  ``pip:<name>`` is a Whisper export a pip package ships (`lalmjax.pretrained`:
  ``pip:tiny.en``, ``pip:base``)."""
  if path.startswith("pip:"):
    from lalmjax import pretrained  # local: configs import light

    return pretrained.find_pip_whisper(path[len("pip:"):])
  if not path or os.path.isabs(path):
    return path
  return os.path.join(workdir if workdir is not None else REPO, path)


def _fail(key: str, value, expected: str):
  raise ValueError(f"config.{key}={value!r}: {expected}")


def validate(config: ml_collections.ConfigDict, num_devices: int | None = None,
             check_files: bool = True):
  """Checks every value before anything compiles; ValueError naming the key at fault.

  Args:
    config: the experiment config.
    num_devices: devices the mesh must cover (default: jax.device_count()).
    check_files: also check that the checkpoint folders and manifests exist.
  """
  from lalmjax import compression, sharding  # local: configs import light
  from lalmjax.models import attention
  from lalmjax.models.lora import LINEAR_LAYERS

  c = config
  for key in ("total_steps", "log_every", "checkpoint_every", "keep_checkpoints"):
    if not isinstance(c[key], int) or c[key] < 1:
      _fail(key, c[key], "expected an int >= 1")
  m = c.model
  if m.method not in compression.registered_methods():
    _fail("model.method", m.method, f"expected one of {list(compression.registered_methods())}")
  if not isinstance(m.factor, int) or isinstance(m.factor, bool) or m.factor < 1:
    _fail("model.factor", m.factor, "expected an int >= 1")
  if any(not isinstance(k, int) or isinstance(k, bool) or k < 1 for k in m.train_factors):
    _fail("model.train_factors", m.train_factors, "expected a tuple of ints >= 1")
  if m.train_factors and m.method == "stack":
    _fail("model.train_factors", m.train_factors, "stack's projector width depends on k: "
          "an elastic rate needs uniavg, unisamp or unseg")
  try:
    compression.validate_options(m.method, **dict(m.method_options))
  except ValueError as e:
    _fail("model.method_options", dict(m.method_options), str(e))
  if m.projector not in ("linear", "mlp"):
    _fail("model.projector", m.projector, "expected 'linear' or 'mlp'")
  if m.use_lora:
    if not isinstance(m.lora_rank, int) or m.lora_rank <= 0:
      _fail("model.lora_rank", m.lora_rank, "expected an int > 0")
    if not m.lora_alpha > 0:
      _fail("model.lora_alpha", m.lora_alpha, "expected > 0")
    unknown = sorted(set(m.lora_targets) - set(LINEAR_LAYERS))
    if unknown or not m.lora_targets:
      _fail("model.lora_targets", m.lora_targets, f"expected names from {list(LINEAR_LAYERS)}")
    if not 0 <= m.lora_dropout < 1:
      _fail("model.lora_dropout", m.lora_dropout, "expected a rate in [0, 1)")
  if not isinstance(m.train_new_tokens, bool):
    _fail("model.train_new_tokens", m.train_new_tokens, "expected True or False")
  if not all(isinstance(t, str) and t for t in m.new_tokens):
    _fail("model.new_tokens", m.new_tokens, "expected token strings")
  if m.new_tokens and not m.train_new_tokens:
    _fail("model.new_tokens", m.new_tokens, "names tokens to train, but "
          "model.train_new_tokens is False")
  for key in ("dtype", "param_dtype"):
    if m[key] not in DTYPES:
      _fail(f"model.{key}", m[key], f"expected one of {list(DTYPES)}")
  if m.remat_policy not in REMAT_POLICIES:
    _fail("model.remat_policy", m.remat_policy, f"expected one of {list(REMAT_POLICIES)}")
  attention.check_implementation(m.attention, "config.model.attention")
  attention.check_batch_block(m.attention_batch_block, "config.model.attention_batch_block")
  if not isinstance(m.scan_layers, bool):
    _fail("model.scan_layers", m.scan_layers, "expected True or False")
  for key in ("encoder_path", "llm_path", "tokenizer_path"):
    path = resolve_path(m[key])
    if check_files and path and not os.path.isdir(path):
      _fail(f"model.{key}", m[key], f"folder {path} does not exist")
  for i, pattern in enumerate(c.trainable):
    try:
      re.compile(pattern)
    except re.error as e:
      _fail(f"trainable[{i}]", pattern, f"not a regex ({e})")

  # The mesh must cover the devices, and every batch must split over its batch axes.
  try:
    mesh = sharding.mesh_shape(c.mesh_shape, num_devices)
  except ValueError as e:
    _fail("mesh_shape", tuple(c.mesh_shape), str(e))
  batch_shards = mesh[0] * mesh[1]
  d = c.data
  for key in ("buckets", "eval_buckets"):
    for i, b in enumerate(d[key]):
      if len(b) != 3:
        _fail(f"data.{key}[{i}]", b, "expected (max_seconds, batch_size, max_length)")
      seconds, batch, length = b
      if not seconds > 0:
        _fail(f"data.{key}[{i}]", b, "max_seconds must be > 0")
      if not isinstance(batch, int) or batch < 1:
        _fail(f"data.{key}[{i}]", b, "batch_size must be an int >= 1")
      # Training splits each batch into grad_accum_steps micro-batches, each sharded.
      split = batch_shards * (c.optim.grad_accum_steps if key == "buckets" else 1)
      if batch % split:
        _fail(f"data.{key}[{i}]", b,
              f"batch_size {batch} must be divisible by the data-parallel size "
              f"{batch_shards} (mesh data x fsdp = {mesh[0]} x {mesh[1]})"
              + (f" times optim.grad_accum_steps={c.optim.grad_accum_steps}"
                 if split != batch_shards else ""))
      if not isinstance(length, int) or length < 2:
        _fail(f"data.{key}[{i}]", b, "max_length must be an int >= 2")
  if not d.buckets:
    _fail("data.buckets", d.buckets, "at least one bucket is needed")
  window = m.encoder.max_source_positions / 50 if not m.encoder_path else 30.0
  frames = m.encoder_window_seconds * 50
  if not (0 <= m.encoder_window_seconds <= window and abs(frames - round(frames)) < 1e-6):
    _fail("model.encoder_window_seconds", m.encoder_window_seconds,
          f"expected 0 (the encoder's window) or a multiple of 0.02 s in (0, {window:g}]")
  window = m.encoder_window_seconds or window
  if not 0 <= m.window_overlap_seconds < window:
    _fail("model.window_overlap_seconds", m.window_overlap_seconds,
          f"expected a value in [0, {window:g}) seconds (the encoder window)")
  if not isinstance(d.max_audio_tokens, int) or d.max_audio_tokens < 0:
    _fail("data.max_audio_tokens", d.max_audio_tokens, "expected an int >= 0 (0 = no cap)")
  if d.max_seconds < 0:
    _fail("data.max_seconds", d.max_seconds, "expected >= 0 (0 = the encoder window)")
  if check_files:
    for key in ("train_manifests", "test_manifests"):
      for path in d[key]:
        if not os.path.isfile(resolve_path(path)):
          _fail(f"data.{key}", path, f"manifest {resolve_path(path)} does not exist")
  if d.feature_cache and any(re.fullmatch(p, "params/encoder/x") for p in c.trainable):
    _fail("data.feature_cache", d.feature_cache,
          "cached encoder frames need a frozen encoder, but config.trainable trains it")

  o = c.optim
  if not o.learning_rate > 0:
    _fail("optim.learning_rate", o.learning_rate, "expected > 0")
  if not isinstance(o.warmup_steps, int) or not 0 <= o.warmup_steps <= c.total_steps:
    _fail("optim.warmup_steps", o.warmup_steps, f"expected an int in [0, {c.total_steps}]")
  if not 0 <= o.end_factor <= 1:
    _fail("optim.end_factor", o.end_factor, "expected a value in [0, 1]")
  if not isinstance(o.grad_accum_steps, int) or o.grad_accum_steps < 1:
    _fail("optim.grad_accum_steps", o.grad_accum_steps, "expected an int >= 1")
  if o.clip_norm < 0:
    _fail("optim.clip_norm", o.clip_norm, "expected >= 0 (0 = no clipping)")
  if not isinstance(c.loss.vocab_chunk, int) or c.loss.vocab_chunk < 0:
    _fail("loss.vocab_chunk", c.loss.vocab_chunk, "expected an int >= 0 (0 = no chunking)")
  if not isinstance(c.eval.beam_size, int) or c.eval.beam_size < 1:
    _fail("eval.beam_size", c.eval.beam_size, "expected an int >= 1")
  if not isinstance(c.eval.max_new_tokens, int) or c.eval.max_new_tokens < 1:
    _fail("eval.max_new_tokens", c.eval.max_new_tokens, "expected an int >= 1")
