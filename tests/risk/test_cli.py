"""Tests of `python -m dp_medtf.risk`: output schema, figure, bad flags."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from dp_medtf import recipes

_REQUIRED = {
    'epsilon': float,
    'noise_multiplier': float,
    'sampling_rate': float,
    'steps': int,
    'kappa': float,
    'worst_case': dict,
    'relaxed': dict,
    'paper_method': str,
}
# Both methods, by name, for each adversary.
_METHOD_KEYS = {'rero_exact', 'rero_exact_lower', 'rero_exact_error',
                'rero_edgeworth', 'edgeworth_note'}


def _start(args: list[str]) -> subprocess.Popen:
  return subprocess.Popen([sys.executable, '-m', 'dp_medtf.risk', *args],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)


def _run(args: list[str]) -> subprocess.CompletedProcess:
  process = _start(args)
  stdout, stderr = process.communicate(timeout=120)
  return subprocess.CompletedProcess(process.args, process.returncode, stdout,
                                     stderr)


def _check_row(row: dict) -> None:
  for key, kind in _REQUIRED.items():
    assert isinstance(row[key], kind), key
  assert row['epsilon'] > 0.0 and row['noise_multiplier'] > 0.0
  assert 0.0 < row['sampling_rate'] <= 1.0 and row['steps'] >= 1
  assert 0.0 < row['kappa'] <= 1.0
  assert row['paper_method'] == 'rero_edgeworth'
  for key in ('worst_case', 'relaxed'):
    result = row[key]
    assert set(result) == _METHOD_KEYS
    assert row['kappa'] <= result['rero_exact'] <= 1.0
    assert result['rero_exact_lower'] <= result['rero_exact']
    assert result['rero_exact_error'] >= (
        result['rero_exact'] - result['rero_exact_lower'])
    assert result['rero_edgeworth'] is None or (
        0.0 <= result['rero_edgeworth'] <= 1.0)
    assert (result['rero_edgeworth'] is None) == bool(
        result['edgeworth_note'])
  slack = (row['worst_case']['rero_exact_error'] +
           row['relaxed']['rero_exact_error'])
  assert row['relaxed']['rero_exact'] <= row['worst_case']['rero_exact'] + slack


def test_explicit_recipe_writes_table_json_csv_and_figure(tmp_path):
  output, table, figure = (tmp_path / 'risk.json', tmp_path / 'risk.csv',
                           tmp_path / 'risk.png')
  result = _run(['--num_examples=500', '--batch_size=50', '--epochs=4',
                 '--delta=1e-5', '--epsilon=1,1e18', f'--output={output}',
                 f'--csv={table}', f'--plot={figure}', '--curve_points=3'])
  assert result.returncode == 0, result.stderr
  # Both methods side by side for both adversaries, named, with the paper's.
  header = result.stdout.splitlines()[1].split()
  assert header[-4:] == ['rero_exact', 'rero_edgeworth'] * 2
  assert 'worst case %' in result.stdout and 'relaxed %' in result.stdout
  assert 'rero_edgeworth: five-cumulant Edgeworth expansion' in result.stdout
  assert 'the method the paper used' in result.stdout
  rows = json.loads(output.read_text())
  assert [row['epsilon'] for row in rows] == [1.0, 1e18]
  for row in rows:
    _check_row(row)
    assert row['dataset'] is None
    assert (row['sampling_rate'], row['steps'], row['kappa']) == (
        0.1, 40, 1 / 500)
  with open(table, newline='', encoding='utf-8') as f:
    lines = list(csv.DictReader(f))
  assert len(lines) == len(rows)
  for line, row in zip(lines, rows):
    assert line['dataset'] == '' and line['paper_method'] == 'rero_edgeworth'
    for key in ('worst_case', 'relaxed'):
      for method in ('rero_exact', 'rero_edgeworth'):
        value = row[key][method]
        cell = line[f'{key}.{method}']
        assert cell == '' if value is None else float(cell) == value
  assert figure.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_dataset_recipe_and_noise_multiplier(tmp_path):
  output = tmp_path / 'risk.json'
  result = _run(['--dataset=demo', '--noise_multiplier=1.0,3.0',
                 f'--output={output}'])
  assert result.returncode == 0, result.stderr
  config = recipes.load('demo')
  n, b = config.num_train_examples, config.batch_size
  rows = json.loads(output.read_text())
  assert [row['noise_multiplier'] for row in rows] == [1.0, 3.0]
  assert rows[0]['epsilon'] > rows[1]['epsilon']
  for row in rows:
    _check_row(row)
    assert row['dataset'] == 'demo'
    assert row['sampling_rate'] == b / n
    assert row['steps'] == (n // b) * config.epochs
    assert row['kappa'] == 1 / n


_EXPLICIT = ['--num_examples=100', '--batch_size=10', '--epochs=1',
             '--delta=1e-5']
_BAD_FLAGS = {
    'negative_epsilon': (['--dataset=demo', '--epsilon=1,-1'], '--epsilon'),
    'delta_one': (_EXPLICIT[:3] + ['--delta=1.0', '--epsilon=1'], '--delta'),
    'batch_above_n': (['--num_examples=100', '--batch_size=101', '--epochs=1',
                       '--delta=1e-5', '--epsilon=1'], '--batch_size'),
    'no_examples': (['--num_examples=0', '--batch_size=1', '--epochs=1',
                     '--delta=1e-5', '--epsilon=1'], '--num_examples'),
    'no_recipe': (['--epsilon=1'], '--dataset'),
    'unknown_dataset': (['--dataset=nope', '--epsilon=1'], '--dataset'),
    'recipe_twice': (['--dataset=demo', '--epochs=3', '--epsilon=1'],
                     '--dataset'),
    'two_budgets': (['--dataset=demo', '--epsilon=1',
                     '--noise_multiplier=1'], '--noise_multiplier'),
}


@pytest.fixture(scope='module')
def bad_flag_runs():
  """Runs every bad command line at once (each exits before computing)."""
  processes = {name: _start(args) for name, (args, _) in _BAD_FLAGS.items()}
  outputs = {name: process.communicate(timeout=120)
             for name, process in processes.items()}
  return {name: (processes[name].returncode,) + outputs[name]
          for name in processes}


@pytest.mark.parametrize('name', sorted(_BAD_FLAGS))
def test_bad_flags_exit_naming_the_flag(bad_flag_runs, name):
  returncode, stdout, stderr = bad_flag_runs[name]
  assert returncode != 0
  message = stderr.strip().splitlines()[-1] if stderr.strip() else stdout
  assert _BAD_FLAGS[name][1] in message, stdout + stderr
  assert 'Traceback' not in stderr
