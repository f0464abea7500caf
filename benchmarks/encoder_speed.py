"""Whisper encoder forward on 30 s of audio: lalmjax (jax.jit) vs transformers (PyTorch).

Same machine, same inputs, same float32 weights; both warmed up; jax timed with
block_until_ready on device-resident inputs (a numpy argument would be copied to the
device on every call); compile time reported apart. Prints the per-call time of each
attention implementation (`model.attention`) and its ratio to transformers, measured
interleaved (ours, theirs, ours, ...) so that load from other processes hits both alike.

  python benchmarks/encoder_speed.py [--checkpoint DIR] [--batch 1] [--repeats 5]
      [--attention all|xla|headmajor|blocked]
"""

import argparse
import dataclasses
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from lalmjax import audio, checkpoints  # pylint: disable=g-import-not-at-top
from lalmjax.models import attention  # pylint: disable=g-import-not-at-top

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def _time_interleaved(fns, repeats):
  """Median seconds per call of each function, calls interleaved round-robin."""
  times = [[] for _ in fns]
  for _ in range(repeats):
    for fn, ts in zip(fns, times):
      t0 = time.perf_counter()
      fn()
      ts.append(time.perf_counter() - t0)
  return [float(np.median(ts)) for ts in times]


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--checkpoint",
                      default=os.path.join(ROOT, "..", "shared", "checkpoints", "whisper-tiny.en"))
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--attention", default="all",
                      choices=("all",) + attention.IMPLEMENTATIONS)
  args = parser.parse_args()

  import torch
  import transformers

  speech = audio.load_audio(os.path.join(ROOT, "tests", "data", "speech_en_1.wav"))
  wav = np.tile(speech, 12)[: audio.N_SAMPLES]  # 30 s
  module, params = checkpoints.load_whisper_encoder(args.checkpoint)
  mel = np.repeat(np.asarray(audio.log_mel_spectrogram(wav[None], module.config.num_mel_bins)),
                  args.batch, axis=0)

  mel_device = jax.device_put(mel)
  impls = attention.IMPLEMENTATIONS if args.attention == "all" else (args.attention,)
  ours, compile_s = {}, {}
  for impl in impls:
    m = module.clone(config=dataclasses.replace(module.config, attention=impl))
    t0 = time.perf_counter()
    compiled = jax.jit(m.apply).lower({"params": params}, mel_device).compile()
    compile_s[impl] = time.perf_counter() - t0
    ours[impl] = (lambda c: lambda: jax.block_until_ready(c({"params": params}, mel_device)))(
        compiled)
    ours[impl]()

  ref = transformers.WhisperForConditionalGeneration.from_pretrained(
      args.checkpoint, dtype=torch.float32).model.encoder.eval()
  mel_t = torch.from_numpy(mel.copy())

  def theirs():
    with torch.inference_mode():
      return ref(mel_t).last_hidden_state

  theirs()
  fns = [f for impl in impls for f in (ours[impl], theirs)]
  times = _time_interleaved(fns, args.repeats)
  expected = theirs().numpy()
  print(f"backend={jax.default_backend()} torch_threads={torch.get_num_threads()} "
        f"batch={args.batch} (30 s each), median of {args.repeats}, interleaved")
  for i, impl in enumerate(impls):
    t_ours, t_ref = times[2 * i], times[2 * i + 1]
    err = np.abs(np.asarray(ours[impl]()) - expected).max()
    print(f"attention={impl:9s}: lalmjax {t_ours * 1e3:7.1f} ms/call (compile "
          f"{compile_s[impl]:.2f} s)  transformers {t_ref * 1e3:7.1f} ms/call  "
          f"ratio (transformers / lalmjax) {t_ref / t_ours:.2f}x  max abs diff {err:.2e}")


if __name__ == "__main__":
  main()
