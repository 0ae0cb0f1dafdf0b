"""The paper's Table 3 and performance-vs-risk figure from a sweep's runs.

A sweep folder holds one workdir per run, <sweep_dir>/<dataset>/eps<e>_seed<s>/
with its results.json (dp_medtf.runs: the layout and RunResults), and
optionally <sweep_dir>/<dataset>/attack/summary.json
from `python -m dp_medtf.attack`. For each dataset and budget this module
gathers the test metrics over seeds (mean, sample std, Student's t-test
against the non-private runs), the worst-case and relaxed reconstruction
bounds (dp_medtf.risk, at each run's own noise multiplier, sampling rate and
steps, with kappa = 1 / N; by both methods, rero_exact and rero_edgeworth,
the paper's) and the attack's share of images reconstructed
with error below 0.1. Runs that are missing, failed or unfinished are listed,
never averaged over.

Example:

  >>> rows, problems = collect('/tmp/sweep')  # doctest: +SKIP
  >>> print(to_markdown(rows, problems))       # doctest: +SKIP
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import io
import math
import os
from typing import Any

import numpy as np
from scipy import stats
import tensorflow as tf

from dp_medtf import epsilons as epsilons_lib
from dp_medtf import json_files
from dp_medtf import risk
from dp_medtf import runs as runs_lib

# Table 3's risk adversaries: column label -> field suffix of Row.
_ADVERSARIES = {'worst-case': 'worst_case', 'relaxed': 'relaxed'}


@dataclasses.dataclass
class Row:
  """One line of Table 3: a dataset at one budget.

  Attributes:
    dataset: the dataset name.
    epsilon: the budget (math.inf: non-private).
    seeds: seeds of the finished runs.
    metrics: metric name -> values over seeds.
    p_values: metric name -> Student's t-test p-value against non-private
      (None where it cannot be computed).
    rero_exact_worst_case: the worst-case reconstruction bound by the exact
      method (None: no DP).
    rero_edgeworth_worst_case: the same by the Edgeworth expansion, the
      paper's method (None: no DP, or the expansion does not apply).
    rero_exact_relaxed: the relaxed-adversary bound, exact method.
    rero_edgeworth_relaxed: the relaxed-adversary bound, Edgeworth.
    attack_share_below_0_1: the attack's share of images with error < 0.1.
  """
  dataset: str
  epsilon: float
  seeds: list[int]
  metrics: dict[str, list[float]]
  p_values: dict[str, float | None] = dataclasses.field(default_factory=dict)
  rero_exact_worst_case: float | None = None
  rero_edgeworth_worst_case: float | None = None
  rero_exact_relaxed: float | None = None
  rero_edgeworth_relaxed: float | None = None
  attack_share_below_0_1: float | None = None


def _planned_runs(sweep_dir: str) -> list[dict[str, Any]]:
  """Runs listed in sweep.json, if the sweep launcher wrote one."""
  planned = json_files.read_json(runs_lib.sweep_record_path(sweep_dir), [])
  return planned.get('runs', planned) if isinstance(planned, dict) else planned


def _add_bounds(row: Row, results: runs_lib.RunResults) -> None:
  """Both methods' worst-case and relaxed ReRo at the run's (z, q, T, 1/N)."""
  kappa = 1.0 / results.num_train_examples
  args = (results.noise_multiplier, results.sampling_rate, results.steps,
          kappa)
  for adversary, relaxed in (('worst_case', False), ('relaxed', True)):
    result = risk.rero(*args, relaxed=relaxed)
    setattr(row, f'rero_exact_{adversary}', result.rero_exact)
    setattr(row, f'rero_edgeworth_{adversary}', result.rero_edgeworth)


def collect(sweep_dir: str) -> tuple[list[Row], list[str]]:
  """Reads a sweep folder into Table 3 rows.

  Args:
    sweep_dir: the sweep's folder (local or gs://).

  Returns:
    (rows sorted by dataset and budget, descriptions of missing, failed or
    unfinished runs).

  Raises:
    ValueError: naming the folder, for a run folder whose name is no budget;
      runs.ResultsError naming the file and field, for a results.json that
      is not what the train app writes.
  """
  problems = []
  finished = collections.defaultdict(list)  # (dataset, eps) -> results.
  seen = set()
  datasets = sorted(d.rstrip('/') for d in tf.io.gfile.listdir(sweep_dir)
                    if tf.io.gfile.isdir(os.path.join(sweep_dir, d)))
  for dataset in datasets:
    for (eps, seed), run_dir in runs_lib.find_runs(
        os.path.join(sweep_dir, dataset)):
      seen.add(run_dir.rstrip('/'))
      results = runs_lib.read_results(run_dir, missing_ok=True)
      if results is None:
        problems.append(f'{dataset} eps={epsilons_lib.epsilon_text(eps)} '
                        f'seed={seed}: no {runs_lib.RESULTS_FILE} in '
                        f'{run_dir}')
        continue
      if not results.finished:
        problems.append(f'{dataset} eps={epsilons_lib.epsilon_text(eps)} '
                        f'seed={seed}: status {results.status} in '
                        f'{runs_lib.RunLayout(run_dir).results}')
        continue
      finished[(dataset, eps)].append((seed, results))
  for run in _planned_runs(sweep_dir):
    workdir = str(run.get('workdir', '')).rstrip('/')
    if workdir and workdir not in seen:
      problems.append(f'{workdir}: planned (status {run.get("status")}) but '
                      'its folder is missing')

  rows = []
  for (dataset, eps), runs in sorted(finished.items()):
    runs.sort(key=lambda r: r[0])
    used = sorted({r.recipe for _, r in runs})
    if len(used) > 1:
      problems.append(f'{dataset} eps={epsilons_lib.epsilon_text(eps)}: runs '
                      f'of different recipes ({", ".join(used)}) are averaged '
                      'together')
    names = sorted(runs[0][1].metrics)
    rows.append(Row(dataset, eps, [s for s, _ in runs],
                    {m: [r.metrics[m] for _, r in runs] for m in names}))
    if not math.isinf(eps):
      _add_bounds(rows[-1], runs[0][1])
  _add_p_values(rows)
  _add_attack(rows, sweep_dir)
  return rows, problems


def _add_p_values(rows: list[Row]) -> None:
  """Student's t-test of each budget against its dataset's inf row.

  The inf row holds the non-private runs: the dataset's baseline recipe when
  the sweep trained it (dp_medtf.sweep does for epsilon inf), as the
  paper's Table 3 compares each budget with its non-private baseline.
  """
  baseline = {r.dataset: r for r in rows if math.isinf(r.epsilon)}
  for row in rows:
    base = baseline.get(row.dataset)
    for name, values in row.metrics.items():
      reference = base.metrics.get(name) if base else None
      if (math.isinf(row.epsilon) or not reference or len(values) < 2 or
          len(reference) < 2):
        row.p_values[name] = None
        continue
      if np.ptp(values) == 0 and np.ptp(reference) == 0:
        row.p_values[name] = 1.0 if values[0] == reference[0] else 0.0
        continue
      row.p_values[name] = float(stats.ttest_ind(values, reference).pvalue)


def _add_attack(rows: list[Row], sweep_dir: str) -> None:
  for row in rows:
    path = os.path.join(sweep_dir, row.dataset, 'attack', 'summary.json')
    if tf.io.gfile.exists(path):
      entry = _by_budget(json_files.read_json(path), path).get(row.epsilon)
      if entry is not None:
        row.attack_share_below_0_1 = float(entry['share_below_0.1'])


def _by_budget(summary: dict[str, Any], path: str) -> dict[float, Any]:
  """An attack summary keyed by budget, whatever spelling its keys have.

  Summaries written before the budgets had one spelling name 1e9 '1e+09'.
  """
  return {epsilons_lib.parse_epsilon(key, f'A budget key of {path}'): entry
          for key, entry in summary.items()}


def _mean_std(values: list[float]) -> str:
  std = np.std(values, ddof=1) if len(values) > 1 else 0.0
  return f'{100 * np.mean(values):.2f} ± {100 * std:.2f}'


def _percent(value: float | None, digits: int = 2) -> str:
  return '–' if value is None else f'{100 * value:.{digits}f}'


def _p(value: float | None) -> str:
  return '–' if value is None else f'{value:.3g}'


def table(rows: list[Row]) -> tuple[list[str], list[list[str]]]:
  """Header and cells of Table 3 (metrics and risks in percent)."""
  metric_names = sorted({m for r in rows for m in r.metrics})
  header = ['dataset', 'epsilon', 'seeds']
  for name in metric_names:
    header += [f'{name} (%)', f'p ({name})']
  header += [f'{adversary} ReRo {method} (%)' for adversary in _ADVERSARIES
             for method in risk.METHODS]
  header += ['attack error < 0.1 (%)']
  cells = []
  for r in rows:
    line = [r.dataset, epsilons_lib.epsilon_text(r.epsilon),
            str(len(r.seeds))]
    for name in metric_names:
      values = r.metrics.get(name)
      line += [_mean_std(values) if values else '–',
               _p(r.p_values.get(name))]
    line += [_percent(getattr(r, f'{method}_{key}'))
             for key in _ADVERSARIES.values() for method in risk.METHODS]
    line += [_percent(r.attack_share_below_0_1, 1)]
    cells.append(line)
  return header, cells


def to_markdown(rows: list[Row], problems: list[str]) -> str:
  """Table 3 as Markdown, followed by the missing or failed runs."""
  header, cells = table(rows)
  lines = ['| ' + ' | '.join(header) + ' |',
           '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(c) + ' |' for c in cells]
  lines.append('')
  lines.append('Metrics: mean ± sample std over seeds; p: two-sided '
               'Student\'s t-test against the non-private baseline runs '
               '(epsilon inf) of the same dataset.')
  lines.append('ReRo by two methods: ' + '; '.join(
      f'{method}: {text}' for method, text in risk.METHODS.items()) + '.')
  if problems:
    lines += ['', 'Missing or failed runs (not averaged over):', '']
    lines += [f'- {p}' for p in problems]
  return '\n'.join(lines) + '\n'


def to_csv(rows: list[Row]) -> str:
  """Table 3 as CSV (same columns as the Markdown)."""
  header, cells = table(rows)
  out = io.StringIO()
  writer = csv.writer(out)
  writer.writerow(header)
  writer.writerows(cells)
  return out.getvalue()


def plot(rows: list[Row], path: str) -> None:
  """Performance and risk against the budget, one panel per dataset.

  Non-private runs are drawn at the right end of the log axis, labelled inf.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  datasets = sorted({r.dataset for r in rows})
  fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.2),
                           squeeze=False)
  for ax, dataset in zip(axes[0], datasets):
    mine = sorted((r for r in rows if r.dataset == dataset),
                  key=lambda r: r.epsilon)
    finite = [r.epsilon for r in mine if not math.isinf(r.epsilon)]
    right = 10 ** (math.log10(max(finite)) + 1.5) if finite else 1.0
    xs = [right if math.isinf(r.epsilon) else r.epsilon for r in mine]
    for name in sorted({m for r in mine for m in r.metrics}):
      means = [np.mean(r.metrics[name]) if name in r.metrics else np.nan
               for r in mine]
      stds = [np.std(r.metrics[name], ddof=1) if len(r.metrics.get(name, []))
              > 1 else 0.0 for r in mine]
      ax.errorbar(xs, means, yerr=stds, marker='o', capsize=3, label=name)
    risks = [r for r in mine if not math.isinf(r.epsilon)]
    for (label, key), color in zip(_ADVERSARIES.items(),
                                   ('purple', 'orange')):
      for method, style in (('rero_exact', 's--'), ('rero_edgeworth', 'x:')):
        points = [(r.epsilon, getattr(r, f'{method}_{key}')) for r in risks
                  if getattr(r, f'{method}_{key}') is not None]
        suffix = ' (paper)' if method == risk.PAPER_METHOD else ''
        if points:
          ax.plot(*zip(*points), style, color=color,
                  label=f'{label} ReRo, {method}{suffix}')
    attack = [(x, r.attack_share_below_0_1) for x, r in zip(xs, mine)
              if r.attack_share_below_0_1 is not None]
    if attack:
      ax.plot(*zip(*attack), '^:', color='green',
              label='attack: share error < 0.1')
    ax.set_xscale('log')
    ticks = xs
    ax.set_xticks(ticks)
    ax.set_xticklabels([epsilons_lib.epsilon_text(r.epsilon) for r in mine],
                       rotation=45)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel('privacy budget epsilon')
    ax.set_ylabel('metric / risk (fraction)')
    ax.set_title(dataset)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc='best')
  fig.tight_layout()
  with tf.io.gfile.GFile(path, 'wb') as f:
    fig.savefig(f, format='png', dpi=120)
  plt.close(fig)
