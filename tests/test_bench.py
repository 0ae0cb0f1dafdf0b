"""The benchmark: argument handling, the memory estimate, its processes, JSON."""

import dataclasses
import io
import json
import os
import subprocess
import sys

import pytest

from dp_medtf import benchmarking
from dp_medtf.privacy import step as dp_step
from dp_medtf.privacy import tf_privacy

# A variant's process without TensorFlow: it answers the bench's protocol
# with step times and peak memory that follow its batch (time 0.1 B for
# non_private, 0.2 B for the others; peak 100 + B^2 MB), and fails for
# `ghost`.
FAKE_CHILD = r'''
import json, sys
args = dict(a[2:].split('=', 1) for a in sys.argv[1:])
if args['child'] == 'ghost':
  sys.exit('ValueError: ghost fails here')
batch = int(args['batch_size'])
seconds = (0.1 if args['child'] == 'non_private' else 0.2) * batch
print('ready', flush=True)
for line in sys.stdin:
  if line.strip() != 'step':
    break
  print(seconds, flush=True)
print(json.dumps({'peak_mb': 100 + batch * batch}), flush=True)
'''
FAKE_COMMAND = [sys.executable, '-c', FAKE_CHILD]
TINY = benchmarking.Settings(model='resnet9', width=2, input_shape=(16, 16, 3),
                             batch_size=2, steps=2, warmup=1)


def test_parse_shape():
  assert benchmarking.parse_shape(['64', '64', '3']) == (64, 64, 3)
  for bad in (['64', 'x'], ['0', '3'], []):
    with pytest.raises(ValueError, match='input_shape'):
      benchmarking.parse_shape(bad)


@pytest.mark.parametrize('args,match', [
    ((['magic'], 4, 4, 1, 0), 'variants'),
    (([], 4, 4, 1, 0), 'variants'),
    ((['ghost'], 0, 4, 1, 0), 'batch_size'),
    ((['ghost'], 8, 4, 1, 0), 'logical_batch_size'),
    ((['ghost'], 4, 4, 0, 0), 'steps'),
])
def test_validate(args, match):
  with pytest.raises(ValueError, match=match):
    benchmarking.validate(*args)


def test_variants_are_the_engines_between_the_references():
  assert benchmarking.VARIANTS == (
      ('non_private',) + dp_step.ENGINES + ('keras_fit', 'tf_privacy'))


def test_settings_flags_carry_every_setting_a_child_needs():
  settings = benchmarking.Settings(model='unet3d', width=4,
                                   input_shape=(8, 16, 16, 1), num_classes=3,
                                   batch_size=2, views=2, steps=9, warmup=0)
  assert settings.logical == 2 and settings.chunks == 1
  assert settings.to_flags() == [
      '--model=unet3d', '--input_shape=8,16,16,1', '--num_classes=3',
      '--batch_size=2', '--logical_batch_size=2', '--views=2', '--steps=9',
      '--warmup=0', '--width=4']
  chunked = benchmarking.Settings(batch_size=32, logical_batch_size=100)
  assert chunked.chunks == 4
  assert '--width' not in ' '.join(chunked.to_flags())


def test_quadratic_estimate_is_exact_on_a_quadratic():
  def f(b):
    return 500.0 + 3.0 * b * b
  assert benchmarking.quadratic_estimate([(8, f(8)), (4, f(4))], 32) == (
      pytest.approx(f(32)))


def test_probe_batches():
  assert benchmarking.probe_batches(32) == [4, 8]
  assert benchmarking.probe_batches(32, [8, 2, 8, 64, 0]) == [2, 8]
  assert benchmarking.probe_batches(4) == []  # B/8 = 0: one probe only.
  assert benchmarking.probe_batches(32, [4]) == []


def test_ratios():
  results = benchmarking.ratios([
      {'name': 'non_private', 's_per_step': 2.0, 'peak_mb': 1000.0},
      {'name': 'ghost', 's_per_step': 2.2, 'peak_mb': 1300.0},
      {'name': 'tf_privacy', 's_per_step': None, 'peak_mb': None}])
  assert [r['ratio_to_non_private'] for r in results] == [1.0, 1.1, None]
  assert results[1]['memory_ratio_to_non_private'] == 1.3


