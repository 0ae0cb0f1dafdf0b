"""RadImageNet in its original layout: 165 CT, MR and ultrasound classes.

Images are grayscale PNGs under `radiology_ai/CT/<anatomy>/<label>/`,
`radiology_ai/MR/<anatomy>/<label>/` and `radiology_ai/US/<label>/`
(ultrasound one level less deep). The splits come from
`RadiologyAI_{train,val,test}.csv` (columns filename,label; filenames relative
to the folder above radiology_ai), looked for next to radiology_ai/ and inside
it. Without them the splits are drawn from the folder tree (label = the path
of the label folder, e.g. 'CT/abd/normal'; 10% test, then 10% of the rest
validation, stratified by label, fixed seed). Class ids index the sorted
unique label strings of all splits, so their number comes from the data (165
on the full set).

Images are resized (short side) and centre-cropped to
config.data.image_size, in [0, 1]. With config.data.normalize_by_modality,
each modality is first standardised with the fixed (mean, std) of
config.data.modality_stats (constants, never statistics of the private
training split), before the pipeline's global normalisation, as in the paper
authors' DP recipe. A split that fits in config.data.cache_bytes is decoded
once into memory.

Example:

  A miniature copy: one class of ten blank 40 x 40 PNGs, without the split
  files (10% test, then 10% of the rest validation).

  >>> from dp_medtf import recipes
  >>> os.makedirs('radimagenet/radiology_ai/CT/abd/normal')
  >>> for i in range(10):
  ...   tf.io.write_file(f'radimagenet/radiology_ai/CT/abd/normal/{i}.png',
  ...                    tf.io.encode_png(tf.zeros([40, 40, 1], tf.uint8)))
  >>> split = load_split(recipes.load('radimagenet'), 'validation',
  ...                    'radimagenet')
  >>> len(split), split.load_example(0)[0].shape
  (1, TensorShape([224, 224, 1]))
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

FOLDER = 'radiology_ai'
CSV_NAMES = {'train': 'RadiologyAI_train.csv',
             'validation': 'RadiologyAI_val.csv',
             'test': 'RadiologyAI_test.csv'}
# Folders between a modality's folder and its images: anatomy/label, or label.
LEVELS = {'CT': 2, 'MR': 2, 'US': 1}
IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg')
_WHERE = '--dataset=radimagenet'


@dataclasses.dataclass(frozen=True)
class Records:
  """The images of one split.

  Attributes:
    paths: str [N] image files.
    labels: int32 [N] class ids (indices into Index.class_names).
    modalities: int32 [N] indices into Index.modalities.
  """
  paths: np.ndarray
  labels: np.ndarray
  modalities: np.ndarray

  def __len__(self) -> int:
    return len(self.paths)


@dataclasses.dataclass(frozen=True)
class Index:
  """The whole dataset: class names, modalities and the three splits."""
  class_names: tuple[str, ...]
  modalities: tuple[str, ...]
  splits: dict[str, Records]
  source: str


def _locate(data_dir: str) -> tuple[str, str]:
  """(the folder above radiology_ai, radiology_ai) from --data_dir."""
  files.require_dir(data_dir, f'{_WHERE} --data_dir')
  if os.path.basename(data_dir.rstrip('/')).lower() == FOLDER:
    return os.path.dirname(data_dir.rstrip('/')), data_dir.rstrip('/')
  found = files.find_entries(data_dir, [FOLDER])
  if not found:
    raise files.DataError(
        f'{_WHERE}: no {FOLDER}/ folder in --data_dir={data_dir}.')
  return data_dir, found[0]


def _find_csvs(root: str, folder: str) -> dict[str, str]:
  """Split -> CSV path; empty if there are none; DataError if some lack."""
  found = {}
  for where in (root, folder):
    for split, name in CSV_NAMES.items():
      if split not in found:
        paths = files.find_entries(where, [name])
        if paths:
          found[split] = paths[0]
  if found and len(found) < len(CSV_NAMES):
    lacking = [CSV_NAMES[s] for s in CSV_NAMES if s not in found]
    raise files.DataError(
        f'{_WHERE}: found {sorted(os.path.basename(p) for p in found.values())}'
        f' but not {lacking} in {root} or {folder}.')
  return found


def _modality(relative: str) -> str:
  """CT, MR or US: the component after radiology_ai/ (or the first one)."""
  parts = [p for p in relative.replace('\\', '/').split('/') if p]
  lower = [p.lower() for p in parts]
  position = lower.index(FOLDER) + 1 if FOLDER in lower else 0
  return parts[min(position, len(parts) - 1)].upper()


def _read_csv_splits(csvs: dict[str, str], root: str):
  """Split -> [(path, label string)] from the split files."""
  splits = {}
  owner = {}
  for split, path in csvs.items():
    _, rows = files.read_csv(path, ('filename', 'label'))
    entries = []
    for line, row in rows:
      if not row['filename'] or not row['label']:
        raise files.DataError(f'{path}, line {line}: empty filename or '
                              'label.')
      filename = row['filename'].lstrip('/')
      # Relative to the folder above radiology_ai/, as in the original
      # files; a name without the radiology_ai/ prefix is taken to be
      # relative to radiology_ai/ itself.
      if filename.split('/')[0].lower() != FOLDER:
        filename = os.path.join(FOLDER, filename)
      image = os.path.join(root, filename)
      if image in owner:
        raise files.DataError(f'{path}, line {line}: {row["filename"]} is '
                              f'also listed in {owner[image]}.')
      owner[image] = path
      entries.append((image, row['label']))
    splits[split] = entries
  return splits


def _walk_tree(folder: str) -> list[tuple[str, str]]:
  """[(path, label)] of every image under radiology_ai/, by folder depth.

  Entries at a label folder's depth are images; above it only folders are
  followed. This needs one listing per folder and no per-image lookups.
  """
  images = []
  modalities = [m for m in files.list_dir(folder)
                if tf.io.gfile.isdir(os.path.join(folder, m))]
  for modality in modalities:
    depth = LEVELS.get(modality.upper(), 2)
    level = [(os.path.join(folder, modality), modality)]
    for _ in range(depth):
      below = []
      for path, label in level:
        for name in files.list_dir(path):
          if name.lower().endswith(IMAGE_SUFFIXES):
            raise files.DataError(
                f'{_WHERE}: image {os.path.join(path, name)} is not '
                f'{depth} folder(s) below {os.path.join(folder, modality)} '
                '(expected radiology_ai/CT|MR/<anatomy>/<label>/ or '
                'radiology_ai/US/<label>/).')
          if tf.io.gfile.isdir(os.path.join(path, name)):
            below.append((os.path.join(path, name), f'{label}/{name}'))
      level = below
    for path, label in level:
      for name in files.list_dir(path):
        if name.lower().endswith(IMAGE_SUFFIXES):
          images.append((os.path.join(path, name), label))
  if not images:
    raise files.DataError(f'{_WHERE}: no images under {folder}.')
  return images


def _tree_splits(folder: str, data: dict):
  """Split -> [(path, label)] drawn from the folder tree."""
  images = _walk_tree(folder)
  assignment = files.assign_splits(
      [p for p, _ in images], [label for _, label in images],
      float(data.get('test_fraction', 0.1)),
      float(data.get('validation_fraction', 0.1)),
      int(data.get('split_seed', 0)))
  splits = collections.defaultdict(list)
  for path, label in images:
    splits[assignment[path]].append((path, label))
  return {s: splits[s] for s in CSV_NAMES}


@functools.lru_cache(maxsize=4)
def _read_index(data_dir: str, data_config) -> Index:
  data = dict(data_config)
  root, folder = _locate(data_dir)
  csvs = _find_csvs(root, folder)
  if csvs:
    splits = _read_csv_splits(csvs, root)
    source = ', '.join(csvs[s] for s in CSV_NAMES)
  else:
    splits = _tree_splits(folder, data)
    source = f'the folder tree of {folder}'
  everything = [e for entries in splits.values() for e in entries]
  bad = {p: 'listed in the split files but absent'
         for p in files.missing_files([p for p, _ in everything])}
  skip = bool(data.get('skip_bad_files', False))
  if skip or data.get('verify_files', False):
    bad.update(files.find_corrupt_images(
        [p for p, _ in everything if p not in bad], channels=1))
  dropped = files.drop_bad_files(bad, skip, _WHERE)

  class_names = tuple(sorted({label for _, label in everything}))
  modalities = tuple(sorted({_modality(os.path.relpath(p, root))
                             for p, _ in everything}))
  class_id = {name: i for i, name in enumerate(class_names)}
  records = {}
  for split in CSV_NAMES:
    entries = [(p, label) for p, label in splits[split] if p not in dropped]
    files.check_not_empty(len(entries), split, f'{_WHERE} ({source})')
    paths = np.array([p for p, _ in entries])
    records[split] = Records(
        paths, np.array([class_id[label] for _, label in entries], np.int32),
        np.array([modalities.index(_modality(os.path.relpath(p, root)))
                  for p in paths], np.int32))
  logging.info('RadImageNet: %d classes, %s images (train/validation/test) '
               'from %s', len(class_names),
               '/'.join(str(len(r)) for r in records.values()), source)
  return Index(class_names, modalities, records, source)


def read_index(config: ml_collections.ConfigDict, data_dir: str) -> Index:
  """Indexes the dataset (see the module docstring).

  Args:
    config: the recipe (config.data: split_seed, test_fraction,
      validation_fraction, skip_bad_files, verify_files).
    data_dir: radiology_ai/ or the folder above it.

  Returns:
    The Index.

  Raises:
    DataError: naming the file, for a missing folder, split file or image, a
      bad row, an image at the wrong depth, a corrupt image (when checked) or
      an empty split.
  """
  return _read_index(data_dir, files.freeze(config.data))


def _resize_crop(size: int):
  def preprocess(image: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
    del index
    return files.center_crop(files.resize_short_side(image, size), size)
  return preprocess


def modality_affine(modalities: tuple[str, ...], data_config
                     ) -> tuple[np.ndarray, np.ndarray]:
  """Per-modality (scale, shift) = (1 / std, -mean / std) of the recipe's
  fixed `modality_stats` (never measured on the private training split).

  Raises:
    files.DataError: naming the field, for a modality it does not list.
  """
  stats = dict(dict(data_config)['modality_stats'])
  missing = [m for m in modalities if m not in stats]
  if missing:
    raise files.DataError(
        f'{_WHERE}: the data hold modality {missing[0]} but '
        f'--config.data.modality_stats lists only {sorted(stats)}.')
  mean = np.array([float(stats[m][0]) for m in modalities])
  std = np.array([float(stats[m][1]) for m in modalities])
  if not np.all(np.isfinite(mean)) or not np.all((std > 0) & np.isfinite(std)):
    raise files.DataError('--config.data.modality_stats needs finite means '
                          'and positive stds.')
  return (1 / std).astype(np.float32), (-mean / std).astype(np.float32)


def _normalized_by_modality(size: int, modalities: np.ndarray,
                            scale: np.ndarray, shift: np.ndarray):
  resize_crop = _resize_crop(size)

  def preprocess(image: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
    m = tf.gather(modalities, index)
    return resize_crop(image, index) * tf.gather(scale, m) + tf.gather(
        shift, m)
  return preprocess


def load_split(config: ml_collections.ConfigDict, split: str,
               data_dir: str) -> files.Split:
  """One split of RadImageNet (see the module docstring).

  Args:
    config: the recipe.
    split: 'train', 'validation' or 'test'.
    data_dir: radiology_ai/ or the folder above it.

  Returns:
    float32 [S, S, 1] images and int32 class ids: an ImageFileSplit, or an
    in-memory ArraySplit when the split fits in config.data.cache_bytes.

  Raises:
    DataError: as read_index, or if the data have more classes than
      config.num_classes or the image size disagrees with input_shape.
  """
  size = int(config.data.image_size)
  expected = (size, size, 1)
  if tuple(config.input_shape) != expected:
    raise files.DataError(
        f'--config.input_shape={tuple(config.input_shape)} does not match '
        f'--config.data.image_size={size}; set --config.input_shape='
        f'"{expected}".')
  index = read_index(config, data_dir)
  num = len(index.class_names)
  if num > int(config.num_classes):
    raise files.DataError(
        f'{_WHERE}: {index.source} has {num} labels but '
        f'--config.num_classes={config.num_classes}; set '
        f'--config.num_classes={num}.')
  if num < int(config.num_classes):
    logging.warning('RadImageNet: %d labels in the data, fewer than '
                    'config.num_classes=%d.', num, config.num_classes)
  records = index.splits[split]
  if config.data.get('normalize_by_modality', True):
    scale, shift = modality_affine(index.modalities,
                                   files.freeze(config.data))
    with tf.init_scope():
      preprocess = _normalized_by_modality(
          size, tf.constant(records.modalities), tf.constant(scale),
          tf.constant(shift))
  else:
    preprocess = _resize_crop(size)
  return files.load_into_memory(
      files.ImageFileSplit(records.paths, records.labels, 1, preprocess),
      int(config.data.get('cache_bytes', 0)))
