"""MSD Task03 Liver in its original layout: liver and tumour segmentation.

The folder holds `dataset.json` (its "training" list pairs
`./imagesTr/liver_N.nii.gz` with `./labelsTr/liver_N.nii.gz`; other keys,
such as the misspelt "relase", are ignored) and the NIfTI volumes, read with
nibabel. macOS `._*` files from the archive are skipped. Each CT volume is
reoriented to RAS, resampled to config.data.volume_shape (D, H, W; linear for
the image, nearest neighbour for the labels), clipped to
config.data.hu_range and scaled to [0, 1]. Labels: 0 background, 1 liver,
2 tumour. Volumes go 10% to test, then 10% of the rest to validation, with a
fixed seed (131 volumes: 13 test, 12 validation, 106 train).

Examples are volumes [D, H, W, 1] with label maps [D, H, W], or, with
config.data.slice_mode, axial slices [H, W, 1] with [H, W] (every slice of
the split's volumes, a volume's slices never in two splits). Preprocessed
volumes are kept in memory up to config.data.cache_bytes, so that only the
first epoch reads the files.

Example:

  A miniature copy: ten blank 16 x 16 x 8 volumes (10% test, then 10% of
  the rest validation: 1, 1 and 8 for training).

  >>> import json
  >>> import nibabel as nib
  >>> from dp_medtf import recipes
  >>> pairs = [{'image': f'./imagesTr/liver_{i}.nii.gz',
  ...           'label': f'./labelsTr/liver_{i}.nii.gz'} for i in range(10)]
  >>> for key, value in (('image', -1000), ('label', 0)):
  ...   os.makedirs(f'Task03_Liver/{key}sTr')
  ...   for pair in pairs:
  ...     volume = np.full((16, 16, 8), value, np.int16)
  ...     nib.save(nib.Nifti1Image(volume, np.eye(4)),
  ...              os.path.join('Task03_Liver', pair[key]))
  >>> with open('Task03_Liver/dataset.json', 'w') as f:
  ...   json.dump({'training': pairs}, f)
  >>> split = load_split(recipes.load('msd_liver'), 'train', 'Task03_Liver')
  >>> len(split), [t.shape for t in split.load_example(0)]
  (8, [TensorShape([50, 128, 128, 1]), TensorShape([50, 128, 128])])
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import gzip
import os
import threading

from absl import logging
import ml_collections
import nibabel as nib
import numpy as np
from scipy import ndimage
import tensorflow as tf

from dp_medtf.data import files

LABELS = ('background', 'liver', 'tumour')
JSON_NAME = 'dataset.json'
_WHERE = '--dataset=msd_liver'


@dataclasses.dataclass(frozen=True)
class Case:
  """One training volume: its name and image and label files."""
  name: str
  image: str
  label: str


@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """How volumes are resampled and scaled.

  Attributes:
    shape: (D, H, W) after resampling.
    hu_range: (low, high) Hounsfield units kept; mapped to [0, 1].
  """
  shape: tuple[int, int, int]
  hu_range: tuple[float, float]

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> 'Preprocessing':
    return cls(tuple(int(s) for s in config.data.volume_shape),
               tuple(float(v) for v in config.data.hu_range))


def _read_nifti(path: str) -> nib.spatialimages.SpatialImage:
  """A NIfTI-1 or -2 image from a (gzipped) file; DataError naming it."""
  with tf.io.gfile.GFile(path, 'rb') as f:
    raw = f.read()
  try:
    if raw[:2] == b'\x1f\x8b':
      raw = gzip.decompress(raw)
    for kind in (nib.Nifti1Image, nib.Nifti2Image):
      try:
        image = kind.from_bytes(raw)
        break
      except nib.filebasedimages.ImageFileError:
        continue
    else:
      raise ValueError('no NIfTI header')
    return nib.as_closest_canonical(image)
  except Exception as e:  # pylint: disable=broad-except
    raise files.DataError(f'{path}: not a readable NIfTI volume '
                          f'({type(e).__name__}: {e}).') from None


def _array(image, path: str, dtype) -> np.ndarray:
  """The voxel array [X, Y, Z] (a trailing axis of 1 dropped)."""
  try:
    data = np.asanyarray(image.dataobj).astype(dtype, copy=False)
  except Exception as e:  # pylint: disable=broad-except
    raise files.DataError(f'{path}: unreadable voxel data '
                          f'({type(e).__name__}: {e}).') from None
  while data.ndim > 3 and data.shape[-1] == 1:
    data = data[..., 0]
  if data.ndim != 3:
    raise files.DataError(f'{path}: expected a 3D volume, got shape '
                          f'{data.shape}.')
  return data


def _resample(volume: np.ndarray, shape: tuple[int, ...],
              order: int) -> np.ndarray:
  """Resamples [X, Y, Z] to (D, H, W) = (Z, Y, X) axes of `shape`."""
  volume = np.transpose(volume, (2, 1, 0))
  factors = [t / s for t, s in zip(shape, volume.shape)]
  out = ndimage.zoom(volume, factors, order=order, mode='nearest',
                     grid_mode=True)
  assert out.shape == tuple(shape), (out.shape, shape)
  return out


def load_case(case: Case, prep: Preprocessing
              ) -> tuple[np.ndarray, np.ndarray]:
  """Reads and preprocesses one volume and its labels.

  Args:
    case: the files.
    prep: the target shape and HU window.

  Returns:
    (image float32 [D, H, W] in [0, 1], labels uint8 [D, H, W]).

  Raises:
    DataError: naming the file, for an unreadable file, a shape mismatch
      between image and labels, or a label outside 0..2.
  """
  image = _array(_read_nifti(case.image), case.image, np.float32)
  labels = _array(_read_nifti(case.label), case.label, np.float32)
  if image.shape != labels.shape:
    raise files.DataError(f'{case.image} has shape {image.shape} but '
                          f'{case.label} has {labels.shape}.')
  values = np.unique(labels)
  bad = values[(values != np.round(values)) | (values < 0) |
               (values >= len(LABELS))]
  if len(bad):
    raise files.DataError(
        f'{case.label}: label value(s) {bad[:5].tolist()} outside '
        f'0..{len(LABELS) - 1} ({", ".join(LABELS)}).')
  low, high = prep.hu_range
  image = _resample(image, prep.shape, order=1)
  image = (np.clip(image, low, high) - low) / (high - low)
  labels = _resample(labels.astype(np.uint8), prep.shape, order=0)
  return image.astype(np.float32), labels


class VolumeCache:
  """Preprocessed volumes in memory, up to a byte budget (thread-safe)."""

  def __init__(self, max_bytes: int):
    self.max_bytes = max_bytes
    self._used = 0
    self._items = {}
    self._lock = threading.Lock()

  def get(self, case: Case, prep: Preprocessing):
    """The case's (image, labels), loaded on a miss and kept if they fit."""
    key = (case, prep)
    with self._lock:
      if key in self._items:
        return self._items[key]
    value = load_case(case, prep)
    size = sum(v.nbytes for v in value)
    with self._lock:
      if key not in self._items and self._used + size <= self.max_bytes:
        self._items[key] = value
        self._used += size
    return value