def test_ratios_pair_the_rounds():
  """Load that rose in round 2, after non_private stepped, cancels."""
  results = benchmarking.ratios([
      {'name': 'non_private', 's_per_step': 1.0, 'peak_mb': 1.0,
       'step_times': [1.0, 1.0, 4.0]},
      {'name': 'ghost', 's_per_step': 4.4, 'peak_mb': 1.0,
       'step_times': [1.1, 4.4, 4.4]}])
  assert results[1]['ratio_to_non_private'] == pytest.approx(1.1)


def test_default_memory_budget_leaves_half_the_machine(monkeypatch):
  """ResNet-9's 23.4 GB TF Privacy step must not start on a 24 GB machine."""
  meminfo = {'MemTotal': 24e3, 'MemAvailable': 23e3}
  monkeypatch.setattr(benchmarking, '_meminfo_mb', meminfo.__getitem__)
  assert benchmarking.memory_budget_mb() == 12e3
  assert benchmarking.ESTIMATE_MARGIN * 19.8e3 > benchmarking.memory_budget_mb()
  assert benchmarking.memory_budget_mb(500) == 500


def test_all_failed_names_the_first_failure():
  report = {'results': [
      {'name': 'non_private', 's_per_step': None,
       'skipped': 'failed: non_private exited with code 1: Traceback\n'
                  '  ...\nValueError: bad width'},
      {'name': 'ghost_bk', 's_per_step': None, 'skipped': 'failed: x'}]}
  assert benchmarking.all_failed(report) == (
      'non_private: ValueError: bad width')
  report['results'][1].update(s_per_step=0.1, skipped=None)
  assert benchmarking.all_failed(report) is None


def test_make_step_uses_the_trainers_factory_for_engines():
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from dp_medtf import losses  # pylint: disable=import-outside-toplevel
  model = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(2)])
  loss = losses.classification_loss
  plain = benchmarking.make_step('non_private', model, loss, 4)
  assert type(plain) is dp_step.NonPrivateStep
  for engine in dp_step.ENGINES:
    step = benchmarking.make_step(engine, model, loss, 4)
    assert type(step) is dp_step.DPStep and step.engine == engine
    assert (step.clip_norm, step.noise_multiplier,
            step.expected_batch_size) == (1.0, 1.0, 4.0)
  reference = benchmarking.make_step('tf_privacy', model, loss, 4)
  assert isinstance(reference, tf_privacy.TfPrivacyStep)


def test_serve_answers_each_step_then_its_peak_memory():
  out = io.StringIO()
  benchmarking.serve('ghost_bk', TINY, io.StringIO('step\nstep\ndone\n'), out)
  lines = out.getvalue().splitlines()
  assert lines[0] == 'ready' and len(lines) == 4
  assert all(float(t) > 0 for t in lines[1:3])
  assert json.loads(lines[3])['peak_mb'] > 0


def test_keras_fit_serves_as_many_steps_as_asked():
  """fit's epochs follow --steps: a bench of 7 steps gets 7 step times."""
  settings = dataclasses.replace(TINY, steps=7, warmup=0)
  out = io.StringIO()
  benchmarking.serve('keras_fit', settings, io.StringIO('step\n' * 7 +
                                                        'done\n'), out)
  lines = out.getvalue().splitlines()
  assert lines[0] == 'ready' and len(lines) == 9, lines
  assert all(float(t) > 0 for t in lines[1:8])
  assert json.loads(lines[8])['peak_mb'] > 0


