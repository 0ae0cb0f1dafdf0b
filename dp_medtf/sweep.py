r"""Trains one model per (privacy budget, seed) pair, one workdir per run.

By default the dataset recipe's `sweep`: the paper's budgets for that dataset
(Table 3; e.g. RadImageNet 1, 8, 32, 1e12 and inf) times the seeds 10, 11,
100, 101 and 110 of the paper authors' README. --epsilons and --seeds replace
them. A budget of inf trains the dataset's non-private baseline recipe
(train --baseline: dp_medtf/configs/<dataset>_baseline.py) where it has one,
as the paper's non-private rows do; the demo's inf runs its own recipe
without noise. Each run writes to
<sweep_dir>/<dataset>/eps<epsilon>_seed<seed>/ (dp_medtf.runs names it) and
the sweep's own record, <sweep_dir>/sweep.json, holds each run's command,
workdir, return code and status. A failed run is recorded and the sweep goes
on; the sweep exits non-zero when any run failed. dp_medtf.sweeps plans and
runs the sweep.

Usage:

  # Print the 20 commands of the demo sweep.
  python -m dp_medtf.sweep --dataset=demo --sweep_dir=/tmp/sweep --dry_run

  # Run them here, one subprocess after another.
  python -m dp_medtf.sweep --dataset=demo --sweep_dir=/tmp/sweep \
      --epsilons=1,8,inf --seeds=10,11 --extra_flags='--config.epochs=1'

  # On a GPU host (launch/gpu.sh setup check first) or a Cloud TPU VM
  # (launch/cloud_tpu.sh create install first), writing to a bucket.
  python -m dp_medtf.sweep --dataset=ham10000 --launcher=tpu \
      --data_dir=gs://bucket/ham10000 --sweep_dir=gs://bucket/sweeps/ham \
      --launcher_flags='--name=dp-tpu --zone=europe-west4-a' --skip_finished

--sweep_dir, --data_dir and the run workdirs may be gs:// paths: sweep.json
and the results.json checks of --skip_finished go through tf.io.gfile. The
gpu and tpu launchers run the repository's launch/ scripts, so they need a
checkout (pip install -e .), not an installed wheel.
"""

from __future__ import annotations

from typing import Sequence

from absl import app
from absl import flags

from dp_medtf import cli
from dp_medtf import recipes
from dp_medtf import runs as runs_lib
from dp_medtf import sweeps

_DATASET = flags.DEFINE_enum('dataset', 'demo', recipes.DATASETS,
                             'The dataset to train on.')
_EPSILONS = flags.DEFINE_string(
    'epsilons', None, 'Comma list of budgets: positive numbers or inf (the '
    'non-private baseline); default: the recipe\'s sweep.epsilons.')
_SEEDS = flags.DEFINE_string('seeds', None, 'Comma list of training seeds; '
                             'default: the recipe\'s sweep.seeds.')
_SWEEP_DIR = flags.DEFINE_string(
    'sweep_dir', None, 'Root folder of the sweep (local or gs://); runs go to '
    '<sweep_dir>/<dataset>/eps<epsilon>_seed<seed>/.', required=True)
_DATA_DIR = flags.DEFINE_string('data_dir', '', 'The dataset folder (local '
                                'or gs://); not needed for the demo.')
_LAUNCHER = flags.DEFINE_enum(
    'launcher', 'local', sweeps.LAUNCHERS, 'local: python -m dp_medtf.train '
    'here; gpu: launch/gpu.sh run; tpu: launch/cloud_tpu.sh run.')
_DRY_RUN = flags.DEFINE_bool('dry_run', False,
                             'Print the commands, run nothing.')
_SKIP_FINISHED = flags.DEFINE_bool(
    'skip_finished', False, 'Leave runs whose workdir holds the results.json '
    'of a finished run (an interrupted or unreadable one runs again).')
_EXTRA_FLAGS = flags.DEFINE_string('extra_flags', '', 'Train flags for every '
                                   "run, e.g. '--config.epochs=1'.")
_LAUNCHER_FLAGS = flags.DEFINE_string(
    'launcher_flags', '', 'Flags for gpu.sh or cloud_tpu.sh, e.g. '
    "'--name=dp-tpu --zone=us-central1-f'.")
_STRATEGY = flags.DEFINE_string('strategy', '', 'train --strategy for local '
                                'runs (default, mirrored, ...); empty leaves '
                                'train\'s default.')
_RESUME = flags.DEFINE_bool('resume', False, 'Pass --resume to every run, '
                            'continuing from its checkpoint.')
_MAX_PARALLEL = flags.DEFINE_integer('max_parallel', 1, 'How many runs at '
                                     'once.', lower_bound=1)


def main(argv: Sequence[str]) -> int:
  """Plans the sweep from the flags, then prints or runs it.

  Args:
    argv: left-over command-line arguments (none are accepted).

  Returns:
    0 when every run succeeded or was skipped, 1 otherwise (a run failed or
    was interrupted: run the sweep again with --skip_finished --resume).
  """
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  try:
    spec = sweeps.make_spec(
        dataset=_DATASET.value, epsilons=_EPSILONS.value, seeds=_SEEDS.value,
        sweep_dir=_SWEEP_DIR.value, data_dir=_DATA_DIR.value,
        launcher=_LAUNCHER.value, extra_flags=_EXTRA_FLAGS.value,
        launcher_flags=_LAUNCHER_FLAGS.value, strategy=_STRATEGY.value,
        resume=_RESUME.value)
  except sweeps.SweepError as e:
    raise app.UsageError(str(e)) from None
  if not _DRY_RUN.value:
    cli.check_output_dir('sweep_dir', spec.sweep_dir)
  runs = sweeps.plan_sweep(spec)
  if _DRY_RUN.value:
    sweeps.print_dry_run(runs, skip_finished=_SKIP_FINISHED.value)
    return 0
  record = sweeps.execute_sweep(spec, runs, skip_finished=_SKIP_FINISHED.value,
                                max_parallel=_MAX_PARALLEL.value)
  counts = record['counts']
  print(f'sweep: {counts} -> {runs_lib.sweep_record_path(spec.sweep_dir)}')
  return 1 if counts.get('failed') or counts.get('interrupted') else 0


if __name__ == '__main__':
  cli.run(main)
