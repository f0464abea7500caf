"""Makes a synthetic speech corpus with espeak-ng: ASR (en, de, es, fr) and en->de S2TT.

A stand-in for the real corpora (LibriSpeech, Common Voice, CoVoST 2) on machines that
lack them. The text comes from `lalmjax.data.textgen` (grammar-generated sentences,
English with German translations); each utterance is spoken by espeak-ng with a voice,
variant, speed (130-190 words per minute) and pitch drawn from the seed:

    espeak-ng -> WAV 22.05 kHz 16-bit -> soxr (HQ) to 16 kHz -> FLAC 16-bit (soundfile)
                                                             or Opus in Ogg (--format opus)

The output regenerates bit for bit from the seed on the same software versions (recorded
in meta.json). Layout of --out:

    audio/<id>.flac                       16 kHz mono FLAC (--format opus: <id>.opus)
    {train,dev,test}.jsonl                every utterance of the split, all tasks/languages
    {split}_{kind}.jsonl                  one kind: asr_en, asr_de, asr_es, asr_fr, s2tt_en_de
    README.md, meta.json                  what is in it; seed, counts, software versions

Manifest lines follow DESIGN.md ("Data on disk"), plus "espeak" (the voice arguments):
{"id", "audio" (relative to the manifest), "duration" (s), "task", "text", "source_lang",
"target_lang", "translation" (s2tt only), "espeak"}.

--max_mb bounds the folder: dev, test and the fixed training kinds are made first, then
English ASR training utterances are added, in order, until the next one would pass the
limit (the limit counts file sizes plus an allowance for directory entries, so the cut
does not depend on the file system). Usage:

    python scripts/make_corpus.py --out data/demo --overwrite          # the committed demo
    python scripts/make_corpus.py --out /tmp/big --max_mb 0 --train_asr_en 20000 \\
        --train_s2tt_en_de 5000 --train_asr_de 2000 --workers 2        # a larger corpus
    python scripts/make_corpus.py --out data/demo_multilingual --splits train --max_mb 0 \
        --train_asr_en 0 --train_s2tt_en_de 40 --train_asr_de 60 --train_asr_es 60 \
        --train_asr_fr 60      # training data beside data/demo (whose dev/test it shares)
    python scripts/make_corpus.py --out data/demo_train --splits train --format opus \
        --max_mb 0 --train_asr_en 2000 --train_s2tt_en_de 300   # the demo's training set

Opus (libopus through libsndfile, compression level 0.9: ~9 KB for a 2 s utterance,
4x smaller than FLAC) is lossy; measured with Whisper tiny.en on 30 test utterances it
transcribes them as well as the FLAC (WER 62% vs 84%, a small sample). The Ogg stream
serial number, random in libsndfile, is set to 0 (and each page's CRC recomputed), so
the bytes regenerate exactly too.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import multiprocessing
import os
import platform
import random
import re
import shlex
import shutil
import subprocess
import sys
from typing import Iterable, Sequence

import numpy as np
import soundfile as sf
import soxr

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from lalmjax.data import textgen  # noqa: E402  pylint: disable=wrong-import-position

SAMPLE_RATE = 16000  # Hz, the corpus rate.
ESPEAK_RATE = 22050  # Hz, what espeak-ng writes.
FLAC_COMPRESSION = 1.0  # soundfile's compression_level: libFLAC's strongest (level 8).
OPUS_COMPRESSION = 0.9  # soundfile's compression_level for Opus (1.0 is its lowest
#                         bitrate, ~3 KB per 2 s, audibly muffled).
MB = 1_000_000  # bytes: --max_mb is in decimal megabytes, like `du -sb` / 1e6.
# Size allowance outside audio and manifests: README.md, meta.json, the folders
# themselves, plus one directory entry per audio file.
RESERVE_BYTES = 64_000
PER_FILE_DIR_BYTES = 64

VARIANTS = ("", "+m1", "+m2", "+m3", "+m4", "+m5", "+m6", "+m7", "+f1", "+f2", "+f3",
            "+f4", "+f5", "+klatt", "+klatt2", "+klatt3", "+klatt4")
VOICES = {
    "en": ("en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-rp", "en-gb-x-gbclan",
           "en-gb-x-gbcwmd"),
    "de": ("de",),
    "es": ("es", "es-419"),
    "fr": ("fr-fr", "fr-be", "fr-ch"),
}
SPEED_RANGE = (130, 190)  # words per minute
PITCH_RANGE = (30, 70)  # espeak-ng's 0..99, default 50

# kind -> (task, source language, target language)
KIND_INFO = {"asr_en": ("asr", "en", "en"), "asr_de": ("asr", "de", "de"),
             "asr_es": ("asr", "es", "es"), "asr_fr": ("asr", "fr", "fr"),
             "s2tt_en_de": ("s2tt", "en", "de")}
# The demo's counts: small dev/test; English ASR training fills what --max_mb leaves.
DEFAULT_COUNTS = {
    "test": {"asr_en": 60, "asr_de": 20, "asr_es": 20, "asr_fr": 20, "s2tt_en_de": 30},
    "dev": {"asr_en": 12, "asr_de": 4, "asr_es": 4, "asr_fr": 4, "s2tt_en_de": 8},
    "train": {"asr_en": 5000, "asr_de": 0, "asr_es": 0, "asr_fr": 0, "s2tt_en_de": 30},
}


@dataclasses.dataclass(frozen=True)
class Spec:
  """One utterance to make: its id, split, kind, text and espeak-ng voice."""

  id: str
  split: str
  kind: str
  text: str
  translation: str | None
  voice: str
  speed: int
  pitch: int

  @property
  def lang(self) -> str:
    return KIND_INFO[self.kind][1]

  def espeak_args(self) -> list[str]:
    return ["-v", self.voice, "-s", str(self.speed), "-p", str(self.pitch)]


def choose_voice(seed: int, utt_id: str, lang: str) -> tuple[str, int, int]:
  """(voice, speed, pitch) for an utterance, from the seed and its id alone."""
  rng = random.Random(f"{seed}/voice/{utt_id}")
  voice = rng.choice(VOICES[lang]) + rng.choice(VARIANTS)
  return voice, rng.randint(*SPEED_RANGE), rng.randint(*PITCH_RANGE)


def utterance_id(split: str, kind: str, index: int) -> str:
  """ "train-asr-en-00001", "test-s2tt-en-de-00012" (1-based index)."""
  return f"{split}-{kind.replace('_', '-')}-{index + 1:05d}"


def plan(counts: dict[str, dict[str, int]], seed: int) -> list[Spec]:
  """All utterances in making order: test, dev, train; English ASR training last."""
  splits = textgen.make_splits(counts, seed)
  specs, fill = [], []
  for split in ("test", "dev", "train"):
    for kind in textgen.KINDS:
      for i, sent in enumerate(splits[split][kind]):
        uid = utterance_id(split, kind, i)
        voice, speed, pitch = choose_voice(seed, uid, KIND_INFO[kind][1])
        spec = Spec(uid, split, kind, sent.text, sent.translation, voice, speed, pitch)
        (fill if (split, kind) == ("train", "asr_en") else specs).append(spec)
  return specs + fill


def synthesize(text: str, espeak_args: Sequence[str]) -> np.ndarray:
  """Speech for `text` as int16 samples at 16 kHz."""
  out = subprocess.run(["espeak-ng", *espeak_args, "--stdout", text], capture_output=True,
                       check=True).stdout
  wav, sr = sf.read(io.BytesIO(out), dtype="int16")
  if sr != ESPEAK_RATE or wav.ndim != 1 or wav.size == 0:
    raise RuntimeError(f"espeak-ng gave {wav.shape} samples at {sr} Hz for {text!r}")
  y = soxr.resample(wav.astype(np.float32) / 32768.0, ESPEAK_RATE, SAMPLE_RATE, quality="HQ")
  return np.clip(np.round(y * 32768.0), -32768, 32767).astype(np.int16)


def flac_bytes(samples: np.ndarray) -> bytes:
  """16-bit mono FLAC at 16 kHz, as written to disk."""
  buf = io.BytesIO()
  sf.write(buf, samples, SAMPLE_RATE, format="FLAC", subtype="PCM_16",
           compression_level=FLAC_COMPRESSION)
  return buf.getvalue()


def _ogg_crc_table() -> list[int]:
  table = []
  for i in range(256):
    r = i << 24
    for _ in range(8):
      r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else (r << 1)
    table.append(r & 0xFFFFFFFF)
  return table


_OGG_CRC = _ogg_crc_table()


def _ogg_crc(page: bytes) -> int:
  """The Ogg page checksum (CRC-32, polynomial 0x04C11DB7, not reflected, init 0)."""
  c = 0
  for b in page:
    c = ((c << 8) & 0xFFFFFFFF) ^ _OGG_CRC[((c >> 24) & 0xFF) ^ b]
  return c


def fixed_ogg_serial(data: bytes, serial: int = 0) -> bytes:
  """An Ogg stream with every page's serial number set to `serial` and its CRC redone
  (libsndfile draws the serial at random: the same audio would differ byte for byte)."""
  out = bytearray(data)
  i = 0
  while i < len(out):
    if out[i:i + 4] != b"OggS":
      raise ValueError(f"not an Ogg page at byte {i}")
    n = out[i + 26]
    size = 27 + n + sum(out[i + 27:i + 27 + n])
    out[i + 14:i + 18] = serial.to_bytes(4, "little")
    out[i + 22:i + 26] = bytes(4)
    out[i + 22:i + 26] = _ogg_crc(bytes(out[i:i + size])).to_bytes(4, "little")
    i += size
  return bytes(out)


def opus_bytes(samples: np.ndarray) -> bytes:
  """Mono Opus in Ogg at 16 kHz, as written to disk (deterministic bytes)."""
  buf = io.BytesIO()
  sf.write(buf, samples, SAMPLE_RATE, format="OGG", subtype="OPUS",
           compression_level=OPUS_COMPRESSION)
  return fixed_ogg_serial(buf.getvalue())


ENCODERS = {"flac": flac_bytes, "opus": opus_bytes}  # --format -> encoder


def make_utterance(spec: Spec, audio_dir: str, fmt: str = "flac") -> tuple[str, int, int]:
  """Writes audio_dir/<id>.<fmt>; returns (id, bytes, frames)."""
  samples = synthesize(spec.text, spec.espeak_args())
  data = ENCODERS[fmt](samples)
  with open(os.path.join(audio_dir, f"{spec.id}.{fmt}"), "wb") as f:
    f.write(data)
  return spec.id, len(data), len(samples)


def _work(job: tuple[Spec, str, str]) -> tuple[str, int, int]:
  return make_utterance(*job)


def manifest_line(spec: Spec, frames: int, fmt: str = "flac") -> dict:
  task, src, tgt = KIND_INFO[spec.kind]
  line = {"id": spec.id, "audio": f"audio/{spec.id}.{fmt}", "duration": frames / SAMPLE_RATE,
          "task": task, "text": spec.text, "source_lang": src, "target_lang": tgt}
  if spec.translation is not None:
    line["translation"] = spec.translation
  line["espeak"] = shlex.join(spec.espeak_args())
  return line


def _dumps(line: dict) -> str:
  return json.dumps(line, ensure_ascii=False) + "\n"


def _cost(spec: Spec, nbytes: int, frames: int, fmt: str = "flac") -> int:
  """Bytes an utterance adds: audio, its line in two manifests, a directory entry."""
  return (nbytes + 2 * len(_dumps(manifest_line(spec, frames, fmt)).encode())
          + PER_FILE_DIR_BYTES)


def _clean(out: str, overwrite: bool) -> None:
  """Makes `out` ready; with --overwrite removes what an earlier run wrote there."""
  if os.path.isdir(out) and os.listdir(out):
    if not overwrite:
      raise SystemExit(f"{out} is not empty; pass --overwrite to replace the corpus in it")
    shutil.rmtree(os.path.join(out, "audio"), ignore_errors=True)
    for name in os.listdir(out):
      if name.endswith(".jsonl") or name in ("README.md", "meta.json"):
        os.remove(os.path.join(out, name))
    if os.listdir(out):
      raise SystemExit(f"{out} holds files this script did not write: {os.listdir(out)}")
  os.makedirs(os.path.join(out, "audio"), exist_ok=True)


def build(out: str, counts: dict[str, dict[str, int]], seed: int, max_mb: float,
          workers: int, splits: Sequence[str] = ("test", "dev", "train"), fmt: str = "flac"
          ) -> list[tuple[Spec, int, int]]:
  """Writes the audio; returns (spec, bytes, frames) of every utterance kept, in order.

  Sentences are drawn for every split of `counts` (so the same seed and counts give the
  same sentences in each split), but only `splits` are spoken and kept: a corpus that
  adds training data to another one made with the same seed and dev/test counts, whose
  dev/test it then shares, disjoint from its training text.
  """
  specs = [s for s in plan(counts, seed) if s.split in splits]
  fill_start = next((i for i, s in enumerate(specs) if (s.split, s.kind) == ("train", "asr_en")),
                    len(specs))
  fixed, fill = specs[:fill_start], specs[fill_start:]
  audio_dir = os.path.join(out, "audio")
  limit = max_mb * MB if max_mb > 0 else float("inf")
  used = RESERVE_BYTES
  kept = []
  with multiprocessing.Pool(workers) as pool:
    for spec, (_, nbytes, frames) in zip(
        fixed, pool.imap(_work, [(s, audio_dir, fmt) for s in fixed], chunksize=2)):
      used += _cost(spec, nbytes, frames, fmt)
      kept.append((spec, nbytes, frames))
    if used > limit:
      raise SystemExit(f"dev, test and the fixed training kinds alone take {used / MB:.2f} MB, "
                       f"more than --max_mb {max_mb}: lower their counts")
    print(f"{len(fixed)} fixed utterances, {used / MB:.2f} MB", flush=True)
    batch = 8 * workers
    full = False
    for start in range(0, len(fill), batch):
      chunk = fill[start:start + batch]
      results = pool.map(_work, [(s, audio_dir, fmt) for s in chunk])
      for spec, (_, nbytes, frames) in zip(chunk, results):
        cost = _cost(spec, nbytes, frames, fmt)
        if full or used + cost > limit:
          full = True
          os.remove(os.path.join(audio_dir, f"{spec.id}.{fmt}"))
          continue
        used += cost
        kept.append((spec, nbytes, frames))
      if full:
        break
      print(f"  {len(kept) - len(fixed)} English ASR training utterances, {used / MB:.2f} MB",
            flush=True)
  return kept


def write_manifests(out: str, kept: Sequence[tuple[Spec, int, int]], fmt: str = "flac"
                    ) -> list[str]:
  """{split}.jsonl and {split}_{kind}.jsonl; returns the file names written."""
  files: dict[str, list[str]] = {}
  for split in ("train", "dev", "test"):
    if any(spec.split == split for spec, _, _ in kept):
      files[f"{split}.jsonl"] = []
  for spec, _, frames in kept:
    line = _dumps(manifest_line(spec, frames, fmt))
    files[f"{spec.split}.jsonl"].append(line)
    files.setdefault(f"{spec.split}_{spec.kind}.jsonl", []).append(line)
  for name, lines in files.items():
    with open(os.path.join(out, name), "w", encoding="utf-8") as f:
      f.writelines(lines)
  return sorted(files)


def _version(cmd: list[str]) -> str:
  try:
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


def espeak_version() -> str:
  """espeak-ng's version number ("1.51"), or "unknown"."""
  match = re.search(r"text-to-speech:\s*(\S+)", _version(["espeak-ng", "--version"]))
  return match.group(1) if match else "unknown"


