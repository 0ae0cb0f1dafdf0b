"""JSON files, local or gs://, read and written one way everywhere.

`write_json` serialises first (strict JSON: infinities become the string
'inf', NaN is refused) and then writes through a temporary file renamed over
the target, so a reader never sees half a file and a failed write leaves the
old one. `read_json` turns 'inf' back into a float only where asked.

Example:

  >>> import tempfile, os
  >>> path = os.path.join(tempfile.mkdtemp(), 'r.json')
  >>> write_json(path, {'epsilon': float('inf'), 'steps': 3})
  >>> read_json(path)
  {'epsilon': 'inf', 'steps': 3}
  >>> read_json(path + '.missing', default=None) is None
  True
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

_REQUIRED = object()


class JsonFileError(ValueError):
  """A JSON file is missing, unreadable or malformed; names the file."""


def _gfile():
  # Imported on use: the sweep launcher reads and writes JSON without
  # starting TensorFlow.
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  return tf.io.gfile


def to_strict(obj: Any) -> Any:
  """`obj` with infinite floats as 'inf' / '-inf' (JSON has no infinity)."""
  if isinstance(obj, float) and math.isinf(obj):
    return 'inf' if obj > 0 else '-inf'
  if isinstance(obj, dict):
    return {k: to_strict(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [to_strict(v) for v in obj]
  return obj


def write_json(path: str, obj: Any) -> None:
  """Writes `obj` as strict JSON to `path`, atomically.

  Args:
    path: local or gs:// file; its folder is created if missing.
    obj: JSON-serialisable, infinities allowed.

  Raises:
    ValueError: `obj` holds NaN or something JSON cannot hold; nothing is
      written then.
  """
  text = json.dumps(to_strict(obj), indent=2, allow_nan=False)
  gfile = _gfile()
  folder = os.path.dirname(path)
  if folder:
    gfile.makedirs(folder)
  tmp = path + '.tmp'
  with gfile.GFile(tmp, 'w') as f:
    f.write(text)
  gfile.rename(tmp, path, overwrite=True)


def read_json(path: str, default: Any = _REQUIRED) -> Any:
  """Parses the JSON file at `path` (local or gs://).

  Args:
    path: the file.
    default: returned when the file does not exist; without it a missing
      file raises.

  Returns:
    The parsed value.

  Raises:
    JsonFileError: naming the file, when it is missing (and no default is
      given), unreadable or not valid JSON.
  """
  gfile = _gfile()
  if not gfile.exists(path):
    if default is not _REQUIRED:
      return default
    raise JsonFileError(f'{path} not found.')
  try:
    with gfile.GFile(path, 'rb') as f:
      text = f.read().decode('utf-8-sig', errors='replace')
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise JsonFileError(f'{path}: not valid JSON ({e}).') from None
  except OSError as e:
    raise JsonFileError(f'{path}: cannot be read ({e}).') from None
