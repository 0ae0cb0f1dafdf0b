"""Early stopping of non-private runs, its resume, and the baseline recipes."""

import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf

from dp_medtf import fit
from dp_medtf import losses
from dp_medtf import recipes
from dp_medtf.data import pipeline

# Validation MCC per epoch: best at epoch 2; epoch 3 gains 0.0005, less than
# the 0.001 threshold, epoch 4 drops: with patience 2 the run stops after
# epoch 4. A run that lost its counters on resume (after epoch 2) would take
# epoch 3 as its first best and stop after epoch 5.
SCRIPT = [0.1, 0.3, 0.3005, 0.2, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25]
STEPS_PER_EPOCH = 2


def _rule(mode='max', patience=2, min_delta=0.001):
  return fit.EarlyStopping('mcc', mode, patience, min_delta)


@pytest.mark.parametrize('mode,min_delta,values,stop_epoch,best_epoch', [
    ('max', 0.001, [0.5, 0.6, 0.6005, 0.6], 4, 2),
    # An improvement of exactly min_delta does not count (exact in binary).
    ('max', 0.125, [0.5, 0.625, 0.5], 3, 1),
    # Cumulative: small gains add up against the best, not the last epoch.
    ('max', 0.001, [0.5, 0.5009, 0.5018, 0.5018, 0.5018], 5, 3),
    ('max', 0.001, [0.5, 0.4, 0.7, 0.7, 0.6], 5, 3),
    ('min', 0.001, [1.0, 0.9, 0.8995, 0.95], 4, 2),
    ('max', 0.001, [0.1, 0.2, 0.3, 0.4, 0.5], None, 5),
])
def test_rule_stops_after_patience_epochs_without_improvement(
    mode, min_delta, values, stop_epoch, best_epoch):
  state = fit.EarlyStoppingState(_rule(mode, min_delta=min_delta))
  stops = [state.update(epoch, v) for epoch, v in enumerate(values, 1)]
  expected_stop = stop_epoch or 0
  assert stops == [e == expected_stop for e in range(1, len(values) + 1)]
  record = state.to_dict()
  assert record['stopped_epoch'] == stop_epoch
  assert record['best_epoch'] == best_epoch
  assert record['best_value'] == values[best_epoch - 1]


def _config(**early_stopping):
  config = recipes.load('demo')
  config.dp.epsilon = math.inf
  config.data.image_size = 16
  config.input_shape = (16, 16, 3)
  config.model.width = 4
  config.batch_size = 2400 // STEPS_PER_EPOCH
  config.eval_batch_size = 300
  config.epochs = 10
  config.early_stopping.update(early_stopping)
  return config


@pytest.fixture
def scripted_validation(monkeypatch):
  """fit.evaluate reports SCRIPT's values in turn (the test split too)."""
  calls = []

  def evaluate(model, split, normalizer, config, soft_dice=False):
    del model, split, normalizer, config, soft_dice
    calls.append(None)
    return {'mcc': SCRIPT[len(calls) - 1], 'accuracy': 0.5}

  monkeypatch.setattr(fit, 'evaluate', evaluate)
  return calls


def _results(workdir):
  with open(os.path.join(workdir, 'results.json')) as f:
    return json.load(f)


EXPECTED = {'metric': 'mcc', 'mode': 'max', 'patience': 2, 'min_delta': 0.001,
            'best_epoch': 2, 'best_value': 0.3, 'stopped_epoch': 4}


def test_run_stops_at_the_right_epoch(tmp_path, scripted_validation):
  results = fit.train_and_evaluate(_config(patience=2), str(tmp_path))
  assert results['status'] == 'finished'
  assert results['early_stopping'] == EXPECTED
  assert results['steps'] == 4 * STEPS_PER_EPOCH
  assert results['planned_steps'] == 10 * STEPS_PER_EPOCH
  assert [h['epoch'] for h in results['history']] == [1, 2, 3, 4]
  # The model of epoch 4 is tested (the 5th evaluation), as the authors do.
  assert len(scripted_validation) == 5
  assert results['metrics']['mcc'] == SCRIPT[4]
  assert results['recipe'] == 'demo'


def test_resumed_run_keeps_its_early_stopping_state(tmp_path,
                                                    scripted_validation):
  # Interrupted in epoch 3, after epochs 1 and 2 were validated.
  interrupted = fit.train_and_evaluate(
      _with(_config(patience=2), stop_after_steps=2 * STEPS_PER_EPOCH + 1),
      str(tmp_path))
  assert interrupted['status'] == 'interrupted'
  assert interrupted['early_stopping']['best_epoch'] == 2
  assert interrupted['early_stopping']['stopped_epoch'] is None
  resumed = fit.train_and_evaluate(_config(patience=2), str(tmp_path),
                                   resume=True)
  assert resumed['status'] == 'finished'
  assert resumed['early_stopping'] == EXPECTED
  assert resumed['steps'] == 4 * STEPS_PER_EPOCH
  assert [(h['epoch'], h['validation']['mcc']) for h in resumed['history']
         ] == list(zip(range(1, 5), SCRIPT))

  # An early-stopped run whose results.json was lost trains no further.
  os.remove(tmp_path / 'results.json')
  calls = len(scripted_validation)
  again = fit.train_and_evaluate(_config(patience=2), str(tmp_path),
                                 resume=True)
  assert again['status'] == 'finished' and again['steps'] == resumed['steps']
  assert again['early_stopping'] == EXPECTED
  assert len(scripted_validation) == calls + 1  # The test split only.


def _with(config, **fields):
  config.update(fields)
  return config


