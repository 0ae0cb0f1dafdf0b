"""Tests of `python -m dp_medtf.attack`, on the demo and the miniature datasets."""

import csv
import json
import math
import os
import subprocess
import sys

import ml_collections
import numpy as np
from PIL import Image
import pytest

from dp_medtf import data
from dp_medtf import fit
from dp_medtf import recipes
from dp_medtf import runs
from tests import run_fixtures
from tests.data import fixtures

SUMMARY_KEYS = {'noise_multiplier', 'share_below_0.1', 'share_below_0.2',
                'share_below_0.3', 'median_error', 'num_images',
                'num_skipped', 'sampling_rate', 'steps', 'clip_norm',
                'batch_size', 'run_dir'}
# Small models and images: each run takes seconds.
SMALL = {
    'demo': ['--config.data.image_size=16', '--config.input_shape=(16,16,3)',
             '--config.model.width=4'],
    'ham10000': ['--config.data.image_size=16',
                 '--config.input_shape=(16,16,3)', '--config.model.width=4'],
    'radimagenet': ['--config.data.image_size=16',
                    '--config.input_shape=(16,16,1)',
                    '--config.model.width=4', '--config.num_classes=7'],
    # The U-Net pools four times: every side at least 16.
    'msd_liver': ['--config.data.volume_shape=(16,16,16)',
                  '--config.input_shape=(16,16,16,1)',
                  '--config.model.width=4'],
}
DEMO_N = 2400  # The demo's training split.


def _run(*flags):
  env = dict(os.environ)
  env.pop('TF_CPP_MIN_LOG_LEVEL', None)  # The package's default applies.
  return subprocess.run([sys.executable, '-m', 'dp_medtf.attack', *flags],
                        capture_output=True, text=True, env=env, timeout=300,
                        check=False)


def _summary(workdir):
  with open(os.path.join(workdir, 'summary.json')) as f:
    return json.load(f)


def _black_image(path, size, mode):
  Image.new(mode, (size, size)).save(path)


@pytest.fixture(scope='module')
def data_dirs(tmp_path_factory):
  """The miniature datasets, each with one black image in its training split.

  Returns:
    dataset -> (data_dir, N = size of its training split).
  """
  root = str(tmp_path_factory.mktemp('attack_data'))
  ham = fixtures.make_ham10000(root)
  _black_image(os.path.join(ham, 'HAM10000_images_part_1',
                            'ISIC_0099999.jpg'), 60, 'RGB')
  with open(os.path.join(ham, 'HAM10000_metadata.csv'), 'a',
            newline='') as f:
    csv.writer(f).writerow(['HAM_0099999', 'ISIC_0099999', 'nv', 'histo',
                            '50.0', 'male', 'back', 'vidir_modern'])
  rad = fixtures.make_radimagenet(root)
  _black_image(os.path.join(rad, 'radiology_ai', 'CT', 'abd', 'normal',
                            'black.png'), 40, 'L')
  with open(os.path.join(rad, 'RadiologyAI_train.csv'), 'a', newline='') as f:
    csv.writer(f).writerow(['radiology_ai/CT/abd/normal/black.png',
                            'CT-abd-normal'])
  liver = fixtures.make_msd_liver(root)
  out = {}
  for dataset, data_dir in (('ham10000', ham), ('radimagenet', rad),
                            ('msd_liver', liver)):
    config = recipes.load(dataset)
    if dataset == 'msd_liver':
      config.data.volume_shape, config.input_shape = (4, 16, 16), (4, 16, 16, 1)
    else:
      config.data.image_size = 16
      config.input_shape = (16, 16, config.input_shape[-1])
    out[dataset] = (data_dir, len(data.load_split(config, 'train', data_dir)))
  assert out['radimagenet'][1] == 7 * 4 + 1  # The black image is training.
  assert out['msd_liver'][1] == 10
  return out


