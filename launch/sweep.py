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
on; the sweep exits non-zero when any run failed.

Usage:

  # Print the 20 commands of the demo sweep.
  python launch/sweep.py --dataset=demo --sweep_dir=/tmp/sweep --dry_run

  # Run them here, one subprocess after another.
  python launch/sweep.py --dataset=demo --sweep_dir=/tmp/sweep \
      --epsilons=1,8,inf --seeds=10,11 --extra_flags='--config.epochs=1'

  # On a GPU host (launch/gpu.sh setup check first) or a Cloud TPU VM
  # (launch/cloud_tpu.sh create install first), writing to a bucket.
  python launch/sweep.py --dataset=ham10000 --launcher=tpu \
      --data_dir=gs://bucket/ham10000 --sweep_dir=gs://bucket/sweeps/ham \
      --launcher_flags='--name=dp-tpu --zone=europe-west4-a' --skip_finished

--sweep_dir, --data_dir and the run workdirs may be gs:// paths: sweep.json
and the results.json checks of --skip_finished go through tf.io.gfile.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Sequence, TextIO

from absl import app
from absl import flags
from absl import logging

from dp_medtf import cli
from dp_medtf import epsilons as epsilons_lib
from dp_medtf import json_files
from dp_medtf import recipes
from dp_medtf import runs as runs_lib

LAUNCHERS = ('local', 'gpu', 'tpu')
DATASETS = recipes.DATASETS
LAUNCH_DIR = os.path.dirname(os.path.abspath(__file__))
# Flags the sweep sets for every run itself; --extra_flags may not repeat them.
_RESERVED_TRAIN_FLAGS = ('dataset', 'epsilon', 'seed', 'workdir', 'data_dir',
                         'baseline', 'nobaseline')
_LOG_TAIL_CHARS = 3000

# Runs a command with its output going to a log file; returns the exit code.
Runner = Callable[[Sequence[str], str], int]


class SweepError(ValueError):
  """A sweep argument is invalid; the message names the flag."""


@dataclasses.dataclass(frozen=True)
class SweepSpec:
  """What to sweep and how to launch each run.

  Attributes:
    dataset: one of DATASETS.
    epsilons: budgets in their one spelling (epsilons.epsilon_text), e.g.
      ['8', '1e9', 'inf'].
    seeds: training seeds.
    sweep_dir: the sweep's root folder (local or gs://).
    data_dir: the dataset folder passed to every run ('' for none).
    launcher: 'local', 'gpu' or 'tpu'.
    extra_flags: flags appended to every train command.
    launcher_flags: flags for launch/gpu.sh or launch/cloud_tpu.sh.
    strategy: --strategy for local runs ('' leaves train's default).
    resume: pass --resume to every run.
    python: the interpreter for local runs.
  """
  dataset: str
  epsilons: tuple[str, ...]
  seeds: tuple[int, ...]
  sweep_dir: str
  data_dir: str = ''
  launcher: str = 'local'
  extra_flags: tuple[str, ...] = ()
  launcher_flags: tuple[str, ...] = ()
  strategy: str = ''
  resume: bool = False
  python: str = sys.executable


@dataclasses.dataclass
class Run:
  """One training run of the sweep and what became of it."""
  epsilon: str
  seed: int
  workdir: str
  command: list[str]
  log: str
  recipe: str = ''  # <dataset> or <dataset>_baseline.
  status: str = 'pending'  # pending|running|succeeded|failed|skipped
  returncode: int | None = None
  wall_seconds: float | None = None
  epsilon_spent: float | None = None
  metrics: dict[str, Any] | None = None
  error_tail: str | None = None

  def to_json(self) -> dict[str, Any]:
    """The run as a JSON-ready dict, with its command also as one line."""
    record = dataclasses.asdict(self)
    record['command_line'] = shlex.join(self.command)
    return record


