"""A training run's folder: what it holds, what it is called, results.json.

The train app (dp_medtf.fit) writes one folder per run:

  results.json   the run's record: RunResults (written by write_results)
  history.json   the per-epoch validation history
  checkpoints/   secret checkpoints (model, optimizer, randomness, ledger)
  tensorboard/   TensorBoard events
  model.keras    the release model (architecture and weights only)

`RunLayout` gives these paths. A sweep (dp_medtf.sweep) keeps its runs in
<sweep_dir>/<dataset>/<run_name(epsilon, seed)>/, e.g. demo/eps1e9_seed10,
its logs in <sweep_dir>/logs/<dataset>/ and its record in
<sweep_dir>/sweep.json; `parse_run_name` reads a run folder's name back.

`read_results` checks every field of results.json and raises ResultsError,
naming the file and the field, for a missing, unknown or mistyped one.

Example:

  >>> import math, tempfile
  >>> name = run_name(1e9, 10)
  >>> name, parse_run_name(name)
  ('eps1e9_seed10', RunKey(epsilon=1000000000.0, seed=10))
  >>> RunLayout('/runs/' + name).results
  '/runs/eps1e9_seed10/results.json'
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from typing import Any, NamedTuple

from dp_medtf import epsilons as epsilons_lib
from dp_medtf import json_files

RESULTS_FILE = 'results.json'
HISTORY_FILE = 'history.json'
CHECKPOINTS_DIR = 'checkpoints'
TENSORBOARD_DIR = 'tensorboard'
MODEL_FILE = 'model.keras'

SWEEP_RECORD_FILE = 'sweep.json'
SWEEP_LOGS_DIR = 'logs'

# results.json's `status`: the run trained all its steps (or stopped early),
# or it was cut short (stop_after_steps) and can be resumed.
FINISHED = 'finished'
INTERRUPTED = 'interrupted'
STATUSES = (FINISHED, INTERRUPTED)

_RUN_NAME = re.compile(r'^eps(?P<epsilon>[^_]+)_seed(?P<seed>-?\d+)$')


class ResultsError(json_files.JsonFileError):
  """A results.json is not what the train app writes; names file and field."""


@dataclasses.dataclass(frozen=True)
class RunLayout:
  """The paths inside one run folder.

  Attributes:
    run_dir: the run's folder (local or gs://).

  Example:

    >>> layout = RunLayout('gs://bucket/runs/eps8_seed10')
    >>> layout.checkpoints
    'gs://bucket/runs/eps8_seed10/checkpoints'
  """
  run_dir: str

  def _path(self, name: str) -> str:
    return os.path.join(self.run_dir, name)

  @property
  def results(self) -> str:
    """results.json: the run's RunResults."""
    return self._path(RESULTS_FILE)

  @property
  def history(self) -> str:
    """history.json: one entry per validated epoch."""
    return self._path(HISTORY_FILE)

  @property
  def checkpoints(self) -> str:
    """The checkpoint folder (secret: it holds the mechanism's randomness)."""
    return self._path(CHECKPOINTS_DIR)

  @property
  def tensorboard(self) -> str:
    """The TensorBoard events folder."""
    return self._path(TENSORBOARD_DIR)

  @property
  def model(self) -> str:
    """model.keras: the release model."""
    return self._path(MODEL_FILE)


class RunKey(NamedTuple):
  """What a sweep's run folder name says: the budget and the seed."""
  epsilon: float
  seed: int


def run_name(epsilon: float, seed: int) -> str:
  """The folder name of a sweep's run: eps<epsilon>_seed<seed>.

  Args:
    epsilon: the budget (math.inf: non-private), spelled by
      epsilons.epsilon_text.
    seed: the training seed.

  Returns:
    The name, e.g. 'eps8_seed10', 'eps1e9_seed101', 'epsinf_seed10'.

  Raises:
    ValueError: for a budget that is not positive, or a seed that is not an
      integer.

  Example:

    >>> run_name(0.5, 11), run_name(math.inf, 10)
    ('eps0.5_seed11', 'epsinf_seed10')
  """
  text = epsilons_lib.epsilon_text(epsilon)
  epsilons_lib.parse_epsilon(text, 'The budget of a run folder')
  if isinstance(seed, bool) or not isinstance(seed, int):
    raise ValueError(f'The seed of a run folder must be an integer, got '
                     f'{seed!r}.')
  return f'eps{text}_seed{seed}'


