"""The RadImageNet reader on miniature copies of the original layout."""

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from dp_medtf import recipes
from dp_medtf.data import files
from dp_medtf.data import radimagenet
from tests.data import fixtures

SIZE = 16
NUM_CLASSES = len(fixtures.RAD_CLASSES)


def _config(**data):
  config = recipes.load('radimagenet')
  config.data.image_size = SIZE
  config.input_shape = (SIZE, SIZE, 1)
  config.num_classes = NUM_CLASSES
  config.data.update(data)
  return config


@pytest.fixture(scope='module')
def rad(tmp_path_factory):
  return fixtures.make_radimagenet(str(tmp_path_factory.mktemp('rad')))


def test_splits_and_labels_from_the_split_files(rad):
  index = radimagenet.read_index(_config(), rad)
  assert index.class_names == tuple(sorted(
      c.replace('/', '-') for c in fixtures.RAD_CLASSES))
  assert index.modalities == ('CT', 'MR', 'US')
  assert [len(index.splits[s]) for s in ('train', 'validation', 'test')] == [
      4 * NUM_CLASSES, NUM_CLASSES, NUM_CLASSES]
  for records in index.splits.values():
    for path, label, modality in zip(records.paths, records.labels,
                                     records.modalities):
      assert os.path.exists(path) and not os.path.basename(path).startswith('.')
      folder = os.path.relpath(os.path.dirname(path),
                               os.path.join(rad, 'radiology_ai'))
      assert index.class_names[label] == folder.replace('/', '-')
      assert index.modalities[modality] == folder.split('/')[0]
  # --data_dir may also name radiology_ai/ itself.
  inner = radimagenet.read_index(_config(), os.path.join(rad, 'radiology_ai'))
  np.testing.assert_array_equal(inner.splits['test'].paths,
                                index.splits['test'].paths)


def test_splits_from_the_folder_tree_without_csvs(tmp_path):
  data_dir = fixtures.make_radimagenet(str(tmp_path), with_csvs=False)
  index = radimagenet.read_index(_config(), data_dir)
  # Ultrasound labels sit one level less deep.
  assert index.class_names == tuple(sorted(fixtures.RAD_CLASSES))
  paths = [set(r.paths) for r in index.splits.values()]
  assert sum(len(p) for p in paths) == 6 * NUM_CLASSES
  assert len(set.union(*paths)) == 6 * NUM_CLASSES
  # 42 images: round(4.2) to test, round(3.8) of the rest to validation.
  assert [len(index.splits[s]) for s in ('train', 'validation', 'test')] == [
      34, 4, 4]
  again = radimagenet.read_index(_config(split_seed=0, verify_files=True),
                                 data_dir)
  np.testing.assert_array_equal(again.splits['test'].paths,
                                index.splits['test'].paths)


def test_grayscale_examples_with_modality_normalisation(rad):
  train = radimagenet.load_split(_config(), 'train', rad)
  index = radimagenet.read_index(_config(), rad)
  modalities = index.splits['train'].modalities
  images = np.stack([train.load_example(i)[0].numpy()
                     for i in range(len(train))])
  assert images.shape == (len(train), SIZE, SIZE, 1)
  assert train.load_example(0)[1].dtype == tf.int32
  plain = radimagenet.load_split(
      _config(normalize_by_modality=False, cache_bytes=0), 'train', rad)
  assert isinstance(train, files.ArraySplit)
  assert isinstance(plain, files.ImageFileSplit)
  raw = np.stack([plain.load_example(i)[0].numpy()
                  for i in range(len(plain))])
  assert raw.min() >= 0.0 and raw.max() <= 1.0
  # Each modality is standardised with the recipe's fixed constants, never
  # with statistics of the (private) training split.
  stats = _config().data.modality_stats
  for m, name in enumerate(index.modalities):
    mean, std = stats[name]
    np.testing.assert_allclose(images[modalities == m],
                               (raw[modalities == m] - mean) / std,
                               rtol=1e-5, atol=1e-5)


def test_modality_without_constants_is_named(rad):
  config = _config()
  with config.unlocked():
    config.data.modality_stats = dict(CT=(0.3, 0.3), MR=(0.2, 0.2))
  with pytest.raises(files.DataError, match='modality US'):
    radimagenet.load_split(config, 'train', rad)


