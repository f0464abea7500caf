"""The input pipeline: bucket shapes, order from the seed, host shards, resumable state,
skips that are counted, and the encoder-feature cache."""

import dataclasses
import os
import shutil

import jax
import numpy as np
import pytest
import soundfile as sf

from lalmjax import audio, checkpoints, compression, prompts
from lalmjax.data import bucketing, features, manifest, pipeline
from lalmjax.models import lalm, qwen2, whisper
from lalmjax.models.lora import LoraConfig

from test_whisper import save_tiny_whisper

WINDOW_POSITIONS = 100  # a 2 s encoder window keeps the test encoder small
SPEC = pipeline.AudioSpec(num_mel_bins=80, max_source_positions=WINDOW_POSITIONS, factor=2)
BUCKETS = ((1.0, 2, 128), (2.0, 4, 160))
WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet".split()


def _utt(tmp, i, seconds, rng, task="asr"):
  n = int(seconds * audio.SAMPLE_RATE)
  path = os.path.join(tmp, f"u{i:03d}.flac")
  # Each utterance a tone of its own frequency, so rows are told apart by content.
  t = np.arange(n) / audio.SAMPLE_RATE
  wav = 0.3 * np.sin(2 * np.pi * (200 + 37 * i) * t) + 0.01 * rng.standard_normal(n)
  sf.write(path, wav.astype(np.float32), audio.SAMPLE_RATE)
  text = " ".join(rng.choice(WORDS, 3))
  extra = dict(translation="übersetzt " + text, target_lang="de") if task == "s2tt" else {}
  return manifest.Utterance(id=f"u{i:03d}", audio=path, duration=n / audio.SAMPLE_RATE,
                            task=task, text=text, source_lang="en",
                            **{"target_lang": "en", **extra})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  tmp = str(tmp_path_factory.mktemp("corpus"))
  rng = np.random.default_rng(0)
  seconds = rng.uniform(0.2, 1.95, size=22)
  utts = [_utt(tmp, i, s, rng, "s2tt" if i % 5 == 4 else "asr") for i, s in enumerate(seconds)]
  tok = prompts.build_tiny_tokenizer(os.path.join(tmp, "tok"), WORDS + ["übersetzt"], 300)
  return utts, tok


def make(corpus, seed=0, num_steps=None, shuffle=True, with_targets=True, buckets=BUCKETS,
         process=(0, 1), cache=None, utts=None, **kw):
  utts_, tok = corpus
  cfg = pipeline.PipelineConfig(buckets=buckets, seed=seed, shuffle=shuffle,
                                with_targets=with_targets, **kw)
  return pipeline.InputPipeline(utts if utts is not None else utts_, cfg, SPEC, tok,
                                feature_cache=cache, num_steps=num_steps,
                                process_index=process[0], process_count=process[1])


def rows_of(p, steps=None):
  return [b["index"].tolist() for b in p.iterator()][:steps]


def test_plan_is_a_function_of_seed_and_epoch():
  durations = np.random.default_rng(1).uniform(0.1, 2.0, 50)
  buckets = bucketing.parse_buckets(BUCKETS)
  which = bucketing.assign_buckets(durations, buckets)
  a = bucketing.epoch_plan(which, buckets, seed=3, epoch=0)
  b = bucketing.epoch_plan(which, buckets, seed=3, epoch=0)
  c = bucketing.epoch_plan(which, buckets, seed=4, epoch=0)
  d = bucketing.epoch_plan(which, buckets, seed=3, epoch=1)
  assert [r.tolist() for r in a.rows] == [r.tolist() for r in b.rows]
  assert [r.tolist() for r in a.rows] != [r.tolist() for r in c.rows]
  assert [r.tolist() for r in a.rows] != [r.tolist() for r in d.rows]
  for plan in (a, c, d):  # every utterance once per epoch, in its own bucket
    rows = np.concatenate(plan.rows)
    np.testing.assert_array_equal(np.sort(rows[rows >= 0]), np.arange(50))
    for bucket, r in zip(plan.bucket, plan.rows):
      assert len(r) == buckets[bucket].batch_size
      assert np.all(which[r[r >= 0]] == bucket)


