"""Prepared datasets: a reader's examples in ArrayRecord shards, read by index.

`python -m dp_medtf.data.prepare` decodes a dataset once and stores each
example exactly as its reader's `load_example` returns it (decoded, resized,
cropped; before any normalisation), so that training reads one record per
example instead of decoding an image file. A prepared folder holds

  * `prepared.json`: the metadata, written last, so its presence means the
    folder is complete: format version, dataset, the recipe fields that
    shape the examples (its fingerprint), class and modality names, the
    recipe's fixed normalisation constants, and per split the example shapes
    and the shards with their record counts and sizes;
  * `<split>-NNNNN-of-MMMMM.array_record`: the shards, one record per example
    (random access: group_size 1);
  * `<split>-labels.npy`, `<split>-modalities.npy`: int32 class labels (for
    classification) and modality indices per example.

While a prepare is under way the folder also holds `prepare_progress.json`;
a folder with it and without `prepared.json` was interrupted, and loading it
fails naming the folder, as does a missing, truncated or resized shard.

A record is two tag bytes (x and y encodings) and the raw little-endian
arrays. x is stored in the smallest form that reproduces the float32 image
bit for bit: uint8 q with x = q * float32(1 / 255) (8-bit JPEGs as TensorFlow
decodes them), uint8 q with x = (q * 257) * float32(1 / 65535) (8-bit PNGs,
which TensorFlow decodes at 16 bits), uint16 p with x = p * float32(1 /
65535) (16-bit PNGs), or else float32 (resampled images, volumes). y is
stored as uint8 when it fits, else int32.

RadImageNet's per-modality standardisation is not stored: the record split
applies it from the run's config.data.modality_stats and the stored modality
of each example, with the same operations as the raw reader.

ArrayRecord reads local files only: a gs:// prepared folder is copied once
into a local cache ($DP_MEDTF_CACHE, default ~/.cache/dp_medtf).

Example:

  The demo dataset at 8 x 8 pixels, prepared and read back:

  >>> from dp_medtf import recipes
  >>> from dp_medtf.data import record_writer
  >>> config = recipes.load('demo')
  >>> config.data.image_size, config.input_shape = 8, (8, 8, 3)
  >>> meta = record_writer.prepare(config, '', 'demo_prepared',
  ...                              log=lambda _: None)
  >>> is_prepared('demo_prepared')
  True
  >>> split = load_split(config, 'train', 'demo_prepared')
  >>> len(split), split.load_example(0)[0].shape
  (2400, TensorShape([8, 8, 3]))
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import os
import threading
from typing import Any, Sequence

from array_record.python import array_record_module
import ml_collections
import numpy as np
import tensorflow as tf

from dp_medtf import cli
from dp_medtf import json_files
from dp_medtf.data import files

METADATA = 'prepared.json'
PROGRESS = 'prepare_progress.json'
FORMAT_VERSION = 1
SHARD_SUFFIX = '.array_record'
WRITER_OPTIONS = 'group_size:1,uncompressed'
READER_OPTIONS = 'readahead_buffer_size:0,max_parallelism:0'
X_UINT8, X_UINT8_PNG, X_UINT16, X_FLOAT32 = 0, 1, 2, 3
Y_UINT8, Y_INT32 = 0, 1
# Config fields that do not change the stored examples: caching, checks,
# and the per-modality standardisation (applied when reading).
CONTENT_FREE_FIELDS = ('cache_bytes', 'verify_files', 'normalize_by_modality',
                       'modality_stats')
_INV_255 = np.float32(1 / 255)
_INV_65535 = np.float32(1 / 65535)


class PreparedDataError(files.DataError):
  """A prepared folder that is incomplete, corrupt or for another recipe."""


def shard_name(split: str, shard: int, count: int) -> str:
  """`<split>-NNNNN-of-MMMMM.array_record`."""
  return f'{split}-{shard:05d}-of-{count:05d}{SHARD_SUFFIX}'


def labels_name(split: str) -> str:
  return f'{split}-labels.npy'


def modalities_name(split: str) -> str:
  return f'{split}-modalities.npy'


def is_prepared(folder: str) -> bool:
  """Whether `folder` is (or was being made into) a prepared dataset."""
  return bool(folder) and any(
      tf.io.gfile.exists(os.path.join(folder, name))
      for name in (METADATA, PROGRESS))


def jsonable(value: Any) -> Any:
  """Config values as JSON gives them back (tuples as lists)."""
  if isinstance(value, ml_collections.ConfigDict):
    value = value.to_dict()
  return json.loads(json.dumps(value, sort_keys=True))


def fingerprint(config: ml_collections.ConfigDict,
                seeded: bool) -> dict[str, Any]:
  """The recipe fields that determine the stored examples.

  Args:
    config: the recipe.
    seeded: whether the examples depend on config.seed (HAM10000's training
      crops); prepare finds out by loading one example with two seeds.

  Returns:
    A JSON-able dict: dataset, input_shape, the content fields of
    config.data and, when seeded, the seed.
  """
  data = {k: v for k, v in jsonable(config.data).items()
          if k not in CONTENT_FREE_FIELDS}
  found = {'dataset': config.dataset,
           'input_shape': jsonable(tuple(config.input_shape)), 'data': data}
  if seeded:
    found['seed'] = int(config.seed)
  return found


def _first_difference(prepared: dict, wanted: dict,
                      prefix: str = '') -> tuple[str, Any, Any] | None:
  """(dotted field, prepared value, wanted value) of the first mismatch."""
  for key in sorted(set(prepared) | set(wanted)):
    a, b = prepared.get(key), wanted.get(key)
    if isinstance(a, dict) and isinstance(b, dict):
      found = _first_difference(a, b, f'{prefix}{key}.')
      if found:
        return found
    elif a != b:
      return f'{prefix}{key}', a, b
  return None


def _exactly(x: np.ndarray, stored: np.ndarray, scale: np.float32) -> bool:
  """Whether stored * scale, in float32, is x bit for bit."""
  return np.array_equal((stored.astype(np.float32) * scale).view('<u4'),
                        x.view('<u4'))


def encode(x: np.ndarray, y: np.ndarray) -> bytes:
  """One record: tag bytes, then x and y (see the module docstring)."""
  x = np.ascontiguousarray(x, '<f4')
  q = np.clip(np.rint(x * 255), 0, 255)
  p = np.clip(np.rint(x * 65535), 0, 65535)
  if _exactly(x, q, _INV_255):
    x_tag, x_bytes = X_UINT8, q.astype(np.uint8).tobytes()
  elif _exactly(x, q * 257, _INV_65535):
    x_tag, x_bytes = X_UINT8_PNG, q.astype(np.uint8).tobytes()
  elif _exactly(x, p, _INV_65535):
    x_tag, x_bytes = X_UINT16, p.astype('<u2').tobytes()
  else:
    x_tag, x_bytes = X_FLOAT32, x.tobytes()
  y = np.asarray(y)
  if np.all((y >= 0) & (y <= 255)):
    y_tag, y_bytes = Y_UINT8, y.astype(np.uint8).tobytes()
  else:
    y_tag, y_bytes = Y_INT32, np.ascontiguousarray(y, '<i4').tobytes()
  return bytes([x_tag, y_tag]) + x_bytes + y_bytes


_X_DTYPES = {X_UINT8: np.uint8, X_UINT8_PNG: np.uint8, X_UINT16: '<u2',
             X_FLOAT32: '<f4'}


def decode(record: bytes, x_shape: Sequence[int],
           y_shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
  """(float32 x, int32 y) of one record: encode's inverse, bit for bit."""
  nx, ny = math.prod(x_shape), math.prod(y_shape)
  x_tag, y_tag = record[0], record[1]
  if y_tag not in (Y_UINT8, Y_INT32):
    raise ValueError(f'unknown label tag {y_tag}')
  stored = np.frombuffer(record, _X_DTYPES[x_tag], nx, offset=2)
  y = np.frombuffer(record, np.uint8 if y_tag == Y_UINT8 else '<i4', ny,
                    offset=2 + stored.nbytes)
  if len(record) != 2 + stored.nbytes + y.nbytes:
    raise ValueError(f'{len(record)} bytes, not {2 + stored.nbytes + y.nbytes}')
  x = stored.astype(np.float32)
  if x_tag == X_UINT8:
    x *= _INV_255
  elif x_tag == X_UINT8_PNG:
    x = (x * np.float32(257)) * _INV_65535
  elif x_tag == X_UINT16:
    x *= _INV_65535
  return x.reshape(x_shape), y.astype(np.int32).reshape(y_shape)