def test_missing_folders_and_split_file(tmp_path):
  with pytest.raises(files.DataError, match='nowhere'):
    radimagenet.read_index(_config(), str(tmp_path / 'nowhere'))
  with pytest.raises(files.DataError, match='no radiology_ai/'):
    radimagenet.read_index(_config(), str(tmp_path))
  data_dir = fixtures.make_radimagenet(str(tmp_path))
  os.remove(os.path.join(data_dir, 'RadiologyAI_val.csv'))
  with pytest.raises(files.DataError, match='RadiologyAI_val.csv'):
    radimagenet.read_index(_config(), data_dir)


def test_listed_image_absent_is_named_or_skipped(tmp_path, caplog):
  data_dir = fixtures.make_radimagenet(str(tmp_path))
  gone = os.path.join(data_dir, 'radiology_ai', 'US', 'gallstone',
                      'us_gallstone001.png')
  os.remove(gone)
  with pytest.raises(files.DataError, match=gone):
    radimagenet.read_index(_config(), data_dir)
  with caplog.at_level(logging.WARNING):
    index = radimagenet.read_index(_config(skip_bad_files=True), data_dir)
  assert len(index.splits['train']) == 4 * NUM_CLASSES - 1
  assert 'skipped 1 bad file' in caplog.text


def test_corrupt_png_is_named(tmp_path):
  data_dir = fixtures.make_radimagenet(str(tmp_path))
  split = radimagenet.load_split(
      _config(normalize_by_modality=False, cache_bytes=0), 'validation',
      data_dir)
  bad = split.paths[1]
  fixtures.truncate(bad)
  with pytest.raises(tf.errors.InvalidArgumentError, match=bad):
    split.load_example(1)
  # Splits decoded into memory fail when loaded.
  with pytest.raises(tf.errors.InvalidArgumentError, match=bad):
    radimagenet.load_split(_config(normalize_by_modality=False),
                           'validation', data_dir)
  with pytest.raises(files.DataError, match=bad):
    radimagenet.read_index(_config(verify_files=True), data_dir)


def test_more_labels_than_classes_names_the_flag(rad):
  config = _config()
  config.num_classes = 5
  with pytest.raises(files.DataError,
                     match=f'has {NUM_CLASSES} labels.*--config.num_classes'):
    radimagenet.load_split(config, 'train', rad)


def test_image_at_the_wrong_depth_is_named(tmp_path):
  data_dir = fixtures.make_radimagenet(str(tmp_path), with_csvs=False)
  stray = os.path.join(data_dir, 'radiology_ai', 'CT', 'abd', 'stray.png')
  fixtures.overwrite(stray)
  with pytest.raises(files.DataError, match=stray):
    radimagenet.read_index(_config(), data_dir)


def test_bad_split_files(tmp_path):
  data_dir = fixtures.make_radimagenet(str(tmp_path))
  test_csv = os.path.join(data_dir, 'RadiologyAI_test.csv')
  fixtures.write_csv(test_csv, ['filename', 'label'], [])
  with pytest.raises(files.DataError, match='test split is empty'):
    radimagenet.read_index(_config(), data_dir)
  fixtures.write_csv(test_csv, ['filename', 'class'], [['a.png', 'x']])
  with pytest.raises(files.DataError, match=r"RadiologyAI_test.csv: missing "
                     r"column\(s\) \['label'\]"):
    radimagenet.read_index(_config(), data_dir)


def test_train_app_runs_end_to_end(rad, tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  proc = subprocess.run(
      [sys.executable, '-m', 'dp_medtf.train', '--dataset=radimagenet',
       f'--data_dir={rad}', '--epsilon=8', f'--workdir={tmp_path}',
       f'--config.data.image_size={SIZE}',
       f'--config.input_shape=({SIZE}, {SIZE}, 1)',
       f'--config.num_classes={NUM_CLASSES}', '--config.model.width=4',
       '--config.batch_size=8', '--config.physical_batch_size=8',
       '--config.epochs=1', '--config.eval_batch_size=16',
       '--config.augment.multiplicity=2'],
      capture_output=True, text=True, timeout=300, env=env, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(tmp_path / 'results.json') as f:
    results = json.load(f)
  assert results['dataset'] == 'radimagenet'
  assert results['num_train_examples'] == 4 * NUM_CLASSES
  assert 0 < results['epsilon_spent'] <= 8.0
