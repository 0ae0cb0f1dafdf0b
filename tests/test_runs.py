"""dp_medtf.runs: a run folder's layout, its sweep name and results.json."""

import dataclasses
import json
import math
import os

import pytest

from dp_medtf import json_files
from dp_medtf import runs
from tests import run_fixtures

EPSILONS = [1.0, 0.5, 8.0, 20.0, 1e9, 1e12, 1.5e12, 2.5e-5, 123456789.0,
            math.inf]
SEEDS = [0, 10, 11, 100, 101, 110]

# results.json's keys, in the order the train app writes them.
RESULTS_KEYS = [
    'dataset', 'recipe', 'model', 'engine', 'status', 'epsilon_target',
    'epsilon_spent', 'delta', 'randomness', 'replicas', 'noise_multiplier',
    'clip_norm', 'sampling_rate', 'steps', 'planned_steps', 'privacy_ledger',
    'epochs', 'early_stopping', 'batch_size', 'physical_batch_size',
    'num_train_examples', 'seed', 'metrics', 'validation_metrics', 'history',
    'wall_seconds']


def _write_json(path, obj):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as f:
    json.dump(obj, f)


def _written(run_dir, **changes):
  """A valid results.json in run_dir with `changes` applied (None: drop)."""
  obj = json_files.to_strict(run_fixtures.results().to_json())
  for key, value in changes.items():
    if value is None:
      del obj[key]
    else:
      obj[key] = value
  _write_json(os.path.join(run_dir, 'results.json'), obj)
  return os.path.join(run_dir, 'results.json')


def test_layout_names_every_file_of_a_run():
  layout = runs.RunLayout('gs://b/runs/eps8_seed10')
  assert layout.results == 'gs://b/runs/eps8_seed10/results.json'
  assert layout.history == 'gs://b/runs/eps8_seed10/history.json'
  assert layout.checkpoints == 'gs://b/runs/eps8_seed10/checkpoints'
  assert layout.tensorboard == 'gs://b/runs/eps8_seed10/tensorboard'
  assert layout.model == 'gs://b/runs/eps8_seed10/model.keras'


@pytest.mark.parametrize('epsilon', EPSILONS)
def test_run_names_round_trip(epsilon):
  names = set()
  for seed in SEEDS:
    name = runs.run_name(epsilon, seed)
    assert runs.parse_run_name(name) == (epsilon, seed)
    assert runs.parse_run_name(name + '/') == (epsilon, seed)  # gfile dirs.
    names.add(name)
  assert len(names) == len(SEEDS)


def test_run_names_spell_budgets_once():
  assert [runs.run_name(e, 10) for e in (1, 0.5, 1e9, math.inf)] == [
      'eps1_seed10', 'eps0.5_seed10', 'eps1e9_seed10', 'epsinf_seed10']
  # Every budget of the grid gets its own name.
  assert len({runs.run_name(e, 0) for e in EPSILONS}) == len(EPSILONS)


def test_parse_run_name_reads_older_spellings_and_skips_other_folders():
  assert runs.parse_run_name('eps1e+09_seed12') == runs.RunKey(1e9, 12)
  assert runs.parse_run_name('eps8.0_seed10') == runs.RunKey(8.0, 10)
  for other in ('attack', 'report', 'logs', 'eps8', 'eps8_seedx',
                'eps8_seed10.log', 'xeps8_seed10', 'eps_8_seed10'):
    assert runs.parse_run_name(other) is None, other


@pytest.mark.parametrize('name, problem', [
    ('eps0_seed10', "The budget of eps0_seed10 must be positive, got '0'."),
    ('eps-1_seed10', "The budget of eps-1_seed10 must be positive"),
    ('epsnan_seed10', 'The budget of epsnan_seed10 must be a positive'),
    ('epsbig_seed10', 'The budget of epsbig_seed10 must be a positive'),
])
def test_parse_run_name_refuses_a_name_that_is_no_budget(name, problem):
  with pytest.raises(ValueError) as raised:
    runs.parse_run_name(name)
  assert str(raised.value).startswith(problem)


@pytest.mark.parametrize('epsilon, seed', [
    (0.0, 10), (-1.0, 10), (math.nan, 10), (8.0, 1.5), (8.0, '10'),
    (8.0, True)])
