"""HAM10000 in its original layout: "needs immediate treatment" or not.

The folder holds `HAM10000_metadata.csv` (lesion_id, image_id, dx, dx_type,
age, sex, localization; newer copies add `dataset`) and the images, 600 x 450
RGB JPEGs named `<image_id>.jpg`, in `HAM10000_images_part_1/` and
`HAM10000_images_part_2/` (any letter case). The label is 1 if dx is akiec,
bcc or mel. Images of one lesion never straddle splits: lesions, stratified
by dx, go 10% to test, then 10% of the rest to validation, with a fixed seed.
Images are resized so that the short side is config.data.image_size, then
cropped to a square: at a random position for training (seeded by the
training seed and the example's index) and in the centre otherwise. The
validation and test splits are decoded once into memory when they fit in
config.data.cache_bytes.

Example:

  A miniature copy: 20 lesions of one grey 60 x 45 image each.

  >>> from dp_medtf import recipes
  >>> os.makedirs('HAM10000/HAM10000_images_part_1')
  >>> rows = [f'HAM_{i},ISIC_{i},{"mel" if i % 4 else "nv"}' for i in range(20)]
  >>> with open('HAM10000/HAM10000_metadata.csv', 'w') as f:
  ...   _ = f.write('\\n'.join(['lesion_id,image_id,dx'] + rows))
  >>> grey = tf.fill([45, 60, 3], tf.constant(128, tf.uint8))
  >>> for i in range(20):
  ...   tf.io.write_file(f'HAM10000/HAM10000_images_part_1/ISIC_{i}.jpg',
  ...                    tf.io.encode_jpeg(grey))
  >>> split = load_split(recipes.load('ham10000'), 'train', 'HAM10000')
  >>> len(split)
  16
  >>> x, y = split.load_example(0)
  >>> x.shape, y.dtype
  (TensorShape([224, 224, 3]), tf.int32)
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import os

from absl import logging
import ml_collections
import numpy as np
import tensorflow as tf

from dp_medtf.data import files

DX = ('akiec', 'bcc', 'bkl', 'df', 'mel', 'nv', 'vasc')
POSITIVE_DX = ('akiec', 'bcc', 'mel')
METADATA_NAMES = ('HAM10000_metadata.csv', 'HAM10000_metadata.tab')
IMAGE_FOLDERS = ('HAM10000_images_part_1', 'HAM10000_images_part_2')
COLUMNS = ('lesion_id', 'image_id', 'dx')
_WHERE = '--dataset=ham10000'


@dataclasses.dataclass(frozen=True)
class Records:
  """The images of one split, in metadata order.

  Attributes:
    image_ids: str [N].
    lesion_ids: str [N].
    dx: str [N] diagnoses.
    paths: str [N] image files.
  """
  image_ids: np.ndarray
  lesion_ids: np.ndarray
  dx: np.ndarray
  paths: np.ndarray

  @property
  def labels(self) -> np.ndarray:
    """int32 [N]: 1 for akiec, bcc and mel, else 0."""
    return np.isin(self.dx, POSITIVE_DX).astype(np.int32)

  def __len__(self) -> int:
    return len(self.image_ids)


def _find_metadata(data_dir: str) -> str:
  found = files.find_entries(data_dir, METADATA_NAMES)
  if not found:
    raise files.DataError(
        f'{_WHERE}: no {METADATA_NAMES[0]} in --data_dir={data_dir}.')
  return found[0]


def _image_paths(data_dir: str) -> dict[str, str]:
  """Lower-case image file name -> path, over both image folders."""
  folders = files.find_entries(data_dir, IMAGE_FOLDERS)
  if not folders:
    raise files.DataError(
        f'{_WHERE}: neither {IMAGE_FOLDERS[0]}/ nor {IMAGE_FOLDERS[1]}/ '
        f'found in --data_dir={data_dir}.')
  paths = {}
  for folder in folders:
    for name in files.list_dir(folder):
      paths.setdefault(name.lower(), os.path.join(folder, name))
  return paths


def _read_metadata(path: str):
  """(image_id, lesion_id, dx) rows; DataError naming the line if bad."""
  delimiter = '\t' if path.endswith('.tab') else ','
  _, rows = files.read_csv(path, COLUMNS, delimiter)
  seen = {}
  out = []
  for line, row in rows:
    image_id, lesion_id, dx = (row[c].strip('"') for c in
                               ('image_id', 'lesion_id', 'dx'))
    if dx not in DX:
      raise files.DataError(f'{path}, line {line}: unknown dx {dx!r} for '
                            f'image {image_id!r}; expected one of {DX}.')
    if not image_id or not lesion_id:
      raise files.DataError(f'{path}, line {line}: empty image_id or '
                            'lesion_id.')
    if image_id in seen:
      raise files.DataError(f'{path}, line {line}: image {image_id} is '
                            f'listed twice (first on line {seen[image_id]}).')
    seen[image_id] = line
    out.append((image_id, lesion_id, dx))
  if not out:
    raise files.DataError(f'{path}: no rows.')
  return out


def _lesion_dx(rows) -> dict[str, str]:
  """Each lesion's diagnosis (the most frequent one of its images)."""
  counts = collections.defaultdict(collections.Counter)
  for _, lesion_id, dx in rows:
    counts[lesion_id][dx] += 1
  return {lesion: sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
          for lesion, c in counts.items()}


