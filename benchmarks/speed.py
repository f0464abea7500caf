"""The speed table (issue 18): lalmjax against PyTorch, and the train step against theory.

One run, the same inputs and weights on both sides, median after a warm-up call, ours
timed with `block_until_ready` on device arrays (a numpy argument would be copied to the
device on every call), our compile time in its own column. Timed calls alternate ours /
reference, so a change of load on a shared machine hits both sides alike.

Rows ("reference": what the ratio compares against; ratio = reference_ms / ours_ms, so
> 1 means ours is faster or, for "flops", the fraction of peak reached):

  matmul N           `jnp.dot` vs `torch.matmul` of two N x N matrices (best of several:
                     the peak below); reference "pytorch".
  whisper encoder    whisper-tiny.en (or --checkpoint), 30 s, batch 1 and 8, vs
                     `transformers` WhisperEncoder with the same weights; "pytorch".
  qwen2 forward      prefill of batch 8 x 256 tokens, full logits, a tiny and a ~100M
                     Qwen2 (random weights from `transformers.Qwen2ForCausalLM`, saved
                     with save_pretrained and read back by `checkpoints.load_qwen2`);
                     "pytorch".
  qwen2 greedy       batch 8, a 32-token prompt, 64 new tokens, no EOS: ours
                     (`generation.generate_lm`, one jit) vs `generate(do_sample=False)`;
                     "pytorch"; the note gives tokens/s and the share of identical tokens.
  lalm train k=K     one train step (AdamW on projector + LoRA r16 on q,k; Whisper and
                     Qwen2 frozen) of uniavg at factor K on a fixed batch of 30 s
                     utterances given as cached whisper-tiny.en frames (the encoder is
                     timed in its own row); reference "k=1": ratio = measured speed-up
                     over k=1, beside the LLM FLOP ratio.
  lalm train k=K mfu reference "flops": reference_ms = the time the step's executed FLOPs
                     (below) take at the peak (the measured jnp.dot peak, or a GPU's);
                     ratio = achieved FLOP/s / peak (model FLOP utilisation).

Theoretical LLM FLOPs of a step, for the FLOP ratio (forward; train = 3 x forward):

    S = ceil(1500 / k) + text tokens                      (positions per row)
    P = L * (D*N*H + 2*D*K*H + N*H*D + 3*D*F) + D*V       (matmul weights used per token)
    A = S * (S + 1) / 2                                   (causal: query-key pairs seen)
    forward = B * (2 * P * S + 4 * A * N*H * L)           (linear + attention: QK^T, PV)

The train step does not run 3 x forward: the frozen weights get no weight gradient, so a
linear layer costs its forward plus the input gradient (2 x), while attention's backward
is twice its forward (dQ, dK, dV, dP: 3 x in all). And attention computes whole blocks:
"blocked" runs each query block against the span of key blocks the causal mask leaves
live (`attention.live_span`: up to the diagonal block, in full), xla and headmajor all
S^2 pairs; A_run counts those. The MFU counts these executed FLOPs,

    executed = B * (2 * 2 * P * S + 3 * 4 * A_run * N*H * L)

(the projector and LoRA, under 1% here, left out). XLA's own count,
`compiled.cost_analysis()["flops"]`, is printed beside it but not used: it counts the
body of a loop once, so the "blocked" attention's query and key loops are mostly
missing from it (measured: 0.28 of 2.47 GFLOP for one attention at S=1536).

    python benchmarks/speed.py [--quick] [--json [PATH]] [--checkpoint DIR]
        [--attention IMPL] [--dtype float32|bfloat16] [--device cpu|gpu]
        [--peak_tflops X]

`--json` alone prints the rows as JSON on stdout (the tables go to stderr); `--json PATH`
writes them there. `benchmarks/gpu.sh` runs this in bf16 on a CUDA GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import types
from typing import Any, Callable

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

DEFAULT_CHECKPOINT = os.path.join(REPO, "..", "shared", "checkpoints", "whisper-tiny.en")
PIP_CHECKPOINT = "pip:tiny.en"

# hidden, intermediate, layers, heads, kv heads, vocab (head dim = hidden / heads).
QWEN2_SIZES = {
    "tiny": (64, 128, 2, 4, 2, 1024),
    "100M": (768, 2048, 12, 12, 4, 32000),  # 92M weights (tied), 99M used per token
    "train": (768, 2048, 8, 12, 4, 32000),  # 75M: the train-step LLM (tied head)
}
SMOKE_TRAIN_FRAMES = 200  # --smoke trains on the first 4 s of the frames
SMOKE_WHISPER = dict(num_mel_bins=80, d_model=64, encoder_layers=2, encoder_attention_heads=2,
                     encoder_ffn_dim=128, max_source_positions=1500)

# Dense bf16 peak TFLOP/s by GPU name (vendor data sheets, no sparsity); the first
# substring that matches the device name wins, so the longer names come first.
GPU_PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.0), ("H100", 989.4), ("H200", 989.4), ("GH200", 989.4),
    ("A100", 312.0), ("L40S", 362.1), ("L40", 181.0), ("A10G", 70.0), ("A10", 125.0),
    ("L4", 121.0), ("RTX 4090", 165.2), ("RTX 3090", 71.0), ("A6000", 154.8),
)

TEXT_PREFIX, TEXT_TARGET = 4, 28  # text tokens around the audio in a train row


def log(*a):
  print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# Rows and timing.


@dataclasses.dataclass
class Row:
  """One line of the table; ratio = reference_ms / ours_ms (> 1: ours is faster)."""
  name: str
  ours_ms: float
  reference: str
  reference_ms: float
  compile_s: float | None = None
  note: str = ""
  extra: dict = dataclasses.field(default_factory=dict)

  @property
  def ratio(self) -> float:
    return self.reference_ms / self.ours_ms

  def to_json(self) -> dict:
    # Significant digits, not decimals: a 0.2 ms row rounded to 3 decimals would move
    # its ratio by 0.2 %, and ratio must equal reference_ms / ours_ms as written.
    sig = lambda x, n: float(f"{x:.{n}g}")
    return {"name": self.name, "ours_ms": sig(self.ours_ms, 6),
            "reference": self.reference, "reference_ms": sig(self.reference_ms, 6),
            "ratio": sig(self.ratio, 5),
            "compile_s": None if self.compile_s is None else round(self.compile_s, 2),
            "note": self.note, **self.extra}


def seconds(fn: Callable[[], Any]) -> float:
  t0 = time.perf_counter()
  fn()
  return time.perf_counter() - t0


def paired_ms(ours: Callable[[], Any], theirs: Callable[[], Any], repeats: int):
  """(median ms of ours, of theirs, our last output, theirs) after one warm-up call
  each, the timed calls alternating."""
  last = [ours(), theirs()]

  def timed(i, fn):
    t0 = time.perf_counter()
    last[i] = fn()
    return time.perf_counter() - t0

  a, b = [], []
  for _ in range(repeats):
    a.append(timed(0, ours))
    b.append(timed(1, theirs))
  return 1e3 * statistics.median(a), 1e3 * statistics.median(b), last[0], last[1]


def compile_timed(jitted, *args):
  """(the compiled executable, compile seconds): trace, lower and compile, nothing run."""
  t0 = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  return compiled, time.perf_counter() - t0


def median_ms(fn: Callable[[], Any], repeats: int) -> float:
  fn()
  return 1e3 * statistics.median(seconds(fn) for _ in range(repeats))


# ---------------------------------------------------------------------------------------
# The machine and the two frameworks.


class Env:
  """Devices, dtypes and synchronisation for both sides."""

  def __init__(self, args):
    import jax
    import jax.numpy as jnp
    import torch

    self.gpu = args.device == "gpu"
    if self.gpu and jax.default_backend() != "gpu":
      sys.exit("speed.py --device gpu: jax sees no GPU (backend "
               f"{jax.default_backend()!r}); install jax[cuda12]")
    if self.gpu and not torch.cuda.is_available():
      sys.exit("speed.py --device gpu: torch sees no CUDA device")
    torch.set_num_threads(os.cpu_count() or 1)
    self.jax_device = jax.devices()[0]
    self.torch_device = torch.device("cuda" if self.gpu else "cpu")
    self.jnp_dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[args.dtype]
    self.torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    self.dtype_name = args.dtype

  def put(self, x):
    import jax

    return jax.device_put(x, self.jax_device)

  def sync(self):
    if self.gpu:
      import torch

      torch.cuda.synchronize()


def machine_lines(args) -> list[str]:
  import jax
  import torch
  import transformers

  model = platform.processor() or "unknown"
  try:
    for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
      if line.startswith("Model name:"):
        model = line.split(":", 1)[1].strip()
  except OSError:
    pass
  lines = [f"CPU: {model}, {os.cpu_count()} cores; jax {jax.__version__} "
           f"({jax.default_backend()}: {jax.devices()[0].device_kind}), torch "
           f"{torch.__version__} ({torch.get_num_threads()} threads), transformers "
           f"{transformers.__version__}, Python {platform.python_version()}"]
  if args.device == "gpu":
    lines.append(f"GPU: {torch.cuda.get_device_name(0)}")
  lines.append(f"dtype {args.dtype}; command: python benchmarks/speed.py "
               + " ".join(sys.argv[1:]))
  return lines


def uptime() -> str:
  try:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
  except OSError:
    return "uptime unavailable"


# ---------------------------------------------------------------------------------------
# Matmul peak.


def matmul_rows(env: Env, sizes, repeats: int) -> tuple[list[Row], float]:
  """jnp.dot vs torch.matmul of N x N squares; returns the rows and our best FLOP/s."""
  import jax
  import jax.numpy as jnp
  import torch

  rows, peak = [], 0.0
  for n in sizes:
    rng = np.random.default_rng(n)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    ja, jb = env.put(a.astype(env.jnp_dtype)), env.put(b.astype(env.jnp_dtype))
    dot, compile_s = compile_timed(jax.jit(jnp.dot), ja, jb)
    ta = torch.from_numpy(a).to(env.torch_device, env.torch_dtype)
    tb = torch.from_numpy(b).to(env.torch_device, env.torch_dtype)

    def ours():
      jax.block_until_ready(dot(ja, jb))

    def theirs():
      torch.matmul(ta, tb)
      env.sync()

    ours(), theirs()
    best_ours = 1e3 * min(seconds(ours) for _ in range(repeats))
    best_ref = 1e3 * min(seconds(theirs) for _ in range(repeats))
    flops = 2.0 * n ** 3
    peak = max(peak, flops / (best_ours / 1e3))
    rows.append(Row(f"matmul {n}x{n} {env.dtype_name}, best of {repeats}", best_ours,
                    "pytorch", best_ref, compile_s,
                    f"ours {flops / best_ours / 1e6:.0f} GFLOP/s, pytorch "
                    f"{flops / best_ref / 1e6:.0f} GFLOP/s"))
  return rows, peak


# ---------------------------------------------------------------------------------------
# Whisper encoder.


def attention_field(config_cls) -> bool:
  """Whether a model config has the `attention` implementation field (issue 18)."""
  return "attention" in {f.name for f in dataclasses.fields(config_cls)}


def with_attention(module, attention: str | None):
  """The module with config.attention set, when asked for and the field exists."""
  if attention is None or not attention_field(type(module.config)):
    return module
  return module.clone(config=dataclasses.replace(module.config, attention=attention))


def attention_label(module) -> str:
  cfg = module.config
  return f", attention={cfg.attention}" if attention_field(type(cfg)) else ""


def torch_whisper_encoder(config, params, env: Env):
  """`transformers.WhisperEncoder` holding our Flax params (one path for an HF folder, a
  CTranslate2 export or random weights); the max abs difference is checked per row."""
  import torch
  import transformers
  from flax import traverse_util

  from lalmjax.hf_names import default_hf_name

  hf = transformers.WhisperConfig(
      num_mel_bins=config.num_mel_bins, d_model=config.d_model,
      encoder_layers=config.encoder_layers, encoder_attention_heads=config.encoder_attention_heads,
      encoder_ffn_dim=config.encoder_ffn_dim, max_source_positions=config.max_source_positions,
      decoder_layers=1, decoder_attention_heads=config.encoder_attention_heads)
  encoder = transformers.models.whisper.modeling_whisper.WhisperEncoder(hf)
  state = {}
  for path, value in traverse_util.flatten_dict(params).items():
    name, _ = default_hf_name(path)
    x = np.asarray(value, np.float32)
    if path[-1] == "kernel":  # Flax [in, out] / conv [k, in, out] -> torch [out, in(, k)]
      x = np.transpose(x, (2, 1, 0)) if x.ndim == 3 else x.T
    state[name] = torch.from_numpy(np.array(x, np.float32, order="C"))
  missing, unexpected = encoder.load_state_dict(state, strict=False)
  if unexpected or [m for m in missing if "embed_positions" not in m]:
    raise RuntimeError(f"torch Whisper encoder: missing {missing}, unexpected {unexpected}")
  return encoder.to(env.torch_device, env.torch_dtype).eval()


def load_encoder(args, env: Env):
  """(module, params) of the benchmark's encoder: a checkpoint, or random for --smoke."""
  import flax.linen as nn
  import jax

  from lalmjax import checkpoints
  from lalmjax.models import whisper

  if args.smoke:
    config = whisper.WhisperEncoderConfig(**SMOKE_WHISPER)
    module = whisper.WhisperEncoder(config, dtype=env.jnp_dtype, param_dtype=env.jnp_dtype)
    mel = jax.ShapeDtypeStruct((1, config.num_mel_bins, config.num_mel_frames), np.float32)
    params = jax.jit(module.init)(jax.random.PRNGKey(0), np.zeros(mel.shape, mel.dtype))
    return module, nn.unbox(params)["params"], "random tiny Whisper"
  from configs import base

  path = base.resolve_path(args.checkpoint)
  module, params = checkpoints.load_whisper_encoder(path, env.jnp_dtype, env.jnp_dtype)
  return module, params, os.path.basename(os.path.normpath(args.checkpoint)) or path