@pytest.mark.parametrize('epsilon', [1.0, 8.0, 1e12])
def test_private_run_with_early_stopping_is_refused(epsilon, tmp_path):
  config = _config(patience=3)
  config.dp.epsilon = epsilon
  with pytest.raises(ValueError, match=r'^--config\.early_stopping\.patience'
                     r'.*--epsilon=inf[^\n]*$'):
    fit.train_and_evaluate(config, str(tmp_path))
  assert not os.listdir(tmp_path)  # Refused before anything is written.


@pytest.mark.parametrize('field,value,named', [
    ('patience', -1, 'early_stopping.patience'),
    ('min_delta', -0.1, 'early_stopping.min_delta'),
    ('min_delta', float('nan'), 'early_stopping.min_delta'),
    ('mode', 'maximize', 'early_stopping.mode'),
])
def test_bad_early_stopping_fields_are_named(field, value, named):
  config = _config(patience=3)
  config.early_stopping[field] = value
  with pytest.raises(ValueError, match=named):
    recipes.validate(config)


def test_unknown_metric_is_named(tmp_path):
  with pytest.raises(ValueError, match=r'early_stopping\.metric.*mcc'):
    fit.train_and_evaluate(_config(patience=3, metric='dice_liver'),
                           str(tmp_path))


class _Volumes:
  """A split of label maps with their one-channel images."""

  def __init__(self, labels):
    self.labels = labels.astype(np.int32)
    self.images = labels[..., None].astype(np.float32)

  def __len__(self):
    return len(self.labels)

  def load_example(self, index):
    return (tf.gather(tf.constant(self.images), index),
            tf.gather(tf.constant(self.labels), index))


def test_soft_dice_is_the_mean_of_one_minus_the_dice_loss():
  rng = np.random.default_rng(1)
  labels = rng.integers(0, 3, size=(3, 2, 4, 4))
  split = _Volumes(labels)
  model = tf.keras.Sequential([
      tf.keras.Input((2, 4, 4, 1)),
      tf.keras.layers.Dense(3, kernel_initializer='glorot_uniform',
                            bias_initializer='glorot_uniform')])
  config = recipes.load('msd_liver')
  config.eval_batch_size = 2
  normalizer = pipeline.Normalizer.fixed((0.0,), (1.0,))
  plain = fit.evaluate(model, split, normalizer, config)
  assert sorted(plain) == ['dice_liver', 'dice_tumour']
  with_soft = fit.evaluate(model, split, normalizer, config, soft_dice=True)
  logits = model(split.images)
  expected = np.mean(1 - losses.dice_loss(tf.constant(labels), logits))
  assert with_soft['soft_dice'] == pytest.approx(float(expected), rel=1e-5)
  assert 0 < with_soft['soft_dice'] < 1
  assert {k: with_soft[k] for k in plain} == plain


def _flat(config, prefix=''):
  out = {}
  for key, value in config.items():
    if hasattr(value, 'items'):
      out.update(_flat(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out


@pytest.mark.parametrize('dataset,differences', [
    ('radimagenet', {
        'recipe': 'radimagenet_baseline', 'model.name': 'wideresnet',
        'model.depth': 40, 'model.norm': 'batch',
        'model.activation': 'mish', 'batch_size': 16, 'epochs': 200,
        'augment.flip_horizontal': 0.1,
        'augment.multiplicity': 1, 'early_stopping.patience': 5}),
    ('ham10000', {
        'recipe': 'ham10000_baseline', 'class_weights': (0.1, 0.9),
        'batch_size': 32, 'epochs': 500, 'augment.flip_vertical': 0.5,
        'early_stopping.patience': 50}),
    ('msd_liver', {
        'recipe': 'msd_liver_baseline', 'class_weights': (0.1, 0.4, 0.5),
        'batch_size': 2, 'early_stopping.patience': 50,
        'early_stopping.metric': 'soft_dice'}),
])
def test_baseline_recipes_are_the_papers(dataset, differences):
  dp = recipes.apply_budget_rules(recipes.load(dataset))
  baseline = recipes.load(dataset, baseline=True)
  assert math.isinf(baseline.dp.epsilon) and not baseline.budget_rules
  assert baseline.optimizer == 'nadam' and baseline.learning_rate == 2e-3
  assert baseline.early_stopping.min_delta == 0.001
  assert baseline.early_stopping.mode == 'max'
  recipes.validate(recipes.apply_budget_rules(baseline))
  a, b = _flat(dp), _flat(baseline)
  changed = {k: b[k] for k in b
             if k not in ('dp.epsilon', 'budget_rules') and a.get(k) != b[k]}
  # Model fields the DP recipe has and the baseline drops.
  changed.update({k: None for k in a if k not in b})
  expected = dict(differences)
  expected.update({k: None for k in a if k not in b})
  assert changed == expected
  # The paper's flips: RadImageNet 0.2 / 0.1, HAM10000 vertical 0.5, MSD none.
  flips = {'radimagenet': (0.2, 0.1), 'ham10000': (0.5, 0.0),
           'msd_liver': (0.0, 0.0)}[dataset]
  assert (baseline.augment.flip_vertical,
          baseline.augment.flip_horizontal) == flips
  assert baseline.augment.multiplicity == 1
  assert baseline.epochs == {'radimagenet': 200, 'ham10000': 500,
                             'msd_liver': 500}[dataset]  # At most.


def test_only_the_three_datasets_have_baselines():
  assert [d for d in recipes.DATASETS if recipes.has_baseline(d)] == [
      'ham10000', 'radimagenet', 'msd_liver']
  with pytest.raises(ValueError, match='demo has no non-private baseline'):
    recipes.path('demo', baseline=True)