@functools.lru_cache(maxsize=4)
def _cache(max_bytes: int) -> VolumeCache:
  return VolumeCache(max_bytes)


def _json_cases(data_dir: str, json_path: str) -> list[Case]:
  """The training pairs of dataset.json, `._*` entries left out."""
  meta = files.read_json(json_path)
  if not isinstance(meta, dict) or not isinstance(meta.get('training'), list):
    raise files.DataError(f'{json_path}: no "training" list.')
  labels = meta.get('labels')
  if labels is not None and len(labels) != len(LABELS):
    raise files.DataError(f'{json_path}: {len(labels)} labels {labels}, '
                          f'expected {len(LABELS)} ({", ".join(LABELS)}).')
  cases, hidden = [], 0
  for i, entry in enumerate(meta['training']):
    if (not isinstance(entry, dict) or not entry.get('image') or
        not entry.get('label')):
      raise files.DataError(f'{json_path}: training entry {i} lacks "image" '
                            f'or "label": {entry!r}.')
    if files.is_hidden(entry['image']) or files.is_hidden(entry['label']):
      hidden += 1
      continue
    image = os.path.join(data_dir, os.path.normpath(entry['image']))
    label = os.path.join(data_dir, os.path.normpath(entry['label']))
    name = os.path.basename(image).split('.')[0]
    cases.append(Case(name, image, label))
  if hidden:
    logging.info('MSD Liver: skipped %d hidden ._* entries of %s', hidden,
                 json_path)
  if not cases:
    raise files.DataError(f'{json_path}: the "training" list is empty.')
  names = [c.name for c in cases]
  if len(set(names)) != len(names):
    raise files.DataError(f'{json_path}: a volume is listed twice.')
  if meta.get('numTraining') not in (None, len(meta['training'])):
    logging.warning('MSD Liver: %s says numTraining=%s but lists %d volumes.',
                    json_path, meta['numTraining'], len(meta['training']))
  return cases


def _check_cases(cases: list[Case], prep: Preprocessing,
                 cache: VolumeCache) -> dict[str, str]:
  """Loads every case once (filling the cache); bad file -> reason."""
  def problem(case):
    try:
      cache.get(case, prep)
      return None
    except files.DataError as e:
      return case.image, str(e)

  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    return dict(p for p in pool.map(problem, cases) if p)