def test_benchmark_estimates_tf_privacy_from_its_probes():
  settings = benchmarking.Settings(batch_size=8, steps=3, warmup=0)
  report = benchmarking.benchmark(
      settings, ['non_private', 'ghost', 'ghost_bk', 'tf_privacy'],
      child_command=FAKE_COMMAND, memory_budget=1, tf_privacy_probes=[2, 4])
  assert report['batch_size'] == 8 and report['chunks_per_step'] == 1
  by_name = {r['name']: r for r in report['results']}
  assert list(by_name) == ['non_private', 'ghost', 'ghost_bk', 'tf_privacy']
  assert by_name['non_private']['step_times'] == [0.8] * 3
  assert by_name['ghost_bk']['ratio_to_non_private'] == 2.0
  assert by_name['ghost_bk']['peak_mb'] == 164
  assert by_name['ghost']['s_per_step'] is None
  assert 'ValueError: ghost fails here' in by_name['ghost']['skipped']
  reference = by_name['tf_privacy']
  assert [p['batch_size'] for p in reference['probes']] == [2, 4]
  assert [p['peak_mb'] for p in reference['probes']] == [104, 116]
  assert reference['estimate']['peak_mb'] == 164  # 100 + B^2 at B = 8.
  # Time is linear in B here: a + c B^2 through 0.4 and 0.8 gives 2.4.
  assert reference['estimate']['s_per_step'] == 2.4
  assert reference['estimate']['ratio_to_non_private'] == 3.0
  assert reference['s_per_step'] is None
  assert 'exceeds the memory budget of 1 MB' in reference['skipped']


def test_benchmark_runs_tf_privacy_alone_when_it_fits():
  settings = benchmarking.Settings(batch_size=8, steps=2, warmup=0)
  report = benchmarking.benchmark(
      settings, ['non_private', 'tf_privacy'], child_command=FAKE_COMMAND,
      memory_budget=10_000, tf_privacy_probes=[2, 4])
  reference = report['results'][1]
  assert reference['interleaved'] is False and 'skipped' not in reference
  assert reference['s_per_step'] == 1.6 and reference['peak_mb'] == 164
  assert reference['ratio_to_non_private'] == 2.0


def test_benchmark_refuses_tf_privacy_over_several_chunks():
  settings = benchmarking.Settings(batch_size=4, logical_batch_size=8,
                                   steps=1, warmup=0)
  report = benchmarking.benchmark(settings, ['tf_privacy'],
                                  child_command=['false'])
  [reference] = report['results']
  assert reference['s_per_step'] is None
  assert 'cannot accumulate chunks' in reference['skipped']
  assert report['chunks_per_step'] == 2


@pytest.mark.slow
def test_cli_prints_one_json_object():
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  out = subprocess.run(
      [sys.executable, '-m', 'dp_medtf.bench', '--model=resnet9', '--width=2',
       '--input_shape=16,16,3', '--batch_size=4', '--steps=2', '--warmup=1',
       '--variants=non_private,ghost_bk,keras_fit,tf_privacy',
       '--tf_privacy_probe_batches=1,2', '--memory_budget_mb=1'],
      capture_output=True, text=True, env=env, timeout=600, check=True)
  report = json.loads(out.stdout)
  assert {'model', 'input_shape', 'batch_size', 'results'} <= set(report)
  assert report['input_shape'] == [16, 16, 3] and report['batch_size'] == 4
  by_name = {r['name']: r for r in report['results']}
  assert list(by_name) == ['non_private', 'ghost_bk', 'keras_fit',
                          'tf_privacy']
  for name in ('non_private', 'ghost_bk', 'keras_fit'):
    r = by_name[name]
    assert r['s_per_step'] > 0 and r['peak_mb'] > 0
    assert len(r['step_times']) == 2
  assert by_name['non_private']['ratio_to_non_private'] == 1.0
  skipped = by_name['tf_privacy']
  assert skipped['s_per_step'] is None and skipped['ratio_to_non_private'] is (
      None)
  assert 'exceeds the memory budget of 1 MB' in skipped['skipped']
  assert [p['batch_size'] for p in skipped['probes']] == [1, 2]
  assert skipped['estimate']['peak_mb'] > 1


def test_cli_refuses_probe_batches_that_are_not_integers(tmp_path):
  env = dict(os.environ)
  env.pop('TF_CPP_MIN_LOG_LEVEL', None)  # The package's default applies.
  proc = subprocess.run(
      [sys.executable, '-m', 'dp_medtf.bench',
       '--tf_privacy_probe_batches=4,x'],
      capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
      check=False)
  assert proc.returncode == 2 and proc.stdout == ''
  assert proc.stderr.strip() == ('error: --tf_privacy_probe_batches must be '
                                 'integers, got 4,x.')
