"""The MSD Liver reader on miniature copies of the original layout."""

import collections
import json
import logging
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import tensorflow as tf

from dp_medtf import recipes
from dp_medtf.data import files
from dp_medtf.data import msd_liver
from tests.data import fixtures

SHAPE = (8, 16, 16)


def _config(slice_mode=False, **data):
  config = recipes.load('msd_liver')
  config.data.volume_shape = SHAPE
  config.data.slice_mode = slice_mode
  config.input_shape = (SHAPE[1:] if slice_mode else SHAPE) + (1,)
  config.data.update(data)
  return config


@pytest.fixture(scope='module')
def liver(tmp_path_factory):
  return fixtures.make_msd_liver(str(tmp_path_factory.mktemp('liver')))


def test_paper_split_of_131_volumes():
  names = [f'liver_{i}' for i in range(131)]
  assignment = files.assign_splits(names, ['volume'] * 131, 0.1, 0.1, seed=0)
  assert collections.Counter(assignment.values()) == {
      'train': 106, 'validation': 12, 'test': 13}


def test_reads_dataset_json_and_skips_apple_double_files(liver):
  with open(os.path.join(liver, 'dataset.json')) as f:
    assert 'relase' in json.load(f)
  assert '._liver_0.nii.gz' in os.listdir(os.path.join(liver, 'imagesTr'))
  cases = msd_liver.read_cases(_config(), liver)
  assert [len(cases[s]) for s in ('train', 'validation', 'test')] == [10, 1, 1]
  names = [c.name for s in cases.values() for c in s]
  assert sorted(names) == sorted(f'liver_{i}' for i in range(12))
  assert not any(os.path.basename(c.image).startswith('._')
                 for s in cases.values() for c in s)


def test_volumes_are_resampled_windowed_and_labelled(liver):
  split = msd_liver.load_split(_config(), 'train', liver)
  x, y = split.load_example(0)
  assert x.shape == SHAPE + (1,) and x.dtype == tf.float32
  assert y.shape == SHAPE and y.dtype == tf.int32
  assert 0.0 <= float(tf.reduce_min(x)) and float(tf.reduce_max(x)) <= 1.0
  assert set(np.unique(y.numpy())) == {0, 1, 2}
  # The liver's HU values (20..180) land at (HU + 150) / 350 after clipping.
  inside = x.numpy()[..., 0][y.numpy() == 1]
  assert 0.45 < np.median(inside) < 0.95
  assert split.labels.shape == (10,) + SHAPE


def test_hu_window_orientation_and_nearest_labels(tmp_path):
  prep = msd_liver.Preprocessing((4, 6, 6), (-150.0, 200.0))
  image = np.zeros((12, 12, 8), np.int16)
  image[:, :, :4] = -1000
  image[:, :, 4:] = 25
  labels = np.zeros((12, 12, 8), np.uint8)
  labels[:6, :, 4:] = 2
  paths = {n: str(tmp_path / f'{n}.nii.gz') for n in ('i', 'l', 'fi', 'fl')}
  fixtures.write_nifti(paths['i'], image)
  fixtures.write_nifti(paths['l'], labels)
  # The same volume stored with a flipped x axis reads the same.
  flip = np.diag([-0.8, 0.8, 2.5, 1.0])
  nib.save(nib.Nifti1Image(image[::-1], flip), paths['fi'])
  nib.save(nib.Nifti1Image(labels[::-1], flip), paths['fl'])
  out = msd_liver.load_case(msd_liver.Case('a', paths['i'], paths['l']), prep)
  flipped = msd_liver.load_case(
      msd_liver.Case('b', paths['fi'], paths['fl']), prep)
  for a, b in zip(out, flipped):
    np.testing.assert_array_equal(a, b)
  vol, lab = out
  assert vol.shape == (4, 6, 6) and lab.shape == (4, 6, 6)
  np.testing.assert_allclose(vol[:2], 0.0)
  np.testing.assert_allclose(vol[2:], 175 / 350, atol=1e-6)
  assert set(np.unique(lab)) == {0, 2}
  np.testing.assert_array_equal(lab[2:, :, :3], 2)


def test_slice_mode_serves_axial_slices(liver):
  volumes = msd_liver.load_split(_config(), 'train', liver)
  slices = msd_liver.load_split(_config(slice_mode=True), 'train', liver)
  assert len(slices) == len(volumes) * SHAPE[0]
  x, y = slices.load_example(SHAPE[0] + 3)
  assert x.shape == SHAPE[1:] + (1,) and y.shape == SHAPE[1:]
  vx, vy = volumes.load_example(1)
  np.testing.assert_array_equal(x.numpy(), vx.numpy()[3])
  np.testing.assert_array_equal(y.numpy(), vy.numpy()[3])


def test_cached_volumes_are_not_read_again(tmp_path):
  data_dir = fixtures.make_msd_liver(str(tmp_path), num_cases=12)
  split = msd_liver.load_split(_config(cache_bytes=1 << 20), 'train',
                               data_dir)
  first = split.load_example(0)[0].numpy()
  os.remove(split.cases[0].image)
  np.testing.assert_array_equal(split.load_example(0)[0].numpy(), first)


