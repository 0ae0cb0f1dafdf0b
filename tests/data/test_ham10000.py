"""The HAM10000 reader on miniature copies of the original layout."""

import csv
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
from dp_medtf.data import ham10000
from dp_medtf.data import pipeline
from dp_medtf.data import sampling
from tests.data import fixtures

SIZE = 16


def _config(**data):
  config = recipes.load('ham10000')
  config.data.image_size = SIZE
  config.input_shape = (SIZE, SIZE, 3)
  config.data.update(data)
  return config


def _metadata(data_dir):
  with open(os.path.join(data_dir, 'HAM10000_metadata.csv')) as f:
    return list(csv.DictReader(f))


@pytest.fixture(scope='module')
def ham(tmp_path_factory):
  return fixtures.make_ham10000(str(tmp_path_factory.mktemp('ham')))


def test_splits_by_lesion_with_paper_fractions(ham):
  records = ham10000.read_records(_config(), ham)
  rows = _metadata(ham)
  lesions = {s: set(r.lesion_ids) for s, r in records.items()}
  assert not lesions['train'] & lesions['validation']
  assert not lesions['train'] & lesions['test']
  assert not lesions['validation'] & lesions['test']
  # 40 lesions: round(4.0) to test, round(3.6) of the other 36 to validation.
  assert [len(lesions[s]) for s in ('train', 'validation', 'test')] == [
      32, 4, 4]
  assert sorted(i for r in records.values() for i in r.image_ids) == sorted(
      r['image_id'] for r in rows)
  dx = {r['image_id']: r['dx'] for r in rows}
  for r in records.values():
    assert list(r.dx) == [dx[i] for i in r.image_ids]
    np.testing.assert_array_equal(
        r.labels, [d in ('akiec', 'bcc', 'mel') for d in r.dx])
  # Stratified by dx: of 4 test lesions, nv (16 of 40 lesions) gets 1.6,
  # rounded up, and the next largest remainders (0.6) go to bkl and mel.
  test_lesion_dx = dict(zip(records['test'].lesion_ids, records['test'].dx))
  assert sorted(test_lesion_dx.values()) == ['bkl', 'mel', 'nv', 'nv']


def test_same_split_without_dataset_column_and_lower_case_folders(ham,
                                                                  tmp_path):
  other = fixtures.make_ham10000(str(tmp_path), dataset_column=False,
                                 lowercase=True)
  assert 'ham10000_images_part_1' in os.listdir(other)
  first = ham10000.read_records(_config(), ham)
  second = ham10000.read_records(_config(), other)
  for split in first:
    assert list(first[split].image_ids) == list(second[split].image_ids)
  reseeded = ham10000.read_records(_config(split_seed=1), other)
  assert list(reseeded['test'].image_ids) != list(first['test'].image_ids)


def test_examples_are_resized_cropped_and_labelled(ham):
  config = _config()
  train = ham10000.load_split(config, 'train', ham)
  test = ham10000.load_split(config, 'test', ham)
  x, y = train.load_example(3)
  assert x.shape == (SIZE, SIZE, 3) and x.dtype == tf.float32
  assert 0.0 <= float(tf.reduce_min(x)) and float(tf.reduce_max(x)) <= 1.0
  assert int(y) == train.labels[3]
  # Random crops are a function of the index: the stream is reproducible.
  np.testing.assert_array_equal(x.numpy(), train.load_example(3)[0].numpy())
  # Eval: the centre crop of the image resized to a short side of SIZE,
  # decoded once into memory (the split is small).
  assert isinstance(test, files.ArraySplit)
  path = ham10000.read_records(config, ham)['test'].paths[0]
  image = files.decode_image(tf.constant(path), 3)
  resized = files.resize_short_side(image, SIZE).numpy()
  assert resized.shape[0] == SIZE and resized.shape[1] == round(60 * SIZE / 45)
  left = (resized.shape[1] - SIZE) // 2
  np.testing.assert_allclose(test.load_example(0)[0].numpy(),
                             resized[:, left:left + SIZE], atol=1e-6)
  lazy = ham10000.load_split(_config(cache_bytes=0), 'test', ham)
  assert isinstance(lazy, files.ImageFileSplit)
  np.testing.assert_array_equal(lazy.load_example(0)[0].numpy(),
                                test.load_example(0)[0].numpy())


def test_feeds_the_training_pipeline(ham):
  train = ham10000.load_split(_config(), 'train', ham)
  norm = pipeline.Normalizer.fit(train)
  plan = [(0, c) for c in sampling.to_chunks(np.arange(10), 8)]
  chunks = list(pipeline.train_dataset(train, plan))
  assert [(x.shape, y.shape, m.shape) for x, y, m in chunks] == [
      ((8, SIZE, SIZE, 3), (8,), (8,))] * 2
  views = pipeline.training_views(chunks[0][0], norm, 2, {1: 0.5}, seed=0,
                                  step=0)
  assert views.shape == (8, 2, SIZE, SIZE, 3)
  assert norm.mean.shape == (3,) and np.all(norm.std > 0)