def test_run_name_refuses_what_it_could_not_parse_back(epsilon, seed):
  with pytest.raises(ValueError, match='of a run folder'):
    runs.run_name(epsilon, seed)


def test_sweep_paths():
  assert (runs.sweep_run_dir('gs://b/sweeps/', 'radimagenet', 1e12, 101) ==
          'gs://b/sweeps/radimagenet/eps1e12_seed101')
  assert (runs.sweep_log_path('/s/', 'demo', math.inf, 10) ==
          '/s/logs/demo/epsinf_seed10.log')
  assert runs.sweep_record_path('gs://b/sweeps/') == 'gs://b/sweeps/sweep.json'


def test_find_runs_lists_run_folders_only(tmp_path):
  for name in ('eps8_seed11', 'eps8_seed10', 'epsinf_seed10', 'eps1e+09_seed3',
               'attack', 'report'):
    os.makedirs(tmp_path / name)
  found = runs.find_runs(str(tmp_path))
  assert found == [
      (runs.RunKey(1e9, 3), str(tmp_path / 'eps1e+09_seed3')),
      (runs.RunKey(8.0, 10), str(tmp_path / 'eps8_seed10')),
      (runs.RunKey(8.0, 11), str(tmp_path / 'eps8_seed11')),
      (runs.RunKey(math.inf, 10), str(tmp_path / 'epsinf_seed10'))]
  os.makedirs(tmp_path / 'eps0_seed10')
  with pytest.raises(ValueError, match=f'^{tmp_path}: The budget of '
                     'eps0_seed10 must be positive'):
    runs.find_runs(str(tmp_path))


def test_results_keys_are_the_files_keys_in_order():
  results = run_fixtures.results()
  assert list(results.to_json()) == RESULTS_KEYS
  assert [f.name for f in dataclasses.fields(runs.RunResults)] == RESULTS_KEYS


@pytest.mark.parametrize('epsilon', [8.0, math.inf])
def test_results_round_trip_through_json_and_the_file(epsilon, tmp_path):
  results = run_fixtures.results(
      epsilon_target=epsilon, history=[],
      early_stopping=None if epsilon == 8.0 else {
          'metric': 'mcc', 'mode': 'max', 'patience': 2, 'min_delta': 0.001,
          'best_epoch': 1, 'best_value': 0.4, 'stopped_epoch': 3})
  assert runs.RunResults.from_json(results.to_json(), 'x') == results
  runs.write_results(str(tmp_path), results)
  assert runs.read_results(str(tmp_path)) == results
  with open(tmp_path / 'results.json') as f:
    on_disk = json.load(f)
  # Strict JSON: an infinite budget is the string 'inf' in the file.
  assert on_disk == json_files.to_strict(results.to_json())
  assert on_disk['epsilon_target'] == ('inf' if math.isinf(epsilon) else 8.0)
  assert on_disk['clip_norm'] == (None if math.isinf(epsilon) else 1.0)
  read = runs.read_results(str(tmp_path))
  assert read.private == (not math.isinf(epsilon)) and read.finished


def test_an_interrupted_run_has_no_test_metrics(tmp_path):
  results = run_fixtures.results(status=runs.INTERRUPTED, metrics=None)
  runs.write_results(str(tmp_path), results)
  read = runs.read_results(str(tmp_path))
  assert read == results and not read.finished and read.metrics is None


def test_to_json_hands_out_a_copy():
  results = run_fixtures.results()
  results.to_json()['metrics']['mcc'] = -1.0
  results.to_json()['history'][0]['validation']['mcc'] = -1.0
  assert results.metrics['mcc'] == 0.4
  assert results.history[0]['validation']['mcc'] == 0.38


def test_numbers_are_read_as_numbers(tmp_path):
  # An integral float may be written without its '.0'; it reads as a float.
  path = _written(tmp_path, clip_norm=2, wall_seconds=10)
  read = runs.read_results(str(tmp_path))
  assert read.clip_norm == 2.0 and isinstance(read.clip_norm, float)
  assert isinstance(read.wall_seconds, float) and os.path.exists(path)


ADDED_LATER = {'recipe': 'demo', 'early_stopping': None, 'replicas': 1,
               'randomness': 'unrecorded'}


@pytest.mark.parametrize('field', [k for k in RESULTS_KEYS
                                   if k not in ADDED_LATER])
