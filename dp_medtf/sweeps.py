"""A sweep: one training run per (privacy budget, seed), planned and run.

`make_spec` checks the sweep's settings into a SweepSpec; `plan_sweep` turns
it into Runs, each with the exact train command for its launcher (local:
`python -m dp_medtf.train`; gpu / tpu: the repository's launch/gpu.sh or
launch/cloud_tpu.sh `run`); `execute_sweep` runs them, recording each run's
command, workdir, return code and status in <sweep_dir>/sweep.json. The run
folders and the record are laid out by dp_medtf.runs; the app is
dp_medtf.sweep.

A budget of inf trains the dataset's non-private baseline recipe (train
--baseline) where it has one. A run counts as done only when its
results.json reads (dp_medtf.runs.read_results) and says it finished.

Example:

  >>> spec = make_spec(dataset='demo', sweep_dir='/tmp/s', epsilons='8,inf',
  ...                  seeds='10')
  >>> [run.workdir for run in plan_sweep(spec)]
  ['/tmp/s/demo/eps8_seed10', '/tmp/s/demo/epsinf_seed10']
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

from absl import logging

from dp_medtf import cli
from dp_medtf import epsilons as epsilons_lib
from dp_medtf import json_files
from dp_medtf import recipes
from dp_medtf import runs as runs_lib

LAUNCHERS = ('local', 'gpu', 'tpu')
# The shell launchers live in the repository's launch/ folder, beside the
# package; setup.py installs the package alone, so an installed copy has none.
LAUNCH_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'launch')
_LAUNCH_SCRIPTS = {'gpu': 'gpu.sh', 'tpu': 'cloud_tpu.sh'}
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
    dataset: one of recipes.DATASETS.
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
  status: str = 'pending'  # pending|running|succeeded|interrupted|failed|skipped
  returncode: int | None = None
  wall_seconds: float | None = None
  epsilon_spent: float | None = None
  metrics: dict[str, Any] | None = None
  error_tail: str | None = None

  def to_json(self) -> dict[str, Any]:
    """The run as a JSON-ready dict, with its command also as one line."""
    return {**dataclasses.asdict(self),
            'command_line': shlex.join(self.command)}

  def summarize(self, results: runs_lib.RunResults) -> None:
    """Copies the run's headline numbers from its results.json."""
    self.epsilon_spent = results.epsilon_spent
    self.metrics = results.metrics


def _flag_names(flag_list: Sequence[str]) -> list[str]:
  """The names of the flags in a list ('--config.epochs=1' -> config.epochs)."""
  return [f.lstrip('-').split('=', 1)[0] for f in flag_list
          if f.startswith('-')]


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


def launch_script(launcher: str) -> str:
  """The shell script that runs one training run for a remote launcher.

  Args:
    launcher: 'gpu' or 'tpu'.

  Returns:
    The path of launch/gpu.sh or launch/cloud_tpu.sh.

  Raises:
    SweepError: naming --launcher, when the script is not beside the package
      (an installed package has no launch/ folder).
  """
  path = os.path.join(LAUNCH_DIR, _LAUNCH_SCRIPTS[launcher])
  if not os.path.isfile(path):
    raise SweepError(f'--launcher={launcher} runs {path}, which is missing: '
                     'the launchers come with the repository, not with the '
                     'installed package; run the sweep from a checkout '
                     '(pip install -e .).')
  return path


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
  resume = ['--resume'] * spec.resume
  if spec.launcher == 'local':
    strategy = [f'--strategy={spec.strategy}'] * bool(spec.strategy)
    return [spec.python, '-m', 'dp_medtf.train', *run_flags, *strategy,
            *resume, *train_flags]
  command = ['bash', launch_script(spec.launcher), 'run', *run_flags, *resume,
             *spec.launcher_flags]
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


def read_results(workdir: str, *, finished: bool = False
                 ) -> runs_lib.RunResults | None:
  """A run's results.json, or None when the run did not write a readable one.

  Args:
    workdir: the run's folder (local or gs://).
    finished: also None for the results of an interrupted run, so that only
      a run that trained to its end counts as done.

  Returns:
    The checked results (dp_medtf.runs.read_results); None for a missing
    file, one that does not read (logged), or an unfinished run when
    `finished`.
  """
  try:
    results = runs_lib.read_results(workdir, missing_ok=True)
  except json_files.JsonFileError as e:  # ResultsError included.
    logging.warning('The run counts as unfinished: %s', e)
    return None
  if finished and results is not None and not results.finished:
    return None
  return results