def speech_mel(num_mel_bins: int, batch: int) -> np.ndarray:
  """float32[batch, M, 3000]: the bundled English speech tiled to 30 s."""
  from lalmjax import audio

  speech = audio.load_audio(os.path.join(REPO, "tests", "data", "speech_en_1.wav"))
  wav = np.tile(speech, -(-audio.N_SAMPLES // len(speech)))[: audio.N_SAMPLES]
  mel = np.asarray(audio.log_mel_spectrogram(wav[None], num_mel_bins))
  return np.repeat(mel, batch, axis=0)


def encoder_rows(args, env: Env, batches, repeats: int):
  """Rows for the encoder; also returns float32[1, T, E] frames of the speech (for the
  train step's feature cache) and the encoder's config."""
  import jax
  import torch

  module, params, label = load_encoder(args, env)
  module = with_attention(module, args.attention)
  ref = torch_whisper_encoder(module.config, params, env)
  params = env.put(params)
  encode = jax.jit(module.apply)
  rows, frames = [], None
  for batch in batches:
    mel_np = speech_mel(module.config.num_mel_bins, batch)
    mel = env.put(mel_np)
    compiled, compile_s = compile_timed(encode, {"params": params}, mel)
    mel_t = torch.from_numpy(mel_np).to(env.torch_device, env.torch_dtype)

    def ours():
      return jax.block_until_ready(compiled({"params": params}, mel))

    def theirs():
      with torch.inference_mode():
        out = ref(mel_t).last_hidden_state
      env.sync()
      return out

    t_ours, t_ref, out, ref_out = paired_ms(ours, theirs, repeats)
    out = np.asarray(out, np.float32)
    err = float(np.abs(out - ref_out.float().cpu().numpy()).max())
    if frames is None:
      frames = out[:1]
    rows.append(Row(f"whisper encoder {label}, 30 s, B={batch}{attention_label(module)}",
                    t_ours, "pytorch", t_ref, compile_s, f"max abs diff {err:.1e}"))
    log(f"  {rows[-1].name}: ours {t_ours:.0f} ms, pytorch {t_ref:.0f} ms")
  return rows, frames, module.config


# ---------------------------------------------------------------------------------------
# Qwen2: prefill and greedy decoding against transformers.


def random_qwen2(size: str, folder: str, env: Env, attention: str | None):
  """A random HF Qwen2ForCausalLM saved to `folder` and both sides' models of it."""
  import torch
  import transformers

  from lalmjax import checkpoints

  d, f, layers, heads, kv, vocab = QWEN2_SIZES[size]
  torch.manual_seed(0)
  cfg = transformers.Qwen2Config(vocab_size=vocab, hidden_size=d, intermediate_size=f,
                                 num_hidden_layers=layers, num_attention_heads=heads,
                                 num_key_value_heads=kv, max_position_embeddings=4096,
                                 tie_word_embeddings=True)
  ref = transformers.Qwen2ForCausalLM(cfg).eval()
  ref.save_pretrained(folder)
  ref = ref.to(env.torch_device, env.torch_dtype)
  module, params = checkpoints.load_qwen2(folder, env.jnp_dtype, env.jnp_dtype)
  return with_attention(module, attention), env.put(params), ref


def qwen2_rows(args, env: Env, sizes, repeats: int, batch: int, prompt: int, new: int,
               decode_prompt: int) -> list[Row]:
  import jax
  import torch

  from lalmjax import generation

  rows = []
  for size in sizes:
    with tempfile.TemporaryDirectory() as folder:
      module, params, ref = random_qwen2(size, folder, env, args.attention)
    cfg = module.config
    params_m = sum(x.size for x in jax.tree.leaves(params)) / 1e6
    label = f"qwen2 {size} ({params_m:.0f}M, D={cfg.hidden_size}, L={cfg.num_hidden_layers})"
    rng = np.random.default_rng(0)

    # Prefill: one full forward with logits over every position.
    ids_np = rng.integers(0, cfg.vocab_size, (batch, prompt)).astype(np.int32)
    ids = env.put(ids_np)
    variables = {"params": params}
    forward = jax.jit(module.apply)
    compiled, compile_s = compile_timed(forward, variables, ids)
    ids_t = torch.from_numpy(ids_np.astype(np.int64)).to(env.torch_device)

    def ours():
      return jax.block_until_ready(compiled(variables, ids))

    def theirs():
      with torch.inference_mode():
        out = ref(input_ids=ids_t).logits
      env.sync()
      return out

    t_ours, t_ref, out, ref_out = paired_ms(ours, theirs, repeats)
    err = float(np.abs(np.asarray(out, np.float32) - ref_out.float().cpu().numpy()).max())
    rows.append(Row(f"{label} forward B={batch} S={prompt}{attention_label(module)}",
                    t_ours, "pytorch", t_ref, compile_s, f"max abs logit diff {err:.1e}"))
    log(f"  {rows[-1].name}: ours {t_ours:.0f} ms, pytorch {t_ref:.0f} ms")

    # Greedy decoding: exactly `new` tokens per row (an EOS id that never occurs).
    ids_np = rng.integers(0, cfg.vocab_size, (batch, decode_prompt)).astype(np.int32)
    ids, mask = env.put(ids_np), env.put(np.ones_like(ids_np, bool))
    decode = generation.DecodeConfig(beam_size=1, buffer_size=new)
    no_eos = env.put(np.asarray([-1], np.int32))
    limit = env.put(np.asarray(new, np.int32))

    def ours_gen():
      out = generation.generate_lm(module, variables, ids, mask, decode, limit, no_eos, 0)
      return jax.block_until_ready(out.tokens)

    ids_t = torch.from_numpy(ids_np.astype(np.int64)).to(env.torch_device)
    mask_t = torch.ones_like(ids_t)

    def theirs_gen():
      with torch.inference_mode():
        out = ref.generate(input_ids=ids_t, attention_mask=mask_t, max_new_tokens=new,
                           min_new_tokens=new, do_sample=False, eos_token_id=None,
                           pad_token_id=0)
      env.sync()
      return out

    first_s = seconds(ours_gen)
    t_ours, t_ref, out, ref_out = paired_ms(ours_gen, theirs_gen, repeats)
    same = float((np.asarray(out) == ref_out[:, decode_prompt:].cpu().numpy()).mean())
    n = batch * new
    rows.append(Row(
        f"{label} greedy B={batch}, {decode_prompt}+{new} tokens{attention_label(module)}",
        t_ours, "pytorch", t_ref, max(first_s - t_ours / 1e3, 0.0),
        f"{n / t_ours * 1e3:.0f} vs {n / t_ref * 1e3:.0f} tokens/s; tokens equal {same:.0%}",
        {"tokens_per_s": round(n / t_ours * 1e3, 1),
         "reference_tokens_per_s": round(n / t_ref * 1e3, 1), "tokens_equal": same}))
    log(f"  {rows[-1].name}: ours {t_ours:.0f} ms, pytorch {t_ref:.0f} ms, equal {same:.0%}")
    del ref
  return rows


# ---------------------------------------------------------------------------------------
# The LALM train step at several compression factors.


def attention_pairs_run(cfg, seq: int) -> int:
  """A_run: the query-key pairs a causal attention over `seq` positions computes, per row
  and head (the docstring's formulas): the live blocks' pairs for "blocked" (a library
  without `live_span` computes them all), S^2 otherwise."""
  from lalmjax.models import attention

  if getattr(cfg, "attention", "xla") != "blocked" or not hasattr(attention, "live_span"):
    return seq * seq
  bq = attention._even_block(seq, attention.DEFAULT_BLOCK_Q)
  bk = attention._even_block(seq, attention.DEFAULT_BLOCK_K)
  sp, tp = -(-seq // bq) * bq, -(-seq // bk) * bk
  causal = np.zeros((sp, tp), bool)
  causal[:seq, :seq] = np.tril(np.ones((seq, seq), bool))
  blocks = attention._Blocks(1.0, bq, bk, seq, seq, tp)
  first, last = attention.live_span(attention.live_blocks(causal[None, None, None], blocks),
                                    1, tp // bk)
  return int(np.asarray(last - first).sum()) * bq * bk


def llm_flops(cfg, seq: int, batch: int) -> dict[str, float]:
  """The module docstring's formulas: the LLM's forward FLOPs, the 3x train count (for the
  FLOP ratio) and the executed count (for the MFU)."""
  d, n, k, h = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
  per_token = (cfg.num_hidden_layers * (d * n * h + 2 * d * k * h + n * h * d +
                                        3 * d * cfg.intermediate_size)
               + d * cfg.vocab_size)
  linear = 2.0 * per_token * seq
  per_pair = 4.0 * n * h * cfg.num_hidden_layers
  attention = per_pair * seq * (seq + 1) / 2
  executed = batch * (2 * linear + 3 * per_pair * attention_pairs_run(cfg, seq))
  forward = batch * (linear + attention)
  return {"forward": forward, "train": 3 * forward, "executed": executed}


def attention_ms(llm, batch: int, seq: int, repeats: int, env: Env) -> float:
  """ms of forward + backward (d q, k, v) of the LLM's attention at the train step's
  shapes (causal mask, the config's implementation), times its layers: the share of the
  step that grows as S^2."""
  import jax
  import jax.numpy as jnp

  from lalmjax.models import qwen2

  n, k, h = llm.num_attention_heads, llm.num_key_value_heads, llm.head_dim
  if attention_field(qwen2.Qwen2Config):
    from lalmjax.models import attention  # pylint: disable=g-import-not-at-top

    def attend(q, key, value, mask):
      return attention.dot_product_attention(q, key, value, mask=mask,
                                             implementation=llm.attention)
  else:
    def attend(q, key, value, mask):
      return jax.nn.dot_product_attention(q, key, value, mask=mask)

  rng = np.random.default_rng(seq)
  q, key, value = (env.put(rng.standard_normal((batch, seq, heads, h), np.float32)
                           .astype(env.jnp_dtype)) for heads in (n, k, k))
  mask = env.put(qwen2.attention_mask_4d(jnp.ones((batch, seq), bool), jnp.arange(seq)))
  grad = jax.jit(jax.grad(lambda *a: attend(*a).astype(jnp.float32).sum(), argnums=(0, 1, 2)))
  return llm.num_hidden_layers * median_ms(lambda: jax.block_until_ready(
      grad(q, key, value, mask)), repeats)


def xla_flops(compiled) -> float | None:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  return float(cost["flops"]) if cost and "flops" in cost else None


def train_batch(frames: np.ndarray, factor: int, audio_token_id: int, vocab: int,
                batch: int) -> dict[str, np.ndarray]:
  """A fixed batch: every row 30 s of cached frames, a short text prompt, ceil(T / k)
  audio placeholders, then TEXT_TARGET target tokens (the loss is on those only)."""
  t = frames.shape[1]
  audio_tokens = -(-t // factor)
  rng = np.random.default_rng(factor)
  rows = []
  for _ in range(batch):
    text = rng.integers(0, audio_token_id, TEXT_PREFIX + TEXT_TARGET)
    rows.append(np.concatenate([text[:TEXT_PREFIX], np.full(audio_tokens, audio_token_id),
                                text[TEXT_PREFIX:]]))
  ids = np.stack(rows).astype(np.int32)
  loss_mask = np.zeros(ids.shape, bool)
  loss_mask[:, -TEXT_TARGET:] = True
  return {"frames": np.repeat(frames, batch, axis=0).astype(np.float32),
          "num_frames": np.full((batch,), t, np.int32), "input_ids": ids,
          "attention_mask": np.ones(ids.shape, bool), "loss_mask": loss_mask}


def train_rows(args, env: Env, frames: np.ndarray, encoder_config, factors, batch: int,
               repeats: int, peak: float, peak_label: str) -> tuple[list[Row], list[dict]]:
  import jax
  import jax.numpy as jnp

  from lalmjax import training
  from lalmjax.models import lalm, qwen2
  from lalmjax.models.lora import LoraConfig

  d, f, layers, heads, kv, vocab = QWEN2_SIZES["tiny" if args.smoke else "train"]
  llm = qwen2.Qwen2Config(vocab_size=vocab, hidden_size=d, intermediate_size=f,
                          num_hidden_layers=layers, num_attention_heads=heads,
                          num_key_value_heads=kv, head_dim=d // heads,
                          tie_word_embeddings=True)
  if args.attention is not None and attention_field(qwen2.Qwen2Config):
    llm = dataclasses.replace(llm, attention=args.attention)
  lora = LoraConfig(rank=16, alpha=32.0, targets=("q_proj", "k_proj"))
  optim = types.SimpleNamespace(learning_rate=1e-4, warmup_steps=0, end_factor=0.1,
                                clip_norm=1.0, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0)
  tx = training.make_optimizer(optim, total_steps=1000)
  audio_id = vocab - 1

  def config(k):
    return lalm.LALMConfig(encoder_config, llm, audio_id, lora=lora, method="uniavg",
                           factor=k)

  # Identical weights for every k: uniavg does not change any parameter's shape.
  module1 = lalm.LALM(config(1), dtype=env.jnp_dtype, param_dtype=env.jnp_dtype)
  variables = jax.jit(lambda r: lalm.init_variables(module1, r))(jax.random.PRNGKey(0))
  variables = env.put(variables)
  trainable, frozen = training.partition(variables, training.DEFAULT_TRAINABLE)
  frames = frames.astype(np.float32)

  rows, details = [], []
  for k in factors:
    module = lalm.LALM(config(k), dtype=env.jnp_dtype, param_dtype=env.jnp_dtype)
    state = training.init_train_state(jax.tree.map(lambda x: jnp.array(x, copy=True),
                                                   trainable), tx)
    batch_np = train_batch(frames, k, audio_id, vocab, batch)
    data = env.put(batch_np)
    step = jax.jit(training.make_train_step(module, tx), donate_argnums=0)
    compiled, compile_s = compile_timed(step, state, frozen, data)
    flops_xla = xla_flops(compiled)
    box = {"state": state}

    def run():  # the state goes round as in a training loop (donated, updated)
      box["state"], box["metrics"] = compiled(box["state"], frozen, data)
      jax.block_until_ready(box["metrics"]["loss"])

    ms = median_ms(run, repeats)
    loss = float(box["metrics"]["loss"])
    seq = batch_np["input_ids"].shape[1]
    attn_ms = attention_ms(llm, batch, seq, repeats, env)
    theory = llm_flops(llm, seq, batch)
    details.append({"k": k, "seq": seq, "ms": ms, "attention_ms": attn_ms,
                    "compile_s": compile_s, "loss": loss,
                    "flops_train_formula": theory["train"],
                    "flops_executed": theory["executed"], "flops_xla": flops_xla})
    log(f"  train k={k}: S={seq}, {ms:.0f} ms (attention fwd+bwd {attn_ms:.0f} ms), "
        f"compile {compile_s:.1f} s, loss {loss:.3f}, "
        f"GFLOP: 3x formula {theory['train'] / 1e9:.0f}, executed "
        f"{theory['executed'] / 1e9:.0f}, XLA {(flops_xla or float('nan')) / 1e9:.0f}")

  base = details[0]
  lora_m = sum(x.size for x in jax.tree.leaves(trainable)) / 1e6
  llm_m = sum(x.size for x in jax.tree.leaves(frozen["params"]["llm"])) / 1e6
  what = (f"lalm train step uniavg (B={batch}, {llm_m:.0f}M Qwen2 frozen, "
          f"{lora_m:.2f}M trainable)")
  for det in details:
    k = det["k"]
    speedup = base["ms"] / det["ms"]
    flop_ratio = base["flops_train_formula"] / det["flops_train_formula"]
    det.update(speedup=speedup, flop_ratio=flop_ratio, fraction=speedup / flop_ratio)
    rows.append(Row(f"{what} k={k}, S={det['seq']}", det["ms"], "k=1", base["ms"],
                    det["compile_s"],
                    f"speed-up {speedup:.2f}x of FLOP ratio {flop_ratio:.2f}x = "
                    f"{speedup / flop_ratio:.0%}",
                    {"flop_ratio": round(flop_ratio, 4),
                     "speedup_over_flop_ratio": round(speedup / flop_ratio, 4)}))
  for det in details:
    flops = det["flops_executed"]
    det.update(achieved=flops / (det["ms"] / 1e3), mfu=flops / (det["ms"] / 1e3) / peak)
    rows.append(Row(f"lalm train k={det['k']} achieved FLOP/s vs {peak_label}",
                    det["ms"], "flops", flops / peak * 1e3, det["compile_s"],
                    f"{flops / 1e9:.4g} GFLOP (executed, analytic) in {det['ms']:.0f} ms = "
                    f"{det['achieved'] / 1e9:.0f} GFLOP/s",
                    {"flops": flops, "flops_source": "analytic executed",
                     "flops_xla": det["flops_xla"]}))
  return rows, details


# ---------------------------------------------------------------------------------------
# Output.


def markdown(rows: list[Row]) -> str:
  out = ["| row | ours ms | our compile s | reference | reference ms | ratio | note |",
         "|---|---:|---:|---|---:|---:|---|"]
  for r in rows:
    compile_s = "" if r.compile_s is None else f"{r.compile_s:.1f}"
    out.append(f"| {r.name} | {r.ours_ms:.1f} | {compile_s} | {r.reference} | "
               f"{r.reference_ms:.1f} | {r.ratio:.2f}x | {r.note} |")
  return "\n".join(out)


def train_markdown(details: list[dict], peak: float) -> str:
  out = ["| k | S | step ms | attention ms (share) | compile s | speed-up over k=1 | "
         "LLM FLOP ratio | speed-up / FLOP ratio | 3x-forward GFLOP | executed GFLOP | "
         "XLA GFLOP | GFLOP/s | MFU |",
         "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
  for d in details:
    xla = f"{d['flops_xla'] / 1e9:.4g}" if d["flops_xla"] else "n/a"
    out.append(f"| {d['k']} | {d['seq']} | {d['ms']:.0f} | {d['attention_ms']:.0f} "
               f"({d['attention_ms'] / d['ms']:.0%}) | {d['compile_s']:.1f} | "
               f"{d['speedup']:.2f}x | {d['flop_ratio']:.2f}x | {d['fraction']:.0%} | "
               f"{d['flops_train_formula'] / 1e9:.4g} | {d['flops_executed'] / 1e9:.4g} | "
               f"{xla} | "
               f"{d['achieved'] / 1e9:.0f} | {d['mfu']:.1%} |")
  k3 = [d for d in details if d["k"] == 3]
  out.append("\nattention ms: forward + backward of the LLM's attention alone at the step's "
             "shapes, times its layers (timed apart; the rest of the step is the linear "
             "layers, norms, loss and optimizer).")
  if k3:
    verdict = "met" if k3[0]["fraction"] >= 0.8 else "NOT met"
    out.append(f"\nGoal (issue 18): the k=3 speed-up over k=1 is at least 80% of its FLOP "
               f"ratio: {k3[0]['fraction']:.0%}, {verdict}. MFU: executed FLOPs per "
               f"second / {peak / 1e9:.0f} GFLOP/s peak.")
  return "\n".join(out)


def gpu_peak(args, env: Env) -> tuple[float, str] | None:
  """(FLOP/s, label) of the given or known peak; None: use the measured matmul peak."""
  if args.peak_tflops:
    return args.peak_tflops * 1e12, f"given peak {args.peak_tflops:g} TFLOP/s"
  if env.gpu and args.dtype == "bfloat16":
    import torch

    name = torch.cuda.get_device_name(0)
    for key, tflops in GPU_PEAK_BF16_TFLOPS:
      if key in name:
        return tflops * 1e12, f"{key} bf16 peak {tflops:g} TFLOP/s"
    log(f"no bf16 peak known for {name!r}: MFU against the measured matmul peak "
        "(pass --peak_tflops)")
  return None


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--checkpoint", default=None,
                      help="Whisper folder (HF or CTranslate2) or pip:<name>; default "
                           "../shared/checkpoints/whisper-tiny.en, else pip:tiny.en")
  parser.add_argument("--attention", default=None,
                      help="config.attention of the encoder and Qwen2 (when the field "
                           "exists); default: the config's default")
  parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
  parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
  parser.add_argument("--peak_tflops", type=float, default=0.0,
                      help="peak for the MFU rows (default: the GPU's known bf16 peak, "
                           "else the measured jnp.dot peak)")
  parser.add_argument("--quick", action="store_true",
                      help="fewer repeats, k in {1, 3}, matmul 2048 only")
  parser.add_argument("--smoke", action="store_true",
                      help="tiny random models everywhere (implies --quick; for tests)")
  parser.add_argument("--json", nargs="?", const="-", default=None,
                      help="write the rows as JSON to PATH (alone: to stdout)")
  parser.add_argument("--train_batch", type=int, default=2)
  args = parser.parse_args(argv)
  args.quick = args.quick or args.smoke
  if args.device == "cpu":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
  else:  # torch shares the GPU: jax takes memory as it needs it, not 75% up front
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  if args.checkpoint is None:
    args.checkpoint = DEFAULT_CHECKPOINT if os.path.isdir(DEFAULT_CHECKPOINT) else PIP_CHECKPOINT

  env = Env(args)
  out = sys.stderr if args.json == "-" else sys.stdout
  load_before = uptime()
  t_start = time.perf_counter()
  repeats = 1 if args.smoke else 2 if args.quick else 5

  log("matmul peak ...")
  matmul_sizes = (256,) if args.smoke else (2048,) if args.quick else (2048, 4096)
  rows, peak = matmul_rows(env, matmul_sizes, 3 if args.quick else 5)
  log("whisper encoder ...")
  enc_rows, frames, enc_config = encoder_rows(args, env, (1,) if args.smoke else (1, 8),
                                              repeats if args.quick else 3)
  if args.smoke:
    frames = frames[:, :SMOKE_TRAIN_FRAMES]
  rows += enc_rows
  log("qwen2 ...")
  rows += qwen2_rows(args, env, ("tiny",) if args.smoke else ("tiny", "100M"),
                     repeats if args.quick else 3, batch=2 if args.smoke else 8,
                     prompt=32 if args.smoke else 256, new=8 if args.smoke else 64,
                     decode_prompt=32)
  log("lalm train step ...")
  factors = (1, 3) if args.quick else (1, 2, 3, 4, 6)
  # The peak again, just before the train steps (other jobs' load changes over a run):
  # the better of the two measurements, so the MFU is not flattered by a slow moment.
  _, peak_again = matmul_rows(env, matmul_sizes[:1], 3)
  peak_label = (f"jnp.dot peak {max(peak, peak_again) / 1e9:.0f} GFLOP/s (best of "
                f"{peak / 1e9:.0f} at the start, {peak_again / 1e9:.0f} before the steps)")
  peak = max(peak, peak_again)
  given = gpu_peak(args, env)
  if given:
    peak, peak_label = given
  t_rows, details = train_rows(args, env, frames, enc_config, factors, args.train_batch,
                               repeats if args.quick else 3, peak, peak_label)
  rows += t_rows

  lines = ["Machine: " + machine_lines(args)[0], *machine_lines(args)[1:],
           f"Load before: {load_before}", f"Load after:  {uptime()}",
           f"Wall time: {time.perf_counter() - t_start:.0f} s", "", markdown(rows), "",
           "LALM train step by compression factor (uniavg, cached whisper frames):", "",
           train_markdown(details, peak)]
  print("\n".join(lines), file=out)
  if args.json:
    text = json.dumps([r.to_json() for r in rows], indent=1)
    if args.json == "-":
      print(text)
    else:
      with open(args.json, "w") as fh:
        fh.write(text + "\n")


if __name__ == "__main__":
  main()