def parse_run_name(name: str) -> RunKey | None:
  """Reads a sweep's run folder name back: the inverse of run_name.

  The budget may be in any spelling epsilons.parse_epsilon reads, so folders
  named before budgets had one spelling (eps1e+09_seed10) still parse.

  Args:
    name: a folder name (a trailing '/', as gfile lists folders, is ignored).

  Returns:
    The RunKey, or None when `name` is not of the form eps<e>_seed<s>.

  Raises:
    ValueError: naming the folder, when <e> is not a budget (eps0_seed10).

  Example:

    >>> parse_run_name('eps1e+09_seed12'), parse_run_name('attack')
    (RunKey(epsilon=1000000000.0, seed=12), None)
  """
  name = name.rstrip('/')
  match = _RUN_NAME.match(name)
  if not match:
    return None
  epsilon = epsilons_lib.parse_epsilon(match['epsilon'],
                                       f'The budget of {name}')
  return RunKey(epsilon, int(match['seed']))


def sweep_run_dir(sweep_dir: str, dataset: str, epsilon: float,
                  seed: int) -> str:
  """The folder of one run of a sweep: <sweep_dir>/<dataset>/<run_name>.

  Args:
    sweep_dir: the sweep's root folder (local or gs://).
    dataset: the dataset name.
    epsilon: the run's budget.
    seed: the run's seed.

  Returns:
    The run folder.

  Example:

    >>> sweep_run_dir('gs://b/sweeps/', 'radimagenet', 32, 100)
    'gs://b/sweeps/radimagenet/eps32_seed100'
  """
  return '/'.join([sweep_dir.rstrip('/'), dataset, run_name(epsilon, seed)])


def sweep_log_path(sweep_dir: str, dataset: str, epsilon: float,
                   seed: int) -> str:
  """Where a sweep keeps one run's output: logs/<dataset>/<run_name>.log.

  Kept out of the run folder, which holds only what the train app writes.

  Args:
    sweep_dir: the sweep's root folder.
    dataset: the dataset name.
    epsilon: the run's budget.
    seed: the run's seed.

  Returns:
    The log file's path.

  Example:

    >>> sweep_log_path('/s', 'demo', 8, 10)
    '/s/logs/demo/eps8_seed10.log'
  """
  return '/'.join([sweep_dir.rstrip('/'), SWEEP_LOGS_DIR, dataset,
                   run_name(epsilon, seed) + '.log'])


def sweep_record_path(sweep_dir: str) -> str:
  """The sweep's own record, <sweep_dir>/sweep.json.

  Example:

    >>> sweep_record_path('gs://b/sweeps/')
    'gs://b/sweeps/sweep.json'
  """
  return '/'.join([sweep_dir.rstrip('/'), SWEEP_RECORD_FILE])


def find_runs(dataset_dir: str) -> list[tuple[RunKey, str]]:
  """The run folders of one dataset of a sweep, sorted by name.

  Args:
    dataset_dir: <sweep_dir>/<dataset> (local or gs://).

  Returns:
    (RunKey, run folder) for each entry named eps<e>_seed<s>; other entries
    (attack/, report/) are left out.

  Raises:
    ValueError: naming the folder, for an eps<e>_seed<s> folder whose <e> is
      not a budget.

  Example:

    >>> find_runs('/tmp/sweep/demo')  # doctest: +SKIP
    [(RunKey(epsilon=8.0, seed=10), '/tmp/sweep/demo/eps8_seed10')]
  """
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  found = []
  for entry in sorted(tf.io.gfile.listdir(dataset_dir)):
    try:
      key = parse_run_name(entry)
    except ValueError as e:
      raise ValueError(f'{dataset_dir}: {e}') from None
    if key is not None:
      found.append((key, os.path.join(dataset_dir, entry.rstrip('/'))))
  return found