def test_same_seed_same_batches_other_seed_other_order(corpus):
  a = rows_of(make(corpus, seed=0))
  assert a == rows_of(make(corpus, seed=0))
  b = rows_of(make(corpus, seed=1))
  assert a != b
  flat = lambda rows: sorted(i for r in rows for i in r if i >= 0)
  assert flat(a) == flat(b) == list(range(22))  # one epoch covers every utterance once


def test_batches_have_only_the_bucket_shapes_and_right_token_counts(corpus):
  utts, tok = corpus
  builder = prompts.PromptBuilder(prompts.load_tokenizer(tok))
  p = make(corpus, num_steps=None)
  shapes = set()
  for batch in p.iterator():
    bucket = bucketing.parse_buckets(BUCKETS)[batch["bucket"]]
    b = batch["input_ids"].shape[0]
    shapes.add((b, batch["input_ids"].shape[1], batch["mel"].shape))
    assert (b, batch["input_ids"].shape[1]) == (bucket.batch_size, bucket.max_length)
    for row, idx in enumerate(batch["index"]):
      placeholders = int(np.sum(batch["input_ids"][row] == builder.audio_token_id))
      if idx < 0:
        assert placeholders == 0 and not batch["loss_mask"][row].any()
        assert batch["num_frames"][row] == 0
        continue
      u = utts[idx]
      assert u.duration <= bucket.max_seconds
      samples = int(round(u.duration * audio.SAMPLE_RATE))
      frames = lalm.num_encoder_frames(samples, WINDOW_POSITIONS)
      assert batch["num_frames"][row] == frames
      assert placeholders == -(-int(frames) // SPEC.factor)
      # The loss covers exactly the target (transcript or translation) + EOS.
      target = builder.tokenizer(u.target(), add_special_tokens=False)["input_ids"]
      got = batch["input_ids"][row][batch["loss_mask"][row]].tolist()
      assert got == target + [builder.eos_id]
      # Training prompts are right-padded: real tokens first.
      n = int(batch["attention_mask"][row].sum())
      assert batch["attention_mask"][row][:n].all()
  assert shapes == {(2, 128, (2, 80, 200)), (4, 160, (4, 80, 200))}


def test_mel_rows_equal_the_jax_log_mel_of_each_file(corpus):
  utts, _ = corpus
  batch = next(iter(make(corpus)))
  for row, idx in enumerate(batch["index"]):
    if idx < 0:
      continue
    wav = audio.load_audio(utts[idx].audio)
    ref = np.asarray(audio.log_mel_spectrogram(wav[None], 80))[0, :, :200]
    np.testing.assert_allclose(batch["mel"][row], ref, atol=1e-4)


def test_generation_prompts_are_left_padded_without_targets(corpus):
  batch = next(iter(make(corpus, with_targets=False, shuffle=False)))
  assert not batch["loss_mask"].any()
  for row in range(batch["input_ids"].shape[0]):
    n = int(batch["attention_mask"][row].sum())
    assert batch["attention_mask"][row][-n:].all()


def test_two_processes_read_disjoint_rows_that_cover_each_global_batch(corpus):
  whole = rows_of(make(corpus, seed=5))
  p0 = rows_of(make(corpus, seed=5, process=(0, 2)))
  p1 = rows_of(make(corpus, seed=5, process=(1, 2)))
  assert len(p0) == len(p1) == len(whole)
  for w, a, b in zip(whole, p0, p1):
    assert a + b == w  # host 0 takes the first half of the global batch, host 1 the rest
    assert not set(i for i in a if i >= 0) & set(i for i in b if i >= 0)


def test_restored_iterator_state_continues_at_the_same_batch(corpus):
  p = make(corpus, seed=2, num_steps=14)  # crosses into the second epoch
  straight = [b["index"].tolist() for b in p.iterator()]
  it = p.iterator()
  for _ in range(4):
    next(it)
  state = it.get_state()
  resumed = make(corpus, seed=2, num_steps=14).iterator(state)
  rest = [b["index"].tolist() for b in resumed]
  assert rest == straight[4:]
  steps = [b["step"] for b in make(corpus, seed=2, num_steps=14).iterator(state)]
  assert steps == list(range(4, 14))


def test_unreadable_or_too_long_audio_is_skipped_and_counted(corpus, tmp_path):
  utts, _ = corpus
  corrupt = tmp_path / "corrupt.flac"
  corrupt.write_bytes(os.urandom(3000))
  long_path = tmp_path / "long.flac"
  sf.write(str(long_path), np.zeros(int(3 * audio.SAMPLE_RATE), np.float32),
           audio.SAMPLE_RATE)
  extra = [
      manifest.Utterance(id="missing", audio=str(tmp_path / "nope.flac"), duration=0.5,
                         task="asr", text="alpha", source_lang="en", target_lang="en"),
      manifest.Utterance(id="corrupt", audio=str(corrupt), duration=0.5, task="asr",
                         text="alpha", source_lang="en", target_lang="en"),
      # The manifest says 0.5 s, the file holds 3 s: over the 2 s window at load time.
      manifest.Utterance(id="long", audio=str(long_path), duration=0.5, task="asr",
                         text="alpha", source_lang="en", target_lang="en"),
      # Longer than the largest bucket: left out by the planner, and reported.
      manifest.Utterance(id="huge", audio=str(long_path), duration=9.0, task="asr",
                         text="alpha", source_lang="en", target_lang="en"),
  ]
  p = make(corpus, utts=list(utts) + extra)
  assert p.left_out == ["huge"]
  skipped, seen = {}, []
  for batch in p.iterator():
    skipped.update(dict(batch["skipped"]))
    seen += [int(i) for i in batch["index"] if i >= 0]
  assert sorted(skipped) == ["corrupt", "long", "missing"]
  assert "longer than" in skipped["long"] and "does not exist" in skipped["missing"]
  assert sorted(seen) == list(range(len(utts)))  # everything else arrived, once


def test_batch_size_must_split_over_processes(corpus):
  with pytest.raises(ValueError, match=r"batch_size=2 is not divisible by the 4 processes"):
    make(corpus, process=(0, 4))


def test_bucket_validation_names_the_field():
  with pytest.raises(ValueError, match=r"buckets\[1\]\.batch_size"):
    bucketing.parse_buckets([(1.0, 2, 64), (2.0, 0, 64)])
  with pytest.raises(ValueError, match=r"max_seconds"):
    bucketing.parse_buckets([(1.0, 2, 64), (1.0, 4, 64)])


@pytest.fixture(scope="module")
def tiny_encoders(tmp_path_factory):
  root = tmp_path_factory.mktemp("enc")
  paths = []
  for seed in (0, 1):
    path = root / f"enc{seed}"
    save_tiny_whisper(path, d=32, layers=1, heads=2, ffn=64, positions=WINDOW_POSITIONS,
                      seed=seed)
    paths.append(str(path))
  return paths


def _filled_cache(corpus, path, root, utts=None):
  module, params = checkpoints.load_whisper_encoder(path)
  cache = features.FeatureCache(str(root), path, width=module.config.d_model)
  stats = features.fill_cache(cache, utts or corpus[0], features.encoder_fn(module, params, 4),
                              load=lambda u: audio.load_audio(u.audio), progress=False)
  return module, params, cache, stats


def test_feature_cache_equals_on_the_fly_encoding(corpus, tiny_encoders, tmp_path):
  module, params, cache, stats = _filled_cache(corpus, tiny_encoders[0], tmp_path / "cache")
  assert stats["encoded"] == 22 and not stats["skipped"]
  # A second fill finds everything cached.
  assert features.fill_cache(cache, corpus[0], None, None, progress=False)["cached"] == 22

  on_the_fly = next(iter(make(corpus, seed=7)))
  cached = next(iter(make(corpus, seed=7, cache=cache)))
  np.testing.assert_array_equal(on_the_fly["index"], cached["index"])
  np.testing.assert_array_equal(on_the_fly["input_ids"], cached["input_ids"])
  np.testing.assert_array_equal(on_the_fly["num_frames"], cached["num_frames"])
  ref = np.asarray(module.apply({"params": params}, on_the_fly["mel"]))  # [B, 100, E]
  t = cached["frames"].shape[1]
  assert t == SPEC.bucket_frames(bucketing.parse_buckets(BUCKETS)[cached["bucket"]])
  for row, n in enumerate(cached["num_frames"]):
    scale = max(1.0, np.abs(ref[row, :n]).max())
    np.testing.assert_allclose(cached["frames"][row, :n], ref[row, :n], atol=2e-3 * scale)
    assert not cached["frames"][row, n:].any()  # padding frames are zeros

  # The LALM gives the same loss from cached frames as from the mel.
  tok = prompts.load_tokenizer(corpus[1])
  builder = prompts.PromptBuilder(tok)
  llm = qwen2.Qwen2Config(vocab_size=builder.vocab_size, hidden_size=32, intermediate_size=64,
                          num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                          head_dim=16)
  config = lalm.LALMConfig(module.config, llm, builder.audio_token_id,
                           lora=LoraConfig(rank=4), method="uniavg", factor=SPEC.factor)
  model = lalm.LALM(config)
  variables = lalm.init_variables(model, jax.random.PRNGKey(0))
  variables["params"]["encoder"] = params
  loss_mel, _ = lalm.lalm_loss(model, variables, pipeline.model_inputs(on_the_fly))
  loss_frames, _ = lalm.lalm_loss(model, variables, pipeline.model_inputs(cached))
  np.testing.assert_allclose(float(loss_frames), float(loss_mel), rtol=1e-3)


def test_feature_cache_is_keyed_by_the_audio_file_not_only_the_id(corpus, tiny_encoders,
                                                                 tmp_path):
  """Corpora made by the same script reuse ids ("train-asr-en-00067"); a cache shared
  by runs on both must not hand one corpus's frames to the other, and a rewritten
  audio file must be encoded again."""
  root = tmp_path / "cache"
  utts = corpus[0][:3]
  module, params, cache, stats = _filled_cache(corpus, tiny_encoders[0], root, utts)
  assert stats["encoded"] == 3
  # Another corpus: the same ids, other audio (utterance 0 gets utterance 1's sound).
  other_dir = tmp_path / "other"
  other_dir.mkdir()
  others = []
  for i, u in enumerate(utts):
    src = utts[(i + 1) % len(utts)].audio
    dst = other_dir / os.path.basename(src)
    shutil.copyfile(src, dst)
    others.append(dataclasses.replace(u, audio=str(dst)))
  assert all(u not in cache for u in others)
  stats = features.fill_cache(cache, others, features.encoder_fn(module, params, 4),
                              load=lambda u: audio.load_audio(u.audio), progress=False)
  assert stats["encoded"] == 3 and stats["cached"] == 0
  a, b = cache.get(utts[1]), cache.get(others[0])  # the same sound under two ids/paths
  np.testing.assert_array_equal(a, b)
  assert cache.get(utts[0]).shape != cache.get(others[0]).shape or not np.array_equal(
      cache.get(utts[0]), cache.get(others[0]))
  # Rewriting a file (new content, new mtime) invalidates its frames.
  shutil.copyfile(utts[2].audio, others[1].audio)
  os.utime(others[1].audio, ns=(1, 1))
  assert others[1] not in cache and cache.get(others[1]) is None
  # A missing audio file has nothing cached (and fill_cache reports it skipped).
  os.remove(others[2].audio)
  assert others[2] not in cache


def test_feature_cache_is_never_shared_between_encoders(corpus, tiny_encoders, tmp_path):
  root = tmp_path / "cache"
  _, _, cache0, _ = _filled_cache(corpus, tiny_encoders[0], root, corpus[0][:3])
  cache1 = features.FeatureCache(str(root), tiny_encoders[1], width=32)
  assert cache1.dir != cache0.dir
  assert all(u in cache0 and u not in cache1 for u in corpus[0][:3])
  _, _, cache1, stats = _filled_cache(corpus, tiny_encoders[1], root, corpus[0][:3])
  assert stats["encoded"] == 3  # nothing reused from the other encoder
  a, b = cache0.get(corpus[0][0]), cache1.get(corpus[0][0])
  assert a.shape == b.shape and not np.allclose(a, b)
  # The same weights in another compute dtype get their own folder too.
  other = features.FeatureCache(str(root), tiny_encoders[0], width=32, dtype="bfloat16")
  assert other.dir != cache0.dir
  with pytest.raises(ValueError, match="width"):
    features.FeatureCache(str(root), tiny_encoders[0], width=48)


def test_uncached_utterance_is_skipped_and_named(corpus, tiny_encoders, tmp_path):
  _, _, cache, _ = _filled_cache(corpus, tiny_encoders[0], tmp_path / "c", corpus[0][:5])
  skipped = {}
  for batch in make(corpus, cache=cache).iterator():
    skipped.update(dict(batch["skipped"]))
  assert len(skipped) == 17 and all("not in the feature cache" in r for r in skipped.values())


def test_compression_token_budget_matches_the_pipeline():
  # The pipeline counts placeholders with the same rule compress() fills.
  for frames in (1, 2, 3, 49, 50, 99, 100):
    for k in (1, 2, 3, 4, 6):
      assert compression.num_output_tokens(frames, k) == -(-frames // k)


def test_elastic_rate_draws_k_per_step_and_sizes_prompts_for_it(corpus):
  """factors=(1, 2, 3): each step's k is step_factor(seed, step), its prompts hold
  ceil(frames / k) placeholders, padded to prompt_length(bucket, k); a restart at a
  step draws what the uninterrupted run drew."""
  utts, tok = corpus
  builder = prompts.PromptBuilder(prompts.load_tokenizer(tok))
  buckets = bucketing.parse_buckets(BUCKETS)
  p = make(corpus, seed=5, num_steps=12, factors=(1, 2, 3))
  batches = list(p.iterator())
  ks = [int(b["factor"]) for b in batches]
  assert ks == [pipeline.step_factor(5, s, (1, 2, 3)) for s in range(12)]
  assert set(ks) == {1, 2, 3}  # 12 draws of 3 values (checked for this seed)
  for batch in batches:
    k, bucket = int(batch["factor"]), buckets[batch["bucket"]]
    assert batch["input_ids"].shape[1] == SPEC.prompt_length(bucket, k)
    for row, idx in enumerate(batch["index"]):
      if idx < 0:
        continue
      samples = int(round(utts[idx].duration * audio.SAMPLE_RATE))
      frames = lalm.num_encoder_frames(samples, WINDOW_POSITIONS)
      placeholders = int(np.sum(batch["input_ids"][row] == builder.audio_token_id))
      assert placeholders == -(-frames // k)
  # The audio part of the longest utterance scales with k; k = the model's factor
  # keeps the bucket's length.
  b = buckets[1]
  t = SPEC.bucket_frames(b)
  assert SPEC.prompt_length(b, SPEC.factor) == b.max_length
  assert SPEC.prompt_length(b, 1) >= b.max_length + t - -(-t // 2)
  assert SPEC.prompt_length(b, 1) % 8 == 0
  # A restart at step 7 (as a resumed run) sees the same k and rows.
  again = list(make(corpus, seed=5, num_steps=12, factors=(1, 2, 3)).iterator(
      {"next_index": 7}))
  assert [int(x["factor"]) for x in again] == ks[7:]
  assert [x["index"].tolist() for x in again] == [x["index"].tolist() for x in batches[7:]]
  # No factors: the model's k at every step, the bucket's own length.
  fixed = next(iter(make(corpus, seed=5, num_steps=1)))
  assert int(fixed["factor"]) == SPEC.factor
  with pytest.raises(ValueError, match="factors"):
    pipeline.PipelineConfig(buckets=BUCKETS, factors=(0, 2))