@functools.lru_cache(maxsize=4)
def _read_records(data_dir: str, data_config) -> dict[str, Records]:
  data = dict(data_config)
  files.require_dir(data_dir, f'{_WHERE} --data_dir')
  metadata = _find_metadata(data_dir)
  rows = _read_metadata(metadata)
  images = _image_paths(data_dir)
  paths = {image_id: images.get(f'{image_id}.jpg'.lower(), os.path.join(
      data_dir, IMAGE_FOLDERS[0], f'{image_id}.jpg'))
           for image_id, _, _ in rows}
  bad = {paths[i]: f'named in {metadata} but absent from '
                   f'{"/, ".join(IMAGE_FOLDERS)}/'
         for i, _, _ in rows if f'{i}.jpg'.lower() not in images}
  skip = bool(data.get('skip_bad_files', False))
  if skip or data.get('verify_files', False):
    present = [paths[i] for i, _, _ in rows if paths[i] not in bad]
    bad.update(files.find_corrupt_images(present, channels=3))
  dropped = files.drop_bad_files(bad, skip, _WHERE)
  rows = [r for r in rows if paths[r[0]] not in dropped]

  lesion_dx = _lesion_dx(rows)
  assignment = files.assign_splits(
      list(lesion_dx), list(lesion_dx.values()),
      float(data.get('test_fraction', 0.1)),
      float(data.get('validation_fraction', 0.1)),
      int(data.get('split_seed', 0)))
  records = {}
  for split in ('train', 'validation', 'test'):
    members = [r for r in rows if assignment[r[1]] == split]
    files.check_not_empty(len(members), split, f'{_WHERE} ({metadata})')
    image_ids, lesion_ids, dx = (np.array(c) for c in zip(*members))
    records[split] = Records(image_ids, lesion_ids, dx,
                             np.array([paths[i] for i in image_ids]))
  logging.info('HAM10000: %s images (train/validation/test) from %s',
               '/'.join(str(len(r)) for r in records.values()), data_dir)
  return records


def read_records(config: ml_collections.ConfigDict,
                 data_dir: str) -> dict[str, Records]:
  """Indexes the dataset: split name -> Records.

  Args:
    config: the recipe (config.data: split_seed, test_fraction,
      validation_fraction, skip_bad_files, verify_files).
    data_dir: the folder holding the metadata CSV and the image folders.

  Returns:
    Records of 'train', 'validation' and 'test'.

  Raises:
    DataError: naming the file, for a missing folder, CSV or image, an
      unknown diagnosis, a corrupt image (when checked) or an empty split.
  """
  return _read_records(data_dir, files.freeze(config.data))


def _preprocess(size: int, train: bool, seed: int):
  """Resize the short side, then crop: random (seeded by index) or central."""

  def preprocess(image: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
    image = files.resize_short_side(image, size)
    if train:
      return files.random_crop(
          image, size, tf.stack([tf.constant(seed, tf.int64), index]))
    return files.center_crop(image, size)
  return preprocess


def check_input_shape(config: ml_collections.ConfigDict, size: int,
                      channels: int) -> None:
  """Raises DataError unless config.input_shape is (size, size, channels)."""
  expected = (size, size, channels)
  if tuple(config.input_shape) != expected:
    raise files.DataError(
        f'--config.input_shape={tuple(config.input_shape)} does not match '
        f'--config.data.image_size={size}; set --config.input_shape='
        f'"{expected}".')


def load_split(config: ml_collections.ConfigDict, split: str,
               data_dir: str) -> files.Split:
  """One split of HAM10000 (see the module docstring).

  Args:
    config: the recipe.
    split: 'train', 'validation' or 'test'.
    data_dir: the dataset folder.

  Returns:
    float32 [S, S, 3] images in [0, 1] and int32 labels: an ImageFileSplit,
    or for validation and test an in-memory ArraySplit when they fit in
    config.data.cache_bytes.
  """
  size = int(config.data.image_size)
  check_input_shape(config, size, 3)
  records = read_records(config, data_dir)[split]
  train = split == 'train'
  files_split = files.ImageFileSplit(
      records.paths, records.labels, channels=3,
      preprocess=_preprocess(size, train, int(config.seed)))
  if train:  # Random crops: decoded anew every epoch.
    return files_split
  return files.load_into_memory(files_split,
                                int(config.data.get('cache_bytes', 0)))
