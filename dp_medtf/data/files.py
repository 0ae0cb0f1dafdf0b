"""Shared helpers of the readers of datasets in their original layout.

One helper per job: listing and finding folder entries (case-insensitively,
skipping macOS `._*` files), reading CSV and JSON, assigning groups to
train/validation/test, decoding and checking images inside tf.data, resizing
and cropping, checking files up front, and a split over image files. Every
data path goes through tf.io.gfile, so gs:// folders work like local ones.

Example:

  >>> with open('metadata.csv', 'w') as f:
  ...   _ = f.write('lesion_id,image_id,dx\\nl1,i1,nv\\nl2,i2,mel\\n')
  >>> header, rows = read_csv('metadata.csv',
  ...                         required=('lesion_id', 'image_id', 'dx'))
  >>> header, rows[0]
  (['lesion_id', 'image_id', 'dx'],
   (2, {'lesion_id': 'l1', 'image_id': 'i1', 'dx': 'nv'}))
  >>> assign_splits(['l1', 'l2', 'l3'], ['nv', 'nv', 'mel'],
  ...               test_fraction=0.34, validation_fraction=0.0, seed=0)
  {'l1': 'train', 'l2': 'test', 'l3': 'train'}
"""

from __future__ import annotations

import collections
import concurrent.futures
import csv
import dataclasses
import functools
import io
import os
from typing import Any, Callable, Iterable, Mapping, Sequence

from absl import logging
import numpy as np
import tensorflow as tf

from dp_medtf import json_files
from dp_medtf.data.split import ArraySplit
from dp_medtf.data.split import Split

_JPEG_START = b'\xff\xd8\xff'
_JPEG_END = b'\xff\xd9'
_PNG_START = b'\x89PNG\r\n\x1a\n'
_PNG_END = b'IEND'
# Encoders may pad a file after its end marker; look for it this far back.
_TAIL_BYTES = 64
_MAX_LISTED = 10


class DataError(ValueError):
  """Missing or bad dataset input; the message names the file or flag."""


def is_hidden(name: str) -> bool:
  """Whether a folder entry is hidden (macOS `._*` forks, .DS_Store, ...)."""
  return os.path.basename(name.rstrip('/')).startswith('.')


def require_dir(path: str, what: str) -> None:
  """Raises DataError naming `what` unless `path` is a folder."""
  if not tf.io.gfile.isdir(path):
    raise DataError(f'{what}: folder {path} not found.')


def list_dir(folder: str) -> list[str]:
  """Sorted names of the visible entries of a folder (no trailing '/')."""
  require_dir(folder, 'listing')
  names = (n.rstrip('/') for n in tf.io.gfile.listdir(folder))
  return sorted(n for n in names if not is_hidden(n))


def find_entries(folder: str, names: Iterable[str]) -> list[str]:
  """Paths of the entries of `folder` named like `names`, ignoring case."""
  wanted = {n.lower() for n in names}
  return [os.path.join(folder, n) for n in list_dir(folder)
          if n.lower() in wanted]


def missing_files(paths: Sequence[str]) -> list[str]:
  """The paths that do not exist, listing each parent folder only once."""
  by_folder = collections.defaultdict(list)
  for path in paths:
    by_folder[os.path.dirname(path)].append(path)
  missing = []
  for folder, members in by_folder.items():
    present = (set(tf.io.gfile.listdir(folder))
               if tf.io.gfile.isdir(folder) else set())
    missing += [p for p in members if os.path.basename(p) not in present]
  return missing


def read_csv(path: str, required: Sequence[str],
             delimiter: str = ',') -> tuple[list[str], list[tuple[int, dict]]]:
  """Reads a CSV file with a header row.

  Args:
    path: the file.
    required: columns that must be present.
    delimiter: the field separator.

  Returns:
    The header and (line number, row) pairs with stripped values.

  Raises:
    DataError: naming the file, if it is missing or lacks a column.
  """
  if not tf.io.gfile.exists(path):
    raise DataError(f'{path} not found.')
  with tf.io.gfile.GFile(path, 'rb') as f:
    text = f.read().decode('utf-8-sig', errors='replace')
  reader = csv.reader(io.StringIO(text), delimiter=delimiter)
  header = [h.strip() for h in next(reader, [])]
  absent = [c for c in required if c not in header]
  if absent:
    raise DataError(f'{path}: missing column(s) {absent}; found {header}.')
  rows = []
  for values in reader:
    if not any(v.strip() for v in values):
      continue
    if len(values) != len(header):
      raise DataError(f'{path}, line {reader.line_num}: {len(values)} fields, '
                      f'expected {len(header)}.')
    rows.append((reader.line_num,
                 dict(zip(header, (v.strip() for v in values)))))
  return header, rows


def read_json(path: str) -> Any:
  """Parses a dataset's JSON file; DataError naming it if missing or malformed."""
  try:
    return json_files.read_json(path)
  except json_files.JsonFileError as e:
    raise DataError(str(e)) from None


