"""Step time and peak memory of the DP-SGD engines against non-private training.

Measures each variant (non_private, the engines, keras_fit, tf_privacy) in
its own process, timed round-robin; how, and how TF Privacy's full-batch
memory is estimated from two smaller batches, is told in
dp_medtf.benchmarking.

Usage:

  python -m dp_medtf.bench --model=resnet9 --input_shape=64,64,3 \\
      --batch_size=32
  python -m dp_medtf.bench --model=unet3d --input_shape=50,128,128,1 \\
      --batch_size=1 --num_classes=3
  python -m dp_medtf.bench --model=resnet9 --input_shape=128,128,1 \\
      --batch_size=32 --logical_batch_size=3328 --variants=ghost_bk \\
      --warmup=0 --steps=1

prints one JSON object: {"model", "input_shape", "batch_size",
"logical_batch_size", "default_engine", "results": [{"name", "s_per_step",
"peak_mb", "ratio_to_non_private", ...}, ...]}; a variant that was not run
has null figures and a "skipped" reason. The flags are checked before any
process starts (exit status 2); when every variant fails, the bench exits
with status 1 and the first failure's reason.
"""

from __future__ import annotations

import json
import sys
from typing import Sequence

from absl import app
from absl import flags

from dp_medtf import benchmarking
from dp_medtf import cli

_DEFAULTS = benchmarking.Settings()

_MODEL = flags.DEFINE_string('model', _DEFAULTS.model,
                             'A model of dp_medtf.models.')
_WIDTH = flags.DEFINE_integer('width', None, "The model's width; default: "
                              "the model's own.")
_INPUT_SHAPE = flags.DEFINE_list(
    'input_shape', [str(d) for d in _DEFAULTS.input_shape],
    'One input, without the batch axis.')
_NUM_CLASSES = flags.DEFINE_integer('num_classes', _DEFAULTS.num_classes,
                                    'Output classes.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', _DEFAULTS.batch_size,
                                   'Physical batch (chunk).')
_LOGICAL = flags.DEFINE_integer(
    'logical_batch_size', None, 'Examples per update, accumulated over '
    'chunks of --batch_size; default: --batch_size.')
_VIEWS = flags.DEFINE_integer('views', _DEFAULTS.views,
                              'Augmented views per example.')
_VARIANTS = flags.DEFINE_list(
    'variants', list(benchmarking.VARIANTS),
    f'Which of {benchmarking.VARIANTS} to measure.')
_STEPS = flags.DEFINE_integer('steps', _DEFAULTS.steps,
                              'Timed steps per variant.')
_WARMUP = flags.DEFINE_integer('warmup', _DEFAULTS.warmup,
                               'Untimed steps first.')
_MEMORY_BUDGET = flags.DEFINE_integer(
    'memory_budget_mb', None, 'Memory the tf_privacy variant may use at the '
    'full batch; default: half the machine, or 80% of what is available if '
    'less (the machine may be shared).')
_PROBES = flags.DEFINE_list(
    'tf_privacy_probe_batches', None, 'Batches at which tf_privacy is first '
    'measured to estimate its full-batch memory; default: B/8 and B/4.')
_INTERLEAVE = flags.DEFINE_bool(
    'interleave', True, 'Keep all variants alive and time them round-robin; '
    'false: one after another (less memory at once).')
_CHILD = flags.DEFINE_string('child', None, 'Internal: run one variant.')

# Each variant's process runs this app again, with --child.
_CHILD_COMMAND = (sys.executable, '-m', 'dp_medtf.bench')


def _settings() -> benchmarking.Settings:
  """The flags' Settings (--input_shape checked by parse_shape)."""
  return benchmarking.Settings(
      model=_MODEL.value, width=_WIDTH.value,
      input_shape=benchmarking.parse_shape(_INPUT_SHAPE.value),
      num_classes=_NUM_CLASSES.value, batch_size=_BATCH_SIZE.value,
      logical_batch_size=_LOGICAL.value, views=_VIEWS.value,
      steps=_STEPS.value, warmup=_WARMUP.value)


def _probe_batches() -> list[int] | None:
  """--tf_privacy_probe_batches as integers; None when unset."""
  if _PROBES.value is None:
    return None
  try:
    return [int(b) for b in _PROBES.value]
  except ValueError:
    raise app.UsageError(f'--tf_privacy_probe_batches must be integers, got '
                         f'{",".join(_PROBES.value)}.') from None


def check_flags() -> None:
  """Checks the flags before any process starts.

  Raises:
    app.UsageError: naming the flag at fault.
  """
  from dp_medtf import models  # pylint: disable=import-outside-toplevel
  if _MODEL.value not in models.available():
    raise app.UsageError(f'--model={_MODEL.value} is not a model; choose '
                         f'one of {", ".join(models.available())}.')
  for flag in (_WIDTH, _NUM_CLASSES, _VIEWS):
    if flag.value is not None and flag.value < 1:
      raise app.UsageError(f'--{flag.name} must be positive, got '
                           f'{flag.value}.')
  try:
    settings = _settings()
    benchmarking.validate(list(dict.fromkeys(_VARIANTS.value)),
                          settings.batch_size, settings.logical,
                          settings.steps, settings.warmup)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  _probe_batches()


def main(argv: Sequence[str]) -> None:
  if _CHILD.value:
    benchmarking.serve(_CHILD.value, _settings())
    return
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  check_flags()
  report = benchmarking.benchmark(
      _settings(), _VARIANTS.value, child_command=_CHILD_COMMAND,
      interleave=_INTERLEAVE.value, memory_budget=_MEMORY_BUDGET.value,
      tf_privacy_probes=_probe_batches())
  print(json.dumps(report, indent=1))
  reason = benchmarking.all_failed(report)
  if reason:
    raise cli.Fault(f'every variant failed; {reason}')


if __name__ == '__main__':
  cli.run(main)