def parse_seeds(text: str) -> list[int]:
  """Parses --seeds, a comma list of non-negative integers.

  Args:
    text: e.g. '10,11,100'.

  Returns:
    The seeds, in the given order.

  Raises:
    SweepError: for an empty list, a non-integer, a negative or repeated seed.
  """
  items = [item.strip() for item in text.split(',')] if text.strip() else []
  if not items:
    raise SweepError('--seeds is empty; give a comma list such as 10,11.')
  seeds = []
  for item in items:
    try:
      seed = int(item)
    except ValueError:
      raise SweepError(f'--seeds: {item!r} is not an integer.') from None
    if seed < 0:
      raise SweepError(f'--seeds: seeds must be non-negative, got {seed}.')
    if seed in seeds:
      raise SweepError(f'--seeds: {seed} is given twice.')
    seeds.append(seed)
  return seeds


def parse_flag_list(text: str, flag_name: str) -> list[str]:
  """Splits a string of command-line flags the way a shell would.

  Args:
    text: e.g. "--config.epochs=1 --config.dp.clip_norm=0.5".
    flag_name: the sweep flag that holds `text`, named in errors.

  Returns:
    The flags as a list.

  Raises:
    SweepError: for unbalanced quotes.
  """
  try:
    return shlex.split(text or '')
  except ValueError as e:
    raise SweepError(f'--{flag_name}: {e}.') from None


def check_extra_flags(extra_flags: Sequence[str]) -> None:
  """Rejects extra train flags that would fight the ones the sweep sets.

  Args:
    extra_flags: flags to append to every train command.

  Raises:
    SweepError: when one of them sets a flag that the sweep sets.
  """
  for name in _flag_names(extra_flags):
    if name in _RESERVED_TRAIN_FLAGS:
      raise SweepError(f'--extra_flags may not set --{name}; the sweep sets '
                       'it for each run (use --epsilons, --seeds, --sweep_dir '
                       'or --data_dir).')


def _is_remote(path: str) -> bool:
  """Whether a path names a file system other than the local one (gs://)."""
  return '://' in path


def _flag_names(flag_list: Sequence[str]) -> list[str]:
  """The names of the flags in a list ('--config.epochs=1' -> config.epochs)."""
  return [f.lstrip('-').split('=', 1)[0] for f in flag_list
          if f.startswith('-')]


def run_recipe(spec: SweepSpec, epsilon: str) -> str:
  """Which recipe a run trains.

  Args:
    spec: the sweep.
    epsilon: the run's budget tag.

  Returns:
    '<dataset>_baseline' for epsilon inf where the dataset has a baseline
    recipe, '--config' when --extra_flags names a recipe file, else
    '<dataset>'.
  """
  if 'config' in _flag_names(spec.extra_flags):
    return '--config'
  if epsilon == 'inf' and recipes.has_baseline(spec.dataset):
    return f'{spec.dataset}_baseline'
  return spec.dataset


def train_command(spec: SweepSpec, epsilon: str, seed: int,
                  workdir: str) -> list[str]:
  """The command line of one run for the spec's launcher.

  Args:
    spec: the sweep.
    epsilon: the run's budget tag.
    seed: the run's seed.
    workdir: the run's workdir.

  Returns:
    `python -m dp_medtf.train ...` for the local launcher, or
    `bash launch/gpu.sh run ...` / `bash launch/cloud_tpu.sh run ...`, with
    train's --baseline for an inf run of a dataset with a baseline recipe.
  """
  run_flags = [f'--dataset={spec.dataset}', f'--epsilon={epsilon}',
               f'--seed={seed}', f'--workdir={workdir}']
  if spec.data_dir:
    run_flags.append(f'--data_dir={spec.data_dir}')
  baseline = run_recipe(spec, epsilon).endswith('_baseline')
  train_flags = ['--baseline'] * baseline + list(spec.extra_flags)
  if spec.launcher == 'local':
    command = [spec.python, '-m', 'dp_medtf.train', *run_flags]
    if spec.strategy:
      command.append(f'--strategy={spec.strategy}')
    if spec.resume:
      command.append('--resume')
    return command + train_flags
  script = os.path.join(LAUNCH_DIR,
                        'gpu.sh' if spec.launcher == 'gpu' else 'cloud_tpu.sh')
  command = ['bash', script, 'run', *run_flags]
  if spec.resume:
    command.append('--resume')
  command += list(spec.launcher_flags)
  if train_flags:
    command += ['--', *train_flags]
  return command


