"""The paper's clip-norm selection: one epoch of the real run per candidate.

For each candidate C, the run is started exactly as the full run would be
(same noise multiplier, calibrated for all its epochs) and stopped after its
first epoch; the candidates are compared on the validation metric. Choosing
C this way on private data is itself a use of that data which the budget
does not count (see docs/privacy.md).

Example:

  (The first two lines train one epoch per candidate, minutes on a CPU for
  the demo, and are skipped when the examples run as tests.)

  >>> from dp_medtf import recipes
  >>> rows = tune_clip_norm(recipes.load('demo'), [0.5, 1.0],
  ...                       'tune')  # doctest: +SKIP
  >>> [r['clip_norm'] for r in rows]  # doctest: +SKIP
  [0.5, 1.0]
  >>> tune_clip_norm(recipes.load('demo'), [0.0], 'tune')
  Traceback (most recent call last):
  ...
  ValueError: --clip_norms must be positive and finite, got 0.0.
"""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

import ml_collections

from dp_medtf import data
from dp_medtf import fit
from dp_medtf import recipes
from dp_medtf import runs as runs_lib
from dp_medtf.privacy import accounting


def tune_clip_norm(config: ml_collections.ConfigDict,
                   clip_norms: Sequence[float], workdir: str,
                   data_dir: str = '') -> list[dict[str, Any]]:
  """Trains one epoch per candidate clip norm and reports each.

  Args:
    config: the recipe (a finite dp.epsilon), flags applied.
    clip_norms: the candidates, each positive.
    workdir: one sub-folder per candidate ('clip_<C>') is written here.
    data_dir: the dataset folder.

  Returns:
    One row per candidate: clip_norm, noise_multiplier, the validation
    metrics after the epoch, the primary metric's name and value, the
    epsilon spent by that epoch and the workdir.

  Raises:
    ValueError: naming the argument, for a non-private recipe or a bad
      candidate.
  """
  if math.isinf(float(config.dp.epsilon)):
    raise ValueError('--epsilon must be finite: a non-private run has no '
                     'clip norm to tune.')
  if not clip_norms:
    raise ValueError('--clip_norms must list at least one value.')
  for c in clip_norms:
    if not 0 < float(c) < math.inf:
      raise ValueError(f'--clip_norms must be positive and finite, got {c}.')
  config = recipes.apply_budget_rules(config)
  recipes.validate(config)
  num_train = len(data.load_split(config, 'train', data_dir))
  _, steps_per_epoch = accounting.sampling_rate_and_steps(
      num_train, config.batch_size, epochs=1)
  metric = fit.primary_metric(config)
  rows = []
  for clip in clip_norms:
    candidate = ml_collections.ConfigDict(config.to_dict())
    candidate.dp.clip_norm = float(clip)
    candidate.dp.clip_norms = {}
    candidate.stop_after_steps = steps_per_epoch
    run_dir = os.path.join(workdir, f'clip_{float(clip):g}')
    fit.train_and_evaluate(candidate, run_dir, data_dir)
    results = runs_lib.read_results(run_dir)
    validation = results.validation_metrics or {}
    rows.append({'clip_norm': float(clip),
                 'noise_multiplier': results.noise_multiplier,
                 'metric': metric, 'value': validation.get(metric),
                 'validation': validation,
                 'epsilon_spent': results.epsilon_spent,
                 'workdir': run_dir})
  return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
  """The rows as a Markdown table, the best validation value marked."""
  values = [r['value'] for r in rows if r['value'] is not None]
  best = max(values) if values else None
  metric = rows[0]['metric'] if rows else 'metric'
  lines = [f'| clip norm | noise multiplier | validation {metric} | '
           'epsilon after one epoch |', '|---|---|---|---|']
  for r in rows:
    mark = ' (best)' if r['value'] is not None and r['value'] == best else ''
    value = 'n/a' if r['value'] is None else f"{r['value']:.4f}"
    lines.append(f"| {r['clip_norm']:g} | {r['noise_multiplier']:.4g} | "
                 f"{value}{mark} | {r['epsilon_spent']:.4g} |")
  return '\n'.join(lines)