def software_versions() -> dict[str, str]:
  """What the audio bytes depend on; the regeneration test compares espeak-ng's."""
  import importlib.metadata  # pylint: disable=import-outside-toplevel
  return {"espeak-ng": espeak_version(),
          "libsndfile": sf.__libsndfile_version__,
          "soundfile": importlib.metadata.version("soundfile"),
          "soxr": importlib.metadata.version("soxr"),
          "numpy": np.__version__,
          "machine": platform.machine()}


def _summary(kept: Sequence[tuple[Spec, int, int]]):
  """{(split, kind): (utterances, seconds, bytes)} and voices per language."""
  table: dict[tuple[str, str], list[float]] = {}
  voices: dict[str, set[str]] = {}
  for spec, nbytes, frames in kept:
    row = table.setdefault((spec.split, spec.kind), [0, 0.0, 0])
    row[0] += 1
    row[1] += frames / SAMPLE_RATE
    row[2] += nbytes
    voices.setdefault(spec.lang, set()).add(spec.voice)
  return table, voices


def _command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
  """The command line that remakes this corpus (non-default flags only)."""
  words = ["python", "scripts/make_corpus.py", "--out", args.out]
  for action in parser._actions:  # pylint: disable=protected-access
    dest = action.dest
    if dest in ("help", "out", "overwrite", "workers"):
      continue
    value = getattr(args, dest)
    if value != action.default:
      words += [action.option_strings[0], str(value)]
  return shlex.join(words + ["--overwrite"])


