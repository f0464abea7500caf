"""Training: configs and their validation, the sharded step (8 devices = 1 device),
gradient accumulation, and train.py end to end: resume after SIGKILL, SIGTERM,
two processes."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
import soundfile as sf

from configs import base, paper_asr, paper_s2tt, tiny
from lalmjax import audio, experiment, sharding, trainer, training
from lalmjax.data import manifest, pipeline
from lalmjax.metric_writer import read_metrics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet".split()
# A 2 s encoder window and one bucket of 8 rows: small enough for a CPU test.
OVERRIDES = {"model.encoder.max_source_positions": 100, "data.buckets": ((2.0, 8, 128),),
             "total_steps": 6, "checkpoint_every": 2, "log_every": 1,
             "optim.warmup_steps": 1, "model.lora_dropout": 0.1}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("train_corpus")
  rng = np.random.default_rng(0)
  utts = []
  for i in range(20):
    n = int(rng.uniform(0.3, 1.9) * audio.SAMPLE_RATE)
    t = np.arange(n) / audio.SAMPLE_RATE
    path = str(tmp / f"t{i:02d}.flac")
    sf.write(path, (0.3 * np.sin(2 * np.pi * (150 + 40 * i) * t)).astype(np.float32),
             audio.SAMPLE_RATE)
    utts.append(manifest.Utterance(id=f"t{i:02d}", audio=path, duration=n / audio.SAMPLE_RATE,
                                   task="asr", text=" ".join(rng.choice(WORDS, 3)),
                                   source_lang="en", target_lang="en"))
  path = str(tmp / "train.jsonl")
  manifest.write_manifest(path, utts)
  return path


def make_config(corpus, **overrides):
  c = tiny.get_config()
  c.data.train_manifests = (corpus,)
  c.data.test_manifests = ()
  for key, value in {**OVERRIDES, **overrides}.items():
    node = c
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


def flag_args(corpus, workdir, **overrides):
  args = [sys.executable, os.path.join(REPO, "train.py"), "--config=configs/tiny.py",
          f"--workdir={workdir}", f"--config.data.train_manifests=('{corpus}',)",
          "--config.data.test_manifests=()"]
  for key, value in {**OVERRIDES, **overrides}.items():
    args.append(f"--config.{key}={value!r}" if not isinstance(value, str)
                else f"--config.{key}={value}")
  return args


def run_env(devices=1):
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  return env


# ----------------------------------------------------------------------------- configs


@pytest.mark.parametrize("module,arg", [(tiny, None), (tiny, "method=unseg,k=3"),
                                        (paper_asr, "method=uniavg,k=3"),
                                        (paper_asr, "method=stack,k=2,lora=false"),
                                        (paper_s2tt, "k=4")])
def test_configs_validate(module, arg):
  c = module.get_config(arg)
  base.validate(c, num_devices=8, check_files=module is tiny)


def test_paper_config_has_the_paper_shapes():
  c = paper_asr.get_config("method=unisamp,k=6")
  assert (c.model.method, c.model.factor) == ("unisamp", 6)
  assert c.model.encoder.num_mel_bins == 128 and c.model.encoder.d_model == 1280
  assert c.model.llm.hidden_size == 3584 and c.model.llm.vocab_size == 152064
  assert (c.model.lora_rank, c.model.lora_alpha) == (16, 32.0)
  assert tuple(c.model.lora_targets) == ("q_proj", "k_proj")
  with pytest.raises(ValueError, match="unknown"):
    paper_asr.get_config("metod=uniavg")
  with pytest.raises(ValueError, match="expected a int"):
    paper_asr.get_config("k=three")


@pytest.mark.parametrize("key,value,message", [
    ("model.method", "pool", r"config\.model\.method='pool'"),
    ("model.factor", 0, r"config\.model\.factor=0: expected an int >= 1"),
    ("model.lora_rank", 0, r"config\.model\.lora_rank=0"),
    ("model.lora_targets", ("q_proj", "qkv"), r"config\.model\.lora_targets"),
    ("mesh_shape", (3, 1, 1), r"config\.mesh_shape=\(3, 1, 1\)"),
    ("data.buckets", ((2.0, 6, 128),), r"config\.data\.buckets\[0\].*divisible by the "
                                       r"data-parallel size 4"),
    ("model.llm_path", "/no/such/qwen", r"config\.model\.llm_path='/no/such/qwen': folder"),
    ("data.train_manifests", ("/no/such.jsonl",), r"config\.data\.train_manifests.*does not"),
    ("optim.warmup_steps", 1000, r"config\.optim\.warmup_steps"),
    ("model.method_options", {"smooth": 2}, r"config\.model\.method_options"),
    ("model.dtype", "float8", r"config\.model\.dtype"),
    ("model.encoder_window_seconds", 0.015, r"config\.model\.encoder_window_seconds"),
    ("model.encoder_window_seconds", 31.0, r"config\.model\.encoder_window_seconds"),
    ("model.attention_batch_block", -2, r"config\.model\.attention_batch_block"),
    ("model.attention", "flash", r"config\.model\.attention='flash'.*blocked"),
])
def test_config_errors_name_the_key(corpus, key, value, message):
  overrides = {key: value}
  if key == "data.buckets":
    overrides["mesh_shape"] = (2, 2, 2)
  if key == "model.method_options":
    overrides["model.method"] = "unseg"
  c = make_config(corpus, **overrides)
  with pytest.raises(ValueError, match=message):
    base.validate(c, num_devices=8)


def test_locked_config_rejects_a_typo(corpus):
  c = make_config(corpus)
  c.lock()
  with pytest.raises(AttributeError):
    c.model.facter = 3


# ----------------------------------------------------------------------------- steps


def _setup(corpus, tmp_path, mesh, **overrides):
  c = make_config(corpus, **overrides)
  model = experiment.build_model(c, str(tmp_path), mesh)
  tx = training.make_optimizer(c.optim, c.total_steps)
  patterns = experiment.trainable_patterns(c)  # as train() splits them
  _, frozen_sh, state_sh = trainer.train_state_shardings(model, patterns, tx, mesh)
  trainable, frozen = training.partition(model.variables, patterns)
  state = jax.jit(lambda t: training.init_train_state(t, tx), out_shardings=state_sh)(trainable)
  step = training.make_train_step(model.module, tx, grad_accum_steps=c.optim.grad_accum_steps,
                                  vocab_chunk=c.loss.vocab_chunk, seed=c.seed,
                                  lr_schedule=training.learning_rate_schedule(c.optim, 6))
  jitted = jax.jit(step, in_shardings=(state_sh, frozen_sh, experiment.batch_sharding(mesh)),
                   out_shardings=(state_sh, sharding.replicated(mesh)))
  data = pipeline.InputPipeline(
      manifest.read_manifest(corpus).utterances, trainer.pipeline_config(c),
      pipeline.AudioSpec.from_lalm(model.module.config), model.tokenizer_path,
      num_steps=3, process_index=0, process_count=1)
  batches = [pipeline.model_inputs(b) for b in data.iterator()]
  return model, state, frozen, jitted, batches


def _run(mesh, state, frozen, jitted, batches):
  import flax.linen as nn

  losses = []
  with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.LOGICAL_AXIS_RULES):
    for b in batches:
      state, metrics = jitted(state, frozen, experiment.global_batch(b, mesh))
      losses.append(float(metrics["loss"]))
  return losses, jax.device_get(state.trainable)


def test_three_steps_on_eight_devices_equal_one_device(corpus, tmp_path):
  mesh8 = sharding.create_mesh((2, 2, 2))
  mesh1 = sharding.create_mesh((1, 1, 1), devices=jax.devices()[:1])
  _, state8, frozen8, step8, batches = _setup(corpus, tmp_path, mesh8)
  _, state1, frozen1, step1, _ = _setup(corpus, tmp_path, mesh1)
  # The trainable tree really is spread over the 8 devices.
  lora_a = state8.trainable["lora"]["llm"]["layers_0"]["self_attn"]["q_proj"]["lora_A"]
  assert not lora_a.sharding.is_fully_replicated  # [embed, rank]: embed over fsdp
  losses8, train8 = _run(mesh8, state8, frozen8, step8, batches)
  losses1, train1 = _run(mesh1, state1, frozen1, step1, batches)
  print("losses 8 devices", losses8, "1 device", losses1)
  np.testing.assert_allclose(losses8, losses1, rtol=1e-5)
  diffs = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), train8, train1)
  worst = max(jax.tree.leaves(diffs))
  print("max |param 8 - param 1| after 3 steps:", worst)
  assert worst < 1e-5
  assert losses8[0] != losses8[2]  # the steps did change the parameters


def test_two_accumulated_micro_batches_equal_one_batch(corpus, tmp_path):
  mesh = sharding.create_mesh((1, 1, 1), devices=jax.devices()[:1])
  c_kw = {"model.lora_dropout": 0.0}
  _, state_a, frozen, step_a, batches = _setup(corpus, tmp_path, mesh, **c_kw)
  _, state_b, _, step_b, _ = _setup(corpus, tmp_path, mesh, **{"optim.grad_accum_steps": 2,
                                                               **c_kw})
  la, ta = _run(mesh, state_a, frozen, step_a, batches)
  lb, tb = _run(mesh, state_b, frozen, step_b, batches)
  np.testing.assert_allclose(la, lb, rtol=1e-5)
  worst = max(jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(a - b).max()), ta, tb)))
  assert worst < 1e-6


def test_micro_batch_split_is_strided():
  x = np.arange(8)[:, None] * np.ones((1, 3))
  micro = training.split_micro_batches({"x": x}, 2)["x"]
  np.testing.assert_array_equal(micro[0, :, 0], [0, 2, 4, 6])
  np.testing.assert_array_equal(micro[1, :, 0], [1, 3, 5, 7])


# ----------------------------------------------------------------------------- train.py


def _wait_for(path, timeout=300):
  t0 = time.time()
  while not os.path.exists(path):
    if time.time() - t0 > timeout:
      raise TimeoutError(path)
    time.sleep(0.2)


def _losses(workdir):
  return {r["step"]: r["loss"] for r in read_metrics(os.path.join(workdir, "metrics.jsonl"))}


def _batches(workdir, process=0):
  rows = {}
  with open(os.path.join(workdir, f"batches.p{process}.jsonl")) as f:
    for line in f:
      r = json.loads(line)
      rows[r["step"]] = r["index"]
  return rows


@pytest.fixture(scope="module")
def straight_run(corpus, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("straight"))
  subprocess.run(flag_args(corpus, workdir), check=True, env=run_env(), cwd=REPO,
                 capture_output=True, timeout=600)
  return workdir


def test_train_py_writes_metrics_checkpoints_and_export(straight_run):
  rows = read_metrics(os.path.join(straight_run, "metrics.jsonl"))
  assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
  for r in rows:
    assert {"loss", "learning_rate", "tokens_per_s", "audio_seconds_per_s"} <= set(r)
  assert os.listdir(os.path.join(straight_run, "tensorboard"))
  kept = {int(s) for s in os.listdir(os.path.join(straight_run, "checkpoints")) if s.isdigit()}
  assert kept == {2, 4, 6}
  export = os.path.join(straight_run, "export")
  assert os.path.exists(os.path.join(export, "lora", "adapter_config.json"))
  assert os.path.exists(os.path.join(export, "projector.safetensors"))


def test_resume_after_sigkill_repeats_the_uninterrupted_losses(corpus, straight_run, tmp_path):
  workdir = str(tmp_path / "killed")
  proc = subprocess.Popen(flag_args(corpus, workdir), env=run_env(), cwd=REPO,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    _wait_for(os.path.join(workdir, "checkpoints", "2"))
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  done = subprocess.run(flag_args(corpus, workdir), env=run_env(), cwd=REPO,
                        capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  assert "resumed from" in done.stderr
  ours, ref = _losses(workdir), _losses(straight_run)
  print("straight", ref, "\nresumed ", ours)
  assert sorted(ours) == sorted(ref) == [1, 2, 3, 4, 5, 6]
  for step in ref:
    assert ours[step] == ref[step], (step, ours[step], ref[step])  # bitwise on the CPU
  assert _batches(workdir) == _batches(straight_run)


def test_sigterm_saves_a_checkpoint_at_the_current_step(corpus, tmp_path):
  workdir = str(tmp_path / "term")
  args = flag_args(corpus, workdir, total_steps=200, checkpoint_every=100)
  proc = subprocess.Popen(args, env=run_env(), cwd=REPO, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  metrics = os.path.join(workdir, "metrics.jsonl")
  _wait_for(metrics)
  while len(open(metrics).readlines()) < 3:
    time.sleep(0.1)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-3000:]
  steps = sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints"))
                 if s.isdigit())
  logged = max(_losses(workdir))
  assert steps and 3 <= steps[-1] < 100 and steps[-1] >= logged


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_train_on_disjoint_shards_and_agree(corpus, straight_run, tmp_path):
  workdir = str(tmp_path / "two")
  port = _free_port()
  procs = []
  for pid in range(2):
    args = flag_args(corpus, workdir, total_steps=3, checkpoint_every=3, multiprocess=True,
                     coordinator_address=f"localhost:{port}", num_processes=2, process_id=pid)
    procs.append(subprocess.Popen(args, env=run_env(1), cwd=REPO, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True))
  for p in procs:
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
  rows0, rows1 = _batches(workdir, 0), _batches(workdir, 1)
  ref_rows = _batches(straight_run)
  for step in (1, 2, 3):
    a, b = set(rows0[step]) - {-1}, set(rows1[step]) - {-1}
    assert not a & b  # disjoint shards
    assert rows0[step] + rows1[step] == ref_rows[step]  # together: the global batch
  ours, ref = _losses(workdir), _losses(straight_run)
  print("two processes", ours, "one process", ref)
  for step in (1, 2, 3):
    np.testing.assert_allclose(ours[step], ref[step], rtol=1e-5)


def test_bf16_compute_keeps_float32_trainables_and_remat_changes_nothing(corpus, tmp_path):
  mesh = sharding.create_mesh((1, 1, 1), devices=jax.devices()[:1])
  kw = {"model.lora_dropout": 0.0}
  _, state, frozen, step, batches = _setup(corpus, tmp_path, mesh, **kw)
  ref_losses, ref = _run(mesh, state, frozen, step, batches[:2])
  # Remat recomputes activations in the backward pass: same numbers.
  _, state, frozen, step, _ = _setup(corpus, tmp_path, mesh,
                                     **{"model.remat_policy": "nothing_saveable", **kw})
  losses, remat = _run(mesh, state, frozen, step, batches[:2])
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-6)
  worst = max(jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(a - b).max()), remat, ref)))
  assert worst < 1e-6
  # bf16 compute and storage of the frozen weights; LoRA and projector stay float32.
  _, state, frozen, step, _ = _setup(corpus, tmp_path, mesh, **{
      "model.dtype": "bfloat16", "model.param_dtype": "bfloat16", **kw})
  assert all(x.dtype == np.float32 for x in jax.tree.leaves(state.trainable))
  assert all(x.dtype == jax.numpy.bfloat16 for x in jax.tree.leaves(frozen["params"]["llm"]))
  losses, bf16 = _run(mesh, state, frozen, step, batches[:2])
  assert all(x.dtype == np.float32 for x in jax.tree.leaves(bf16))
  np.testing.assert_allclose(losses, ref_losses, rtol=2e-2)


def test_chunked_cross_entropy_in_the_step_equals_full_logits(corpus, tmp_path):
  mesh = sharding.create_mesh((1, 1, 1), devices=jax.devices()[:1])
  kw = {"model.lora_dropout": 0.0}
  _, state, frozen, step, batches = _setup(corpus, tmp_path, mesh, **kw)
  full_losses, full = _run(mesh, state, frozen, step, batches[:2])
  # 37 positions a chunk: does not divide the 128-token prompts.
  _, state, frozen, step, _ = _setup(corpus, tmp_path, mesh, **{"loss.vocab_chunk": 37, **kw})
  losses, chunked = _run(mesh, state, frozen, step, batches[:2])
  np.testing.assert_allclose(losses, full_losses, rtol=1e-5)
  worst = max(jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(a - b).max()),
                                           chunked, full)))
  assert worst < 1e-5


def test_elastic_rate_trains_each_step_at_its_drawn_k(corpus, tmp_path):
  """model.train_factors=(1, 2, 3): step s runs at k = step_factor(seed, s) with one
  compilation per k drawn, prompts sized for it (no placeholder mismatch), and the
  first step's loss equals that of a fixed-k run at the same k (same init, same rows)."""
  factors = (1, 2, 3)
  c = make_config(corpus, **{"model.train_factors": factors, "total_steps": 4,
                             "checkpoint_every": 4})
  ks = [pipeline.step_factor(c.seed, s, factors) for s in range(4)]
  out = trainer.train(c, str(tmp_path / "elastic"))
  rows = read_metrics(str(tmp_path / "elastic" / "metrics.jsonl"))
  assert [int(r["factor"]) for r in rows] == ks
  assert all(r["placeholder_mismatch"] == 0 for r in rows)
  assert out["compilations"] == len(set(ks))
  fixed = make_config(corpus, **{"model.factor": ks[0], "total_steps": 1,
                                 "checkpoint_every": 1})
  trainer.train(fixed, str(tmp_path / "fixed"))
  first = read_metrics(str(tmp_path / "fixed" / "metrics.jsonl"))[0]
  assert rows[0]["loss"] == pytest.approx(first["loss"], rel=1e-5)
  bad = make_config(corpus, **{"model.train_factors": factors, "model.method": "stack"})
  with pytest.raises(ValueError, match="model.train_factors"):
    base.validate(bad, num_devices=1, check_files=False)


def test_resume_check_ignores_how_the_model_runs_not_what_its_params_are():
  """attention implementation and remat policy do not change the params: a run saved
  with one resumes with another; scan_layers (stacked params) and widths do count."""
  from lalmjax import run_checkpoints

  def meta(**llm):
    return {"model_shape": {"factor": 2, "encoder": {"d_model": 8},
                            "llm": {"hidden_size": 16, **llm}}}

  ok = run_checkpoints.check_compatible
  ok(meta(), meta(attention="blocked", remat_policy="nothing_saveable", scan_layers=False), "w")
  ok(meta(attention="xla", remat_policy=None), meta(attention="blocked"), "w")
  for other in (meta(scan_layers=True), meta(hidden_size=32)):
    with pytest.raises(ValueError, match="model_shape"):
      ok(meta(), other, "w")
