"""Table 3 from a sweep folder: aggregation, t-test, bounds, missing runs."""

import dataclasses
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from dp_medtf import epsilons
from dp_medtf import reporting
from dp_medtf import risk
from dp_medtf import runs
from tests import run_fixtures

MCC = {8.0: [0.50, 0.54], 1e9: [0.70, 0.66], math.inf: [0.72, 0.70]}


def _write(path, obj):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as f:
    json.dump(obj, f)


def _results(eps, seed, mcc, z, status='finished'):
  return run_fixtures.results(
      dataset='demo', epsilon_target=eps, noise_multiplier=z,
      sampling_rate=0.1, steps=50, num_train_examples=500, seed=seed,
      status=status, metrics={'mcc': mcc})


def _write_run(run_dir, results):
  runs.write_results(str(run_dir), results)


@pytest.fixture
def sweep(tmp_path):
  for eps, values in MCC.items():
    z = 0.0 if math.isinf(eps) else (1.0 if eps == 8.0 else 1e-4)
    for seed, mcc in zip((10, 11), values):
      _write_run(tmp_path / 'demo' /
                 f'eps{epsilons.epsilon_text(eps)}_seed{seed}',
                 _results(eps, seed, mcc, z))
  # An interrupted run and a run folder without results.
  _write_run(tmp_path / 'demo' / 'eps1_seed10',
             _results(1.0, 10, 0.1, 3.0, status='interrupted'))
  os.makedirs(tmp_path / 'demo' / 'eps1_seed11')
  # The attack's summary as written before budgets had one spelling (1e+09).
  _write(tmp_path / 'demo' / 'attack' / 'summary.json',
         {'8': {'share_below_0.1': 0.0}, '1e+09': {'share_below_0.1': 0.25},
          'inf': {'share_below_0.1': 1.0}})
  return tmp_path


def test_collect_aggregates_and_lists_problems(sweep):
  rows, problems = reporting.collect(str(sweep))
  assert [(r.dataset, r.epsilon) for r in rows] == [
      ('demo', 8.0), ('demo', 1e9), ('demo', math.inf)]
  by_eps = {r.epsilon: r for r in rows}
  assert by_eps[8.0].metrics['mcc'] == MCC[8.0]
  expected_p = stats.ttest_ind(MCC[8.0], MCC[math.inf]).pvalue
  assert by_eps[8.0].p_values['mcc'] == pytest.approx(expected_p)
  assert by_eps[math.inf].p_values['mcc'] is None
  expected = risk.rero(1.0, 0.1, 50, 1 / 500)
  assert by_eps[8.0].rero_exact_worst_case == expected.rero_exact
  assert by_eps[8.0].rero_edgeworth_worst_case == expected.rero_edgeworth
  assert by_eps[8.0].rero_exact_relaxed <= by_eps[8.0].rero_exact_worst_case
  assert (by_eps[1e9].rero_exact_worst_case >=
          by_eps[8.0].rero_exact_worst_case)
  assert by_eps[math.inf].rero_exact_worst_case is None
  assert by_eps[1e9].attack_share_below_0_1 == 0.25
  assert len(problems) == 2
  assert any('interrupted' in p for p in problems)
  assert any('no results.json' in p for p in problems)


def test_markdown_and_csv(sweep):
  rows, problems = reporting.collect(str(sweep))
  markdown = reporting.to_markdown(rows, problems)
  assert '| demo | 8 | 2 | 52.00 ± 2.83 |' in markdown
  assert '| demo | 1e9 | 2 | 68.00 ± 2.83 |' in markdown
  assert 'Missing or failed runs' in markdown
  lines = reporting.to_csv(rows).strip().splitlines()
  assert len(lines) == 1 + len(rows)
  assert lines[0].startswith('dataset,epsilon,seeds,mcc (%)')


