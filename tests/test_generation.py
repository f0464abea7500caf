"""Decoding under jit: greedy and beam search for the LALM and the LM alone.

References: a step-by-step loop that runs the full forward (no cache) over the growing
sequence; transformers' ``generate`` on a tiny random Qwen2 checkpoint (greedy, and beam
search with ``early_stopping="never"``); single-device decoding for the mesh runs.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax.sharding import NamedSharding, PartitionSpec as P

from lalmjax import audio, checkpoints, generation, prompts, sharding
from lalmjax.generation import DecodeConfig
from lalmjax.models import lalm
from test_lalm import TEXTS, frozen_lm_scaled, make_config
from test_qwen2 import batch as lm_batch
from test_qwen2 import make_hf

NEVER = [-1]  # an EOS id no model emits: every hypothesis runs to the limit
SAMPLES = np.array([8000, 32000, 3000, 20000])  # 0.19 .. 2 s: 13, 50, 5, 32 audio tokens
TASKS = [("asr", None, None), ("s2tt", "English", "German"), ("asr", None, None),
         ("s2tt", "French", "English")]


# ---------------------------------------------------------------------------------------
# A tiny LALM and its generation prompts.


@pytest.fixture(scope="module")
def builder(tmp_path_factory):
  path = prompts.build_tiny_tokenizer(str(tmp_path_factory.mktemp("tok")), TEXTS, 300)
  return prompts.PromptBuilder(prompts.load_tokenizer(path))


@pytest.fixture(scope="module")
def model(builder):
  """(module, variables): random, the frozen LM at unit scale (peaked logits, as a trained
  LM has) and LoRA B != 0, so the adapters act in every decoding step."""
  module = lalm.LALM(make_config(builder, "uniavg", 2))
  variables = frozen_lm_scaled(lalm.init_variables(module, jax.random.PRNGKey(0)))
  key = jax.random.PRNGKey(3)
  variables["lora"] = jax.tree_util.tree_map_with_path(
      lambda p, x: 0.05 * jax.random.normal(key, x.shape)
      if "lora_B" in jax.tree_util.keystr(p) else x, variables["lora"])
  return module, variables


def generation_batch(module, builder, samples=SAMPLES, tasks=TASKS, seed=0):
  """Noise utterances and left-padded generation prompts (rows of different lengths and
  audio-token counts)."""
  rng = np.random.default_rng(seed)
  n = int(max(samples))
  wav = rng.standard_normal((len(samples), n)).astype(np.float32) * 0.1
  wav *= np.arange(n)[None] < np.asarray(samples)[:, None]
  enc = module.config.encoder
  mel = np.asarray(audio.log_mel_spectrogram(wav, enc.num_mel_bins))[:, :, :enc.num_mel_frames]
  counts = lalm.num_audio_tokens(module.config, samples)
  ps = [builder.encode(task, int(c), source_lang=src, target_lang=tgt)
        for c, (task, src, tgt) in zip(counts, tasks)]
  padded = prompts.pad_prompts(ps, builder.pad_id, bucket=16, side="left")
  return {"mel": mel, "num_frames": lalm.num_encoder_frames(samples, enc.max_source_positions),
          "input_ids": padded["input_ids"], "attention_mask": padded["attention_mask"]}


def _full_log_probs(m, mel, num_frames, prompt_ids, prompt_mask, new_ids, new_mask):
  """float32[B, N, V]: log p(next token) after the prompt and new_ids[:, :j], for each j,
  from one forward over the whole sequence without a cache."""
  audio_tokens, _ = m.encode_audio(mel, num_frames)
  embeds = jnp.concatenate([m.embed_inputs(prompt_ids, audio_tokens), m.llm.embed(new_ids)],
                           axis=1)
  logits = m.llm(attention_mask=jnp.concatenate([prompt_mask, new_mask], axis=1),
                 inputs_embeds=embeds)
  return jax.nn.log_softmax(logits[:, prompt_ids.shape[1] - 1:-1], axis=-1)


@functools.partial(jax.jit, static_argnums=0)
def full_log_probs(module, variables, batch, new_ids, new_mask):
  return module.apply(variables, batch["mel"], batch["num_frames"], batch["input_ids"],
                      batch["attention_mask"].astype(bool), new_ids, new_mask,
                      method=_full_log_probs)


def reference_greedy(module, variables, batch, n):
  """int32[B, n]: argmax of the full forward over the growing sequence, n steps, no EOS."""
  b = batch["input_ids"].shape[0]
  new_ids, new_mask = np.zeros((b, n), np.int32), np.zeros((b, n), bool)
  for j in range(n):
    log_p = full_log_probs(module, variables, batch, new_ids, new_mask)
    new_ids[:, j] = np.argmax(np.asarray(log_p[:, j]), axis=-1)
    new_mask[:, j] = True
  return new_ids


def model_scores(module, variables, batch, out, length_penalty=1.0):
  """(sum log p, sum log p / length ** penalty) float64[B] of out's hypotheses, by the
  full forward."""
  tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
  mask = np.arange(tokens.shape[1])[None] < lengths[:, None]
  log_p = np.asarray(full_log_probs(module, variables, batch, tokens, mask), np.float64)
  picked = np.take_along_axis(log_p, tokens[..., None], axis=-1)[..., 0]
  total = np.where(mask, picked, 0.0).sum(1)
  return total, total / np.maximum(lengths, 1) ** length_penalty


def truncate_at_eos(tokens, eos, pad=0):
  """What decoding with these EOS ids gives, from a run that ignored them: (tokens, lengths)."""
  out, lengths = np.full_like(tokens, pad), np.zeros(len(tokens), np.int32)
  for row, toks in enumerate(tokens):
    hits = [i for i, t in enumerate(toks) if t in eos]
    lengths[row] = hits[0] + 1 if hits else len(toks)
    out[row, :lengths[row]] = toks[:lengths[row]]
  return out, lengths


# ---------------------------------------------------------------------------------------
# LALM: greedy against the full-forward loop, EOS, limits, compile count.


def test_lalm_greedy_equals_full_forward_loop(model, builder):
  module, variables = model
  batch = generation_batch(module, builder)
  real = batch["attention_mask"].sum(1)
  assert len(set(real.tolist())) == 4 and (batch["attention_mask"][:, -1]).all()
  ref = reference_greedy(module, variables, batch, 12)
  print(f"\nreference greedy: {ref.tolist()}")
  assert len({tuple(r) for r in ref.tolist()}) == 4  # the rows do differ

  out = generation.generate_lalm(module, variables, batch, DecodeConfig(buffer_size=16), 12,
                                 NEVER, pad_id=builder.pad_id)
  np.testing.assert_array_equal(out.tokens[:, :12], ref)
  assert (np.asarray(out.tokens)[:, 12:] == builder.pad_id).all()
  np.testing.assert_array_equal(out.lengths, [12] * 4)
  # The reported log-probabilities are the model's, by the full forward.
  total, normalised = model_scores(module, variables, batch, out)
  np.testing.assert_allclose(out.sum_log_probs, total, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(out.scores, normalised, rtol=1e-4, atol=1e-5)

  # Per-row EOS, several ids: a row stops at whichever comes first, then pads.
  eos = sorted({int(ref[0, 2]), int(ref[3, 6])})
  want, lengths = truncate_at_eos(ref, eos, builder.pad_id)
  assert len(set(lengths.tolist())) > 1 and lengths.min() < 12, lengths
  out = generation.generate_lalm(module, variables, batch, DecodeConfig(buffer_size=16), 12,
                                 eos, pad_id=builder.pad_id)
  print(f"with eos {eos}: lengths {np.asarray(out.lengths).tolist()}")
  np.testing.assert_array_equal(out.tokens[:, :12], want)
  np.testing.assert_array_equal(out.lengths, lengths)
  total, _ = model_scores(module, variables, batch, out)
  np.testing.assert_allclose(out.sum_log_probs, total, rtol=1e-4, atol=1e-4)


def test_lalm_from_cached_frames_equals_from_mel(model, builder):
  module, variables = model
  batch = generation_batch(module, builder)
  frames = module.apply(variables, batch["mel"], method=lambda m, x: m.encoder(x))
  cached = {k: v for k, v in batch.items() if k != "mel"}
  cached["frames"] = np.asarray(frames)
  decode = DecodeConfig(beam_size=3, buffer_size=16)
  a = generation.generate_lalm(module, variables, batch, decode, 8, NEVER)
  b = generation.generate_lalm(module, variables, cached, decode, 8, NEVER)
  np.testing.assert_array_equal(a.tokens, b.tokens)


def test_limits_and_compile_count(model, builder):
  """max_new_tokens is an array: 0, 3, 5, 12 and 40 (clipped to the buffer of 16), as
  Python, numpy or jax ints, all run one compiled program; a new DecodeConfig compiles
  once more."""
  module, variables = model
  batch = generation_batch(module, builder)
  decode = DecodeConfig(buffer_size=16)
  full = generation.generate_lalm(module, variables, batch, decode, 12, NEVER, pad_id=7)
  before = generation.compilations()
  for limit in (0, 5, np.int32(12), jnp.int32(3), 40):  # 40: clipped to the buffer
    out = generation.generate_lalm(module, variables, batch, decode, limit, NEVER, pad_id=7)
    n = min(int(limit), 16)
    np.testing.assert_array_equal(out.lengths, [n] * 4)
    if n <= 12:
      np.testing.assert_array_equal(out.tokens[:, :n], np.asarray(full.tokens)[:, :n])
    assert (np.asarray(out.tokens)[:, n:] == 7).all()
    if n == 0:
      np.testing.assert_array_equal(out.sum_log_probs, 0.0)
  assert generation.compilations() == before
  beam = DecodeConfig(beam_size=3, length_penalty=0.5, buffer_size=16)  # new to the file
  for limit in (0, 4, 9):
    out = generation.generate_lalm(module, variables, batch, beam, limit, NEVER, pad_id=7)
    np.testing.assert_array_equal(out.lengths, [limit] * 4)
    assert (np.asarray(out.tokens)[:, limit:] == 7).all()
  assert generation.compilations() == before + 1


def test_audio_is_encoded_once_outside_the_loop(model, builder):
  """The encoder's two convolutions are in the program once, outside the decoding loop,
  whose body runs the LLM (dot_general) and nothing of the audio."""
  module, variables = model
  batch = generation_batch(module, builder)
  jaxpr = jax.make_jaxpr(lambda v, b: generation.generate_lalm(
      module, v, b, DecodeConfig(beam_size=2, buffer_size=8), 8, NEVER))(variables, batch)
  assert str(jaxpr).count("conv_general_dilated") == 2
  loops = [e for e in _equations(jaxpr.jaxpr) if e.primitive.name == "while"]
  assert len(loops) == 1
  body = str(loops[0].params["body_jaxpr"])
  assert "conv_general_dilated" not in body and "dot_general" in body


def _equations(jaxpr):
  """Every equation of a jaxpr and of the jaxprs nested in it (jit, while, cond ...)."""
  for eqn in jaxpr.eqns:
    yield eqn
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        sub = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr holds its Jaxpr
        if hasattr(sub, "eqns"):
          yield from _equations(sub)


# ---------------------------------------------------------------------------------------
# LALM: beam search.


def reference_beam(module, variables, batch, k, n, eos, penalty):
  """Beam search written out in Python over full forwards (no cache), by the rules of
  the module docstring: (tokens [B, n], lengths [B], sum log p [B], scores [B])."""
  b = batch["input_ids"].shape[0]
  repeated = {name: np.repeat(x, k, axis=0) for name, x in batch.items()}
  alive = [[((), 0.0)] for _ in range(b)]  # per row: (tokens, sum log p), best first
  finished = [[] for _ in range(b)]  # per row: (score, tokens, sum log p), best first
  done = [False] * b
  for t in range(n):
    new_ids, new_mask = np.zeros((b * k, n), np.int32), np.zeros((b * k, n), bool)
    for row in range(b):
      for i, (toks, _) in enumerate(alive[row]):
        new_ids[row * k + i, :t], new_mask[row * k + i, :t] = toks, True
    log_p = np.asarray(full_log_probs(module, variables, repeated, new_ids, new_mask),
                       np.float64)[:, t]  # [B*K, V]
    for row in range(b):
      cands = [(toks + (v,), total + log_p[row * k + i, v])
               for i, (toks, total) in enumerate(alive[row]) for v in range(log_p.shape[1])]
      cands = sorted(cands, key=lambda c: -c[1])[:max(2, 1 + len(eos)) * k]
      ends = [c[0][-1] in eos or t + 1 == n for c in cands]
      alive[row] = [c for c, e in zip(cands, ends) if not e][:k]
      if not done[row]:
        finished[row] += [(total / (t + 1) ** penalty, toks, total)
                          for (toks, total), e in zip(cands[:k], ends[:k]) if e]
        finished[row] = sorted(finished[row], key=lambda f: -f[0])[:k]
        horizon = n if penalty > 0 else t + 1
        done[row] = len(finished[row]) == k and (
            not alive[row] or alive[row][0][1] / horizon ** penalty <= finished[row][-1][0])
    if all(done):
      break
  tokens = np.zeros((b, n), np.int32)
  for row in range(b):
    tokens[row, :len(finished[row][0][1])] = finished[row][0][1]
  return (tokens, np.array([len(f[0][1]) for f in finished]),
          np.array([f[0][2] for f in finished]), np.array([f[0][0] for f in finished]))


def test_lalm_beam_search(model, builder):
  """Beam 4 gives the hypothesis of the same search written out over full forwards, and
  reports the model's own scores; beam size 1 is greedy."""
  module, variables = model
  batch = generation_batch(module, builder)
  ref = reference_greedy(module, variables, batch, 10)
  eos = sorted({int(ref[0, 4]), int(ref[2, 3]), builder.eos_id})
  greedy = generation.generate_lalm(module, variables, batch, DecodeConfig(buffer_size=10),
                                    10, eos)
  one = generation.generate_lalm(module, variables, batch,
                                 DecodeConfig(beam_size=1, buffer_size=10), 10, eos)
  for field in ("tokens", "lengths", "sum_log_probs"):
    np.testing.assert_array_equal(getattr(one, field), getattr(greedy, field))
  for penalty in (1.0, 0.0):
    beam = generation.generate_lalm(
        module, variables, batch, DecodeConfig(beam_size=4, length_penalty=penalty,
                                               buffer_size=10), 10, eos)
    tokens, lengths, total, score = reference_beam(module, variables, batch, 4, 10, eos,
                                                   penalty)
    _, g_score = model_scores(module, variables, batch, greedy, penalty)
    b_total, b_score = model_scores(module, variables, batch, beam, penalty)
    print(f"\nlength_penalty={penalty}: greedy {np.round(g_score, 3).tolist()} lengths "
          f"{np.asarray(greedy.lengths).tolist()}; beam 4 {np.round(b_score, 3).tolist()} "
          f"lengths {np.asarray(beam.lengths).tolist()}")
    np.testing.assert_array_equal(beam.tokens, tokens)
    np.testing.assert_array_equal(beam.lengths, lengths)
    np.testing.assert_allclose(beam.sum_log_probs, total, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(beam.scores, score, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(beam.sum_log_probs, b_total, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(beam.scores, b_score, rtol=1e-4, atol=1e-4)
    # Beam search beats greedy here, though not on every row in general: at penalty 0
    # row 2's greedy prefix drops out of the beam at step 3 and its short greedy
    # hypothesis (-14.6) is never found; the beam returns -26.0.
    assert b_score.mean() > g_score.mean()
    if penalty == 1.0:
      assert (b_score >= g_score - 1e-4).all()


# ---------------------------------------------------------------------------------------
# The LM alone against transformers.


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
  """(torch model, module, params) of a tiny random Qwen2 checkpoint (GQA, untied head)."""
  hf = make_hf("gqa2_untied")
  path = str(tmp_path_factory.mktemp("qwen2"))
  hf.save_pretrained(path)
  module, params = checkpoints.load_qwen2(path)
  assert hf.generation_config.eos_token_id is None
  return hf, module, params


def hf_generate(model, ids, mask, n, eos=None, num_beams=1, length_penalty=1.0,
                early_stopping="never"):
  """(new tokens [B, <=n], lengths [B], sequence scores [B] or None) from HF generate."""
  kwargs = dict(num_beams=num_beams, length_penalty=length_penalty,
                early_stopping=early_stopping) if num_beams > 1 else {}
  with torch.no_grad():
    out = model.generate(input_ids=torch.tensor(ids, dtype=torch.long),
                         attention_mask=torch.tensor(mask), do_sample=False,
                         max_new_tokens=n, min_new_tokens=0, eos_token_id=eos,
                         pad_token_id=0, return_dict_in_generate=True, output_scores=True,
                         **kwargs)
  new = out.sequences[:, ids.shape[1]:].numpy()
  lengths = np.array([next((i + 1 for i, t in enumerate(row) if eos and t in eos), len(row))
                      for row in new])
  scores = None if num_beams == 1 else out.sequences_scores.numpy()
  return new, lengths, scores


def test_lm_greedy_equals_transformers(lm):
  hf, module, params = lm
  ids, mask = lm_batch("left", s=10)
  free, _, _ = hf_generate(hf, ids, mask, 16)
  out = generation.generate_lm(module, {"params": params}, ids, mask,
                               DecodeConfig(buffer_size=16), 16, NEVER)
  np.testing.assert_array_equal(out.tokens, free)
  eos = sorted({int(free[0, 3]), int(free[1, 8])})
  ref, lengths, _ = hf_generate(hf, ids, mask, 16, eos)
  assert len(set(lengths.tolist())) > 1, lengths
  out = generation.generate_lm(module, {"params": params}, ids, mask,
                               DecodeConfig(buffer_size=16), 16, eos)
  np.testing.assert_array_equal(out.lengths, lengths)
  np.testing.assert_array_equal(np.asarray(out.tokens)[:, :ref.shape[1]],
                                np.where(np.arange(ref.shape[1]) < lengths[:, None], ref, 0))


@pytest.mark.parametrize("penalty", [1.0, 0.0, 2.0])
def test_lm_beam_search_equals_transformers(lm, penalty):
  """num_beams=4, early_stopping="never": the same hypothesis, length and score, with no
  EOS (all run to the limit) and with EOS ids taken from those outputs, which end
  hypotheses at different steps."""
  hf, module, params = lm
  ids, mask = lm_batch("left", s=10)
  decode = DecodeConfig(beam_size=4, length_penalty=penalty, buffer_size=12)
  free, _, _ = hf_generate(hf, ids, mask, 12, None, num_beams=4, length_penalty=penalty)
  seen = set()
  for eos in (None, [int(free[1, 5])], sorted({int(free[0, 3]), int(free[2, 7])}),
              sorted({int(free[0, 8]), int(free[1, 2]), int(free[2, 4])})):
    ref, lengths, scores = hf_generate(hf, ids, mask, 12, eos, num_beams=4,
                                       length_penalty=penalty)
    out = generation.generate_lm(module, {"params": params}, ids, mask, decode, 12,
                                 eos or NEVER)
    print(f"\npenalty {penalty} eos {eos}: HF lengths {lengths.tolist()} scores "
          f"{np.round(scores, 4).tolist()}; ours {np.asarray(out.lengths).tolist()} "
          f"{np.round(np.asarray(out.scores), 4).tolist()}")
    np.testing.assert_array_equal(out.lengths, lengths)
    tokens = np.asarray(out.tokens)
    for row, n in enumerate(lengths):
      np.testing.assert_array_equal(tokens[row, :n], ref[row, :n])
      assert (tokens[row, n:] == 0).all()
    np.testing.assert_allclose(out.scores, scores, rtol=1e-4, atol=1e-5)
    seen |= set(lengths.tolist())
  if penalty < 2:  # (2 favours the long hypotheses that run to the limit)
    assert seen & set(range(2, 12)), seen  # hypotheses ended with an EOS mid-buffer


def test_lm_beam_search_runs_while_an_alive_hypothesis_can_still_win(lm):
  """The stopping bound is exact (HF's early_stopping="never"): here HF's default
  heuristic (early_stopping=False, the best alive score at its current length) stops
  too early and misses a better hypothesis that this search finds, as "never" does.
  (One row, so that no other row keeps the loop running.)"""
  hf, module, params = lm
  ids, mask = lm_batch("left", s=10)
  ids, mask = ids[:1], mask[:1]
  free, _, _ = hf_generate(hf, ids, mask, 20, None, num_beams=4)
  eos = sorted({int(free[0, 2]), int(free[0, 4])})
  ref, lengths, scores = hf_generate(hf, ids, mask, 20, eos, num_beams=4)
  _, _, heuristic = hf_generate(hf, ids, mask, 20, eos, num_beams=4, early_stopping=False)
  out = generation.generate_lm(module, {"params": params}, ids, mask,
                               DecodeConfig(beam_size=4, buffer_size=20), 20, eos)
  print(f"\neos {eos}: ours {np.round(np.asarray(out.scores), 4).tolist()}, HF never "
        f"{np.round(scores, 4).tolist()}, HF heuristic {np.round(heuristic, 4).tolist()}")
  assert scores[0] > heuristic[0] + 1e-3  # the case does tell the two rules apart
  np.testing.assert_array_equal(out.lengths, lengths)
  for row, n in enumerate(lengths):
    np.testing.assert_array_equal(np.asarray(out.tokens)[row, :n], ref[row, :n])
  np.testing.assert_allclose(out.scores, scores, rtol=1e-4, atol=1e-5)


def test_lm_greedy_matches_existing_greedy_generate(lm):
  """The LM's own greedy_generate (qwen2.py) and this module agree."""
  from lalmjax.models import qwen2
  _, module, params = lm
  ids, mask = lm_batch("right", s=10)
  ref = qwen2.greedy_generate(module, {"params": params}, ids, mask, jnp.int32(9),
                              jnp.array([5, 17]), buffer_size=12)
  out = generation.generate_lm(module, {"params": params}, ids, mask,
                               DecodeConfig(buffer_size=12), 9, [5, 17])
  np.testing.assert_array_equal(out.tokens, ref.tokens)
  np.testing.assert_array_equal(out.lengths, ref.lengths)


def test_bad_requests(lm):
  _, module, params = lm
  ids, mask = lm_batch("left", s=10)
  with pytest.raises(ValueError, match="beam_size must be an int >= 1"):
    DecodeConfig(beam_size=0)
  with pytest.raises(ValueError, match="buffer_size must be an int >= 1"):
    DecodeConfig(buffer_size=2.5)
  with pytest.raises(ValueError, match="length_penalty must be a finite number"):
    DecodeConfig(length_penalty=float("nan"))
  with pytest.raises(ValueError, match=r"prompt length 10 \+ buffer_size 119 = 129"):
    generation.generate_lm(module, {"params": params}, ids, mask,
                           DecodeConfig(buffer_size=119), 5, NEVER)
  assert hash(DecodeConfig(beam_size=4)) == hash(DecodeConfig(beam_size=4, length_penalty=1))


# ---------------------------------------------------------------------------------------
# Meshes.


@pytest.mark.parametrize("mesh_shape,batch_size", [((2, 2, 2), 4), ((8, 1, 1), 8)])
def test_decoding_on_a_mesh_equals_one_device(model, builder, mesh_shape, batch_size):
  """Parameters sharded by the logical rules, the batch over data x fsdp: greedy and beam
  tokens equal the single-device ones. With the batch alone split (data 8), the beam
  program moves no data between devices but the loop's all-done flag: the cache gather
  and the top-k selections stay on each device's rows."""
  module, variables = model
  reps = batch_size // 4
  batch = generation_batch(module, builder, np.tile(SAMPLES, reps), TASKS * reps)
  greedy, beam = DecodeConfig(buffer_size=16), DecodeConfig(beam_size=3, buffer_size=16)
  decode_configs = (greedy, beam) if batch_size == 4 else (beam,)
  single = [generation.generate_lalm(module, variables, batch, d, 8, NEVER)
            for d in decode_configs]

  mesh = sharding.create_mesh(mesh_shape)
  abstract = jax.eval_shape(module.init, jax.random.PRNGKey(0),
                            *lalm.dummy_inputs(module.config))
  shardings = sharding.logical_to_mesh_sharding(nn.get_partition_spec(abstract), mesh)
  placed = jax.device_put(variables, shardings)
  kernel = placed["params"]["llm"]["layers_0"]["mlp"]["up_proj"]["kernel"]
  assert kernel.sharding.spec == P("fsdp", "tensor")
  placed_batch = jax.device_put(batch, NamedSharding(mesh, P(("data", "fsdp"))))
  with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.LOGICAL_AXIS_RULES):
    for d, want in zip(decode_configs, single):
      out = generation.generate_lalm(module, placed, placed_batch, d, 8, NEVER)
      np.testing.assert_array_equal(out.tokens, want.tokens)
      np.testing.assert_array_equal(out.lengths, want.lengths)
      np.testing.assert_allclose(out.scores, want.scores, rtol=1e-4, atol=1e-5)
    if mesh_shape == (8, 1, 1):
      hlo = jax.jit(lambda v, b: generation.generate_lalm(module, v, b, beam, 8, NEVER)).lower(
          placed, placed_batch).compile().as_text()
      collectives = [line.split("=")[1].split("(")[0].split()[-1] for line in hlo.splitlines()
                     if any(f"{c}(" in line for c in ("all-gather", "all-to-all",
                                                        "collective-permute", "all-reduce"))]
      assert collectives == ["all-reduce"], collectives