def write_readme(out: str, kept, manifests: Sequence[str], command: str, seed: int,
                 max_mb: float, fmt: str = "flac") -> None:
  """README.md: contents, voices, layout, the regenerating command, the licence."""
  table, voices = _summary(kept)
  audio_bytes = sum(n for _, n, _ in kept)
  manifest_bytes = sum(os.path.getsize(os.path.join(out, m)) for m in manifests)
  total_s = sum(r[1] for r in table.values())
  lines = [
      "# Synthetic speech corpus (espeak-ng)",
      "",
      "A small stand-in for the real corpora: English, German, Spanish and French ASR and",
      "English->German speech translation (S2TT), spoken by espeak-ng from sentences that",
      "`lalmjax/data/textgen.py` generates from small grammars (English with German",
      "translations; German, Spanish, French). No sentence is in two splits. Synthetic",
      "speech: fine for tests, demos and tiny models; not a benchmark of real speech.",
      "",
      "## Contents",
      "",
      f"{len(kept)} utterances, {total_s / 3600:.3f} hours ({total_s / 60:.1f} minutes);",
      f"audio {audio_bytes / MB:.2f} MB, manifests {manifest_bytes / MB:.2f} MB "
      f"(limit {max_mb:g} MB for the folder).",
      "",
      "| split | kind | task | language | utterances | minutes | MB |",
      "|---|---|---|---|---:|---:|---:|",
  ]
  for split in ("train", "dev", "test"):
    for kind in textgen.KINDS:
      if (split, kind) not in table:
        continue
      n, secs, nbytes = table[split, kind]
      task, src, tgt = KIND_INFO[kind]
      lang = src if task == "asr" else f"{src}->{tgt}"
      lines.append(f"| {split} | {kind} | {task} | {lang} | {n} | {secs / 60:.1f} | "
                   f"{nbytes / MB:.2f} |")
  absent = [s for s in ("train", "dev", "test") if not any(k[0] == s for k in table)]
  if absent:
    lines += ["", f"No {'/'.join(absent)} split here: only the splits named by `--splits` are",
              "spoken. A corpus made with the same seed and dev/test counts (the command",
              "below; data/demo for the defaults) has them, disjoint from this training text."]
  train_kinds = {kind for split, kind in table if split == "train"}
  if "asr_en" in train_kinds:
    lines += ["", "English ASR training is as large as the size limit allows."]
  missing = [k for k in ("asr_de", "asr_es", "asr_fr") if k not in train_kinds]
  if missing:
    lines += [f"{', '.join(missing)} are in dev/test only (zero-shot evaluation of a model",
              "trained on the other kinds); the command below takes training counts for them."]
  lines += [
      "",
      "Voices: espeak-ng voice + variant, speed 130-190 words/minute, pitch 30-70, drawn",
      "per utterance from the seed (the `espeak` field of each manifest line has them).",
      f"Variants: {', '.join(v.lstrip('+') or '(none)' for v in VARIANTS)}.",
      "",
      "| language | espeak-ng voices | voice+variant pairs used |",
      "|---|---|---:|",
  ]
  for lang in ("en", "de", "es", "fr"):
    if lang in voices:
      lines.append(f"| {lang} | {', '.join(VOICES[lang])} | {len(voices[lang])} |")
  lines += [
      "",
      "## Layout",
      "",
      ("- `audio/<id>.flac`: 16 kHz mono FLAC, 16-bit." if fmt == "flac" else
       f"- `audio/<id>.opus`: 16 kHz mono Opus in Ogg (libsndfile compression level "
       f"{OPUS_COMPRESSION}, stream serial 0)."),
      "- `train.jsonl`, `dev.jsonl`, `test.jsonl`: every utterance of the split.",
      "- `<split>_<kind>.jsonl` (kind: asr_en, asr_de, asr_es, asr_fr, s2tt_en_de): one kind.",
      "- `meta.json`: seed, counts, software versions the bytes depend on.",
      "",
      "Manifest lines (DESIGN.md, \"Data on disk\"; `audio` is relative to the manifest):",
      "",
      "```json",
      _dumps(manifest_line(kept[0][0], kept[0][2], fmt)).strip() if kept else "",
      "```",
      "",
      "S2TT lines have `\"task\": \"s2tt\"`, `\"target_lang\": \"de\"` and a `translation`.",
      "",
      "## Regenerating",
      "",
      "```sh",
      command,
      "```",
      "",
      f"Seed {seed}. The files come out bit for bit the same given the same espeak-ng,",
      "libsndfile/libFLAC and soxr (versions in `meta.json`): espeak-ng is deterministic",
      "for a voice, speed, pitch and text; soxr and the FLAC encoder are deterministic"
      + (" (so is libopus; the Ogg serial is fixed)." if fmt == "opus" else "."),
      "`tests/test_textgen.py` checks the manifests against the files and, where espeak-ng",
      "is installed with the recorded version, remakes a few utterances and compares bytes.",
      "",
      "## Licence",
      "",
      "The sentences are generated by this project's code and the audio is espeak-ng's",
      "output for them: the project's own, under the project's licence. espeak-ng",
      "(GPL-3.0) is used as a tool; none of its code or data files are included here.",
      "",
  ]
  with open(os.path.join(out, "README.md"), "w", encoding="utf-8") as f:
    f.write("\n".join(lines))


