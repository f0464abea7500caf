"""Parsing the `:arg` of `--config=configs/<name>.py:arg` (big_vision style).

`arg` is for choices that change several fields at once: `method=uniavg,k=3`,
`runlocal`. Each config declares its options with types and defaults; an unknown key
or a value of the wrong type fails with the option's name.
"""

from __future__ import annotations

import ml_collections


def _convert(key: str, value: str, default):
  if isinstance(default, bool):
    if value.lower() in ("1", "true", "yes", ""):
      return True
    if value.lower() in ("0", "false", "no"):
      return False
    raise ValueError(f"config arg {key}={value!r}: expected true or false")
  try:
    return type(default)(value)
  except ValueError:
    raise ValueError(f"config arg {key}={value!r}: expected a {type(default).__name__}") from None


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """'method=uniavg,k=3,runlocal' -> ConfigDict(method='uniavg', k=3, runlocal=True).

  Every key must be one of `defaults` (which also give the types); a bare key sets a
  bool option to True.
  """
  out = dict(defaults)
  for item in (arg or "").split(","):
    item = item.strip()
    if not item:
      continue
    key, _, value = item.partition("=")
    key = key.strip()
    if key not in defaults:
      raise ValueError(f"config arg {key!r} is unknown; options: {sorted(defaults)}")
    if "=" not in item and not isinstance(defaults[key], bool):
      raise ValueError(f"config arg {key!r} needs a value ({key}=...)")
    out[key] = _convert(key, value.strip(), defaults[key])
  return ml_collections.ConfigDict(out)
