"""Every reader's split satisfies dp_medtf.data.Split, on miniature datasets."""

import numpy as np
import pytest
import tensorflow as tf

from dp_medtf import data
from dp_medtf import recipes
from dp_medtf.data import demo
from dp_medtf.data import files
from dp_medtf.data import msd_liver
from dp_medtf.data import split as split_lib
from tests.data import fixtures

SIZE = 16
VOLUME = (4, 16, 16)


def _config(dataset, **data_fields):
  config = recipes.load(dataset)
  if dataset == 'msd_liver':
    config.data.volume_shape = VOLUME
    slices = data_fields.get('slice_mode', False)
    config.input_shape = (VOLUME[1:] if slices else VOLUME) + (1,)
  elif dataset != 'demo':
    config.data.image_size = SIZE
    config.input_shape = (SIZE, SIZE, config.input_shape[-1])
  config.data.update(data_fields)
  return config


@pytest.fixture(scope='module')
def data_dirs(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('splits'))
  return {'demo': '', 'ham10000': fixtures.make_ham10000(root),
          'radimagenet': fixtures.make_radimagenet(root),
          'msd_liver': fixtures.make_msd_liver(root, num_cases=10)}


# (dataset, split, data fields, the reader's split class).
CASES = [
    ('demo', 'train', {}, split_lib.ArraySplit),
    ('ham10000', 'train', {}, files.ImageFileSplit),
    ('ham10000', 'test', {}, split_lib.ArraySplit),
    ('ham10000', 'test', {'cache_bytes': 0}, files.ImageFileSplit),
    ('radimagenet', 'train', {}, split_lib.ArraySplit),
    ('radimagenet', 'train', {'cache_bytes': 0}, files.ImageFileSplit),
    ('msd_liver', 'train', {}, msd_liver.VolumeSplit),
    ('msd_liver', 'train', {'slice_mode': True}, msd_liver.VolumeSplit),
]


@pytest.mark.parametrize(
    'dataset, split_name, fields, kind', CASES,
    ids=[f'{d}-{s}-{"-".join(f) or "default"}' for d, s, f, _ in CASES])
def test_each_readers_split_satisfies_the_protocol(data_dirs, dataset,
                                                   split_name, fields, kind):
  config = _config(dataset, **fields)
  split = data.load_split(config, split_name, data_dirs[dataset])
  assert type(split) is kind  # pylint: disable=unidiomatic-typecheck
  assert isinstance(split, data.Split)
  n = len(split)
  assert n >= 1
  labels = np.asarray(split.labels)
  assert len(labels) == n and np.issubdtype(labels.dtype, np.integer)
  # load_example, eagerly and traced by tf.data, gives one fixed-shape
  # float image in [0, 1] (raw reader output) and its integer label.
  ds = tf.data.Dataset.range(n).map(split.load_example)
  x_spec, y_spec = ds.element_spec
  assert tuple(x_spec.shape) == tuple(config.input_shape)
  assert x_spec.dtype == tf.float32 and y_spec.dtype.is_integer
  x0, y0 = split.load_example(tf.constant(n - 1, tf.int64))
  assert tuple(x0.shape) == tuple(config.input_shape)
  for index, (x, y) in enumerate(ds.as_numpy_iterator()):
    np.testing.assert_array_equal(y, labels[index])
  np.testing.assert_allclose(x, x0.numpy())
  np.testing.assert_array_equal(y, y0.numpy())


def test_objects_missing_a_member_are_not_splits():
  images = np.zeros([2, 4, 4, 1], np.float32)
  full = split_lib.ArraySplit(images, np.zeros(2, np.int32))
  assert isinstance(full, split_lib.Split)

  class NoLoader:
    labels = np.zeros(2, np.int32)

    def __len__(self):
      return 2

  class NoLabels:

    def __len__(self):
      return 2

    def load_example(self, index):
      return tf.gather(images, index), tf.constant(0)

  assert not isinstance(NoLoader(), split_lib.Split)
  assert not isinstance(NoLabels(), split_lib.Split)


def test_array_split_keeps_its_older_import_paths():
  assert demo.ArraySplit is data.ArraySplit is split_lib.ArraySplit
  assert files.ArraySplit is split_lib.ArraySplit
  assert data.Split is split_lib.Split
