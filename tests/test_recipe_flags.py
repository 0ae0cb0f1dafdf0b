"""recipe_flags: --dataset and --baseline choose the default recipe file."""

import os
import sys

import pytest

from dp_medtf import recipe_flags


@pytest.fixture
def config_flag():
  flag = recipe_flags.FLAGS['config']
  saved = dict(vars(flag))
  yield flag
  vars(flag).clear()
  vars(flag).update(saved)


@pytest.mark.parametrize('argv, recipe', [
    ([], 'demo.py'),
    (['--epsilon', '8', '--dataset', 'radimagenet'], 'radimagenet.py'),
    (['--seed=3', '--dataset=ham10000', '--baseline'], 'ham10000_baseline.py'),
    (['--baseline', '--nobaseline', '--dataset=msd_liver'], 'msd_liver.py'),
    (['--workdir', '/tmp/x', '--baseline=true', '--dataset=radimagenet'],
     'radimagenet_baseline.py'),
])
def test_the_default_recipe_follows_dataset_and_baseline(argv, recipe,
                                                         config_flag,
                                                         monkeypatch):
  argv = ['app', *argv]
  monkeypatch.setattr(sys, 'argv', argv)
  recipe_flags.set_default_config(argv)
  assert os.path.basename(config_flag.config_filename) == recipe
  assert config_flag.value.dataset == recipe.split('.')[0].replace(
      '_baseline', '')


def test_an_unknown_dataset_leaves_the_default_for_absl_to_refuse(
    config_flag, monkeypatch):
  argv = ['app', '--dataset=chest_xray']
  monkeypatch.setattr(sys, 'argv', argv)
  before = config_flag.default
  recipe_flags.set_default_config(argv)
  assert config_flag.default is before