def test_budgets_in_either_spelling_are_one_budget(sweep):
  # A run folder named as before (eps1e+09) joins the sweep's eps1e9 runs,
  # and an attack summary in the one spelling is read as well.
  _write_run(sweep / 'demo' / 'eps1e+09_seed12',
             _results(1e9, 12, 0.68, 1e-4))
  _write(sweep / 'demo' / 'attack' / 'summary.json',
         {'1e9': {'share_below_0.1': 0.5}})
  rows, _ = reporting.collect(str(sweep))
  by_eps = {r.epsilon: r for r in rows}
  assert by_eps[1e9].seeds == [10, 11, 12]
  assert by_eps[1e9].attack_share_below_0_1 == 0.5


def test_a_run_folder_that_names_no_budget_is_an_error(sweep):
  os.makedirs(sweep / 'demo' / 'eps0_seed10')
  with pytest.raises(ValueError, match='eps0_seed10 must be positive'):
    reporting.collect(str(sweep))


def test_report_app_writes_outputs(sweep, tmp_path):
  out = tmp_path / 'out'
  proc = subprocess.run(
      [sys.executable, '-m', 'dp_medtf.report', f'--sweep_dir={sweep}',
       f'--output_dir={out}'], capture_output=True, text=True, timeout=300,
      check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert {'table3.md', 'table3.csv', 'performance_vs_risk.png'} <= set(
      os.listdir(out))
  assert (out / 'performance_vs_risk.png').stat().st_size > 10_000


def test_report_app_names_the_file_and_field_of_a_broken_run(sweep, tmp_path):
  path = sweep / 'demo' / 'eps8_seed10' / 'results.json'
  with open(path) as f:
    broken = json.load(f)
  del broken['sampling_rate']
  _write(path, broken)
  proc = subprocess.run(
      [sys.executable, '-m', 'dp_medtf.report', f'--sweep_dir={sweep}',
       f'--output_dir={tmp_path / "out"}'], capture_output=True, text=True,
      timeout=300, check=False)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert 'Traceback' not in proc.stderr
  assert f"{path}: field 'sampling_rate' is missing." in proc.stderr


def test_report_app_bad_sweep_dir(tmp_path):
  proc = subprocess.run(
      [sys.executable, '-m', 'dp_medtf.report',
       f'--sweep_dir={tmp_path / "none"}'], capture_output=True, text=True,
      timeout=300, check=False)
  assert proc.returncode != 0 and '--sweep_dir' in proc.stderr


def test_each_budget_is_tested_against_its_own_datasets_baseline(tmp_path):
  mcc = {('ham10000', 8.0): [0.40, 0.44, 0.41],
         ('ham10000', math.inf): [0.50, 0.52, 0.47],
         ('msd_liver', 8.0): [0.60, 0.61, 0.66],
         ('msd_liver', math.inf): [0.90, 0.91, 0.89]}
  for (dataset, eps), values in mcc.items():
    for seed, value in zip((10, 11, 100), values):
      results = dataclasses.replace(
          _results(eps, seed, value, 0.0 if math.isinf(eps) else 1.0),
          dataset=dataset,
          recipe=f'{dataset}_baseline' if math.isinf(eps) else dataset)
      _write_run(tmp_path / dataset / f'eps{epsilons.epsilon_text(eps)}_seed'
                 f'{seed}', results)
  rows, problems = reporting.collect(str(tmp_path))
  assert not problems
  for row in rows:
    if math.isinf(row.epsilon):
      assert row.p_values['mcc'] is None
      continue
    expected = stats.ttest_ind(mcc[(row.dataset, 8.0)],
                               mcc[(row.dataset, math.inf)]).pvalue
    assert row.p_values['mcc'] == pytest.approx(expected)
  # Non-private runs of the DP recipe mixed into the baseline are flagged.
  _write_run(tmp_path / 'msd_liver' / 'epsinf_seed101',
             dataclasses.replace(_results(math.inf, 101, 0.7, 0.0),
                                 dataset='msd_liver', recipe='msd_liver'))
  _, problems = reporting.collect(str(tmp_path))
  assert problems == ['msd_liver eps=inf: runs of different recipes '
                      '(msd_liver, msd_liver_baseline) are averaged together']
