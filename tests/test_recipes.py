"""The recipes: valid as shipped, and their budget-dependent rules."""

import math

import pytest

from dp_medtf import recipes


@pytest.mark.parametrize('dataset', recipes.DATASETS)
@pytest.mark.parametrize('epsilon', [1.0, 8.0, 20.0, 32.0, 1e9, math.inf])
def test_every_recipe_is_valid_at_every_budget(dataset, epsilon):
  config = recipes.load(dataset)
  config.dp.epsilon = epsilon
  recipes.validate(recipes.apply_budget_rules(config))


@pytest.mark.parametrize('dataset,clip_norm', [
    ('radimagenet', 5.66), ('ham10000', 9.0), ('msd_liver', 0.046)])
def test_published_clip_norms(dataset, clip_norm):
  assert recipes.load(dataset).dp.clip_norm == clip_norm


@pytest.mark.parametrize('epsilon,flip', [(1.0, 0.0), (8.0, 0.0), (20.0, 0.0),
                                          (1e9, 0.5)])
def test_ham10000_flips_only_at_the_largest_budget(epsilon, flip):
  config = recipes.load('ham10000')
  config.dp.epsilon = epsilon
  assert recipes.apply_budget_rules(config).augment.flip_vertical == flip
  assert config.augment.flip_vertical == 0.0  # The input is left alone.


@pytest.mark.parametrize('epsilon,weights', [
    (8.0, ()), (20.0, ()), (32.0, (0.1, 0.4, 0.5)), (1e9, (0.1, 0.4, 0.5))])
def test_msd_class_weights_above_20(epsilon, weights):
  config = recipes.load('msd_liver')
  config.dp.epsilon = epsilon
  assert tuple(recipes.apply_budget_rules(config).class_weights) == weights


def test_a_rule_for_a_missing_field_is_named():
  config = recipes.load('demo')
  config.budget_rules = (dict(above=1.0, set={'augment.rotate': 0.5}),)
  with pytest.raises(ValueError, match=r'budget_rules\[0\].*augment.rotate'):
    recipes.apply_budget_rules(config)


@pytest.mark.parametrize('field,value,named', [
    ('learning_rate', float('nan'), 'learning_rate'),
    ('learning_rate', -1.0, 'learning_rate'),
    ('batch_size', 0, 'batch_size'),
    ('epochs', 0, 'epochs'),
    ('physical_batch_size', -1, 'physical_batch_size'),
])
def test_bad_numbers_are_named(field, value, named):
  config = recipes.load('demo')
  config[field] = value
  with pytest.raises(ValueError, match=named):
    recipes.validate(config)


@pytest.mark.parametrize('field', ['jit_compile', 'dp.engine',
                                   'early_stopping.metric', 'attack'])
def test_a_recipe_without_a_base_field_is_refused_naming_it(field):
  config = recipes.load('ham10000')
  *parents, leaf = field.split('.')
  node = config
  for part in parents:
    node = node[part]
  del node[leaf]
  with pytest.raises(ValueError, match=rf'lacks config\.{field}\b.*base'):
    recipes.validate(config)


@pytest.mark.parametrize('dataset', recipes.DATASETS)
@pytest.mark.parametrize('baseline', [False, True])
def test_every_shipped_recipe_has_every_base_field(dataset, baseline):
  if baseline and not recipes.has_baseline(dataset):
    pytest.skip('no baseline recipe')
  assert recipes.missing_fields(recipes.load(dataset, baseline)) == []