def run_subprocess(command: Sequence[str], log_path: str) -> int:
  """Runs a command with stdout and stderr going to `log_path`.

  Args:
    command: the command line.
    log_path: local or gs:// file; a remote log is written when the run ends.

  Returns:
    The command's exit code (127 when it cannot be started).
  """
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  remote = cli.is_remote(log_path)
  if remote:
    fd, local_log = tempfile.mkstemp(suffix='.log')
    os.close(fd)
  else:
    tf.io.gfile.makedirs(os.path.dirname(log_path) or '.')
    local_log = log_path
  try:
    with open(local_log, 'w') as log:
      log.write(f'$ {shlex.join(command)}\n')
      log.flush()
      try:
        returncode = subprocess.run(command, stdout=log,
                                    stderr=subprocess.STDOUT,
                                    check=False).returncode
      except OSError as e:
        log.write(f'cannot start: {e}\n')
        returncode = 127
    if remote:
      tf.io.gfile.makedirs(os.path.dirname(log_path))
      tf.io.gfile.copy(local_log, log_path, overwrite=True)
  finally:
    if remote:
      os.remove(local_log)
  return returncode


def _log_tail(log_path: str) -> str | None:
  """The end of a run's log, to show why it failed; None without a log."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  if not tf.io.gfile.exists(log_path):
    return None
  with tf.io.gfile.GFile(log_path) as f:
    return f.read()[-_LOG_TAIL_CHARS:]


def _now() -> str:
  """The UTC time, to the second, in ISO 8601."""
  return datetime.datetime.now(datetime.timezone.utc).isoformat(
      timespec='seconds')


class _Record:
  """sweep.json, rewritten (json_files.write_json) whenever a run changes."""

  def __init__(self, spec: SweepSpec, runs: list[Run]):
    self._spec = spec
    self._runs = runs
    self._lock = threading.Lock()
    self._started = _now()
    self._finished = None

  def as_json(self) -> dict[str, Any]:
    """The record as sweep.json holds it (strict JSON: 'inf', no inf)."""
    counts = {}
    for run in self._runs:
      counts[run.status] = counts.get(run.status, 0) + 1
    spec = self._spec
    return json_files.to_strict({
        'dataset': spec.dataset, 'launcher': spec.launcher,
        'sweep_dir': spec.sweep_dir, 'data_dir': spec.data_dir,
        'epsilons': list(spec.epsilons), 'seeds': list(spec.seeds),
        'extra_flags': list(spec.extra_flags),
        'launcher_flags': list(spec.launcher_flags),
        'started': self._started, 'finished': self._finished,
        'counts': counts, 'runs': [run.to_json() for run in self._runs]})

  def save(self, finished: bool = False) -> None:
    with self._lock:
      if finished:
        self._finished = _now()
      json_files.write_json(runs_lib.sweep_record_path(self._spec.sweep_dir),
                            self.as_json())


def _launch(run: Run, runner: Runner) -> None:
  """Runs one run and sets its status from its exit code and results.json."""
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
    # A run that stopped early on purpose (stop_after_steps) exits 0 too.
    run.status = 'succeeded' if results.finished else 'interrupted'
    run.summarize(results)
    return
  run.status = 'failed'
  if run.error_tail is None:
    run.error_tail = _log_tail(run.log)
  if run.returncode == 0:
    run.error_tail = ('exited 0 but wrote no results.json\n' +
                      (run.error_tail or ''))


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
    skip_finished: leave the runs that finished (read_results).
    max_parallel: how many runs at once.
    out: where progress lines go.

  Returns:
    The sweep record, as written to sweep.json.
  """
  record = _Record(spec, runs)
  todo = []
  for run in runs:
    results = skip_finished and read_results(run.workdir, finished=True)
    if results:
      run.status = 'skipped'
      run.summarize(results)
    else:
      todo.append(run)
  record.save()
  done = 0
  done_lock = threading.Lock()

  def launch(run: Run) -> None:
    nonlocal done
    run.status = 'running'
    record.save()
    _launch(run, runner)
    record.save()
    with done_lock:
      done += 1
      out.write(f'[{done}/{len(todo)}] eps={run.epsilon} seed={run.seed}: '
                f'{run.status} (exit {run.returncode}, {run.wall_seconds} s)'
                f' -> {run.workdir}\n')
      reason = (cli.last_line(run.error_tail or '')
                if run.status == 'failed' else '')
      if reason:
        out.write(f'    {reason}\n')
      out.flush()

  if len(runs) > len(todo):
    out.write(f'{len(runs) - len(todo)} of {len(runs)} runs already '
              'finished; skipped.\n')
  with concurrent.futures.ThreadPoolExecutor(max(1, max_parallel)) as pool:
    list(pool.map(launch, todo))
  record.save(finished=True)
  return record.as_json()