def write_meta(out: str, seed: int, counts, kept, max_mb: float, versions,
               fmt: str = "flac") -> None:
  """meta.json: seed, requested and written counts, a digest of the audio, versions."""
  written: dict[str, dict[str, int]] = {s: {k: 0 for k in textgen.KINDS} for s in counts}
  for spec, _, _ in kept:
    written[spec.split][spec.kind] += 1
  sha = hashlib.sha256()
  for spec, _, _ in kept:
    with open(os.path.join(out, "audio", f"{spec.id}.{fmt}"), "rb") as f:
      sha.update(hashlib.sha256(f.read()).digest())
  meta = {"seed": seed, "max_mb": max_mb, "requested": counts, "written": written,
          "sample_rate": SAMPLE_RATE, "resampler": "soxr HQ", "format": fmt,
          f"{fmt}_compression_level": FLAC_COMPRESSION if fmt == "flac" else OPUS_COMPRESSION,
          "audio_sha256": sha.hexdigest(), "versions": versions}
  with open(os.path.join(out, "meta.json"), "w", encoding="utf-8") as f:
    json.dump(meta, f, indent=2, ensure_ascii=False)
    f.write("\n")


def folder_bytes(path: str) -> int:
  """What `du -sb` reports: apparent sizes of every file and directory."""
  total = os.lstat(path).st_size
  for root, dirs, files in os.walk(path):
    for name in dirs + files:
      total += os.lstat(os.path.join(root, name)).st_size
  return total


