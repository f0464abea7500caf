"""Encodes the bundled speech with a local Whisper checkpoint and compresses the frames.

The small default main job until train.py exists: no downloads, no hand-made files.

  python scripts/encode_example.py [--checkpoint ../shared/checkpoints/whisper-tiny.en]
      [--audio FILE ...] [--factor 3]

Prints, per file: duration, valid encoder frames, and the audio tokens each compression
method gives at the chosen factor.
"""

import argparse
import functools
import glob
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from lalmjax import audio, checkpoints, compression  # pylint: disable=g-import-not-at-top
from lalmjax.models import lalm  # pylint: disable=g-import-not-at-top

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--checkpoint",
                      default=os.path.join(ROOT, "..", "shared", "checkpoints", "whisper-tiny.en"))
  parser.add_argument("--audio", nargs="*",
                      default=sorted(glob.glob(os.path.join(ROOT, "tests", "data", "*.*"))))
  parser.add_argument("--factor", type=int, default=3)
  args = parser.parse_args(argv)

  module, params = checkpoints.load_whisper_encoder(args.checkpoint)
  n_mels = module.config.num_mel_bins
  wavs = [audio.load_audio(p, max_seconds=audio.CHUNK_SECONDS) for p in args.audio]
  batch = np.stack([audio.pad_or_trim(w) for w in wavs])  # [B, 480000]
  valid = lalm.num_encoder_frames([len(w) for w in wavs], module.config.max_source_positions)
  mask = np.arange(module.config.max_source_positions)[None] < valid[:, None]

  encode = jax.jit(lambda p, wav: module.apply({"params": p}, audio.log_mel_spectrogram(wav, n_mels)))
  t0 = time.perf_counter()
  hidden = jax.block_until_ready(encode(params, batch))
  print(f"encoder {args.checkpoint}: {hidden.shape} in {time.perf_counter() - t0:.2f} s "
        f"(incl. compile), backend {jax.default_backend()}")
  for method in compression.registered_methods():
    fn = jax.jit(functools.partial(compression.compress, method=method, factor=args.factor))
    y, y_mask = fn(hidden, jnp.asarray(mask))
    for path, w, n_valid, n_tok in zip(args.audio, wavs, valid, np.asarray(y_mask).sum(1)):
      print(f"  {method:8s} k={args.factor} {os.path.basename(path):18s} "
            f"{len(w) / audio.SAMPLE_RATE:5.2f} s  {int(n_valid):4d} frames -> {int(n_tok):4d} "
            f"tokens of width {y.shape[-1]}")


if __name__ == "__main__":
  main()