def plan_sweep(spec: SweepSpec) -> list[Run]:
  """Every run of the sweep, budgets outermost, in the order given."""
  runs = []
  for epsilon in spec.epsilons:
    budget = epsilons_lib.parse_epsilon(epsilon, '--epsilons')
    for seed in spec.seeds:
      workdir = runs_lib.sweep_run_dir(spec.sweep_dir, spec.dataset, budget,
                                       seed)
      runs.append(Run(
          epsilon=epsilon, seed=seed, workdir=workdir,
          command=train_command(spec, epsilon, seed, workdir),
          log=runs_lib.sweep_log_path(spec.sweep_dir, spec.dataset, budget,
                                      seed),
          recipe=run_recipe(spec, epsilon)))
  return runs


def _gfile():
  """tf.io.gfile, imported on first use so that --help answers quickly."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.io.gfile


def read_results(workdir: str) -> runs_lib.RunResults | None:
  """The run's results.json, or None when it is missing or unreadable.

  Args:
    workdir: the run's folder (local or gs://).

  Returns:
    The checked results (dp_medtf.runs.read_results), or None.
  """
  try:
    return runs_lib.read_results(workdir, missing_ok=True)
  except json_files.JsonFileError as e:
    logging.warning('%s; the run counts as unfinished.', e)
    return None


def run_subprocess(command: Sequence[str], log_path: str) -> int:
  """Runs a command with stdout and stderr going to `log_path`.

  Args:
    command: the command line.
    log_path: local or gs:// file; a remote log is written when the run ends.

  Returns:
    The command's exit code (127 when it cannot be started).
  """
  gfile = _gfile()
  env = dict(os.environ)
  remote = _is_remote(log_path)
  if remote:
    fd, local_log = tempfile.mkstemp(suffix='.log')
    os.close(fd)
  else:
    gfile.makedirs(os.path.dirname(log_path) or '.')
    local_log = log_path
  try:
    with open(local_log, 'w') as log:
      log.write(f'$ {shlex.join(command)}\n')
      log.flush()
      try:
        returncode = subprocess.run(command, stdout=log,
                                    stderr=subprocess.STDOUT, env=env,
                                    check=False).returncode
      except OSError as e:
        log.write(f'cannot start: {e}\n')
        returncode = 127
    if remote:
      gfile.makedirs(os.path.dirname(log_path))
      gfile.copy(local_log, log_path, overwrite=True)
  finally:
    if remote:
      os.remove(local_log)
  return returncode


def _log_tail(log_path: str) -> str | None:
  """The end of a run's log, to show why it failed; None without a log."""
  gfile = _gfile()
  if not gfile.exists(log_path):
    return None
  with gfile.GFile(log_path) as f:
    return f.read()[-_LOG_TAIL_CHARS:]


def error_line(tail: str | None) -> str | None:
  """The line of a failed run's log that says why: its last non-empty one.

  The train app ends a failed run with one `error: ...` line; a crash ends
  with the exception's line.
  """
  return cli.last_line(tail or '') or None


def _now() -> str:
  """The UTC time, to the second, in ISO 8601."""
  return datetime.datetime.now(datetime.timezone.utc).isoformat(
      timespec='seconds')