def test_cli_writes_csv_summary_and_figures(tmp_path):
  workdir = tmp_path / 'attack'
  proc = _run('--dataset=demo', '--epsilon=1e12,inf', '--num_images=3',
              '--num_bins=4', f'--workdir={workdir}')
  assert proc.returncode == 0, proc.stderr[-3000:]

  with open(workdir / 'errors.csv', newline='') as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 6
  assert set(rows[0]) == {'image_id', 'budget', 'error', 'best_candidate'}
  assert {r['budget'] for r in rows} == {'1e12', 'inf'}
  assert {int(r['image_id']) for r in rows} == {0, 1, 2}
  for row in rows:
    assert 0.0 <= float(row['error']) <= 2.0
    assert row['best_candidate'].startswith('bin')
  assert all(float(r['error']) < 1e-3 for r in rows if r['budget'] == 'inf')

  summary = _summary(workdir)
  assert set(summary) == {'1e12', 'inf'}
  for entry in summary.values():
    assert set(entry) == SUMMARY_KEYS
    assert entry['num_images'] == 3 and entry['num_skipped'] == 0
    assert entry['sampling_rate'] == pytest.approx(1 / DEMO_N)
    assert entry['steps'] == 12 * DEMO_N
    assert entry['batch_size'] == 1 and entry['run_dir'] is None
  assert summary['inf']['share_below_0.1'] == 1.0
  assert summary['inf']['noise_multiplier'] == 0.0
  assert 0.0 < summary['1e12']['noise_multiplier'] < 1e-3
  assert summary['1e12']['clip_norm'] == 1.0

  for name in ('error_cdf.png', 'best_reconstructions.png'):
    with Image.open(workdir / name) as image:
      assert image.format == 'PNG'
      assert np.asarray(image).std() > 0
  assert '3/3' in proc.stdout  # The progress bar reached the end.


@pytest.mark.parametrize('dataset', ['ham10000', 'radimagenet', 'msd_liver'])
def test_attack_reads_each_dataset_through_its_split(data_dirs, dataset,
                                                     tmp_path):
  data_dir, n = data_dirs[dataset]
  # RadImageNet: all, with the black image last; the others: the first 4.
  num_images = n if dataset == 'radimagenet' else 4
  proc = _run(f'--dataset={dataset}', f'--data_dir={data_dir}',
              '--epsilon=1e15,inf', f'--workdir={tmp_path}', '--num_bins=4',
              f'--num_images={num_images}', '--config.epochs=2',
              *SMALL[dataset])
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = _summary(tmp_path)
  # Only RadImageNet's recipe leaves its near-empty (black) image unscored.
  skipped = 1 if dataset == 'radimagenet' else 0
  for entry in summary.values():
    assert entry['num_images'] == num_images - skipped
    assert entry['num_skipped'] == skipped
    # Calibrated over the data's N (not the recipe's estimate) and the
    # overridden epochs.
    assert entry['sampling_rate'] == pytest.approx(1 / n)
    assert entry['steps'] == 2 * n
  assert summary['inf']['share_below_0.1'] == 1.0
  assert summary['inf']['median_error'] < 1e-3
  z = summary['1e15']['noise_multiplier']
  assert 0.0 < z < 1e-3


def _fake_run(run_dir, epsilon, **fields):
  """A train workdir's results.json, as dp_medtf.fit writes it."""
  config = recipes.load('demo')
  config.epochs = 1
  config.dp.epsilon = epsilon
  plan = fit.plan_privacy(config, DEMO_N)
  return run_fixtures.write_run(run_dir, **{
      'dataset': 'demo', 'status': runs.FINISHED,
      'epsilon_target': plan.epsilon_target, 'delta': plan.delta,
      'noise_multiplier': plan.noise_multiplier, 'clip_norm': plan.clip_norm,
      'sampling_rate': plan.sampling_rate, 'steps': plan.steps,
      'planned_steps': plan.steps, 'epochs': 1,
      'batch_size': plan.expected_batch_size, 'num_train_examples': DEMO_N,
      **fields})


def test_run_dir_takes_each_runs_noise_and_budget(tmp_path):
  private = _fake_run(tmp_path / 'eps8_seed0', 8.0)
  public = _fake_run(tmp_path / 'epsinf_seed0', math.inf)
  workdir = tmp_path / 'attack'
  proc = _run('--dataset=demo', '--num_images=2', f'--workdir={workdir}',
              f'--run_dir={tmp_path / "eps8_seed0"},'
              f'{tmp_path / "epsinf_seed0"}', *SMALL['demo'])
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = _summary(workdir)
  assert set(summary) == {'8', 'inf'}
  entry = summary['8']
  assert entry['noise_multiplier'] == private.noise_multiplier > 0.1
  assert entry['clip_norm'] == private.clip_norm
  assert entry['sampling_rate'] == private.sampling_rate == 256 / DEMO_N
  assert entry['steps'] == private.steps == DEMO_N // 256
  assert entry['run_dir'] == str(tmp_path / 'eps8_seed0')
  assert entry['batch_size'] == 1
  assert summary['inf']['noise_multiplier'] == 0.0
  assert summary['inf']['steps'] == public.steps
  assert summary['inf']['share_below_0.1'] == 1.0
  # At the run's z (about 1 for epsilon 8) nothing is recovered.
  assert entry['share_below_0.1'] == 0.0