@dataclasses.dataclass(frozen=True)
class RunResults:
  """results.json: what a training run reports (written by dp_medtf.fit).

  A private run publishes only held-out metrics, epsilon and the settings;
  nothing here is a statistic of the training set. Infinite numbers
  (epsilon of a non-private run) are written 'inf' (json_files).

  Attributes:
    dataset: the dataset name.
    recipe: the recipe trained (<dataset>, <dataset>_baseline, ...).
    model: the model's name.
    engine: the DP-SGD engine, 'non_private' without DP.
    status: 'finished' or 'interrupted' (STATUSES).
    epsilon_target: the budget (math.inf: non-private).
    epsilon_spent: epsilon spent by the steps taken, at `delta`.
    delta: the target delta.
    randomness: 'secret' or the seeded mode; None without DP;
      'unrecorded' in results written before the field existed.
    replicas: devices the run trained on.
    noise_multiplier: z (0.0 without DP).
    clip_norm: C (None without DP).
    sampling_rate: q = B / N.
    steps: steps taken.
    planned_steps: T, the steps the budget was calibrated for.
    privacy_ledger: the ledger's segments (PrivacyLedger.to_dict).
    epochs: the recipe's epochs.
    early_stopping: the rule and its outcome (EarlyStoppingState.to_dict);
      None without early stopping.
    batch_size: the expected logical batch size B.
    physical_batch_size: examples per physical chunk.
    num_train_examples: N.
    seed: the training seed.
    metrics: test metrics of a finished run; None when interrupted.
    validation_metrics: the last validated epoch's metrics, or None.
    history: one entry per validated epoch (as in history.json).
    wall_seconds: training time, summed over resumed segments.
  """
  dataset: str
  recipe: str
  model: str
  engine: str
  status: str
  epsilon_target: float
  epsilon_spent: float
  delta: float
  randomness: str | None
  replicas: int
  noise_multiplier: float
  clip_norm: float | None
  sampling_rate: float
  steps: int
  planned_steps: int
  privacy_ledger: list[dict[str, Any]]
  epochs: int
  early_stopping: dict[str, Any] | None
  batch_size: int
  physical_batch_size: int
  num_train_examples: int
  seed: int
  metrics: dict[str, float] | None
  validation_metrics: dict[str, float] | None
  history: list[dict[str, Any]]
  wall_seconds: float

  @property
  def finished(self) -> bool:
    """Whether the run trained to its end (and was tested)."""
    return self.status == FINISHED

  @property
  def private(self) -> bool:
    """Whether the run trained with DP (a finite budget)."""
    return not math.isinf(self.epsilon_target)

  def to_json(self) -> dict[str, Any]:
    """The fields as a dict, in results.json's order (infinities as floats).

    Returns:
      A JSON-ready dict for json_files.write_json.

    Example:

      >>> results = RunResults.from_json(_EXAMPLE, 'example')
      >>> RunResults.from_json(results.to_json(), 'again') == results
      True
    """
    return {f.name: _copy(getattr(self, f.name))
            for f in dataclasses.fields(self)}

  @classmethod
  def from_json(cls, obj: Any, source: str) -> RunResults:
    """Checks a parsed results.json and builds the RunResults.

    Args:
      obj: the parsed JSON (infinite numbers may be 'inf' / '-inf').
      source: the file it came from, named in errors.

    Returns:
      The RunResults.

    Raises:
      ResultsError: naming `source` and the field, for a missing, unknown or
        mistyped field, an unknown status, or a finished run without test
        metrics.

    Example:

      >>> try:
      ...   RunResults.from_json({**_EXAMPLE, 'steps': 'ten'}, 'r.json')
      ... except ResultsError as e:
      ...   print(e)
      r.json: field 'steps' must be an integer, got 'ten'.
    """
    if not isinstance(obj, dict):
      raise ResultsError(f'{source}: not a JSON object '
                         f'({type(obj).__name__}).')
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    obj = {**_added_later(obj), **obj}
    for name in names:
      if name not in obj:
        raise ResultsError(f'{source}: field {name!r} is missing.')
    unknown = [name for name in obj if name not in hints]
    if unknown:
      raise ResultsError(f'{source}: unknown field {unknown[0]!r} (not one '
                         'the train app writes).')
    values = {name: _checked(obj[name], hints[name], name, source)
              for name in names}
    if values['status'] not in STATUSES:
      raise ResultsError(f'{source}: field \'status\' must be one of '
                         f'{", ".join(STATUSES)}, got {values["status"]!r}.')
    if values['status'] == FINISHED and values['metrics'] is None:
      raise ResultsError(f'{source}: field \'metrics\' is null, but a '
                         'finished run has test metrics.')
    return cls(**values)


def _added_later(obj: dict[str, Any]) -> dict[str, Any]:
  """Values for the fields that results.json gained over time.

  A run folder written before a field existed still reads: its recipe was
  the dataset's, it stopped no early, ran on one device, and its randomness
  mode was not recorded.
  """
  return {'recipe': obj.get('dataset'), 'early_stopping': None,
          'replicas': 1, 'randomness': 'unrecorded'}


def read_results(run_dir: str, *, missing_ok: bool = False
                 ) -> RunResults | None:
  """Reads and checks a run folder's results.json.

  Args:
    run_dir: the run folder (local or gs://).
    missing_ok: return None when there is no results.json.

  Returns:
    The RunResults; None for a missing file when `missing_ok`.

  Raises:
    json_files.JsonFileError: naming the file, when it is missing (unless
      `missing_ok`), unreadable or not JSON.
    ResultsError: naming the file and the field, for a field that is
      missing, unknown or of the wrong type.

  Example:

    >>> import tempfile
    >>> run_dir = tempfile.mkdtemp()
    >>> read_results(run_dir, missing_ok=True) is None
    True
    >>> write_results(run_dir, RunResults.from_json(_EXAMPLE, 'example'))
    >>> read_results(run_dir).steps
    9
  """
  path = RunLayout(run_dir).results
  obj = json_files.read_json(path, default=None)
  if obj is None:
    if missing_ok:
      return None
    raise json_files.JsonFileError(f'{path} not found.')
  return RunResults.from_json(obj, path)


