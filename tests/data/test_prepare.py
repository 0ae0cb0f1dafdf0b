"""Prepared folders: same tensors as the raw readers, and their failure modes."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from dp_medtf import data
from dp_medtf import recipes
from dp_medtf.data import record_writer
from dp_medtf.data import records
from tests.data import fixtures

SIZE = 16
RAD_CLASSES = len(fixtures.RAD_CLASSES)
VOLUME = (8, 16, 16)


def _config(dataset, **data_fields):
  """A small recipe whose splits are read from files (no in-memory cache)."""
  config = recipes.load(dataset)
  if dataset == 'msd_liver':
    config.data.volume_shape = VOLUME
    config.input_shape = VOLUME + (1,)
  elif dataset != 'demo':
    config.data.image_size = SIZE
    config.input_shape = (SIZE, SIZE, 3 if dataset == 'ham10000' else 1)
  if dataset == 'radimagenet':
    config.num_classes = RAD_CLASSES
  config.data.cache_bytes = 0
  config.data.update(data_fields)
  if 'image_size' in data_fields:
    config.input_shape = (config.data.image_size,) * 2 + tuple(
        config.input_shape[-1:])
  return config


_MAKERS = {'ham10000': fixtures.make_ham10000,
           'radimagenet': fixtures.make_radimagenet,
           'msd_liver': fixtures.make_msd_liver}


@pytest.fixture(scope='module')
def raw(tmp_path_factory):
  """dataset -> its miniature copy in the original layout."""
  made = {}

  def get(dataset):
    if dataset not in made:
      made[dataset] = _MAKERS[dataset](str(tmp_path_factory.mktemp(dataset)))
    return made[dataset]
  return get


@pytest.fixture(scope='module')
def rad_prepared(raw, tmp_path_factory):
  out = str(tmp_path_factory.mktemp('rad_prepared') / 'out')
  record_writer.prepare(_config('radimagenet'), raw('radimagenet'), out,
                        examples_per_shard=8)
  return out


def _bits(x):
  x = np.asarray(x)
  return x.view(np.uint32) if x.dtype == np.float32 else x


@pytest.mark.parametrize('dataset', ['ham10000', 'radimagenet', 'msd_liver'])
def test_every_example_is_identical_to_the_raw_reader(dataset, raw, tmp_path):
  config = _config(dataset)
  out = str(tmp_path / 'out')
  meta = record_writer.prepare(config, raw(dataset), out, examples_per_shard=3)
  assert records.is_prepared(out)
  for split in data.SPLITS:
    from_files = data.load_split(config, split, raw(dataset))
    from_records = data.load_split(config, split, out)
    assert isinstance(from_records, records.RecordSplit)
    assert isinstance(from_records, data.Split)
    assert len(from_records) == len(from_files) > 0
    assert len(meta['splits'][split]['shards']) == -(-len(from_files) // 3)
    np.testing.assert_array_equal(from_records.labels, from_files.labels)
    for i in range(len(from_files)):
      x, y = from_files.load_example(tf.constant(i, tf.int64))
      rx, ry = from_records.load_example(tf.constant(i, tf.int64))
      assert rx.shape == x.shape and rx.dtype == x.dtype
      np.testing.assert_array_equal(_bits(rx.numpy()), _bits(x.numpy()))
      np.testing.assert_array_equal(ry.numpy(), y.numpy())
  # HAM10000's training crops depend on the seed: recorded, and checked.
  assert meta['seeded'] == (dataset == 'ham10000')


def test_radimagenet_modality_standardisation_is_applied_when_reading(
    raw, rad_prepared):
  meta = records.read_metadata(rad_prepared)
  assert meta['modalities'] == ['CT', 'MR', 'US']
  assert meta['normalization']['modality_stats']['CT'] == list(
      recipes.load('radimagenet').data.modality_stats['CT'])
  assert len(meta['class_names']) == RAD_CLASSES
  # Other modality constants (not a content field) need no new prepare.
  stats = {'CT': (0.5, 0.5), 'MR': (0.25, 2.0), 'US': (0.0, 1.0)}
  config = _config('radimagenet', modality_stats=stats)
  from_files = data.load_split(config, 'validation', raw('radimagenet'))
  from_records = data.load_split(config, 'validation', rad_prepared)
  for i in range(len(from_files)):
    np.testing.assert_array_equal(
        _bits(from_records.load_example(i)[0].numpy()),
        _bits(from_files.load_example(i)[0].numpy()))
  # Resampled images are stored as float32.
  plain = data.load_split(_config('radimagenet', normalize_by_modality=False),
                          'train', rad_prepared)
  assert {plain.read(i)[0] for i in range(len(plain))} == {records.X_FLOAT32}


def test_images_not_resampled_are_stored_as_uint8(tmp_path):
  raw_dir = fixtures.make_radimagenet(str(tmp_path), per_class=3, size=SIZE)
  config = _config('radimagenet')
  out = str(tmp_path / 'out')
  record_writer.prepare(config, raw_dir, out)
  from_files = data.load_split(config, 'train', raw_dir)
  from_records = data.load_split(config, 'train', out)
  assert {from_records.read(i)[0] for i in range(len(from_records))} == {
      records.X_UINT8_PNG}
  for i in range(len(from_files)):
    np.testing.assert_array_equal(
        _bits(from_records.load_example(i)[0].numpy()),
        _bits(from_files.load_example(i)[0].numpy()))
  assert len(from_records.read(0)) == 2 + SIZE * SIZE + 1


_Q = np.arange(0, 256, 23, dtype=np.uint8).reshape(2, 2, 3)


@pytest.mark.parametrize('x, y, x_tag, y_tag', [
    (_Q.astype(np.float32) / 255 + np.float32(1e-3), np.int32(3),
     records.X_FLOAT32, records.Y_UINT8),
    (tf.image.convert_image_dtype(_Q, tf.float32).numpy(), np.int32(300),
     records.X_UINT8, records.Y_INT32),
    (tf.image.convert_image_dtype(_Q.astype(np.uint16) * 257,
                                  tf.float32).numpy(), np.int32(1),
     records.X_UINT8_PNG, records.Y_UINT8),
    (tf.image.convert_image_dtype(_Q.astype(np.uint16) * 250 + 7,
                                  tf.float32).numpy(), np.int32(1),
     records.X_UINT16, records.Y_UINT8),
    (np.array([[[-1.5], [1e30]], [[0.0], [-0.0]]], np.float32),
     np.array([[0, 2], [1, -1]], np.int32), records.X_FLOAT32,
     records.Y_INT32),
    (np.zeros([2, 2, 1], np.float32), np.array([[0, 2], [1, 255]], np.int32),
     records.X_UINT8, records.Y_UINT8),
])
def test_records_round_trip_bit_for_bit(x, y, x_tag, y_tag):
  record = records.encode(x, y)
  assert (record[0], record[1]) == (x_tag, y_tag)
  rx, ry = records.decode(record, x.shape, np.shape(y))
  np.testing.assert_array_equal(rx.view(np.uint32),
                                x.view(np.uint32))
  np.testing.assert_array_equal(ry, y)
  assert rx.dtype == np.float32 and ry.dtype == np.int32


@pytest.mark.parametrize('damage', ['longer', 'shorter', 'label_tag'])
def test_a_damaged_record_does_not_decode(damage):
  record = records.encode(np.zeros([2, 2, 1], np.float32), np.int32(1))
  record = {'longer': record + b'\0', 'shorter': record[:-1],
            'label_tag': record[:1] + bytes([7]) + record[2:]}[damage]
  with pytest.raises(ValueError):
    records.decode(record, (2, 2, 1), ())


def test_a_batch_read_equals_its_examples_read_one_by_one(rad_prepared):
  # Shards of 8 records (see rad_prepared): these indices span several
  # shards, out of order and repeated, as a padded Poisson chunk can be.
  split = data.load_split(_config('radimagenet'), 'train', rad_prepared)
  assert isinstance(split, records.RecordSplit)
  indices = np.array([len(split) - 1, 0, 9, 4, 17, 0, 2], np.int64)
  assert len(set(np.searchsorted(split._ends, indices, side='right'))) > 2
  x, y = split.load_batch(tf.constant(indices))
  for row, index in enumerate(indices):
    one_x, one_y = split.load_example(tf.constant(index))
    np.testing.assert_array_equal(_bits(x[row].numpy()),
                                  _bits(one_x.numpy()))
    assert int(y[row]) == int(one_y) == split.labels[index]
  assert split.read_many(indices) == [split.read(i) for i in indices]


def test_interrupted_prepare_is_detected_then_resumed(raw, tmp_path,
                                                      monkeypatch):
  config = _config('radimagenet')
  out = str(tmp_path / 'out')
  write = record_writer._write_shard
  written = []

  def fail_on_third(split, start, stop, path):
    if len(written) == 2:
      raise KeyboardInterrupt
    write(split, start, stop, path)
    written.append(path)

  monkeypatch.setattr(record_writer, '_write_shard', fail_on_third)
  with pytest.raises(KeyboardInterrupt):
    record_writer.prepare(config, raw('radimagenet'), out, examples_per_shard=8)
  assert not os.path.exists(os.path.join(out, records.METADATA))
  with pytest.raises(records.PreparedDataError,
                     match=f'--data_dir={out}: an incomplete prepared '
                     r'dataset \(no prepared.json') as e:
    data.load_split(config, 'train', out)
  assert '\n' not in str(e.value)
  monkeypatch.setattr(record_writer, '_write_shard', write)
  lines = []
  record_writer.prepare(config, raw('radimagenet'), out,
                        examples_per_shard=8, log=lines.append)
  kept = [l for l in lines if 'kept from the interrupted prepare' in l]
  assert len(kept) == 2 and 'resuming' in lines[0]
  assert not os.path.exists(os.path.join(out, records.PROGRESS))
  assert not [n for n in os.listdir(out) if n.endswith('.incomplete')]
  from_files = data.load_split(config, 'train', raw('radimagenet'))
  from_records = data.load_split(config, 'train', out)
  for i in range(len(from_files)):
    np.testing.assert_array_equal(from_records.load_example(i)[0].numpy(),
                                  from_files.load_example(i)[0].numpy())
  # Once complete, the same command does nothing.
  lines.clear()
  record_writer.prepare(config, raw('radimagenet'), out,
                        examples_per_shard=8, log=lines.append)
  assert lines == [f'{out} is already prepared for this recipe.']


def test_interrupted_prepare_of_another_recipe_starts_over(raw, tmp_path,
                                                           monkeypatch):
  out = str(tmp_path / 'out')
  monkeypatch.setattr(record_writer, '_write_shard', _raise_interrupt)
  with pytest.raises(KeyboardInterrupt):
    record_writer.prepare(_config('radimagenet', image_size=8),
                          raw('radimagenet'), out, examples_per_shard=8)
  monkeypatch.undo()
  lines = []
  record_writer.prepare(_config('radimagenet'), raw('radimagenet'), out,
                        examples_per_shard=8, log=lines.append)
  assert 'starting over' in lines[0]
  assert data.load_split(_config('radimagenet'), 'test', out).x_shape == (
      SIZE, SIZE, 1)


def _raise_interrupt(*args):
  del args
  raise KeyboardInterrupt


def _copy(folder, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  target = str(tmp_path / 'copy')
  shutil.copytree(folder, target)
  return target


def test_truncated_or_missing_shard_is_detected_on_load(rad_prepared,
                                                        tmp_path):
  out = _copy(rad_prepared, tmp_path)
  shard = records.shard_name('train', 1, 4)
  fixtures.truncate(os.path.join(out, shard))
  with pytest.raises(records.PreparedDataError,
                     match=f'--data_dir={out}: shard {shard} has .* bytes, '
                     r'not .* \(truncated or changed\)') as e:
    data.load_split(_config('radimagenet'), 'train', out)
  assert '\n' not in str(e.value)
  os.remove(os.path.join(out, shard))
  with pytest.raises(records.PreparedDataError,
                     match=f'shard {shard} is missing'):
    data.load_split(_config('radimagenet'), 'train', out)
  # The other splits are intact and still load.
  assert len(data.load_split(_config('radimagenet'), 'test', out)) == 7


def test_corrupt_bytes_in_a_shard_are_detected_on_read(rad_prepared,
                                                       tmp_path):
  out = _copy(rad_prepared, tmp_path)
  shard = os.path.join(out, records.shard_name('train', 0, 4))
  split = data.load_split(_config('radimagenet'), 'train', out)
  record = split.read(3)
  with open(shard, 'rb') as f:
    contents = f.read()
  where = contents.find(record) + len(record) // 2
  assert where > len(record) // 2
  with open(shard, 'r+b') as f:  # Same size: only reading can tell.
    f.seek(where)
    f.write(bytes(255 - b for b in contents[where:where + 16]))
  split = data.load_split(_config('radimagenet'), 'train', out)
  failures = []
  for i in range(8):
    try:
      split.read(i)
    except records.PreparedDataError as e:
      failures.append(str(e))
  assert failures, 'no read noticed the flipped bytes'
  assert all(f'shard {os.path.basename(shard)} is corrupt' in f and
             '\n' not in f for f in failures)
  ds = tf.data.Dataset.range(8).map(split.load_example)
  with pytest.raises(tf.errors.OpError, match='is corrupt at example'):
    list(ds)


def test_corrupt_metadata_is_detected(rad_prepared, tmp_path):
  out = _copy(rad_prepared, tmp_path)
  with open(os.path.join(out, records.METADATA), 'w') as f:
    f.write('{"format": 1, "splits"')
  with pytest.raises(records.PreparedDataError,
                     match=f'--data_dir={out}: prepared.json is corrupt'):
    data.load_split(_config('radimagenet'), 'train', out)


@pytest.mark.parametrize('change, message', [
    (dict(dataset='ham10000'),
     'holds a prepared radimagenet dataset, not ham10000'),
    (dict(image_size=8),
     r'was prepared with --config.data.image_size=16, but this run has 8'),
    (dict(split_seed=1),
     r'was prepared with --config.data.split_seed=0, but this run has 1'),
])
def test_another_dataset_or_recipe_is_refused(rad_prepared, change, message):
  if 'dataset' in change:
    config = _config(change['dataset'])
  else:
    config = _config('radimagenet', **change)
  with pytest.raises(records.PreparedDataError,
                     match=f'--data_dir={rad_prepared} ' + message):
    data.load_split(config, 'train', rad_prepared)


def test_seeded_crops_refuse_another_seed(raw, tmp_path):
  out = str(tmp_path / 'out')
  config = _config('ham10000')
  record_writer.prepare(config, raw('ham10000'), out, examples_per_shard=16)
  config.seed = 1
  with pytest.raises(records.PreparedDataError,
                     match=r'prepared with --config.seed=0, but this run '
                     'has 1'):
    data.load_split(config, 'train', out)


def test_output_dir_with_other_files_is_refused(raw, tmp_path):
  (tmp_path / 'notes.txt').write_text('mine')
  with pytest.raises(records.PreparedDataError,
                     match=f'--output_dir={tmp_path} is not empty'):
    record_writer.prepare(_config('radimagenet'), raw('radimagenet'),
                          str(tmp_path))
  assert os.listdir(tmp_path) == ['notes.txt']


def _app(module, *flags, timeout=300):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  return subprocess.run([sys.executable, '-m', module, *flags],
                        capture_output=True, text=True, timeout=timeout,
                        env=env, check=False)


_TINY = ['--dataset=radimagenet', f'--config.data.image_size={SIZE}',
         f'--config.input_shape=({SIZE}, {SIZE}, 1)',
         f'--config.num_classes={RAD_CLASSES}']


@pytest.mark.slow
def test_training_on_the_prepared_folder_gives_the_same_run(raw, tmp_path):
  out = str(tmp_path / 'prepared')
  proc = _app('dp_medtf.data.prepare', *_TINY,
              f'--data_dir={raw("radimagenet")}', f'--output_dir={out}')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'radimagenet: 28/7/7 examples' in proc.stdout
  results = {}
  for name, data_dir in (('raw', raw('radimagenet')), ('prepared', out)):
    workdir = tmp_path / name
    proc = _app('dp_medtf.train', *_TINY, f'--data_dir={data_dir}',
                '--epsilon=8', f'--workdir={workdir}',
                '--config.model.width=4', '--config.batch_size=8',
                '--config.physical_batch_size=8', '--config.epochs=2',
                '--config.eval_batch_size=16', '--config.data.cache_bytes=0',
                '--config.augment.multiplicity=2',
                '--config.dp.insecure_seeded_randomness=true')
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(workdir / 'results.json') as f:
      results[name] = json.load(f)
  assert results['prepared']['metrics'] == results['raw']['metrics']
  assert results['prepared']['history'] == results['raw']['history']
  assert results['prepared']['steps'] == results['raw']['steps'] > 0


def test_apps_refuse_a_prepared_folder_of_another_size(rad_prepared,
                                                       tmp_path):
  proc = _app('dp_medtf.train', '--dataset=radimagenet',
              f'--data_dir={rad_prepared}', '--config.data.image_size=8',
              '--config.input_shape=(8, 8, 1)',
              f'--config.num_classes={RAD_CLASSES}',
              f'--workdir={tmp_path}', '--config.epochs=1')
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1] == (
      f'error: --data_dir={rad_prepared} was prepared with '
      '--config.data.image_size=16, but this run has 8; prepare it again '
      'with this recipe.')


def test_prepare_app_usage_errors(tmp_path):
  proc = _app('dp_medtf.data.prepare', '--dataset=radimagenet',
              f'--data_dir={tmp_path}')
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1] == (
      'error: --output_dir is required.')
  proc = _app('dp_medtf.data.prepare', '--dataset=radimagenet',
              f'--data_dir={tmp_path}', f'--output_dir={tmp_path / "o"}')
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1].startswith(
      'error: --dataset=radimagenet: no radiology_ai/ folder')