def check_corpus(out: str, manifests: Iterable[str]) -> None:
  """Each split's texts disjoint from the others'; every manifest's audio exists."""
  by_split: dict[str, list[textgen.Sentence]] = {}
  for name in manifests:
    split = name.split(".")[0].split("_")[0]
    with open(os.path.join(out, name), encoding="utf-8") as f:
      for raw in f:
        line = json.loads(raw)
        if not os.path.isfile(os.path.join(out, line["audio"])):
          raise RuntimeError(f"{name}: {line['audio']} is missing")
        by_split.setdefault(split, []).append(
            textgen.Sentence(line["text"], line["source_lang"], line.get("translation")))
  textgen.check_disjoint(by_split)


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", default="data/demo", help="output folder")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--max_mb", type=float, default=20.0,
                      help="size limit of the folder in MB (1e6 bytes); 0 = none")
  parser.add_argument("--workers", type=int, default=2, help="espeak-ng processes")
  parser.add_argument("--overwrite", action="store_true",
                      help="replace a corpus an earlier run wrote in --out")
  for split, per_kind in DEFAULT_COUNTS.items():
    for kind, n in per_kind.items():
      note = " (upper bound: --max_mb stops it earlier)" if (split, kind) == (
          "train", "asr_en") else ""
      parser.add_argument(f"--{split}_{kind}", type=int, default=n,
                          help=f"utterances of {kind} in {split}{note}")
  parser.add_argument("--format", default="flac", choices=sorted(ENCODERS),
                      help="audio files: flac (lossless) or opus (lossy, ~4x smaller)")
  parser.add_argument("--splits", default="test,dev,train",
                      help="splits to speak and write (all are drawn: see build)")
  args = parser.parse_args(argv)
  splits = tuple(x for x in args.splits.split(",") if x)
  if not splits or set(splits) - set(DEFAULT_COUNTS):
    parser.error(f"--splits={args.splits!r}: expected a comma list of {list(DEFAULT_COUNTS)}")
  if shutil.which("espeak-ng") is None:
    raise SystemExit("espeak-ng is not installed (apt-get install espeak-ng)")
  counts = {split: {kind: getattr(args, f"{split}_{kind}") for kind in per_kind}
            for split, per_kind in DEFAULT_COUNTS.items()}
  out = args.out
  _clean(out, args.overwrite)
  kept = build(out, counts, args.seed, args.max_mb, args.workers, splits, args.format)
  manifests = write_manifests(out, kept, args.format)
  versions = software_versions()
  write_meta(out, args.seed, counts, kept, args.max_mb, versions, args.format)
  write_readme(out, kept, manifests, _command(args, parser), args.seed, args.max_mb,
               args.format)
  check_corpus(out, manifests)
  size = folder_bytes(out)
  table, _ = _summary(kept)
  for (split, kind), (n, secs, nbytes) in sorted(table.items()):
    print(f"{split:5s} {kind:10s} {n:5d} utterances {secs / 60:6.1f} min {nbytes / MB:6.2f} MB")
  print(f"{out}: {len(kept)} utterances, {size / MB:.2f} MB on disk (du -sb)")
  if args.max_mb > 0 and size > args.max_mb * MB:
    print(f"warning: {size / MB:.2f} MB is over --max_mb {args.max_mb}", file=sys.stderr)


if __name__ == "__main__":
  main()