def read_metadata(folder: str) -> dict[str, Any]:
  """The metadata of a complete prepared folder.

  Raises:
    PreparedDataError: naming the folder, when the prepare was interrupted
      or the metadata is unreadable or of another format version.
  """
  path = os.path.join(folder, METADATA)
  if not tf.io.gfile.exists(path):
    raise PreparedDataError(
        f'--data_dir={folder}: an incomplete prepared dataset (no {METADATA}:'
        ' the prepare was interrupted); run python -m dp_medtf.data.prepare '
        'again with --output_dir set to it.')
  try:
    meta = json_files.read_json(path)
  except json_files.JsonFileError as e:
    raise PreparedDataError(
        f'--data_dir={folder}: {METADATA} is corrupt ({e}); prepare the '
        'dataset again.') from None
  if not isinstance(meta, dict) or meta.get('format') != FORMAT_VERSION:
    raise PreparedDataError(
        f'--data_dir={folder}: {METADATA} is not format {FORMAT_VERSION} of '
        'a prepared dataset; prepare the dataset again.')
  return meta


def check_recipe(meta: dict[str, Any], config: ml_collections.ConfigDict,
                 folder: str) -> None:
  """Refuses a prepared folder made for another dataset or recipe.

  Raises:
    PreparedDataError: naming the folder and the first differing field.
  """
  if meta['dataset'] != config.dataset:
    raise PreparedDataError(
        f'--data_dir={folder} holds a prepared {meta["dataset"]} dataset, not'
        f' {config.dataset}.')
  difference = _first_difference(
      meta['fingerprint'], fingerprint(config, meta['seeded']))
  if difference:
    field, prepared, wanted = difference
    raise PreparedDataError(
        f'--data_dir={folder} was prepared with --config.{field}={prepared}, '
        f'but this run has {wanted}; prepare it again with this recipe.')