def write_results(run_dir: str, results: RunResults) -> None:
  """Writes a run's results.json, atomically (json_files.write_json).

  The fields are checked first as a reader checks them, so nothing is
  written that read_results would refuse.

  Args:
    run_dir: the run folder (created if missing).
    results: the run's results.

  Raises:
    ResultsError: naming the field, for a value of the wrong type; nothing
      is written then.
  """
  path = RunLayout(run_dir).results
  obj = results.to_json()
  RunResults.from_json(json_files.to_strict(obj), path)
  json_files.write_json(path, obj)


def _copy(value: Any) -> Any:
  """A copy of nested dicts and lists, so callers cannot change a result."""
  if isinstance(value, dict):
    return {k: _copy(v) for k, v in value.items()}
  if isinstance(value, list):
    return [_copy(v) for v in value]
  return value


_DESCRIPTIONS = {float: ('a number', 'numbers'),
                 int: ('an integer', 'integers'),
                 str: ('a string', 'strings')}


def _describe(hint: Any, plural: bool = False) -> str:
  """A type hint in words, for errors: 'a number or null'."""
  origin, args = typing.get_origin(hint), typing.get_args(hint)
  if origin in (typing.Union, types.UnionType):
    return ' or '.join('null' if a is type(None) else _describe(a, plural)
                       for a in args)
  if origin is dict:
    return ('objects' if plural else 'an object') + (
        f' of {_describe(args[1], plural=True)}')
  if origin is list:
    return 'lists' if plural else 'a list'
  return _DESCRIPTIONS.get(hint, ('a JSON value', 'JSON values'))[plural]


def _checked(value: Any, hint: Any, field: str, source: str) -> Any:
  """`value` checked against a field's type hint ('inf' read as a float).

  Raises:
    ResultsError: naming `source` and `field` (with its key or index inside
      a nested value).
  """

  def refuse():
    raise ResultsError(f'{source}: field {field!r} must be '
                       f'{_describe(hint)}, got {value!r}.')

  origin, args = typing.get_origin(hint), typing.get_args(hint)
  if hint is Any:
    return value
  if origin in (typing.Union, types.UnionType):
    if value is None:
      if type(None) in args:
        return None
      refuse()
    [inner] = [a for a in args if a is not type(None)]
    container = typing.get_origin(inner)  # dict or list; None for a scalar.
    if container is not None and isinstance(value, container):
      return _checked(value, inner, field, source)  # Names the nested key.
    try:
      return _checked(value, inner, field, source)
    except ResultsError:
      refuse()
  if hint is float:
    if value in ('inf', '-inf'):
      return float(value)
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or
        math.isnan(value)):
      refuse()
    return float(value)
  if hint is int:
    if isinstance(value, bool) or not isinstance(value, int):
      refuse()
    return value
  if hint is str:
    if not isinstance(value, str):
      refuse()
    return value
  if origin is dict:
    if not isinstance(value, dict):
      refuse()
    return {key: _checked(item, args[1], f'{field}.{key}', source)
            for key, item in value.items()}
  if origin is list:
    if not isinstance(value, list):
      refuse()
    return [_checked(item, args[0], f'{field}[{i}]', source)
            for i, item in enumerate(value)]
  raise TypeError(f'RunResults.{field}: unsupported type hint {hint!r}.')


# A private demo run's results.json, for the examples above.
_EXAMPLE = {
    'dataset': 'demo', 'recipe': 'demo', 'model': 'resnet9',
    'engine': 'vectorized', 'status': 'finished', 'epsilon_target': 8.0,
    'epsilon_spent': 7.98, 'delta': 1e-05, 'randomness': 'secret',
    'replicas': 1, 'noise_multiplier': 0.93, 'clip_norm': 1.0,
    'sampling_rate': 0.1067, 'steps': 9, 'planned_steps': 9,
    'privacy_ledger': [{'noise_multiplier': 0.93, 'sampling_rate': 0.1067,
                        'steps': 9}],
    'epochs': 1, 'early_stopping': None, 'batch_size': 256,
    'physical_batch_size': 64, 'num_train_examples': 2400, 'seed': 0,
    'metrics': {'mcc': 0.41, 'accuracy': 0.62},
    'validation_metrics': {'mcc': 0.4, 'accuracy': 0.61},
    'history': [{'epoch': 1, 'validation': {'mcc': 0.4, 'accuracy': 0.61},
                 'epsilon_spent': 7.98, 'steps': 9}],
    'wall_seconds': 12.5,
}
