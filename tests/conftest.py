"""Shared test fixtures: paths to the bundled speech and the real whisper-tiny.en."""

import os

# 8 CPU devices, so mesh tests run on a real (data, fsdp, tensor) mesh; must be set
# before jax initialises its backend.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_force_host_platform_device_count=8").strip()

import sys  # pylint: disable=g-import-not-at-top,wrong-import-position

import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

# The configs package sits beside lalmjax at the repository root.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
DATA_DIR = os.path.join(TESTS_DIR, "data")
# ../shared sits beside the repository (as in CI).
WHISPER_TINY_EN = os.path.abspath(
    os.path.join(TESTS_DIR, "..", "..", "shared", "checkpoints", "whisper-tiny.en"))

# Spoken with espeak-ng (22.05 kHz, so loading also exercises resampling).
SPEECH = {
    "speech_en_1.wav": "The quick brown fox jumps over the lazy dog.",
    "speech_en_2.flac": "Speech recognition systems turn spoken words into written text.",
    "speech_de_1.wav": "Guten Morgen, wie geht es dir heute?",
}


@pytest.fixture(scope="session")
def whisper_tiny_en():
  if not os.path.isdir(WHISPER_TINY_EN):
    pytest.fail(f"{WHISPER_TINY_EN} is missing: ../shared must sit beside the repository")
  return WHISPER_TINY_EN


def speech_path(name: str) -> str:
  return os.path.join(DATA_DIR, name)