def test_missing_folder_and_metadata(tmp_path):
  with pytest.raises(files.DataError, match='nowhere'):
    ham10000.read_records(_config(), str(tmp_path / 'nowhere'))
  with pytest.raises(files.DataError, match='HAM10000_metadata.csv'):
    ham10000.read_records(_config(), str(tmp_path))


def test_image_in_metadata_but_absent_is_named_or_skipped(tmp_path, caplog):
  data_dir = fixtures.make_ham10000(str(tmp_path))
  gone = _metadata(data_dir)[5]['image_id']
  for folder in ('HAM10000_images_part_1', 'HAM10000_images_part_2'):
    path = os.path.join(data_dir, folder, f'{gone}.jpg')
    if os.path.exists(path):
      os.remove(path)
  with pytest.raises(files.DataError, match=f'{gone}.jpg'):
    ham10000.read_records(_config(), data_dir)
  with caplog.at_level(logging.WARNING):
    records = ham10000.read_records(_config(skip_bad_files=True), data_dir)
  assert sum(len(r) for r in records.values()) == len(_metadata(data_dir)) - 1
  assert 'skipped 1 bad file' in caplog.text and gone in caplog.text


@pytest.mark.parametrize('damage', [fixtures.truncate, fixtures.overwrite])
def test_corrupt_jpeg_is_named(tmp_path, damage):
  data_dir = fixtures.make_ham10000(str(tmp_path))
  split = ham10000.load_split(_config(), 'train', data_dir)
  bad = split.paths[2]
  damage(bad)
  with pytest.raises(tf.errors.InvalidArgumentError, match=bad):
    split.load_example(2)
  with pytest.raises(tf.errors.InvalidArgumentError, match=bad):
    list(tf.data.Dataset.range(4).map(split.load_example))
  with pytest.raises(files.DataError, match=bad):
    ham10000.read_records(_config(verify_files=True), data_dir)
  kept = ham10000.read_records(_config(skip_bad_files=True), data_dir)
  assert bad not in {p for r in kept.values() for p in r.paths}


def test_unknown_diagnosis_names_the_line(tmp_path):
  data_dir = fixtures.make_ham10000(str(tmp_path))
  rows = _metadata(data_dir)
  rows[3]['dx'] = 'melanoma'
  fixtures.write_csv(os.path.join(data_dir, 'HAM10000_metadata.csv'),
                     list(rows[0]), [list(r.values()) for r in rows])
  with pytest.raises(files.DataError, match=r"line 5: unknown dx 'melanoma'"):
    ham10000.read_records(_config(), data_dir)


def test_missing_column_and_duplicate_image(tmp_path):
  data_dir = fixtures.make_ham10000(str(tmp_path))
  path = os.path.join(data_dir, 'HAM10000_metadata.csv')
  with open(path) as f:
    text = f.read()
  with open(path, 'w') as f:
    f.write(text.replace('lesion_id,', 'lesion,', 1))
  with pytest.raises(files.DataError,
                     match=r"missing column\(s\) \['lesion_id'"):
    ham10000.read_records(_config(), data_dir)
  lines = text.splitlines()
  with open(path, 'w') as f:
    f.write('\n'.join(lines + [lines[1]]) + '\n')
  with pytest.raises(files.DataError, match='listed twice'):
    ham10000.read_records(_config(), data_dir)


def test_empty_split_and_wrong_input_shape(tmp_path):
  data_dir = fixtures.make_ham10000(str(tmp_path),
                                    dx_lesions={'nv': 3, 'mel': 1})
  with pytest.raises(files.DataError, match='validation split is empty'):
    ham10000.read_records(_config(), data_dir)
  config = _config()
  config.input_shape = (224, 224, 3)
  with pytest.raises(files.DataError, match='--config.input_shape'):
    ham10000.load_split(config, 'train', data_dir)


def test_train_app_runs_end_to_end(ham, tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  proc = subprocess.run(
      [sys.executable, '-m', 'dp_medtf.train', '--dataset=ham10000',
       f'--data_dir={ham}', '--epsilon=8', f'--workdir={tmp_path}',
       f'--config.data.image_size={SIZE}',
       f'--config.input_shape=({SIZE}, {SIZE}, 3)', '--config.model.width=4',
       '--config.batch_size=8', '--config.physical_batch_size=8',
       '--config.epochs=1', '--config.eval_batch_size=16'],
      capture_output=True, text=True, timeout=300, env=env, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(tmp_path / 'results.json') as f:
    results = json.load(f)
  assert results['dataset'] == 'ham10000'
  assert results['num_train_examples'] == 42
  assert 0 < results['epsilon_spent'] <= 8.0


def test_throughput_rates_are_measured(ham):
  from dp_medtf.data import input_rates  # pylint: disable=g-import-not-at-top
  split = ham10000.load_split(_config(), 'train', ham)
  first, later = input_rates.reader_rates(split, 50)
  assert first > 0 and later > 0