def _proportional_sample(keys: list[str], strata: Mapping[str, str],
                         fraction: float, rng: np.random.Generator) -> set[str]:
  """round(fraction * len(keys)) keys, spread over strata (largest remainder)."""
  total = int(round(fraction * len(keys)))
  if total == 0:
    return set()
  by_stratum = collections.defaultdict(list)
  for key in keys:
    by_stratum[strata[key]].append(key)
  names = sorted(by_stratum)
  quotas = np.array([len(by_stratum[s]) * total / len(keys) for s in names])
  counts = np.floor(quotas).astype(int)
  # Ties in the remainders are broken at random, not by stratum name.
  order = np.lexsort((rng.random(len(names)), -(quotas - counts)))
  counts[order[:total - counts.sum()]] += 1
  chosen = set()
  for name, count in zip(names, counts):
    members = sorted(by_stratum[name])
    chosen.update(members[i] for i in rng.permutation(len(members))[:count])
  return chosen


def assign_splits(groups: Sequence[str], strata: Sequence[str],
                  test_fraction: float, validation_fraction: float,
                  seed: int) -> dict[str, str]:
  """Assigns groups to 'train', 'validation' and 'test', stratified.

  First round(test_fraction * n) groups go to test, then
  round(validation_fraction * rest) of the others to validation; each draw is
  spread over the strata in proportion to their sizes. The result depends on
  the seed and the set of (group, stratum) pairs only, not on their order.

  Args:
    groups: one key per group (a lesion, a volume, an image); duplicates are
      allowed and must share their stratum.
    strata: the stratum of each entry of `groups`.
    test_fraction: share of groups for test.
    validation_fraction: share of the remaining groups for validation.
    seed: the split seed.

  Returns:
    A dict from group key to split name.
  """
  stratum_of = dict(zip(groups, strata))
  keys = sorted(stratum_of)
  rng = np.random.default_rng([seed, 0x5B117])
  test = _proportional_sample(keys, stratum_of, test_fraction, rng)
  rest = [k for k in keys if k not in test]
  validation = _proportional_sample(rest, stratum_of, validation_fraction, rng)
  return {k: 'test' if k in test else
          'validation' if k in validation else 'train' for k in keys}


def check_not_empty(count: int, split: str, where: str) -> None:
  """Raises DataError if a split has no examples."""
  if count == 0:
    raise DataError(f'{where}: the {split} split is empty; the dataset is too '
                    'small for the configured split fractions.')


def _tail_contains(contents: tf.Tensor, pattern: bytes) -> tf.Tensor:
  """Whether `pattern` occurs in the last _TAIL_BYTES bytes of `contents`."""
  size = tf.strings.length(contents)
  start = tf.maximum(size - _TAIL_BYTES, 0)
  tail = tf.io.decode_raw(tf.strings.substr(contents, start, size - start),
                          tf.uint8)
  tail = tf.concat([tf.zeros([len(pattern)], tf.uint8), tail], 0)
  width = tf.shape(tail)[0] - len(pattern) + 1
  hit = tf.ones([width], tf.bool)
  for k, byte in enumerate(pattern):
    hit = tf.logical_and(hit, tf.equal(tail[k:k + width], byte))
  return tf.reduce_any(hit)


def _starts_with(contents: tf.Tensor, prefix: bytes) -> tf.Tensor:
  return tf.equal(tf.strings.substr(contents, 0, len(prefix)), prefix)


def decode_image(path: tf.Tensor, channels: int) -> tf.Tensor:
  """Reads and decodes a JPEG or PNG file, traceable by tf.data.

  A file that is not a complete JPEG or PNG (empty, truncated, another
  format) fails with an error that names it; decoding never guesses.

  Args:
    path: scalar string tensor.
    channels: 1 (grayscale; colour images are converted) or 3.

  Returns:
    float32 [H, W, channels] in [0, 1].
  """
  contents = tf.io.read_file(path)
  complete = tf.logical_or(
      tf.logical_and(_starts_with(contents, _JPEG_START),
                     _tail_contains(contents, _JPEG_END)),
      tf.logical_and(_starts_with(contents, _PNG_START),
                     _tail_contains(contents, _PNG_END)))
  check = tf.debugging.Assert(
      complete, ['Corrupt or truncated image file (not a complete JPEG or '
                 'PNG):', path])
  with tf.control_dependencies([check]):
    image = tf.io.decode_image(contents, channels=channels, dtype=tf.float32,
                               expand_animations=False)
  image.set_shape([None, None, channels])
  return image


def resize_short_side(image: tf.Tensor, size: int) -> tf.Tensor:
  """Resizes so that the shorter side is `size`, keeping the aspect ratio."""
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  scale = size / tf.reduce_min(shape)
  new = tf.maximum(tf.cast(tf.round(shape * scale), tf.int32), size)
  return tf.image.resize(image, new, antialias=True)