def test_batch_attack_calibrates_for_its_batch(tmp_path):
  proc = _run('--dataset=demo', '--num_images=5', '--batch_size=2',
              '--epsilon=1e15,inf', f'--workdir={tmp_path}', *SMALL['demo'])
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = _summary(tmp_path)
  with open(tmp_path / 'errors.csv', newline='') as f:
    rows = list(csv.DictReader(f))
  # Every image of each batch (2 + 2 + 1) is scored.
  assert sorted(int(r['image_id']) for r in rows if r['budget'] == 'inf') == [
      0, 1, 2, 3, 4]
  for entry in summary.values():
    assert entry['batch_size'] == 2 and entry['num_images'] == 5
    assert entry['sampling_rate'] == pytest.approx(2 / DEMO_N)
    assert entry['steps'] == 12 * (DEMO_N // 2)
  config = recipes.load('demo')
  with config.unlocked():
    config.dp.epsilon, config.batch_size = 1e15, 2
  plan = fit.plan_privacy(config, DEMO_N)
  assert summary['1e15']['noise_multiplier'] == pytest.approx(
      plan.noise_multiplier, rel=1e-12)


@pytest.mark.parametrize('flag, name', [
    ('--dataset=mnist', '--dataset'),
    ('--epsilon=1e9,-1', '--epsilon'),
    ('--num_images=0', '--num_images'),
    ('--batch_size=0', '--batch_size'),
])
def test_bad_flags_exit_nonzero_naming_the_flag(tmp_path, flag, name):
  proc = _run(flag, f'--workdir={tmp_path}')
  assert proc.returncode != 0
  assert name in proc.stderr
  assert not os.listdir(tmp_path)


def _error_line(proc):
  """The one `error:` line (the readers may log what they found first)."""
  assert proc.returncode == 2, proc.stderr[-2000:]
  errors = [l for l in proc.stderr.splitlines() if l.startswith('error: ')]
  assert len(errors) == 1 and 'Traceback' not in proc.stderr, proc.stderr
  assert proc.stderr.strip().endswith(errors[0])
  return errors[0]


@pytest.mark.parametrize('flags, named', [
    (['--batch_size=11'], '--batch_size=11 is larger than the training '
     'split (10 examples)'),
    (['--num_images=11'], '--num_images=11 is larger than the train split '
     '(10 examples)'),
    (['--split=test', '--num_images=2'], '--num_images=2 is larger than the '
     'test split (1 examples)'),
])
def test_small_data_gives_one_line(data_dirs, tmp_path, flags, named):
  proc = _run('--dataset=msd_liver', f'--data_dir={data_dirs["msd_liver"][0]}',
              f'--workdir={tmp_path}', *SMALL['msd_liver'], *flags)
  assert named in _error_line(proc)
  assert not os.listdir(tmp_path)


@pytest.mark.parametrize('case, named', [
    ('epsilon', '--epsilon=1 conflicts with --run_dir'),
    ('clip_norm', '--clip_norm conflicts with --run_dir'),
    ('missing', 'has no results.json'),
    ('broken', "results.json: field 'noise_multiplier' must be a number, "
     "got 'high'"),
    ('unfinished', 'the run is interrupted'),
    ('other_n', 'trained on 2000 examples, but the training split here has '
     '2400'),
    ('twice', 'both trained at epsilon=8'),
])
def test_bad_run_dir_gives_one_line(tmp_path, case, named):
  run = tmp_path / 'run'
  fields = {'unfinished': {'status': 'interrupted'},
            'other_n': {'num_train_examples': 2000}}.get(case, {})
  if case != 'missing':
    _fake_run(run, 8.0, **fields)
  if case == 'broken':
    path = run / 'results.json'
    path.write_text(json.dumps(dict(json.loads(path.read_text()),
                                    noise_multiplier='high')))
  run_dirs = f'{run},{run}' if case == 'twice' else str(run)
  extra = {'epsilon': ['--epsilon=1'], 'clip_norm': ['--clip_norm=2']}
  workdir = tmp_path / 'attack'
  proc = _run('--dataset=demo', f'--run_dir={run_dirs}',
              f'--workdir={workdir}', *SMALL['demo'], *extra.get(case, []))
  assert named in _error_line(proc)
  assert not os.path.exists(workdir)


def test_unavailable_dataset_exits_nonzero_with_its_message(tmp_path):
  proc = _run('--dataset=msd_liver', '--data_dir=/nonexistent',
              '--num_images=1', f'--workdir={tmp_path}')
  assert proc.returncode != 0
  assert 'msd_liver' in proc.stderr
  assert 'Traceback' not in proc.stderr
