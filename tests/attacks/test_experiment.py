"""Tests of the attack app's library: budgets from runs, the plan, outputs."""

import csv
import json
import math

import numpy as np
import pytest
import tensorflow as tf

from dp_medtf import json_files
from dp_medtf import recipes
from dp_medtf.attacks import experiment
from dp_medtf.attacks import runner
from tests import run_fixtures

DEMO_N = 2400  # The demo's training split.


def _runs(tmp_path, *fields_per_run):
  """Writes one results.json per dict of fields; their workdirs."""
  run_dirs = []
  for i, fields in enumerate(fields_per_run):
    run_dir = str(tmp_path / f'run{i}')
    run_fixtures.write_run(run_dir, **fields)
    run_dirs.append(run_dir)
  return run_dirs


def test_read_run_names_the_run_dir(tmp_path):
  with pytest.raises(ValueError, match=r'has no results\.json; is it a '
                     'workdir of python -m dp_medtf.train'):
    experiment.read_run(str(tmp_path))
  (tmp_path / 'results.json').write_text('{')
  with pytest.raises(ValueError, match=f'^--run_dir={tmp_path}: .*not valid '
                     'JSON'):
    experiment.read_run(str(tmp_path))
  [run_dir] = _runs(tmp_path, {})
  assert experiment.read_run(run_dir).epsilon_target == 8.0


def test_budgets_from_runs_take_each_runs_mechanism(tmp_path):
  private, public = _runs(tmp_path, {}, {'epsilon_target': math.inf})
  budgets = experiment.budgets_from_runs(
      [private, public], recipes.load('demo'), DEMO_N, epsilon='inf,8',
      delta=1e-5)
  assert [b.key for b in budgets] == ['8', 'inf']
  assert (budgets[0].noise_multiplier, budgets[0].clip_norm,
          budgets[0].run_dir) == (0.93, 1.0, private)
  assert (budgets[1].noise_multiplier, budgets[1].clip_norm) == (0.0, None)


@pytest.mark.parametrize('fields, kwargs, message', [
    ({'dataset': 'ham10000'}, {}, 'trained on ham10000, not --dataset=demo'),
    ({'num_train_examples': 2000}, {}, 'trained on 2000 examples, but the '
     'training split here has 2400'),
    ({'status': 'interrupted', 'metrics': None}, {},
     '^--run_dir: .*the run is interrupted'),
    ({}, {'epsilon': '1'}, r'^--epsilon=1 conflicts with --run_dir, whose '
     'runs trained at epsilon=8'),
    ({}, {'epsilon': '0'}, 'epsilon'),
    ({}, {'clip_norm': 2.0}, '^--clip_norm conflicts with --run_dir'),
    ({}, {'delta': 1e-6}, r'^--delta=1e-06 conflicts with --run_dir=.*, '
     'which used delta=1e-05'),
])
def test_budgets_from_runs_refuse(tmp_path, fields, kwargs, message):
  run_dirs = _runs(tmp_path, fields)
  with pytest.raises(ValueError, match=message):
    experiment.budgets_from_runs(run_dirs, recipes.load('demo'), DEMO_N,
                                 **kwargs)


def test_budgets_from_runs_refuse_two_runs_of_one_budget(tmp_path):
  run_dirs = _runs(tmp_path, {}, {'seed': 11})
  with pytest.raises(ValueError, match='both trained at epsilon=8; give one '
                     'run per budget'):
    experiment.budgets_from_runs(run_dirs, recipes.load('demo'), DEMO_N)


