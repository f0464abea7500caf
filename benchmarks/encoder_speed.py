"""Whisper encoder forward on 30 s of audio: lalmjax (jax.jit) vs transformers (PyTorch).

Same machine, same inputs, same float32 weights; both warmed up; jax timed with
block_until_ready; compile time reported apart. Prints the per-call times and the ratio.

  python benchmarks/encoder_speed.py [--checkpoint DIR] [--batch 1] [--repeats 5]
"""

import argparse
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from lalmjax import audio, checkpoints  # pylint: disable=g-import-not-at-top

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def _time(fn, repeats):
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--checkpoint",
                      default=os.path.join(ROOT, "..", "shared", "checkpoints", "whisper-tiny.en"))
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()

  import torch
  import transformers

  speech = audio.load_audio(os.path.join(ROOT, "tests", "data", "speech_en_1.wav"))
  wav = np.tile(speech, 12)[: audio.N_SAMPLES]  # 30 s
  module, params = checkpoints.load_whisper_encoder(args.checkpoint)
  mel = np.repeat(np.asarray(audio.log_mel_spectrogram(wav[None], module.config.num_mel_bins)),
                  args.batch, axis=0)

  encode = jax.jit(module.apply)
  t0 = time.perf_counter()
  compiled = encode.lower({"params": params}, mel).compile()
  compile_s = time.perf_counter() - t0
  ours = lambda: jax.block_until_ready(compiled({"params": params}, mel))
  ours()

  ref = transformers.WhisperForConditionalGeneration.from_pretrained(
      args.checkpoint, dtype=torch.float32).model.encoder.eval()
  mel_t = torch.from_numpy(mel.copy())

  def theirs():
    with torch.inference_mode():
      return ref(mel_t).last_hidden_state

  theirs()
  t_ours, t_ref = _time(ours, args.repeats), _time(theirs, args.repeats)
  err = np.abs(np.asarray(ours()) - theirs().numpy()).max()
  print(f"backend={jax.default_backend()} torch_threads={torch.get_num_threads()} "
        f"batch={args.batch} (30 s each), median of {args.repeats}")
  print(f"lalmjax jit : {t_ours * 1e3:8.1f} ms/call   (compile {compile_s:.2f} s, once)")
  print(f"transformers: {t_ref * 1e3:8.1f} ms/call")
  print(f"speed ratio (transformers time / lalmjax time): {t_ref / t_ours:.2f}x   "
        f"max abs diff {err:.2e}")


if __name__ == "__main__":
  main()