def test_a_missing_field_is_named_with_the_file(field, tmp_path):
  path = _written(tmp_path, **{field: None})
  with pytest.raises(runs.ResultsError) as raised:
    runs.read_results(str(tmp_path))
  assert str(raised.value) == f"{path}: field '{field}' is missing."


def test_results_written_before_later_fields_still_read(tmp_path):
  _written(tmp_path, **{field: None for field in ADDED_LATER})
  read = runs.read_results(str(tmp_path))
  assert read.dataset == 'demo'
  for field, value in ADDED_LATER.items():
    assert getattr(read, field) == value


@pytest.mark.parametrize('field, value, expected', [
    ('steps', '9', "field 'steps' must be an integer, got '9'."),
    ('steps', 9.0, "field 'steps' must be an integer, got 9.0."),
    ('seed', True, "field 'seed' must be an integer, got True."),
    ('epsilon_target', 'eight',
     "field 'epsilon_target' must be a number, got 'eight'."),
    ('delta', 'NaN', "field 'delta' must be a number, got 'NaN'."),
    ('clip_norm', 'big',
     "field 'clip_norm' must be a number or null, got 'big'."),
    ('dataset', 3, "field 'dataset' must be a string, got 3."),
    ('noise_multiplier', [], "field 'noise_multiplier' must be a number, "
     'got [].'),
    ('metrics', [0.4], "field 'metrics' must be an object of numbers or "
     'null, got [0.4].'),
    ('metrics', {'mcc': 'high'},
     "field 'metrics.mcc' must be a number, got 'high'."),
    ('history', {}, "field 'history' must be a list, got {}."),
    ('privacy_ledger', [3], "field 'privacy_ledger[0]' must be an object "
     'of JSON values, got 3.'),
    ('status', 'running', "field 'status' must be one of finished, "
     "interrupted, got 'running'."),
    ('randomness', 1, "field 'randomness' must be a string or null, got 1."),
])
def test_a_mistyped_field_is_named_with_the_file(field, value, expected,
                                                tmp_path):
  path = _written(tmp_path, **{field: value})
  with pytest.raises(runs.ResultsError) as raised:
    runs.read_results(str(tmp_path))
  assert str(raised.value) == f'{path}: {expected}'


def test_null_where_a_value_is_required(tmp_path):
  path = os.path.join(tmp_path, 'results.json')
  obj = json_files.to_strict(run_fixtures.results().to_json())
  _write_json(path, dict(obj, steps=None))
  with pytest.raises(runs.ResultsError,
                     match=f"^{path}: field 'steps' must be an integer, got "
                     'None.$'):
    runs.read_results(str(tmp_path))
  _write_json(path, dict(obj, metrics=None))
  with pytest.raises(runs.ResultsError,
                     match=f"^{path}: field 'metrics' is null, but a "
                     'finished run'):
    runs.read_results(str(tmp_path))


def test_an_unknown_field_is_refused(tmp_path):
  path = _written(tmp_path, learning_rate=0.1)
  with pytest.raises(runs.ResultsError,
                     match=f"^{path}: unknown field 'learning_rate'"):
    runs.read_results(str(tmp_path))


def test_a_file_that_is_no_results_file(tmp_path):
  path = os.path.join(tmp_path, 'results.json')
  _write_json(path, [1, 2])
  with pytest.raises(runs.ResultsError,
                     match=f'^{path}: not a JSON object'):
    runs.read_results(str(tmp_path))
  with open(path, 'w') as f:
    f.write('{"dataset": "demo", ')  # Cut off mid-write.
  with pytest.raises(json_files.JsonFileError, match=f'^{path}: not valid'):
    runs.read_results(str(tmp_path))


def test_a_missing_file(tmp_path):
  assert runs.read_results(str(tmp_path), missing_ok=True) is None
  with pytest.raises(json_files.JsonFileError,
                     match=f'^{tmp_path}/results.json not found.$'):
    runs.read_results(str(tmp_path))


def test_errors_are_value_errors_of_the_json_files_kind():
  assert issubclass(runs.ResultsError, json_files.JsonFileError)
  assert issubclass(runs.ResultsError, ValueError)


def test_write_refuses_what_a_reader_would_refuse(tmp_path):
  broken = run_fixtures.results(steps='9')
  with pytest.raises(runs.ResultsError, match="field 'steps' must be an "
                     'integer'):
    runs.write_results(str(tmp_path), broken)
  assert not os.listdir(tmp_path)