@functools.lru_cache(maxsize=4)
def _read_cases(data_dir: str, data_config) -> dict[str, tuple[Case, ...]]:
  data = dict(data_config)
  files.require_dir(data_dir, f'{_WHERE} --data_dir')
  json_path = os.path.join(data_dir, JSON_NAME)
  if not tf.io.gfile.exists(json_path):
    raise files.DataError(f'{_WHERE}: {json_path} not found.')
  cases = _json_cases(data_dir, json_path)
  bad = {p: f'listed in {json_path} but absent' for p in
         files.missing_files([p for c in cases for p in (c.image, c.label)])}
  skip = bool(data.get('skip_bad_files', False))
  if skip or data.get('verify_files', False):
    prep = Preprocessing(tuple(data['volume_shape']), tuple(data['hu_range']))
    present = [c for c in cases if c.image not in bad and c.label not in bad]
    bad.update(_check_cases(present, prep,
                            _cache(int(data.get('cache_bytes', 2 << 30)))))
  dropped = files.drop_bad_files(bad, skip, _WHERE)
  cases = [c for c in cases if c.image not in dropped and
           c.label not in dropped]
  assignment = files.assign_splits(
      [c.name for c in cases], ['volume'] * len(cases),
      float(data.get('test_fraction', 0.1)),
      float(data.get('validation_fraction', 0.1)),
      int(data.get('split_seed', 0)))
  splits = {}
  for split in ('train', 'validation', 'test'):
    splits[split] = tuple(c for c in cases if assignment[c.name] == split)
    files.check_not_empty(len(splits[split]), split, f'{_WHERE} ({json_path})')
  logging.info('MSD Liver: %s volumes (train/validation/test) from %s',
               '/'.join(str(len(s)) for s in splits.values()), data_dir)
  return splits


def read_cases(config: ml_collections.ConfigDict,
               data_dir: str) -> dict[str, tuple[Case, ...]]:
  """Indexes the dataset: split name -> cases.

  Args:
    config: the recipe (config.data: split_seed, test_fraction,
      validation_fraction, skip_bad_files, verify_files, and with those two
      volume_shape, hu_range and cache_bytes).
    data_dir: the Task03_Liver folder.

  Returns:
    The cases of 'train', 'validation' and 'test'.

  Raises:
    DataError: naming the file, for a missing folder, dataset.json or volume,
      a malformed dataset.json, a bad volume (when checked) or an empty split.
  """
  return _read_cases(data_dir, files.freeze(config.data))


class VolumeSplit:
  """A Split of volumes (or of their axial slices), loaded on demand.

  Args:
    cases: the volumes.
    prep: resampling and HU window.
    cache: where preprocessed volumes are kept.
    slice_mode: examples are axial slices instead of volumes.
  """

  def __init__(self, cases: tuple[Case, ...], prep: Preprocessing,
               cache: VolumeCache, slice_mode: bool = False):
    self.cases = cases
    self.prep = prep
    self.cache = cache
    self.slice_mode = slice_mode

  def __len__(self) -> int:
    return len(self.cases) * (self.prep.shape[0] if self.slice_mode else 1)

  def _load(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    index = int(index)
    if self.slice_mode:
      depth = self.prep.shape[0]
      image, labels = self.cache.get(self.cases[index // depth], self.prep)
      image, labels = image[index % depth], labels[index % depth]
    else:
      image, labels = self.cache.get(self.cases[index], self.prep)
    return image[..., None], labels.astype(np.int32)

  def load_example(self, index: tf.Tensor):
    """(image [*spatial, 1], labels [*spatial]) of example `index`."""
    image, labels = tf.numpy_function(
        self._load, [tf.cast(index, tf.int64)], [tf.float32, tf.int32],
        stateful=False)
    spatial = self.prep.shape[1:] if self.slice_mode else self.prep.shape
    image.set_shape(tuple(spatial) + (1,))
    labels.set_shape(tuple(spatial))
    return image, labels

  @functools.cached_property
  def labels(self) -> np.ndarray:
    """int32 [N, *spatial]: every label map of the split (loads them all)."""
    return np.stack([self._load(np.int64(i))[1] for i in range(len(self))])


def load_split(config: ml_collections.ConfigDict, split: str,
               data_dir: str) -> VolumeSplit:
  """One split of MSD Liver (see the module docstring).

  Args:
    config: the recipe.
    split: 'train', 'validation' or 'test'.
    data_dir: the Task03_Liver folder.

  Returns:
    A VolumeSplit.

  Raises:
    DataError: as read_cases, or when config.input_shape or num_classes do
      not fit the volume shape, the mode or the labels.
  """
  prep = Preprocessing.from_config(config)
  slice_mode = bool(config.data.get('slice_mode', False))
  expected = (prep.shape[1:] if slice_mode else prep.shape) + (1,)
  if tuple(config.input_shape) != expected:
    raise files.DataError(
        f'--config.input_shape={tuple(config.input_shape)} does not fit '
        f'--config.data.volume_shape={prep.shape} with '
        f'--config.data.slice_mode={slice_mode}; set --config.input_shape='
        f'"{expected}".')
  if int(config.num_classes) != len(LABELS):
    raise files.DataError(f'--config.num_classes={config.num_classes}: MSD '
                          f'Liver has {len(LABELS)} labels ({LABELS}).')
  cases = read_cases(config, data_dir)[split]
  cache = _cache(int(config.data.get('cache_bytes', 2 << 30)))
  return VolumeSplit(cases, prep, cache, slice_mode)
