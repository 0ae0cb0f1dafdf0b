"""python -m dp_medtf.tune_clip: one epoch per candidate, a table, a JSON."""

import json
import os
import subprocess
import sys

import pytest

SMALL = ['--dataset=demo', '--epsilon=8', '--config.data.image_size=16',
         '--config.input_shape=(16,16,3)', '--config.model.width=4',
         '--config.epochs=3']


def _tune(*flags):
  return subprocess.run([sys.executable, '-m', 'dp_medtf.tune_clip', *flags],
                        capture_output=True, text=True, timeout=600,
                        check=False)


@pytest.mark.slow
def test_one_epoch_per_candidate(tmp_path):
  proc = _tune(*SMALL, '--clip_norms=0.1,10', f'--workdir={tmp_path}')
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(tmp_path / 'tune_clip.json') as f:
    rows = json.load(f)
  assert [r['clip_norm'] for r in rows] == [0.1, 10.0]
  for row in rows:
    # One epoch of the three-epoch run: 9 of 27 steps, at the noise
    # calibrated for all 27, so it spends less than the target.
    with open(os.path.join(row['workdir'], 'results.json')) as f:
      results = json.load(f)
    assert results['steps'] == 9 and results['planned_steps'] == 27
    assert results['clip_norm'] == row['clip_norm']
    assert 0 < row['epsilon_spent'] < 8.0
    assert row['metric'] == 'mcc' and -1 <= row['value'] <= 1
  # Both candidates share the noise multiplier (it does not depend on C).
  assert rows[0]['noise_multiplier'] == rows[1]['noise_multiplier']
  assert '| 0.1 |' in proc.stdout and '| 10 |' in proc.stdout
  assert 'not covered by the privacy budget' in proc.stdout


def test_bad_candidates_are_one_line_errors(tmp_path):
  for flags, named in ((['--clip_norms=0,1'], '--clip_norms'),
                       (['--clip_norms=a'], '--clip_norms'),
                       ([], '--clip_norms'),
                       (['--clip_norms=1', '--epsilon=inf'], '--epsilon')):
    proc = _tune('--dataset=demo', f'--workdir={tmp_path}', *flags)
    assert proc.returncode != 0
    assert named in proc.stderr
    assert 'Traceback' not in proc.stderr
