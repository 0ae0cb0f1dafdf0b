"""results.json as the train app writes it, for the tests of its readers."""

from __future__ import annotations

import math
import os

from dp_medtf import runs


def results(**fields) -> runs.RunResults:
  """A finished private demo run's results; `fields` replace the defaults.

  A non-private run (epsilon_target=math.inf) gets no noise, no clip norm
  and an infinite epsilon spent unless `fields` say otherwise.
  """
  private = not math.isinf(fields.get('epsilon_target', 8.0))
  values = dict(
      dataset='demo', recipe='demo', model='resnet9',
      engine='vectorized' if private else 'non_private',
      status=runs.FINISHED, epsilon_target=8.0,
      epsilon_spent=7.99 if private else math.inf, delta=1e-5,
      randomness='secret' if private else None, replicas=1,
      noise_multiplier=0.93 if private else 0.0,
      clip_norm=1.0 if private else None, sampling_rate=256 / 2400,
      steps=9, planned_steps=9,
      privacy_ledger=[{'noise_multiplier': 0.93, 'sampling_rate': 256 / 2400,
                       'steps': 9}] if private else [],
      epochs=1, early_stopping=None, batch_size=256, physical_batch_size=64,
      num_train_examples=2400, seed=10,
      metrics={'mcc': 0.4, 'accuracy': 0.6},
      validation_metrics={'mcc': 0.38, 'accuracy': 0.59},
      history=[{'epoch': 1, 'validation': {'mcc': 0.38, 'accuracy': 0.59},
                'epsilon_spent': 7.99 if private else math.inf, 'steps': 9}],
      wall_seconds=3.5)
  values.update(fields)
  return runs.RunResults(**values)


def write_run(run_dir: str | os.PathLike, **fields) -> runs.RunResults:
  """Writes `results(**fields)` to run_dir/results.json and returns it."""
  written = results(**fields)
  runs.write_results(os.fspath(run_dir), written)
  return written
