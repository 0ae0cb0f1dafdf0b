"""Resumable runs: same final epsilon, weights and ledger as uninterrupted."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from dp_medtf.privacy import ledger as privacy_ledger

FLAGS = ['--dataset=demo', '--epsilon=8', '--config.epochs=2',
         '--config.data.image_size=16', '--config.input_shape=(16,16,3)',
         '--config.model.width=4']


def _train(workdir, *flags):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  return subprocess.run(
      [sys.executable, '-m', 'dp_medtf.train', *FLAGS,
       f'--workdir={workdir}', *flags],
      capture_output=True, text=True, timeout=600, env=env, check=False)


def _results(workdir):
  with open(os.path.join(workdir, 'results.json')) as f:
    return json.load(f)


def _weights(workdir):
  reader = tf.train.load_checkpoint(os.path.join(workdir, 'checkpoints'))
  names = sorted(n for n in reader.get_variable_to_shape_map()
                 if n.startswith('model/model/') and 'OPTIMIZER' not in n)
  return [reader.get_tensor(n) for n in names]


SEEDED = '--config.dp.insecure_seeded_randomness=true'


@pytest.mark.slow
def test_resumed_run_equals_uninterrupted(tmp_path):
  # Two separate runs share their batches and noise only when both are
  # seeded (not private); see the secret-randomness test below.
  whole, parts = tmp_path / 'whole', tmp_path / 'parts'
  proc = _train(whole, SEEDED)
  assert proc.returncode == 0, proc.stderr[-3000:]
  proc = _train(parts, SEEDED, '--config.stop_after_steps=13',
                '--config.checkpoint_every_steps=4')
  assert proc.returncode == 0, proc.stderr[-3000:]
  interrupted = _results(parts)
  assert interrupted['status'] == 'interrupted' and interrupted['steps'] == 13
  # Without --resume, an existing run is never overwritten.
  proc = _train(parts, SEEDED)
  assert proc.returncode != 0 and '--resume' in proc.stderr
  proc = _train(parts, SEEDED, '--resume')
  assert proc.returncode == 0, proc.stderr[-3000:]

  a, b = _results(whole), _results(parts)
  assert b['status'] == 'finished' and b['steps'] == a['steps'] == 18
  assert b['epsilon_spent'] == a['epsilon_spent'] <= 8.0
  assert b['privacy_ledger'] == a['privacy_ledger'] == [
      {'noise_multiplier': a['noise_multiplier'],
       'sampling_rate': a['sampling_rate'], 'steps': 18}]
  for wa, wb in zip(_weights(whole), _weights(parts)):
    np.testing.assert_allclose(wa, wb, rtol=1e-5, atol=1e-6)
  assert [h['steps'] for h in b['history']] == [9, 18]
  assert a['randomness'] == b['randomness'] == 'seeded (not private)'


def _checkpoint_files(workdir, step):
  folder = os.path.join(workdir, 'checkpoints')
  return [os.path.join(folder, n) for n in os.listdir(folder)
          if n.startswith(f'ckpt-{step}.')]


def test_secret_run_resumes_exactly_even_from_a_damaged_checkpoint(tmp_path):
  first = tmp_path / 'first'
  # --resume on an empty workdir starts a new run and says so.
  proc = _train(first, '--resume', '--config.stop_after_steps=13',
                '--config.checkpoint_every_steps=4')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'starting a new run' in proc.stdout
  assert _results(first)['randomness'] == 'secret'
  damaged = tmp_path / 'damaged'
  shutil.copytree(first, damaged)
  # The newest checkpoint (step 13) loses its data: resume falls back to the
  # one of step 12 and replays step 13 with the same secret state.
  data_file = next(f for f in _checkpoint_files(damaged, 13)
                   if '.data-' in f)
  with open(data_file, 'r+b') as f:
    f.truncate(os.path.getsize(data_file) // 2)
  runs = {}
  for workdir in (first, damaged):
    proc = _train(workdir, '--resume')
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs[workdir] = _results(workdir)
  assert 'resuming from' in _last_lines(proc.stdout)
  a, c = runs[first], runs[damaged]
  # The secret state lives in the checkpoint: both continuations draw the
  # same batches and noise, and no step is counted twice.
  assert a['privacy_ledger'] == c['privacy_ledger'] == [
      {'noise_multiplier': a['noise_multiplier'],
       'sampling_rate': a['sampling_rate'], 'steps': 18}]
  assert a['epsilon_spent'] == c['epsilon_spent'] <= 8.0
  for wa, wc in zip(_weights(first), _weights(damaged)):
    np.testing.assert_allclose(wa, wc, rtol=1e-5, atol=1e-6)
  # Resuming a finished run changes nothing it wrote.
  before = (first / 'results.json').read_text()
  proc = _train(first, '--resume')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'nothing to resume' in proc.stdout
  assert (first / 'results.json').read_text() == before


def _last_lines(text, count=40):
  return '\n'.join(text.splitlines()[-count:])


def test_non_finite_weights_stop_the_run_and_leave_it_resumable(tmp_path):
  proc = _train(tmp_path, '--config.stop_after_steps=4')
  assert proc.returncode == 0, proc.stderr[-3000:]
  proc = _train(tmp_path, '--resume', '--config.learning_rate=3e38')
  assert proc.returncode != 0
  assert 'NaN or infinite' in proc.stderr and 'learning_rate' in proc.stderr
  assert 'Traceback' not in proc.stderr
  assert not [n for n in os.listdir(tmp_path) if n.endswith('.tmp')]
  # The last good checkpoint (step 4) is intact; the run resumes from it and
  # counts no step twice.
  proc = _train(tmp_path, '--resume')
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = _results(tmp_path)
  assert results['status'] == 'finished' and results['steps'] == 18
  assert results['privacy_ledger'][0]['steps'] == 18


def test_a_run_that_would_overspend_stops(tmp_path):
  proc = _train(tmp_path, '--config.epochs=1')
  assert proc.returncode == 0, proc.stderr[-3000:]
  # Its ledger holds 9 steps at the noise calibrated for 9; a second epoch at
  # the noise calibrated for 18 steps in all would overspend.
  proc = _train(tmp_path, '--resume', '--config.epochs=2')
  assert proc.returncode != 0
  assert 'would spend epsilon=' in proc.stderr
  with open(os.path.join(tmp_path, 'results.json')) as f:
    assert json.load(f)['steps'] == 9  # What was written stays.


def test_ledger_composes_segments():
  ledger = privacy_ledger.PrivacyLedger()
  ledger.record(1.0, 0.01, 100)
  ledger.record(2.0, 0.01, 50)
  ledger.record(2.0, 0.01, 50)
  assert [s.steps for s in ledger.segments] == [100, 100]
  one_segment = privacy_ledger.PrivacyLedger()
  one_segment.record(1.0, 0.01, 100)
  assert one_segment.epsilon(1e-5) < ledger.epsilon(1e-5)
  checkpoint = tf.train.Checkpoint(ledger=ledger)
  restored = privacy_ledger.PrivacyLedger()
  path = checkpoint.write(os.path.join(os.environ.get('TMPDIR', '/tmp'),
                                       'ledger_ckpt'))
  tf.train.Checkpoint(ledger=restored).read(path).assert_consumed()
  assert restored.segments == ledger.segments