def _local_copy(folder: str, meta: dict[str, Any], names: list[str]) -> str:
  """A local folder holding `names` of a remote prepared folder."""
  root = os.environ.get('DP_MEDTF_CACHE',
                        os.path.join(os.path.expanduser('~'), '.cache',
                                     'dp_medtf'))
  key = hashlib.sha256(f'{folder}|{meta["created"]}'.encode()).hexdigest()
  local = os.path.join(root, 'prepared', key[:16])
  os.makedirs(local, exist_ok=True)
  for name in names:
    target = os.path.join(local, name)
    source = os.path.join(folder, name)
    if (os.path.exists(target) and
        os.path.getsize(target) == tf.io.gfile.stat(source).length):
      continue
    tf.io.gfile.copy(source, target + '.incomplete', overwrite=True)
    os.replace(target + '.incomplete', target)
  return local


def _load_npy(path: str) -> np.ndarray:
  with tf.io.gfile.GFile(path, 'rb') as f:
    return np.load(io.BytesIO(f.read()), allow_pickle=False)


class RecordSplit:
  """One split of a prepared folder (see dp_medtf.data for the interface).

  Args:
    folder: the prepared folder (as given, for messages).
    local: where its shards are on local disk (folder itself, or a cache).
    meta: its metadata.
    split: 'train', 'validation' or 'test'.
    affine: per-modality (scale, shift) to apply, or None.
  """

  def __init__(self, folder: str, local: str, meta: dict[str, Any],
               split: str, affine: tuple[np.ndarray, np.ndarray] | None):
    info = meta['splits'][split]
    self.folder = folder
    self.split = split
    self.x_shape = tuple(info['x_shape'])
    self.y_shape = tuple(info['y_shape'])
    self._paths = [os.path.join(local, s['name']) for s in info['shards']]
    counts = np.array([s['num_records'] for s in info['shards']], np.int64)
    self._ends = np.cumsum(counts)
    self._starts = self._ends - counts
    self._num = int(info['num_examples'])
    self._readers: dict[int, Any] = {}
    self._lock = threading.Lock()
    self._affine = affine
    self.modalities = _load_npy(os.path.join(folder, modalities_name(split)))
    labels_path = os.path.join(folder, labels_name(split))
    self._labels = (_load_npy(labels_path) if tf.io.gfile.exists(labels_path)
                    else None)
    for shard in range(len(self._paths)):  # Checks each shard's index.
      self._reader(shard)

  def __len__(self) -> int:
    return self._num

  def _reader(self, shard: int):
    with self._lock:
      reader = self._readers.get(shard)
      if reader is None:
        path = self._paths[shard]
        try:
          reader = array_record_module.ArrayRecordReader(path, READER_OPTIONS)
          count = reader.num_records()
        except RuntimeError as e:
          raise PreparedDataError(
              f'--data_dir={self.folder}: shard {os.path.basename(path)} is '
              f'corrupt ({cli.last_line(str(e))[:120]}); prepare the '
              'dataset again.') from None
        expected = int(self._ends[shard] - self._starts[shard])
        if count != expected:
          raise PreparedDataError(
              f'--data_dir={self.folder}: shard {os.path.basename(path)} holds'
              f' {count} records, not {expected}; prepare the dataset again.')
        self._readers[shard] = reader
      return reader

  def _shard_error(self, shard: int, where: str,
                   error: Exception) -> PreparedDataError:
    return PreparedDataError(
        f'--data_dir={self.folder}: shard '
        f'{os.path.basename(self._paths[shard])} is corrupt {where} '
        f'({cli.last_line(str(error))[:120]}); prepare the dataset again.')

  def read_many(self, indices: Sequence[int]) -> list[bytes]:
    """The records of examples `indices`, in that order.

    One read per shard: random reads are bound by the disk's latency, and
    ArrayRecord reads one call's records without waiting for each in turn.
    """
    indices = np.asarray(indices, np.int64).reshape(-1)
    shards = np.searchsorted(self._ends, indices, side='right')
    out: list[bytes] = [b''] * len(indices)
    for shard in np.unique(shards):
      where = np.flatnonzero(shards == shard)
      shard = int(shard)
      reader = self._reader(shard)
      try:
        found = reader.read((indices[where] - self._starts[shard]).tolist())
      except RuntimeError as e:
        for index in indices[where]:  # Names the record that fails.
          try:
            reader.read([int(index - self._starts[shard])])
          except RuntimeError as e_one:
            raise self._shard_error(shard, f'at example {int(index)}',
                                    e_one) from None
        raise self._shard_error(shard, 'in a batched read', e) from None
      for position, record in zip(where, found):
        out[position] = record
    return out

  def read(self, index: int) -> bytes:
    """The record of example `index`."""
    return self.read_many([index])[0]

  def _decode_many(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for index, record in zip(indices, self.read_many(indices)):
      try:
        x, y = decode(record, self.x_shape, self.y_shape)
      except (KeyError, ValueError, IndexError) as e:
        shard = int(np.searchsorted(self._ends, index, side='right'))
        raise self._shard_error(shard, f'at example {int(index)}', e) from None
      xs.append(x)
      ys.append(y)
    return np.stack(xs), np.stack(ys)

  @functools.cached_property
  def _affine_tensors(self):
    with tf.init_scope():  # Eager tensors, shared by every traced graph.
      scale, shift = self._affine
      return (tf.constant(self.modalities.astype(np.int32)),
              tf.constant(scale), tf.constant(shift))

  def load_batch(self, indices: tf.Tensor):
    """(x [b, ...], y [b, ...]) of examples `indices` [b], traceable."""
    indices = tf.reshape(tf.cast(indices, tf.int64), [-1])
    x, y = tf.numpy_function(self._decode_many, [indices],
                             [tf.float32, tf.int32], stateful=False)
    x = tf.ensure_shape(x, [None, *self.x_shape])
    y = tf.ensure_shape(y, [None, *self.y_shape])
    if self._affine is not None:
      modalities, scale, shift = self._affine_tensors
      m = tf.gather(modalities, indices)
      per_example = [-1] + [1] * len(self.x_shape)
      x = (x * tf.reshape(tf.gather(scale, m), per_example) +
           tf.reshape(tf.gather(shift, m), per_example))
    return x, y

  def load_example(self, index: tf.Tensor):
    """(x, y) of example `index`, traceable by tf.data."""
    x, y = self.load_batch(index)
    return x[0], y[0]

  @functools.cached_property
  def labels(self) -> np.ndarray:
    """int32 [N] class labels, or [N, *spatial] label maps (reads them all)."""
    if self._labels is not None:
      return self._labels
    block = 64  # Label maps come with their volumes: read a few at a time.
    return np.concatenate([
        self._decode_many(np.arange(start, min(start + block, len(self))))[1]
        for start in range(0, len(self), block)])


def _check_shards(folder: str, meta: dict[str, Any], split: str) -> None:
  """Every shard of `split` is present with its recorded size."""
  for shard in meta['splits'][split]['shards']:
    path = os.path.join(folder, shard['name'])
    if not tf.io.gfile.exists(path):
      raise PreparedDataError(f'--data_dir={folder}: shard {shard["name"]} '
                              'is missing; prepare the dataset again.')
    size = tf.io.gfile.stat(path).length
    if size != shard['bytes']:
      raise PreparedDataError(
          f'--data_dir={folder}: shard {shard["name"]} has {size} bytes, not '
          f'{shard["bytes"]} (truncated or changed); prepare the dataset '
          'again.')


def load_split(config: ml_collections.ConfigDict, split: str,
               data_dir: str):
  """One split of a prepared folder.

  Args:
    config: the run's recipe; its fingerprint must match the folder's.
    split: 'train', 'validation' or 'test'.
    data_dir: the prepared folder (local or gs://).

  Returns:
    A RecordSplit, or an ArraySplit of the same examples when they fit in
    config.data.cache_bytes.

  Raises:
    PreparedDataError: naming the folder, for an interrupted prepare,
      missing or damaged files, or another dataset or recipe.
  """
  meta = read_metadata(data_dir)
  check_recipe(meta, config, data_dir)
  if split not in meta['splits']:
    raise PreparedDataError(f'--data_dir={data_dir}: no {split} split.')
  _check_shards(data_dir, meta, split)
  local = data_dir
  if cli.is_remote(data_dir):
    local = _local_copy(data_dir, meta, [
        s['name'] for s in meta['splits'][split]['shards']])
  affine = None
  if config.data.get('normalize_by_modality', False):
    from dp_medtf.data import radimagenet  # pylint: disable=g-import-not-at-top
    affine = radimagenet.modality_affine(
        tuple(meta['modalities']), files.freeze(config.data))
  records = RecordSplit(data_dir, local, meta, split, affine)
  return files.load_into_memory(records,
                                int(config.data.get('cache_bytes', 0)))