def test_prepare_calibrates_for_the_attacks_batch():
  plan = experiment.prepare(recipes.load('demo'), '', epsilon='1e15,inf',
                            num_images=3, batch_size=2)
  assert plan.num_train_examples == DEMO_N and plan.num_images == 3
  assert plan.split_name == 'train' and not plan.skip_near_empty
  assert [b.key for b in plan.budgets] == ['1e15', 'inf']
  assert plan.budgets[0].sampling_rate == pytest.approx(2 / DEMO_N)
  assert experiment.budget_line(plan.budgets[1], plan) == (
      f'epsilon=inf: noise multiplier 0, clip norm None, '
      f'q={2 / DEMO_N:.4g}, T={12 * DEMO_N // 2}, N=2400, batch size 2')


def test_prepare_attacks_the_whole_split_by_default():
  plan = experiment.prepare(recipes.load('demo'), '', split='test')
  assert plan.num_images == len(plan.split) > 0
  assert [b.key for b in plan.budgets] == (
      experiment.DEFAULT_EPSILONS.split(','))


@pytest.mark.parametrize('kwargs, message', [
    ({'num_images': 10**6}, r'^--num_images=1000000 is larger than the '
     r'train split \(2400 examples\)\.$'),
    ({'batch_size': 2401}, r'^--batch_size=2401 is larger than the training '
     r'split \(2400 examples\)\.$'),
    ({'epsilon': '8,-1'}, 'epsilon'),
])
def test_prepare_refuses(kwargs, message):
  with pytest.raises(ValueError, match=message):
    experiment.prepare(recipes.load('demo'), '', **kwargs)


class _Split:
  """Images 0..n-1 whose every pixel is its own index times `scale`."""

  def __init__(self, n, scale):
    self.n, self.scale = n, scale

  def __len__(self):
    return self.n

  def load_example(self, index):
    value = tf.cast(index, tf.float32) * self.scale
    return tf.fill([4, 4, 1], value), tf.constant(0)


def test_examples_stream_images_in_the_unit_range():
  found = list(experiment.examples(_Split(3, 0.5), 3, 'here'))
  assert [i for i, _, _ in found] == [0, 1, 2]
  assert [float(x.max()) for _, x, _ in found] == [0.0, 0.5, 1.0]


def test_examples_refuse_an_image_outside_the_unit_range():
  found = experiment.examples(_Split(3, 0.75), 3, 'the split')
  assert next(found)[0] == 0
  assert next(found)[0] == 1
  with pytest.raises(experiment.ImageRangeError,
                     match=r'^the split: example 2 has values in \[1.5, '
                     r'1.5\]; the attack scores images in \[0, 1\]'):
    next(found)


def test_write_outputs_writes_the_csv_summary_and_figures(tmp_path):
  budgets = runner.make_budgets([1e12, math.inf], delta=1e-5,
                                num_train_examples=100, epochs=1,
                                clip_norm=1.0)
  image = np.full((8, 8, 1), 0.5, np.float32)
  result = runner.AttackResult(
      budgets, [runner.Record(0, '1e12', 0.25, 'bin3'),
                runner.Record(0, 'inf', 0.0, 'bin1')], skipped=[],
      best={'1e12': [runner.Example(0, 0.25, image, image)],
            'inf': [runner.Example(0, 0.0, image, image)]})
  workdir = tmp_path / 'out'
  summary = experiment.write_outputs(result, str(workdir))
  assert sorted(p.name for p in workdir.iterdir()) == [
      'best_reconstructions.png', 'error_cdf.png', 'errors.csv',
      'summary.json']
  assert summary == result.summary()
  written = json_files.read_json(str(workdir / 'summary.json'))
  assert written == json.loads(json.dumps(summary))
  assert written['inf']['share_below_0.1'] == 1.0
  with open(workdir / 'errors.csv', newline='') as f:
    assert list(csv.reader(f)) == [
        ['image_id', 'budget', 'error', 'best_candidate'],
        ['0', '1e12', '0.250000', 'bin3'], ['0', 'inf', '0.000000', 'bin1']]
  assert experiment.summary_line('inf', written['inf']) == (
      'epsilon=inf: share below 0.1 = 1.0, median error = 0.0, 1 images, '
      '0 skipped')
