"""The benchmark app: argument handling, the memory estimate, its JSON."""

import json
import os
import subprocess
import sys

import pytest

from dp_medtf import bench


def test_parse_shape():
  assert bench.parse_shape(['64', '64', '3']) == (64, 64, 3)
  for bad in (['64', 'x'], ['0', '3'], []):
    with pytest.raises(ValueError, match='input_shape'):
      bench.parse_shape(bad)


@pytest.mark.parametrize('args,match', [
    ((['magic'], 4, 4, 1, 0), 'variants'),
    (([], 4, 4, 1, 0), 'variants'),
    ((['ghost'], 0, 4, 1, 0), 'batch_size'),
    ((['ghost'], 8, 4, 1, 0), 'logical_batch_size'),
    ((['ghost'], 4, 4, 0, 0), 'steps'),
])
def test_validate(args, match):
  with pytest.raises(ValueError, match=match):
    bench.validate(*args)


def test_quadratic_estimate_is_exact_on_a_quadratic():
  def f(b):
    return 500.0 + 3.0 * b * b
  assert bench.quadratic_estimate([(8, f(8)), (4, f(4))], 32) == (
      pytest.approx(f(32)))


def test_ratios():
  results = bench.ratios([
      {'name': 'non_private', 's_per_step': 2.0, 'peak_mb': 1000.0},
      {'name': 'ghost', 's_per_step': 2.2, 'peak_mb': 1300.0},
      {'name': 'tf_privacy', 's_per_step': None, 'peak_mb': None}])
  assert [r['ratio_to_non_private'] for r in results] == [1.0, 1.1, None]
  assert results[1]['memory_ratio_to_non_private'] == 1.3


def test_ratios_pair_the_rounds():
  """Load that rose in round 2, after non_private stepped, cancels."""
  results = bench.ratios([
      {'name': 'non_private', 's_per_step': 1.0, 'peak_mb': 1.0,
       'step_times': [1.0, 1.0, 4.0]},
      {'name': 'ghost', 's_per_step': 4.4, 'peak_mb': 1.0,
       'step_times': [1.1, 4.4, 4.4]}])
  assert results[1]['ratio_to_non_private'] == pytest.approx(1.1)


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


def test_default_memory_budget_leaves_half_the_machine(monkeypatch):
  """ResNet-9's 23.4 GB TF Privacy step must not start on a 24 GB machine."""
  meminfo = {'MemTotal': 24e3, 'MemAvailable': 23e3}
  monkeypatch.setattr(bench, '_meminfo_mb', meminfo.__getitem__)
  assert bench.memory_budget_mb() == 12e3
  assert bench.ESTIMATE_MARGIN * 19.8e3 > bench.memory_budget_mb()
  assert bench.memory_budget_mb(500) == 500