def test_missing_folder_json_and_volume(tmp_path, caplog):
  with pytest.raises(files.DataError, match='nowhere'):
    msd_liver.read_cases(_config(), str(tmp_path / 'nowhere'))
  with pytest.raises(files.DataError, match='dataset.json'):
    msd_liver.read_cases(_config(), str(tmp_path))
  data_dir = fixtures.make_msd_liver(str(tmp_path))
  gone = os.path.join(data_dir, 'labelsTr', 'liver_7.nii.gz')
  os.remove(gone)
  with pytest.raises(files.DataError, match=gone):
    msd_liver.read_cases(_config(), data_dir)
  with caplog.at_level(logging.WARNING):
    cases = msd_liver.read_cases(_config(skip_bad_files=True), data_dir)
  assert sum(len(c) for c in cases.values()) == 11
  assert 'skipped 1 bad file' in caplog.text


@pytest.mark.parametrize('damage', [fixtures.truncate, fixtures.overwrite])
def test_corrupt_nifti_is_named(tmp_path, damage):
  data_dir = fixtures.make_msd_liver(str(tmp_path))
  split = msd_liver.load_split(_config(), 'train', data_dir)
  bad = split.cases[2].image
  damage(bad)
  with pytest.raises(tf.errors.OpError, match=f'{bad}: not a readable NIfTI'):
    list(tf.data.Dataset.range(4).map(split.load_example))
  with pytest.raises(files.DataError, match=bad):
    msd_liver.read_cases(_config(verify_files=True), data_dir)
  kept = msd_liver.read_cases(_config(skip_bad_files=True), data_dir)
  assert split.cases[2] not in [c for s in kept.values() for c in s]


def test_label_out_of_range_and_shape_mismatch(tmp_path):
  data_dir = fixtures.make_msd_liver(str(tmp_path))
  split = msd_liver.load_split(_config(), 'train', data_dir)
  case = split.cases[0]
  labels = np.asarray(nib.load(case.label).dataobj).copy()
  labels[0, 0, 0] = 3
  fixtures.write_nifti(case.label, labels)
  with pytest.raises(tf.errors.OpError,
                     match=rf'{case.label}: label value\(s\) \[3.0\]'):
    list(tf.data.Dataset.range(1).map(split.load_example))
  fixtures.write_nifti(case.label, labels[:, :, :-1].clip(0, 2))
  with pytest.raises(files.DataError, match=f'{case.image} has shape .* but '
                     f'{case.label}'):
    msd_liver.load_case(case, split.prep)


def test_bad_dataset_json_and_empty_split(tmp_path):
  data_dir = fixtures.make_msd_liver(str(tmp_path), num_cases=3)
  with pytest.raises(files.DataError, match='validation split is empty'):
    msd_liver.read_cases(_config(), data_dir)
  with open(os.path.join(data_dir, 'dataset.json'), 'w') as f:
    json.dump({'name': 'Liver', 'relase': '1.0'}, f)
  with pytest.raises(files.DataError, match='dataset.json: no "training"'):
    msd_liver.read_cases(_config(), data_dir)
  with open(os.path.join(data_dir, 'dataset.json'), 'w') as f:
    f.write('{"training": [')
  with pytest.raises(files.DataError, match='dataset.json: not valid JSON'):
    msd_liver.read_cases(_config(), data_dir)


def test_input_shape_must_fit_the_mode(liver):
  config = _config()
  config.input_shape = SHAPE[1:] + (1,)
  with pytest.raises(files.DataError, match='--config.input_shape'):
    msd_liver.load_split(config, 'train', liver)


def _train(data_dir, workdir, shape, *extra):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  proc = subprocess.run(
      [sys.executable, '-m', 'dp_medtf.train', '--dataset=msd_liver',
       f'--data_dir={data_dir}', '--epsilon=8', f'--workdir={workdir}',
       f'--config.data.volume_shape={shape}', '--config.model.width=4',
       '--config.epochs=1', *extra],
      capture_output=True, text=True, timeout=300, env=env, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(os.path.join(workdir, 'results.json')) as f:
    return json.load(f)


def test_train_app_runs_end_to_end_on_slices(liver, tmp_path):
  shape = (4, 16, 16)
  results = _train(liver, tmp_path, shape, '--config.data.slice_mode=True',
                   f'--config.input_shape={shape[1:] + (1,)}',
                   '--config.batch_size=8', '--config.physical_batch_size=8',
                   '--config.eval_batch_size=8')
  assert results['num_train_examples'] == 10 * shape[0]
  assert 0 < results['epsilon_spent'] <= 8.0
  assert set(results['metrics']) == {'dice_liver', 'dice_tumour'}


@pytest.mark.slow
def test_train_app_runs_end_to_end_on_volumes(liver, tmp_path):
  results = _train(liver, tmp_path, SHAPE,
                   f'--config.input_shape={SHAPE + (1,)}',
                   '--config.batch_size=2', '--config.physical_batch_size=2',
                   '--config.eval_batch_size=1')
  assert results['num_train_examples'] == 10
  assert 0 < results['epsilon_spent'] <= 8.0