def center_crop(image: tf.Tensor, size: int) -> tf.Tensor:
  """The central size x size window of an image at least that large."""
  shape = tf.shape(image)
  top, left = (shape[0] - size) // 2, (shape[1] - size) // 2
  crop = image[top:top + size, left:left + size]
  crop.set_shape([size, size, image.shape[-1]])
  return crop


def random_crop(image: tf.Tensor, size: int, seed: tf.Tensor) -> tf.Tensor:
  """A size x size window at a position drawn from a stateless seed."""
  return tf.image.stateless_random_crop(
      image, [size, size, image.shape[-1]], seed=seed)


@functools.lru_cache(maxsize=8)
def _checked_decoder(channels: int):
  return tf.function(
      functools.partial(decode_image, channels=channels),
      input_signature=[tf.TensorSpec([], tf.string)])


def find_corrupt_images(paths: Sequence[str], channels: int,
                        threads: int = 8) -> dict[str, str]:
  """Decodes every file once and reports those that fail.

  Args:
    paths: image files.
    channels: passed to decode_image.
    threads: files decoded at once.

  Returns:
    A dict from bad path to the reason (the decoder's first message line).
  """
  decode = _checked_decoder(channels)

  def problem(path):
    try:
      decode(tf.constant(path))
      return None
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as e:
      return e.message.strip().splitlines()[0][:200]

  with concurrent.futures.ThreadPoolExecutor(threads) as pool:
    reasons = list(pool.map(problem, paths))
  return {p: r for p, r in zip(paths, reasons) if r is not None}


def drop_bad_files(bad: Mapping[str, str], skip: bool, where: str) -> set[str]:
  """Raises on bad files, or logs and returns them when skipping.

  Args:
    bad: bad path -> what is wrong with it.
    skip: skip them (config.data.skip_bad_files) instead of failing.
    where: the dataset, for the message.

  Returns:
    The set of paths to leave out (empty if there are none).

  Raises:
    DataError: listing the files, when there are some and skip is False.
  """
  if not bad:
    return set()
  listed = '\n'.join(f'  {p}: {r}' for p, r in sorted(bad.items())[
      :_MAX_LISTED])
  more = (f'\n  ... and {len(bad) - _MAX_LISTED} more'
          if len(bad) > _MAX_LISTED else '')
  if not skip:
    raise DataError(f'{where}: {len(bad)} bad file(s):\n{listed}{more}\n'
                    'Fix them, or set --config.data.skip_bad_files=True to '
                    'leave them out.')
  logging.warning('%s: skipped %d bad file(s):\n%s%s', where, len(bad),
                  listed, more)
  return set(bad)


def freeze(value: Any) -> Any:
  """A hashable copy of a config value (for caching readers' indexes)."""
  if isinstance(value, Mapping) or hasattr(value, 'items'):
    return tuple(sorted((k, freeze(v)) for k, v in value.items()))
  if isinstance(value, (list, tuple)):
    return tuple(freeze(v) for v in value)
  return value


@dataclasses.dataclass(frozen=True, eq=False)
class ImageFileSplit:
  """A Split over image files, decoded on demand inside tf.data.

  Attributes:
    paths: str [N] image files.
    labels: int32 [N] class labels.
    channels: channels to decode (1 or 3).
    preprocess: (float32 image [H, W, C] in [0, 1], int64 index) -> the
      example's input of a fixed shape; the index seeds random crops.
  """
  paths: np.ndarray
  labels: np.ndarray
  channels: int
  preprocess: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]

  def __len__(self) -> int:
    return len(self.labels)

  @functools.cached_property
  def _tensors(self):
    with tf.init_scope():  # Eager tensors, shared by every traced graph.
      return (tf.constant(self.paths, tf.string),
              tf.constant(self.labels, tf.int32))

  def load_example(self, index: tf.Tensor):
    """(image, label) of example `index`, traceable by tf.data."""
    paths, labels = self._tensors
    index = tf.cast(index, tf.int64)
    image = decode_image(tf.gather(paths, index), self.channels)
    return self.preprocess(image, index), tf.gather(labels, index)


def load_into_memory(split: ImageFileSplit, max_bytes: int,
                     batch_size: int = 64) -> Split:
  """The split decoded once into memory, if its examples fit in max_bytes.

  Only for splits whose preprocessing is deterministic (no random crops):
  the cached examples are served unchanged every epoch.

  Args:
    split: a file-backed split.
    max_bytes: the memory budget (0 disables caching).
    batch_size: examples decoded per batch.

  Returns:
    An ArraySplit holding the same examples, or `split` if they do not fit.
  """
  ds = tf.data.Dataset.range(len(split)).map(
      split.load_example, num_parallel_calls=tf.data.AUTOTUNE,
      deterministic=True)
  shape = ds.element_spec[0].shape
  if not shape.is_fully_defined() or (
      len(split) * shape.num_elements() * 4 > max_bytes):
    return split
  images = np.concatenate([x.numpy() for x, _ in ds.batch(batch_size)])
  return ArraySplit(images.astype(np.float32), split.labels)

