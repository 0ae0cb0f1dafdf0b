"""The train app end to end on the demo, and its answers to bad flags."""

import json
import os
import subprocess
import zipfile
import sys

import h5py
import numpy as np
import pytest
import sklearn.metrics
import tensorflow as tf

import dp_medtf.models  # pylint: disable=unused-import  (custom objects)

from dp_medtf import data
from dp_medtf import recipes
from tests import events

RESULT_KEYS = {'dataset', 'model', 'epsilon_target', 'epsilon_spent', 'delta',
               'noise_multiplier', 'clip_norm', 'sampling_rate', 'steps',
               'epochs', 'batch_size', 'seed', 'metrics', 'wall_seconds',
               'engine'}


def _train(*flags, timeout=600):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  return subprocess.run([sys.executable, '-m', 'dp_medtf.train', *flags],
                        capture_output=True, text=True, timeout=timeout,
                        env=env, check=False)


def _results(workdir):
  with open(os.path.join(workdir, 'results.json')) as f:
    return json.load(f)


def _count_datasets(path):
  found = []
  with h5py.File(path) as f:
    f.visititems(lambda name, obj: found.append(name)
                 if isinstance(obj, h5py.Dataset) else None)
  return len(found)


def test_short_dp_run_writes_complete_outputs(tmp_path):
  proc = _train('--dataset=demo', '--epsilon=8', f'--workdir={tmp_path}',
                '--config.epochs=1')
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = _results(tmp_path)
  assert RESULT_KEYS <= set(results)
  assert results['randomness'] == 'secret'
  # A private run publishes held-out metrics, epsilon and the ledger only:
  # no statistic of the training data (such as its loss) anywhere.
  with open(tmp_path / 'history.json') as f:
    history = json.load(f)
  assert history and all('loss' not in h for h in history)
  assert all('loss' not in h for h in results['history'])
  tags = events.event_tags(tmp_path / 'tensorboard')
  assert 'privacy/epsilon_spent' in tags and 'validation/mcc' in tags
  assert not any('loss' in t for t in tags), tags
  assert 'loss' not in proc.stdout + proc.stderr
  # The secret sampling key lives in the checkpoint only.
  reader = tf.train.load_checkpoint(str(tmp_path / 'checkpoints'))
  key_name = next(n for n in reader.get_variable_to_shape_map()
                  if 'sampling_key' in n)
  key = reader.get_tensor(key_name)
  assert key.shape == (4,)
  published = proc.stdout + proc.stderr + json.dumps(results) + json.dumps(
      history)
  for word in key.tolist() + key.view(np.uint64).tolist():
    assert str(word) not in published
  assert results['epsilon_target'] == 8.0
  assert 7.9 <= results['epsilon_spent'] <= 8.0
  assert results['steps'] == 9 and results['epochs'] == 1
  assert results['noise_multiplier'] > 0 and results['clip_norm'] == 1.0
  assert results['sampling_rate'] == pytest.approx(256 / 2400)
  assert results['engine'] == recipes.load('demo').dp.engine
  assert os.listdir(tmp_path / 'checkpoints')
  assert os.listdir(tmp_path / 'tensorboard')
  # The release file holds the architecture and weights only: no optimizer
  # slots, ledger or secret randomness.
  with zipfile.ZipFile(tmp_path / 'model.keras') as archive:
    assert sorted(archive.namelist()) == [
        'config.json', 'metadata.json', 'model.weights.h5']
    archive.extract('model.weights.h5', tmp_path)
  with h5py.File(tmp_path / 'model.weights.h5') as weights:
    names = []
    weights.visit(names.append)
  assert not any(word in name.lower() for name in names
                 for word in ('optimizer', 'ledger', 'sampling_key',
                              'generator'))
  release = tf.keras.models.load_model(tmp_path / 'model.keras')
  assert len(release.weights) > 0
  # The published test MCC is the released model's, recomputed here.
  config = recipes.load('demo')
  test = data.load_split(config, 'test', '')
  x = np.stack([test.load_example(i)[0].numpy() for i in range(len(test))])
  x = (x - np.array(config.normalization.mean, np.float32)) / np.array(
      config.normalization.std, np.float32)
  predicted = np.argmax(release.predict(x, batch_size=300, verbose=0), -1)
  labels = [int(test.load_example(i)[1]) for i in range(len(test))]
  assert results['metrics']['mcc'] == pytest.approx(
      sklearn.metrics.matthews_corrcoef(labels, predicted), abs=1e-6)
  assert _count_datasets(tmp_path / 'model.weights.h5') == len(
      release.weights)


def test_non_private_demo_learns(tmp_path):
  proc = _train('--epsilon=inf', f'--workdir={tmp_path}', '--config.epochs=3',
                '--config.batch_size=64')
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = _results(tmp_path)
  assert results['epsilon_target'] == 'inf'
  assert results['noise_multiplier'] == 0.0
  assert results['engine'] == 'non_private'
  assert results['randomness'] is None
  assert results['recipe'] == 'demo' and results['early_stopping'] is None
  assert results['metrics']['mcc'] >= 0.5
  # The non-private baseline may report its training loss.
  assert all(h['loss'] > 0 for h in results['history'])
  assert 'loss' in proc.stdout


@pytest.mark.slow
def test_dp_demo_at_epsilon_8_learns(tmp_path):
  proc = _train('--dataset=demo', '--epsilon=8', f'--workdir={tmp_path}')
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = _results(tmp_path)
  assert results['epsilon_spent'] <= 8.0
  assert results['metrics']['mcc'] >= 0.3


@pytest.mark.parametrize('flags,named', [
    (['--epsilon=-1'], '--epsilon'),
    (['--epsilon=abc'], '--epsilon'),
    (['--delta=1.5'], '--delta'),
    (['--dataset=imagenet'], '--dataset'),
    (['--dataset=ham10000'], '--data_dir'),
    (['--dataset=ham10000', '--data_dir=/nonexistent/ham'], '--data_dir'),
    (['--dataset=ham10000', '--data_dir=/'], 'ham10000'),
    (['--config.learning_rate=nan'], '--config.learning_rate'),
    (['--config.dp.clip_norm=0'], '--config.dp.clip_norm'),
    (['--config.augment.flip_vertical=1.5'], '--config.augment.flip_vertical'),
    (['--config.normalization.std=(0.1,0.0,0.1)'],
     '--config.normalization.std'),
    (['--config.normalization.fit_on_data=true'],
     '--config.normalization.fit_on_data'),
    (['--config.dp.engine=tf_privacy'], '--config.dp.engine'),
    # Early stopping only without privacy: the demo's epsilon is 8.
    (['--config.early_stopping.patience=3'],
     '--config.early_stopping.patience'),
    (['--baseline'], '--baseline'),  # The demo has no baseline recipe.
    (['--dataset=ham10000', '--baseline', '--epsilon=8'], '--baseline'),
    (['--baseline', '--config=dp_medtf/configs/demo.py'], '--baseline'),
])
def test_bad_flags_exit_non_zero_naming_the_flag(flags, named, tmp_path):
  proc = _train(*flags, f'--workdir={tmp_path}', timeout=120)
  assert proc.returncode != 0
  assert named in proc.stderr + proc.stdout
  assert not os.path.exists(tmp_path / 'results.json')