class _Record:
  """sweep.json, rewritten whenever a run changes state."""

  def __init__(self, spec: SweepSpec, runs: list[Run]):
    self._spec = spec
    self._runs = runs
    self._lock = threading.Lock()
    self.path = runs_lib.sweep_record_path(spec.sweep_dir)
    self._started = _now()
    self._finished = None

  def as_json(self) -> dict[str, Any]:
    """The record as sweep.json holds it (strict JSON: 'inf', no inf)."""
    counts = {}
    for run in self._runs:
      counts[run.status] = counts.get(run.status, 0) + 1
    return json_files.to_strict({
        'dataset': self._spec.dataset,
        'launcher': self._spec.launcher,
        'sweep_dir': self._spec.sweep_dir,
        'data_dir': self._spec.data_dir,
        'epsilons': list(self._spec.epsilons),
        'seeds': list(self._spec.seeds),
        'extra_flags': list(self._spec.extra_flags),
        'launcher_flags': list(self._spec.launcher_flags),
        'started': self._started,
        'finished': self._finished,
        'counts': counts,
        'runs': [run.to_json() for run in self._runs],
    })

  def save(self, finished: bool = False) -> None:
    with self._lock:
      if finished:
        self._finished = _now()
      json_files.write_json(self.path, self.as_json())


def _summarize(run: Run, results: runs_lib.RunResults) -> None:
  """Copies a run's headline numbers from its results.json."""
  run.epsilon_spent = results.epsilon_spent
  run.metrics = results.metrics


def execute_sweep(spec: SweepSpec, runs: list[Run], *,
                  runner: Runner = run_subprocess,
                  skip_finished: bool = False, max_parallel: int = 1,
                  out: TextIO = sys.stdout) -> dict[str, Any]:
  """Runs the sweep, recording every run in <sweep_dir>/sweep.json.

  A run that fails (non-zero exit, or no results.json) is recorded as failed
  and the other runs go on.

  Args:
    spec: the sweep.
    runs: its runs, from plan_sweep.
    runner: runs one command with its output going to a log file.
    skip_finished: leave runs whose workdir holds a results.json.
    max_parallel: how many runs at once.
    out: where progress lines go.

  Returns:
    The sweep record, as written to sweep.json.
  """
  record = _Record(spec, runs)
  todo = []
  for run in runs:
    results = read_results(run.workdir) if skip_finished else None
    if results is not None:
      run.status = 'skipped'
      _summarize(run, results)
    else:
      todo.append(run)
  record.save()
  total = len(runs)
  counter = iter(range(1, len(todo) + 1))
  counter_lock = threading.Lock()

  def launch(run: Run) -> None:
    run.status = 'running'
    record.save()
    start = time.monotonic()
    try:
      run.returncode = runner(run.command, run.log)
    except Exception as e:  # pylint: disable=broad-except
      # A broken runner must not end the sweep: the run is simply failed.
      logging.exception('Run %s failed to launch.', run.workdir)
      run.returncode, run.error_tail = -1, f'{type(e).__name__}: {e}'
    run.wall_seconds = round(time.monotonic() - start, 1)
    results = read_results(run.workdir) if run.returncode == 0 else None
    if results is not None:
      run.status = 'succeeded'
      _summarize(run, results)
    else:
      run.status = 'failed'
      if run.error_tail is None:
        run.error_tail = _log_tail(run.log)
      if run.returncode == 0:
        run.error_tail = ('exited 0 but wrote no results.json\n' +
                          (run.error_tail or ''))
    record.save()
    with counter_lock:
      done = next(counter)
      out.write(f'[{done}/{len(todo)}] eps={run.epsilon} seed={run.seed}: '
                f'{run.status} (exit {run.returncode}, {run.wall_seconds} s)'
                f' -> {run.workdir}\n')
      reason = error_line(run.error_tail) if run.status == 'failed' else None
      if reason:
        out.write(f'    {reason}\n')
      out.flush()

  if total > len(todo):
    out.write(f'{total - len(todo)} of {total} runs already finished; '
              'skipped.\n')
  with concurrent.futures.ThreadPoolExecutor(max(1, max_parallel)) as pool:
    list(pool.map(launch, todo))
  record.save(finished=True)
  return record.as_json()


