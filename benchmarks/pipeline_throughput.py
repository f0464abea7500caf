"""Input-pipeline throughput beside the encoder's appetite, measured in one run.

    python benchmarks/pipeline_throughput.py [--manifest data/demo/train.jsonl]
        [--encoder ../shared/checkpoints/whisper-tiny.en] [--batches 12]

Rows (utterances/s and audio seconds/s, after one warm-up batch):
  1. the grain pipeline with decode + log-mel on the fly, reader threads only;
  2. the same with 2 worker processes;
  3. the Whisper encoder consuming audio (jit, batch 8, 30 s windows, warm);
  4. the pipeline reading cached encoder frames (the cache filled by row 3's encoder).
If rows 1-2 are faster than row 3 the pipeline keeps the encoder fed on this machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from lalmjax import audio, checkpoints, prompts  # noqa: E402
from lalmjax.data import features, manifest, pipeline  # noqa: E402


def rate(it, batches: int):
  """(utterances/s, audio s/s) over `batches` batches after one warm-up batch."""
  next(it)
  utts = seconds = 0.0
  t0 = time.perf_counter()
  for _ in range(batches):
    b = next(it)
    utts += float((b["index"] >= 0).sum())
    seconds += float(b["audio_seconds"].sum())
  dt = time.perf_counter() - t0
  return utts / dt, seconds / dt


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--manifest", default=os.path.join(REPO, "data/demo/train.jsonl"))
  parser.add_argument("--encoder", default=os.path.join(REPO, "..", "shared", "checkpoints",
                                                        "whisper-tiny.en"))
  parser.add_argument("--batches", type=int, default=12)
  parser.add_argument("--batch_size", type=int, default=8)
  args = parser.parse_args(argv)

  utts = manifest.read_manifest(args.manifest).utterances
  module, params = checkpoints.load_whisper_encoder(args.encoder)
  cfg_enc = module.config
  spec = pipeline.AudioSpec(cfg_enc.num_mel_bins, cfg_enc.max_source_positions, factor=2)
  tmp = tempfile.mkdtemp()
  tok = prompts.build_tiny_tokenizer(os.path.join(tmp, "tok"), [u.text for u in utts], 1024)
  steps = args.batches + 1
  bucket = ((30.0, args.batch_size, 1024),)
  rows = []

  for workers in (0, 2):
    cfg = pipeline.PipelineConfig(buckets=bucket, num_workers=workers, num_threads=2)
    p = pipeline.InputPipeline(utts, cfg, spec, tok, num_steps=steps, process_index=0,
                               process_count=1)
    rows.append((f"pipeline, decode + log-mel ({workers} workers)", *rate(p.iterator(),
                                                                           args.batches)))

  # The encoder's own rate: whisper-tiny.en on full 30 s windows, batch 8, after warm-up.
  encode = features.encoder_fn(module, params, batch_size=args.batch_size)
  wavs = [audio.load_audio(u.audio) for u in utts[:args.batch_size * (args.batches + 1)]]
  encode(wavs[:args.batch_size])
  t0 = time.perf_counter()
  encode(wavs[args.batch_size:])
  dt = time.perf_counter() - t0
  n = len(wavs) - args.batch_size
  rows.append((f"whisper-tiny.en encoder (jit, batch {args.batch_size})", n / dt,
               sum(len(w) for w in wavs[args.batch_size:]) / audio.SAMPLE_RATE / dt))

  cache = features.FeatureCache(os.path.join(tmp, "cache"), args.encoder, cfg_enc.d_model)
  features.fill_cache(cache, utts, encode, lambda u: audio.load_audio(u.audio),
                      batch_size=args.batch_size, progress=False)
  cfg = pipeline.PipelineConfig(buckets=bucket, num_threads=2)
  p = pipeline.InputPipeline(utts, cfg, spec, tok, feature_cache=cache, num_steps=steps,
                             process_index=0, process_count=1)
  rows.append(("pipeline, cached encoder frames", *rate(p.iterator(), args.batches)))

  enc_rate = rows[2][2]
  print(f"{len(utts)} utterances from {args.manifest}; {os.cpu_count()} CPU cores\n")
  print(f"{'':48s} {'utt/s':>8s} {'audio s/s':>10s} {'vs encoder':>11s}")
  for name, u, s in rows:
    print(f"{name:48s} {u:8.1f} {s:10.1f} {s / enc_rate:10.2f}x")


if __name__ == "__main__":
  main()