def print_dry_run(runs: list[Run], *, skip_finished: bool = False,
                  out: TextIO = sys.stdout) -> None:
  """Prints each run's exact command, one a line; finished ones commented.

  Args:
    runs: from plan_sweep.
    skip_finished: comment out the runs that finished (read_results).
    out: where the lines go.
  """
  for run in runs:
    line = shlex.join(run.command)
    if skip_finished and read_results(run.workdir, finished=True) is not None:
      line = f'# finished, skipped: {line}'
    out.write(line + '\n')
  out.flush()


def make_spec(*, dataset: str, sweep_dir: str, epsilons: str | None = None,
              seeds: str | None = None, data_dir: str = '',
              launcher: str = 'local',
              extra_flags: str = '', launcher_flags: str = '',
              strategy: str = '', resume: bool = False,
              python: str = sys.executable) -> SweepSpec:
  """Checks the sweep's flags and builds its spec.

  Args:
    dataset: one of recipes.DATASETS.
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
    The spec. A tpu sweep whose sweep_dir is local is allowed, with a
    warning: its runs stay on the TPU VM's disk.

  Raises:
    SweepError: naming the flag at fault.
  """
  if dataset not in recipes.DATASETS:
    raise SweepError(f'--dataset must be one of {", ".join(recipes.DATASETS)}'
                     f', got {dataset!r}.')
  if launcher not in LAUNCHERS:
    raise SweepError(f'--launcher must be one of {", ".join(LAUNCHERS)}, got '
                     f'{launcher!r}.')
  if launcher != 'local':
    launch_script(launcher)
  if not sweep_dir:
    raise SweepError('--sweep_dir is required.')
  if dataset != 'demo' and not data_dir:
    raise SweepError(f'--data_dir is required for --dataset={dataset}.')
  if (data_dir and launcher == 'local' and not cli.is_remote(data_dir) and
      not os.path.isdir(data_dir)):
    raise SweepError(f'--data_dir={data_dir} is not a folder.')
  if strategy and launcher != 'local':
    raise SweepError('--strategy applies to --launcher=local only; gpu.sh '
                     'picks mirrored for several GPUs (or takes --strategy in '
                     '--launcher_flags) and cloud_tpu.sh always uses tpu.')
  if launcher_flags and launcher == 'local':
    raise SweepError('--launcher_flags applies to --launcher=gpu or tpu only.')
  extra = parse_flag_list(extra_flags, 'extra_flags')
  for name in _flag_names(extra):
    if name in _RESERVED_TRAIN_FLAGS:
      raise SweepError(f'--extra_flags may not set --{name}; the sweep sets '
                       'it for each run (use --epsilons, --seeds, --sweep_dir '
                       'or --data_dir).')
  if launcher == 'tpu' and not cli.is_remote(sweep_dir):
    logging.warning('--sweep_dir=%s is not gs://: the TPU VM writes the runs '
                    'on its own disk and --skip_finished cannot see them.',
                    sweep_dir)
  if epsilons is None or seeds is None:
    sweep = recipes.load(dataset).get('sweep')
    if not sweep:
      raise SweepError(f'The {dataset} recipe has no sweep field; give '
                       '--epsilons and --seeds.')
    if epsilons is None:
      epsilons = ','.join(epsilons_lib.epsilon_text(float(e))
                          for e in sweep.epsilons)
    if seeds is None:
      seeds = ','.join(str(int(s)) for s in sweep.seeds)
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