def print_dry_run(runs: list[Run], *, skip_finished: bool = False,
                  out: TextIO = sys.stdout) -> None:
  """Prints each run's exact command, one a line; finished ones commented.

  Args:
    runs: from plan_sweep.
    skip_finished: comment out runs whose workdir holds a results.json.
    out: where the lines go.
  """
  for run in runs:
    line = shlex.join(run.command)
    if skip_finished and read_results(run.workdir) is not None:
      line = f'# finished, skipped: {line}'
    out.write(line + '\n')
  out.flush()


def recipe_sweep(dataset: str) -> tuple[str, str]:
  """The recipe's sweep, as --epsilons and --seeds would spell it.

  Args:
    dataset: one of DATASETS.

  Returns:
    (epsilons, seeds), e.g. ('1,8,32,1e12,inf', '10,11,100,101,110').

  Raises:
    SweepError: when the recipe has no `sweep`.
  """
  sweep = recipes.load(dataset).get('sweep')
  if not sweep:
    raise SweepError(f'The {dataset} recipe has no sweep field; give '
                     '--epsilons and --seeds.')
  return (','.join(epsilons_lib.epsilon_text(float(e))
                   for e in sweep.epsilons),
          ','.join(str(int(s)) for s in sweep.seeds))


def make_spec(*, dataset: str, sweep_dir: str, epsilons: str | None = None,
              seeds: str | None = None, data_dir: str = '',
              launcher: str = 'local',
              extra_flags: str = '', launcher_flags: str = '',
              strategy: str = '', resume: bool = False,
              python: str = sys.executable) -> SweepSpec:
  """Checks the sweep's flags and builds its spec.

  Args:
    dataset: one of DATASETS.
    sweep_dir: the sweep's root folder.
    epsilons: the --epsilons comma list (None: the recipe's sweep.epsilons).
    seeds: the --seeds comma list (None: the recipe's sweep.seeds).
    data_dir: the dataset folder ('' for the demo).
    launcher: one of LAUNCHERS.
    extra_flags: train flags for every run, as one string.
    launcher_flags: gpu.sh or cloud_tpu.sh flags, as one string.
    strategy: --strategy for local runs ('' for train's default).
    resume: pass --resume to every run.
    python: the interpreter for local runs.

  Returns:
    The spec.

  Raises:
    SweepError: naming the flag at fault.
  """
  if dataset not in DATASETS:
    raise SweepError(f'--dataset must be one of {", ".join(DATASETS)}, got '
                     f'{dataset!r}.')
  if launcher not in LAUNCHERS:
    raise SweepError(f'--launcher must be one of {", ".join(LAUNCHERS)}, got '
                     f'{launcher!r}.')
  if not sweep_dir:
    raise SweepError('--sweep_dir is required.')
  if dataset != 'demo' and not data_dir:
    raise SweepError(f'--data_dir is required for --dataset={dataset}.')
  if (data_dir and launcher == 'local' and not _is_remote(data_dir) and
      not os.path.isdir(data_dir)):
    raise SweepError(f'--data_dir={data_dir} is not a folder.')
  if strategy and launcher != 'local':
    raise SweepError('--strategy applies to --launcher=local only; gpu.sh '
                     'picks mirrored for several GPUs (or takes --strategy in '
                     '--launcher_flags) and cloud_tpu.sh always uses tpu.')
  if launcher_flags and launcher == 'local':
    raise SweepError('--launcher_flags applies to --launcher=gpu or tpu only.')
  extra = parse_flag_list(extra_flags, 'extra_flags')
  check_extra_flags(extra)
  if epsilons is None or seeds is None:
    default_epsilons, default_seeds = recipe_sweep(dataset)
    epsilons = default_epsilons if epsilons is None else epsilons
    seeds = default_seeds if seeds is None else seeds
  try:
    budgets = tuple(epsilons_lib.epsilon_text(e) for e in
                    epsilons_lib.parse_epsilons(epsilons, '--epsilons'))
  except ValueError as e:
    raise SweepError(str(e)) from None
  return SweepSpec(
      dataset=dataset, epsilons=budgets,
      seeds=tuple(parse_seeds(seeds)), sweep_dir=sweep_dir,
      data_dir=data_dir, launcher=launcher, extra_flags=tuple(extra),
      launcher_flags=tuple(parse_flag_list(launcher_flags, 'launcher_flags')),
      strategy=strategy, resume=resume, python=python)


