"""The assembled Large Audio Language Model and its loss.

    mel [B, M, F] -> Whisper encoder -> frames [B, T, E] (50/s)
      -> compress(method, k) -> audio tokens [B, A, E'] (E' = E, or k*E for "stack")
      -> projector -> [B, A, D]
      -> spliced into the LLM's input embeddings at the <|AUDIO|> placeholders
      -> Qwen2 (+ LoRA) -> logits [B, S, V]

Axis letters: B batch, M mel bins, F mel frames, T encoder frames, A audio-token slots
(ceil(T / k)), E encoder width, D LLM width, S text positions, V vocab.

Variables: ``{"params": {"encoder", "projector", "llm"}, "lora": {"llm"}}``. Which of
them train is data (``training.partition`` with regexes over these paths); by default
the projector, the LoRA adapters and the rows of the tokens new to the LLM
(``params/llm/new_tokens``, `lalmjax.models.new_tokens`), with the encoder and the LLM
frozen.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lalmjax import audio, compression, losses, windows
from lalmjax.models.lora import LoraConfig
from lalmjax.models.new_tokens import check_ids, write_rows
from lalmjax.models.projector import PROJECTOR_KINDS, Projector
from lalmjax.models.qwen2 import Qwen2, Qwen2Config
from lalmjax.models.whisper import WhisperEncoder, WhisperEncoderConfig


@dataclasses.dataclass(frozen=True)
class LALMConfig:
  """The whole model's shape.

  Attributes:
    encoder: the Whisper encoder.
    llm: the Qwen2 LM.
    audio_token_id: id of the <|AUDIO|> placeholder in the tokenizer (< llm.vocab_size).
    lora: adapters on the LLM, or None for none.
    method: compression method, a name registered in `lalmjax.compression`.
    factor: compression factor k >= 1 (1 = frame level).
    method_options: extra keyword options of the method, as (name, value) pairs (a
      dict is accepted); checked against the method when the config is built.
    projector: "linear" or "mlp".
    projector_hidden: hidden width of the mlp projector (0 = LLM width).
    window_overlap: encoder frames shared by consecutive windows of long-form audio
      (`lalmjax.windows`); 0 = windows back to back.
    window_frames: encoder frames (50/s) per window; 0 = the encoder's
      max_source_positions (1500 = 30 s, as Whisper was trained). A shorter window
      (whisper.cpp's "audio_ctx") uses the first positional embeddings: the encoder's
      cost falls about in proportion for short utterances, its frames differ a little
      from the 30-s window's.
    new_token_ids: tokens new to the LLM (the audio markers <|audio_bos|>,
      <|audio_eos|>, ...) whose embedding rows train apart from the frozen table
      (`lalmjax.models.new_tokens`); () = none. Never the <|AUDIO|> placeholder, whose
      embedding is always replaced by an audio token.
  """

  encoder: WhisperEncoderConfig
  llm: Qwen2Config
  audio_token_id: int
  lora: LoraConfig | None = LoraConfig()
  method: str = "uniavg"
  factor: int = 1
  method_options: tuple[tuple[str, Any], ...] = ()
  projector: str = "linear"
  projector_hidden: int = 0
  window_overlap: int = 0
  new_token_ids: tuple[int, ...] = ()
  window_frames: int = 0

  def __post_init__(self):
    # A list (e.g. from JSON metadata) becomes a tuple, so the config stays hashable.
    object.__setattr__(self, "new_token_ids", tuple(int(i) for i in self.new_token_ids))
    options = self.method_options
    if isinstance(options, Mapping):  # a dict (e.g. from a config file) becomes pairs
      options = sorted(options.items())
    object.__setattr__(self, "method_options", tuple(tuple(o) for o in options))
    self.validate()

  def validate(self):
    if self.method not in compression.registered_methods():
      raise ValueError(f"LALMConfig.method={self.method!r}: expected one of "
                       f"{list(compression.registered_methods())}")
    if not isinstance(self.factor, int) or self.factor < 1:
      raise ValueError(f"LALMConfig.factor={self.factor!r}: expected an int >= 1")
    if any(len(o) != 2 or not isinstance(o[0], str) for o in self.method_options):
      raise ValueError(f"LALMConfig.method_options={self.method_options!r}: expected "
                       "(name, value) pairs")
    try:  # names and values now, not when the encoder output is first traced
      compression.validate_options(self.method, **dict(self.method_options))
    except ValueError as e:
      raise ValueError(f"LALMConfig.method_options={self.method_options!r}: {e}") from None
    if self.projector not in PROJECTOR_KINDS:
      raise ValueError(f"LALMConfig.projector={self.projector!r}: expected one of "
                       f"{list(PROJECTOR_KINDS)}")
    if not 0 <= self.audio_token_id < self.llm.vocab_size:
      raise ValueError(f"LALMConfig.audio_token_id={self.audio_token_id} is outside the "
                       f"LLM vocabulary [0, {self.llm.vocab_size})")
    check_ids(self.new_token_ids, self.llm.vocab_size, "LALMConfig.new_token_ids")
    if self.audio_token_id in self.new_token_ids:
      raise ValueError(f"LALMConfig.new_token_ids={self.new_token_ids} holds the audio "
                       f"placeholder {self.audio_token_id}, whose embedding is never used")
    if self.projector_hidden < 0:
      raise ValueError(f"LALMConfig.projector_hidden={self.projector_hidden} must be >= 0")
    if not 0 <= self.window_frames <= self.encoder.max_source_positions:
      raise ValueError(f"LALMConfig.window_frames={self.window_frames}: expected 0 (the "
                       f"encoder's window) or 1..{self.encoder.max_source_positions}")
    if not 0 <= self.window_overlap < self.encoder_window:
      raise ValueError(f"LALMConfig.window_overlap={self.window_overlap}: expected 0.."
                       f"{self.encoder_window - 1} (frames of the {self.encoder_window}-frame "
                       "window)")

  @property
  def encoder_window(self) -> int:
    """T: encoder frames per window."""
    return self.window_frames or self.encoder.max_source_positions

  @property
  def audio_token_width(self) -> int:
    """E': width of a compressed audio token (k * E for "stack")."""
    pooling = compression.get_method(self.method).pooling
    return self.encoder.d_model * (self.factor if pooling == "concat" else 1)


def num_encoder_frames(num_samples, frames_per_window: int = 1500):
  """Valid encoder frames (50/s) for utterances of `num_samples` samples at 16 kHz.

  Mel frame i is valid while 160*i < samples; the stride-2 conv makes encoder frame j
  from mel frames 2j-1..2j+1, valid while mel frame 2j is.
  """
  mel = audio.num_valid_frames(num_samples, max_frames=2 * frames_per_window)
  return (-(-mel // 2)).astype(np.int32)


def window_spec(config: LALMConfig) -> windows.WindowSpec:
  """How this model cuts audio longer than its encoder window."""
  return windows.WindowSpec(config.encoder_window, config.window_overlap)


def num_kept_frames(config: LALMConfig, num_samples):
  """Encoder frames compression sees per utterance (long audio: its joined windows)."""
  spec = window_spec(config)
  n = np.asarray(num_samples)
  out = np.asarray([spec.kept_frames(int(x)) for x in n.reshape(-1)], np.int32)
  return int(out[0]) if n.ndim == 0 else out.reshape(n.shape)


def num_audio_tokens(config: LALMConfig, num_samples):
  """Audio placeholders the prompt needs per utterance: ceil(kept frames / k) — for
  audio within one window, ceil(valid frames / k)."""
  return compression.num_output_tokens(num_kept_frames(config, num_samples), config.factor)


def llm_tokens_per_second(config: LALMConfig) -> float:
  """LLM input tokens per second of audio that the audio part of a prompt costs."""
  return compression.tokens_per_second(config.method, config.factor)


def splice_audio(text_embeds: jax.Array, input_ids: jax.Array, audio_token_id: int,
                 audio_tokens: jax.Array) -> jax.Array:
  """Writes audio tokens into the placeholder positions, in order, with fixed shapes.

  The i-th placeholder of a row takes that row's i-th audio token (a cumsum over the
  placeholder mask gives i, then a gather); other positions keep their text embedding.

  Args:
    text_embeds: [B, S, D] token embeddings.
    input_ids: int32[B, S].
    audio_token_id: the placeholder id.
    audio_tokens: [B, A, D] projected audio tokens, real ones packed at the front.

  Returns:
    [B, S, D].
  """
  is_audio = input_ids == audio_token_id  # [B, S]
  slot = jnp.clip(jnp.cumsum(is_audio, axis=1) - 1, 0, audio_tokens.shape[1] - 1)
  gathered = jnp.take_along_axis(audio_tokens, slot[..., None], axis=1)  # [B, S, D]
  return jnp.where(is_audio[..., None], gathered.astype(text_embeds.dtype), text_embeds)


class LALM(nn.Module):
  """Whisper encoder -> compression -> projector -> Qwen2 (+LoRA).

  Attributes:
    config: the model.
    dtype: compute dtype of encoder and LLM (the projector computes in float32).
    param_dtype: storage dtype of encoder and LLM weights (LoRA and projector: float32).
    encoder_remat: rematerialise encoder blocks (useful when the encoder trains).
  """

  config: LALMConfig
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  encoder_remat: bool = False

  def setup(self):
    cfg = self.config
    self.encoder = WhisperEncoder(cfg.encoder, dtype=self.dtype, param_dtype=self.param_dtype,
                                  remat=self.encoder_remat)
    self.projector = Projector(cfg.projector, cfg.llm.hidden_size, cfg.projector_hidden)
    self.llm = Qwen2(cfg.llm, dtype=self.dtype, param_dtype=self.param_dtype, lora=cfg.lora,
                     new_token_ids=cfg.new_token_ids)

  def encode_audio(self, mel: jax.Array | None, num_frames: jax.Array, *,
                   frames: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Audio tokens in the LLM's embedding space.

    Args:
      mel: float32[B, M, F] log-mel features, or float32[B, W, M, F] for audio longer
        than one window (`lalmjax.windows`), or None when `frames` is given.
      num_frames: int32[B] valid encoder frames per row (`num_encoder_frames`), or
        int32[B, W] valid frames per window with windowed mel.
      frames: float[B, T, E] precomputed encoder frames (a feature cache, with the
        encoder frozen) instead of `mel`; T may be shorter than the window.

    Returns:
      (float32[B, A, D] audio tokens, bool[B, A] which are real); row b has
      ceil(num_frames[b] / k) real tokens, packed at the front.
    """
    cfg = self.config
    if (mel is None) == (frames is None):
      raise ValueError("LALM.encode_audio: pass exactly one of mel and frames")
    num_frames = jnp.asarray(num_frames)
    if frames is not None:
      frames = jax.lax.stop_gradient(jnp.asarray(frames, jnp.float32))
      mask = jnp.arange(frames.shape[1])[None, :] < num_frames[:, None]
    elif mel.ndim == 4:  # long-form: [B, W, M, F] windows, num_frames [B, W]
      b, w = mel.shape[:2]
      frames = self.encoder(mel.reshape((b * w,) + mel.shape[2:]))  # [B*W, T, E]
      t = frames.shape[1]
      frames = frames.reshape(b, w * t, frames.shape[-1])  # [B, W*T, E], windows in order
      mask = windows.frame_mask(num_frames, t, cfg.window_overlap)
    else:
      frames = self.encoder(mel)  # [B, T, E]
      mask = jnp.arange(frames.shape[1])[None, :] < num_frames[:, None]
    tokens, token_mask = compression.compress(frames, mask, cfg.method, cfg.factor,
                                              **dict(cfg.method_options))
    tokens = nn.with_logical_constraint(
        tokens, ("activation_batch", "activation_length", "activation_embed"))
    return self.projector(tokens), token_mask

  def embed_inputs(self, input_ids: jax.Array, audio_tokens: jax.Array) -> jax.Array:
    """int32[B, S] ids + [B, A, D] audio tokens -> [B, S, D] LLM input embeddings."""
    text = self.llm.embed(input_ids)
    return splice_audio(text, input_ids, self.config.audio_token_id, audio_tokens)

  def logits_and_audio_mask(self, mel, num_frames, input_ids, attention_mask=None, *,
                            frames=None, deterministic: bool = True):
    """Teacher-forced logits, and which audio-token slots are real.

    Args:
      mel: float32[B, M, F], or None with `frames` (cached encoder frames [B, T, E]).
      num_frames: int32[B] valid encoder frames.
      input_ids: int32[B, S] prompts holding ceil(num_frames / k) placeholders per row.
      attention_mask: bool[B, S] real tokens.
      deterministic: False enables LoRA dropout (needs a "dropout" rng).

    Returns:
      (float32[B, S, V] logits, bool[B, A] real audio tokens).
    """
    audio_tokens, token_mask = self.encode_audio(mel, num_frames, frames=frames)
    embeds = self.embed_inputs(input_ids, audio_tokens)
    logits = self.llm(attention_mask=attention_mask, inputs_embeds=embeds,
                      deterministic=deterministic)
    return logits, token_mask

  def hidden_and_audio_mask(self, mel, num_frames, input_ids, attention_mask=None, *,
                            frames=None, deterministic: bool = True):
    """As `logits_and_audio_mask`, but the LLM's final-norm hidden states [B, S, D]
    instead of logits (for a chunked cross-entropy that never builds [B, S, V])."""
    audio_tokens, token_mask = self.encode_audio(mel, num_frames, frames=frames)
    embeds = self.embed_inputs(input_ids, audio_tokens)
    hidden, _ = self.llm.hidden(attention_mask=attention_mask, inputs_embeds=embeds,
                                deterministic=deterministic)
    return hidden, token_mask

  def __call__(self, mel, num_frames, input_ids, attention_mask=None, *, frames=None,
               deterministic: bool = True):
    """float32[B, S, V] teacher-forced logits; arguments as `logits_and_audio_mask`."""
    return self.logits_and_audio_mask(mel, num_frames, input_ids, attention_mask,
                                      frames=frames, deterministic=deterministic)[0]


def dummy_inputs(config: LALMConfig, batch: int = 1, length: int = 8):
  """Shape-only inputs for `LALM.init` / `jax.eval_shape`."""
  return (jax.ShapeDtypeStruct((batch, config.encoder.num_mel_bins,
                                config.encoder.num_mel_frames), jnp.float32),
          jax.ShapeDtypeStruct((batch,), jnp.int32),
          jax.ShapeDtypeStruct((batch, length), jnp.int32))


def init_variables(module: LALM, rng: jax.Array) -> dict:
  """Random {"params", "lora"} for `module` (tests, or the parts no checkpoint has)."""
  mel, frames, ids = (jnp.zeros(s.shape, s.dtype) for s in dummy_inputs(module.config))
  return nn.unbox(module.init(rng, mel, frames, ids))


# The next-token cross-entropy lives in lalmjax.losses; kept here under its old name.
next_token_loss = losses.next_token_loss


def lm_head(config: LALMConfig, variables: Mapping) -> tuple[jax.Array, str]:
  """The LLM's output projection and its layout: ([D, V], "dv") or tied ([V, D], "vd").

  Tied, the new tokens' trained rows are written into the embedding, as `Qwen2.logits`
  does.
  """
  llm = variables["params"]["llm"]
  if config.llm.tie_word_embeddings and config.new_token_ids:
    return write_rows(llm["embed_tokens"]["embedding"], config.new_token_ids,
                      llm["new_tokens"]["embedding"]), "vd"
  if config.llm.tie_word_embeddings:
    return llm["embed_tokens"]["embedding"], "vd"
  return llm["lm_head"]["kernel"], "dv"


def lalm_loss(module: LALM, variables: dict, batch: dict, rngs=None, vocab_chunk: int = 0):
  """Loss and metrics of a batch.

  Args:
    module: the model.
    variables: {"params": ..., "lora": ...}.
    batch: mel float32[B, M, F] (or frames float[B, T, E], cached encoder frames),
      num_frames int32[B], input_ids int32[B, S], attention_mask bool[B, S],
      loss_mask bool[B, S].
    rngs: {"dropout": key} to train with LoRA dropout; None is deterministic.
    vocab_chunk: 0 computes the full float32[B, S, V] logits; > 0 computes the
      cross-entropy over chunks of that many positions, never holding [B, S, V]
      (`losses.chunked_next_token_loss`; same value and gradient).

  Returns:
    (mean loss, metrics dict of sums: loss_sum, num_tokens, placeholder_mismatch — the
    number of rows whose placeholder count differs from their audio-token count, which a
    correct batch keeps at 0).
  """
  args = (batch.get("mel"), batch["num_frames"], batch["input_ids"], batch["attention_mask"])
  kwargs = dict(frames=batch.get("frames"), deterministic=rngs is None, rngs=rngs)
  if vocab_chunk:
    hidden, token_mask = module.apply(variables, *args, **kwargs,
                                      method=LALM.hidden_and_audio_mask)
    head, layout = lm_head(module.config, variables)
    loss_sum, count = losses.chunked_next_token_loss(
        hidden, head.astype(hidden.dtype), batch["input_ids"], batch["loss_mask"],
        chunk_size=vocab_chunk, head_layout=layout)
  else:
    logits, token_mask = module.apply(variables, *args, **kwargs,
                                      method=LALM.logits_and_audio_mask)
    loss_sum, count = next_token_loss(logits, batch["input_ids"], batch["loss_mask"])
  placeholders = jnp.sum(batch["input_ids"] == module.config.audio_token_id, axis=1)
  mismatch = jnp.sum(placeholders != jnp.sum(token_mask, axis=1))
  metrics = {"loss_sum": loss_sum, "num_tokens": count, "placeholder_mismatch": mismatch}
  return loss_sum / jnp.maximum(count, 1.0), metrics
