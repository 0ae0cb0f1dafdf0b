"""Tests of `python -m dp_medtf.attack`."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

SUMMARY_KEYS = {'noise_multiplier', 'share_below_0.1', 'share_below_0.2',
                'share_below_0.3', 'median_error', 'num_images',
                'num_skipped', 'sampling_rate', 'steps'}


def _run(*flags):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  return subprocess.run([sys.executable, '-m', 'dp_medtf.attack', *flags],
                        capture_output=True, text=True, env=env, timeout=300,
                        check=False)


def test_cli_writes_csv_summary_and_figures(tmp_path):
  workdir = tmp_path / 'attack'
  proc = _run('--dataset=demo', '--epsilon=1e12,inf', '--num_images=3',
              '--num_bins=4', f'--workdir={workdir}')
  assert proc.returncode == 0, proc.stderr[-3000:]

  with open(workdir / 'errors.csv', newline='') as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 6
  assert set(rows[0]) == {'image_id', 'budget', 'error', 'best_candidate'}
  assert {r['budget'] for r in rows} == {'1e+12', 'inf'}
  assert {int(r['image_id']) for r in rows} == {0, 1, 2}
  for row in rows:
    assert 0.0 <= float(row['error']) <= 2.0
    assert row['best_candidate'].startswith('bin')
  assert all(float(r['error']) < 1e-3 for r in rows if r['budget'] == 'inf')

  with open(workdir / 'summary.json') as f:
    summary = json.load(f)
  assert set(summary) == {'1e+12', 'inf'}
  for entry in summary.values():
    assert set(entry) == SUMMARY_KEYS
    assert entry['num_images'] == 3 and entry['num_skipped'] == 0
    assert entry['sampling_rate'] == pytest.approx(1 / 2400)
    assert entry['steps'] == 12 * 2400
  assert summary['inf']['share_below_0.1'] == 1.0
  assert summary['inf']['noise_multiplier'] == 0.0
  assert 0.0 < summary['1e+12']['noise_multiplier'] < 1e-3

  for name in ('error_cdf.png', 'best_reconstructions.png'):
    with Image.open(workdir / name) as image:
      assert image.format == 'PNG'
      assert np.asarray(image).std() > 0
  assert '3/3' in proc.stdout  # The progress bar reached the end.


@pytest.mark.parametrize('flag, name', [
    ('--dataset=mnist', '--dataset'),
    ('--epsilon=1e9,-1', '--epsilon'),
    ('--num_images=0', '--num_images'),
])
def test_bad_flags_exit_nonzero_naming_the_flag(tmp_path, flag, name):
  proc = _run(flag, f'--workdir={tmp_path}')
  assert proc.returncode != 0
  assert name in proc.stderr
  assert not os.listdir(tmp_path)


def test_unavailable_dataset_exits_nonzero_with_its_message(tmp_path):
  proc = _run('--dataset=msd_liver', '--data_dir=/nonexistent',
              '--num_images=1', f'--workdir={tmp_path}')
  assert proc.returncode != 0
  assert 'msd_liver' in proc.stderr
  assert 'Traceback' not in proc.stderr
