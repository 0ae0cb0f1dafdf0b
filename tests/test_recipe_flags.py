"""recipe_flags: --dataset and --baseline choose the default recipe file."""

import os
import subprocess
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


def test_config_in_a_flagfile_is_seen(tmp_path, config_flag, monkeypatch):
  flagfile = tmp_path / 'flags.txt'
  flagfile.write_text('--config=/some/recipe.py\n--dataset=radimagenet\n')
  argv = ['app', f'--flagfile={flagfile}']
  monkeypatch.setattr(sys, 'argv', argv)
  before = config_flag.default
  assert recipe_flags._recipe_choice(argv) is None
  recipe_flags.set_default_config(argv)
  assert config_flag.default is before


def test_a_dataset_read_as_another_flags_value_is_refused():
  # absl reads --dataset=ham10000 as --workdir's value, so the parsed
  # --dataset (demo) and the recipe chosen from argv (ham10000) disagree.
  proc = subprocess.run(
      [sys.executable, '-m', 'dp_medtf.train', '--workdir',
       '--dataset=ham10000'], capture_output=True, text=True, check=False)
  assert proc.returncode == 2
  assert "disagrees with the recipe's dataset 'ham10000'" in proc.stderr


def test_a_recipe_file_not_built_on_base_is_a_usage_error(tmp_path):
  recipe = tmp_path / 'bare.py'
  recipe.write_text(
      'from dp_medtf.configs import demo\n\n'
      'def get_config():\n'
      '  config = demo.get_config()\n'
      '  del config["budget_rules"]\n'
      '  return config\n')
  proc = subprocess.run(
      [sys.executable, '-m', 'dp_medtf.train', f'--config={recipe}'],
      capture_output=True, text=True, check=False)
  assert proc.returncode == 2
  assert f'--config={recipe} lacks config.budget_rules' in proc.stderr
  assert 'Traceback' not in proc.stderr