def define_flags() -> None:
  """Defines the command-line flags (only when run as a program)."""
  flags.DEFINE_enum('dataset', 'demo', DATASETS, 'The dataset to train on.')
  flags.DEFINE_string('epsilons', None,
                      'Comma list of budgets: positive numbers or inf (the '
                      'non-private baseline); default: the recipe\'s '
                      'sweep.epsilons.')
  flags.DEFINE_string('seeds', None, 'Comma list of training seeds; default: '
                      'the recipe\'s sweep.seeds.')
  flags.DEFINE_string('sweep_dir', None, 'Root folder of the sweep (local or '
                      'gs://); runs go to <sweep_dir>/<dataset>/'
                      'eps<epsilon>_seed<seed>/.')
  flags.DEFINE_string('data_dir', '', 'The dataset folder (local or gs://); '
                      'not needed for the demo.')
  flags.DEFINE_enum('launcher', 'local', LAUNCHERS,
                    'local: python -m dp_medtf.train here; gpu: '
                    'launch/gpu.sh run; tpu: launch/cloud_tpu.sh run.')
  flags.DEFINE_bool('dry_run', False, 'Print the commands, run nothing.')
  flags.DEFINE_bool('skip_finished', False,
                    'Leave runs whose workdir already holds results.json.')
  flags.DEFINE_string('extra_flags', '', 'Train flags for every run, e.g. '
                      "'--config.epochs=1'.")
  flags.DEFINE_string('launcher_flags', '', 'Flags for gpu.sh or '
                      "cloud_tpu.sh, e.g. '--name=dp-tpu --zone=us-central1-f"
                      "'.")
  flags.DEFINE_string('strategy', '', 'train --strategy for local runs '
                      '(default, mirrored, ...); empty leaves train\'s '
                      'default.')
  flags.DEFINE_bool('resume', False, 'Pass --resume to every run, continuing '
                    'from its checkpoint.')
  flags.DEFINE_integer('max_parallel', 1, 'How many runs at once.',
                       lower_bound=1)
  flags.mark_flag_as_required('sweep_dir')


def main(argv: Sequence[str]) -> int:
  """Plans the sweep from the flags, then prints or runs it.

  Args:
    argv: left-over command-line arguments (none are accepted).

  Returns:
    0 when every run succeeded or was skipped, 1 otherwise.
  """
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  fv = flags.FLAGS
  try:
    spec = make_spec(
        dataset=fv.dataset, epsilons=fv.epsilons, seeds=fv.seeds,
        sweep_dir=fv.sweep_dir, data_dir=fv.data_dir, launcher=fv.launcher,
        extra_flags=fv.extra_flags, launcher_flags=fv.launcher_flags,
        strategy=fv.strategy, resume=fv.resume)
  except SweepError as e:
    raise app.UsageError(str(e)) from None
  if spec.launcher == 'tpu' and not _is_remote(spec.sweep_dir):
    logging.warning('--sweep_dir=%s is not gs://: the TPU VM writes the runs '
                    'on its own disk and --skip_finished cannot see them.',
                    spec.sweep_dir)
  if not fv.dry_run:
    cli.check_output_dir('sweep_dir', spec.sweep_dir)
  runs = plan_sweep(spec)
  if fv.dry_run:
    print_dry_run(runs, skip_finished=fv.skip_finished)
    return 0
  record = execute_sweep(spec, runs, skip_finished=fv.skip_finished,
                         max_parallel=fv.max_parallel)
  counts = record['counts']
  print(f'sweep: {counts} -> '
        f'{runs_lib.sweep_record_path(spec.sweep_dir)}')
  return 1 if counts.get('failed') else 0


if __name__ == '__main__':
  define_flags()
  cli.run(main)
