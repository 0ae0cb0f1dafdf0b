"""Step time and peak memory of the DP-SGD engines against non-private training.

The library of `python -m dp_medtf.bench`. Each variant runs in its own
process, so that its peak memory (peak RSS) is its own. After every process
has warmed up (traced and run its step), steps are timed round-robin, one
process stepping at a time, so that a change of machine load hits all
variants alike; each variant reports the median of its step times, and its
ratio to non-private training is the median over rounds of the per-round
ratios. One step is one logical batch: ceil(logical / physical) chunks
accumulated, then one update.

The variants: non_private, each engine of dp_medtf.privacy.step.ENGINES
(built by the trainer's factory, replicated.make_step), keras_fit
(dp_medtf.keras's fit, timed step by step) and tf_privacy (TF Privacy's
DPKerasAdamOptimizer, the reference). TF Privacy's optimizer grows with the
square of the batch (its jacobian runs a backward pass per example over the
whole batch), so at batches of 8 and more it is measured at B/8 and B/4
instead, timed with the others; a fit a + c B^2 through those estimates its
full-batch time and memory, and it then runs at the full batch (alone) only
if that memory, with a margin, fits the budget (by default half the
machine).

A variant's process is `child_command` (the bench app) with
`--child=<variant>` and the Settings as flags (Settings.to_flags); it runs
`serve`, which answers 'ready' once warm, one step time per 'step' line,
and its peak memory as JSON at any other line.

Example:

  >>> settings = Settings(model='resnet9', width=2, input_shape=(16, 16, 3),
  ...                     batch_size=4, steps=2, warmup=1)
  >>> settings.to_flags()[:3]
  ['--model=resnet9', '--input_shape=16,16,3', '--num_classes=2']
  >>> report = benchmark(settings, ['non_private', 'ghost_bk'],
  ...                    child_command=[sys.executable, '-m',
  ...                                   'dp_medtf.bench'])  # doctest: +SKIP
  >>> [r['name'] for r in report['results']]  # doctest: +SKIP
  ['non_private', 'ghost_bk']
"""

from __future__ import annotations

import dataclasses
import json
import math
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Sequence, TextIO

from dp_medtf import cli
from dp_medtf.privacy import step as dp_step

NON_PRIVATE = 'non_private'
KERAS_FIT = 'keras_fit'
TF_PRIVACY = 'tf_privacy'
VARIANTS = (NON_PRIVATE,) + dp_step.ENGINES + (KERAS_FIT, TF_PRIVACY)
# The two-probe fit underestimated TF Privacy's peak on ResNet-9 at batch 32
# (64 x 64 x 3) by 18% (19.8 GB estimated from batches 4 and 8, 23.4 GB
# measured); the decision to run at the full batch carries this margin.
ESTIMATE_MARGIN = 1.25
# The setting every variant steps at (its figures do not depend on them).
_CLIP_NORM = 1.0
_NOISE_MULTIPLIER = 1.0
_LEARNING_RATE = 1e-3
_OPTIMIZER = 'adam'


@dataclasses.dataclass(frozen=True)
class Settings:
  """What one variant's process builds and steps.

  Attributes:
    model: a model of dp_medtf.models.
    width: the model's width; None: the model's own.
    input_shape: one input, without the batch axis.
    num_classes: output classes.
    batch_size: the physical batch (chunk).
    logical_batch_size: examples per update, accumulated over chunks of
      batch_size; None: batch_size.
    views: augmented views per example.
    steps: timed steps.
    warmup: untimed steps first.
  """
  model: str = 'resnet9'
  width: int | None = None
  input_shape: tuple[int, ...] = (64, 64, 3)
  num_classes: int = 2
  batch_size: int = 32
  logical_batch_size: int | None = None
  views: int = 1
  steps: int = 5
  warmup: int = 2

  @property
  def logical(self) -> int:
    """Examples per update."""
    return self.logical_batch_size or self.batch_size

  @property
  def chunks(self) -> int:
    """Chunks per update: ceil(logical / physical)."""
    return math.ceil(self.logical / self.batch_size)

  def to_flags(self) -> list[str]:
    """The settings as the bench app's flags, for a variant's process.

    Returns:
      ['--model=...', '--input_shape=64,64,3', ...]; --width only if set,
      --logical_batch_size always.
    """
    values = {'model': self.model,
              'input_shape': ','.join(str(d) for d in self.input_shape),
              'num_classes': self.num_classes, 'batch_size': self.batch_size,
              'logical_batch_size': self.logical, 'views': self.views,
              'steps': self.steps, 'warmup': self.warmup}
    if self.width:
      values['width'] = self.width
    return [f'--{k}={v}' for k, v in values.items()]


def parse_shape(values: Sequence[str]) -> tuple[int, ...]:
  """'64,64,3' (as absl's list flag) -> (64, 64, 3).

  Args:
    values: the dimensions as text.

  Returns:
    The shape.

  Raises:
    ValueError: for a non-positive or non-integer dimension.
  """
  try:
    shape = tuple(int(v) for v in values)
  except ValueError as e:
    raise ValueError(f'--input_shape must be integers, got {values}.') from e
  if not shape or min(shape) < 1:
    raise ValueError(
        f'--input_shape must be positive integers, got {values}.')
  return shape


def validate(variants: Sequence[str], batch_size: int, logical: int,
             steps: int, warmup: int) -> None:
  """Checks a bench's setting.

  Args:
    variants: the variants to measure (among VARIANTS).
    batch_size: the physical batch.
    logical: the logical batch.
    steps: timed steps.
    warmup: untimed steps.

  Raises:
    ValueError: naming the flag, for an impossible setting.
  """
  unknown = [v for v in variants if v not in VARIANTS]
  if unknown or not variants:
    raise ValueError(f'--variants must be among {VARIANTS}, got {variants}.')
  if batch_size < 1:
    raise ValueError(f'--batch_size must be positive, got {batch_size}.')
  if logical < batch_size:
    raise ValueError(f'--logical_batch_size ({logical}) must be at least '
                     f'--batch_size ({batch_size}).')
  if steps < 1 or warmup < 0:
    raise ValueError(f'--steps must be positive and --warmup non-negative, '
                     f'got {steps} and {warmup}.')


def quadratic_estimate(probes: Sequence[tuple[int, float]],
                       batch: int) -> float:
  """Fits a + c B^2 through two (B, value) probes; the value at `batch`.

  Args:
    probes: (batch, value) pairs; the two smallest batches are used.
    batch: where to evaluate the fit.

  Returns:
    The fitted value at `batch`.
  """
  (b1, v1), (b2, v2) = sorted(probes)[:2]
  c = (v2 - v1) / (b2 * b2 - b1 * b1)
  return v1 + c * (batch * batch - b1 * b1)


def ratios(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """Adds ratio_to_non_private (time) and memory_ratio_to_non_private.

  For variants timed round-robin with non_private, the time ratio is the
  median over rounds of the per-round ratios, so that a change of machine
  load between rounds cancels; otherwise the ratio of the medians.

  Args:
    results: one dict per variant (name, s_per_step, peak_mb and, when
      timed, step_times and interleaved).

  Returns:
    `results`, each with both ratios (None where not measured).
  """
  base = next((r for r in results if r['name'] == NON_PRIVATE and
               r.get('s_per_step')), None)
  for r in results:
    time_ratio = memory_ratio = None
    if base and r.get('s_per_step'):
      times, base_times = r.get('step_times', ()), base.get('step_times', ())
      if (r.get('interleaved', True) and times and
          len(times) == len(base_times)):
        time_ratio = statistics.median(
            t / b for t, b in zip(times, base_times))
      else:
        time_ratio = r['s_per_step'] / base['s_per_step']
      memory_ratio = r['peak_mb'] / base['peak_mb']
    r['ratio_to_non_private'] = (None if time_ratio is None else
                                 round(time_ratio, 3))
    r['memory_ratio_to_non_private'] = (None if memory_ratio is None else
                                        round(memory_ratio, 3))
  return results


def _meminfo_mb(field: str) -> float:
  with open('/proc/meminfo') as f:
    for line in f:
      if line.startswith(field + ':'):
        return int(line.split()[1]) / 1024
  raise RuntimeError(f'No {field} in /proc/meminfo.')


def memory_budget_mb(override: int | None = None) -> float:
  """The memory tf_privacy may use at the full batch.

  Args:
    override: the budget in MB; None or 0 for the default.

  Returns:
    `override` if set, else min(half of all memory, 80% of available).
  """
  if override:
    return float(override)
  return min(0.5 * _meminfo_mb('MemTotal'), 0.8 * _meminfo_mb('MemAvailable'))


def _peak_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def all_failed(report: dict[str, Any]) -> str | None:
  """Why nothing was measured, if so.

  Args:
    report: the report of `benchmark`.

  Returns:
    '<variant>: <last line of its error>' for the first failure when no
    variant was measured, else None.
  """
  results = report['results']
  if any(r.get('s_per_step') for r in results):
    return None
  for r in results:
    reason = str(r.get('skipped', ''))
    if reason.startswith('failed: '):
      return f'{r["name"]}: {cli.last_line(reason[len("failed: "):])}'
  return None


def default_engine() -> str:
  """The engine the trainer runs by default (the demo recipe's)."""
  from dp_medtf import recipes  # pylint: disable=import-outside-toplevel
  return recipes.load('demo').dp.engine


# --------------------------------------------------------------- one variant


def make_step(variant: str, model, loss_fn, expected_batch_size: int):
  """The training step of a variant other than keras_fit.

  The engines and non_private come from the trainer's factory
  (replicated.make_step, under the current strategy); tf_privacy is TF
  Privacy's optimizer, which the trainer does not run. All step at C = 1,
  z = 1 with Adam (learning rate 1e-3) and seeded noise.

  Args:
    variant: non_private, an engine of ENGINES, or tf_privacy.
    model: the built model.
    loss_fn: the per-view loss.
    expected_batch_size: B, the divisor of the noised sum.

  Returns:
    The step, with `accumulate(x, y, mask)` and `apply()`.
  """
  # pylint: disable=import-outside-toplevel
  import tensorflow as tf
  from dp_medtf.privacy import optimizers
  from dp_medtf.privacy import replicated
  # pylint: enable=import-outside-toplevel
  variables = model.trainable_variables
  if variant == TF_PRIVACY:
    from dp_medtf.privacy import tf_privacy  # pylint: disable=import-outside-toplevel
    return tf_privacy.TfPrivacyStep(
        model, loss_fn, tf_privacy.make_optimizer(
            _OPTIMIZER, clip_norm=_CLIP_NORM,
            noise_multiplier=_NOISE_MULTIPLIER, learning_rate=_LEARNING_RATE,
            variables=variables), expected_batch_size=expected_batch_size)
  optimizer = optimizers.make_optimizer(_OPTIMIZER, _LEARNING_RATE, variables)
  return replicated.make_step(
      tf.distribute.get_strategy(), model, loss_fn, optimizer,
      private=variant != NON_PRIVATE, clip_norm=_CLIP_NORM,
      noise_multiplier=_NOISE_MULTIPLIER,
      expected_batch_size=expected_batch_size, seed=0, engine=variant)


def _say(out: TextIO, line: str) -> None:
  print(line, file=out, flush=True)


def serve(variant: str, settings: Settings, commands: TextIO = sys.stdin,
          out: TextIO = sys.stdout) -> None:
  """A variant's process: builds it, warms up, then steps on each 'step'.

  Writes 'ready' to `out` once warm, then one step time in seconds for each
  'step' line of `commands`; at any other line (or its end), the process's
  peak memory as JSON, {"peak_mb": ...}.

  Args:
    variant: one of VARIANTS.
    settings: the model, batch and steps.
    commands: where the parent's commands come from.
    out: where the answers go.
  """
  # pylint: disable=import-outside-toplevel
  import numpy as np
  import tensorflow as tf
  from dp_medtf import losses
  from dp_medtf import models
  # pylint: enable=import-outside-toplevel

  shape = tuple(settings.input_shape)
  batch, logical = settings.batch_size, settings.logical
  config = {'name': settings.model}
  if settings.width:
    config['width'] = settings.width
  tf.keras.utils.set_random_seed(0)
  model = models.build(config, shape, settings.num_classes)
  segmentation = len(model.output_shape) > 2
  loss_fn = losses.for_task('segmentation' if segmentation else
                            'classification')
  if variant == KERAS_FIT:
    _serve_keras_fit(model, loss_fn, settings, segmentation, commands, out)
    return
  step = make_step(variant, model, loss_fn, logical)
  rng = np.random.default_rng(0)
  x = tf.constant(rng.normal(size=(batch, settings.views) + shape),
                  tf.float32)
  label_shape = (batch,) + (tuple(model.output_shape[1:-1]) if segmentation
                            else ())
  y = tf.constant(rng.integers(0, settings.num_classes, size=label_shape),
                  tf.int32)
  masks = [tf.constant((np.arange(batch) + c * batch < logical)
                       .astype(np.float32)) for c in range(settings.chunks)]

  def one_step() -> float:
    start = time.perf_counter()
    for mask in masks:
      loss = step.accumulate(x, y, mask)
    step.apply()
    float(loss)
    return time.perf_counter() - start

  for _ in range(settings.warmup):
    one_step()
  _say(out, 'ready')
  for line in commands:
    if line.strip() != 'step':
      break
    _say(out, f'{one_step():.6f}')
  _say(out, json.dumps({'peak_mb': round(_peak_mb(), 1)}))


def _serve_keras_fit(model, loss_fn, settings: Settings, segmentation: bool,
                     commands: TextIO, out: TextIO) -> None:
  """The keras_fit variant: dp_medtf.keras's fit, timed step by step.

  With q = 1 (train_size = the logical batch) every step takes every
  example, in the same chunks as the engine variants; one epoch is one step,
  so each step also pays the per-epoch work (epoch plan, tf.data pipeline,
  epsilon). Its time is that of fit's whole loop: loading, normalising and
  viewing the examples, the default engine's chunks, the noised update and
  the callbacks. fit runs warmup + steps + 1 epochs, and stops early at a
  command other than 'step'.
  """
  # pylint: disable=import-outside-toplevel
  import numpy as np
  import tensorflow as tf
  from dp_medtf import keras as keras_dp
  # pylint: enable=import-outside-toplevel

  logical = settings.logical
  warmup = settings.warmup
  total = warmup + settings.steps + 1
  config = keras_dp.DPKerasConfig(
      noise_multiplier=_NOISE_MULTIPLIER, clipping_norm=_CLIP_NORM,
      batch_size=logical, train_size=logical, train_steps=total,
      physical_batch_size=settings.batch_size,
      augmentation_multiplicity=settings.views,
      insecure_seeded_randomness=True)
  private = keras_dp.make_private(model, config)
  private.compile(optimizer=_OPTIMIZER, loss=loss_fn)
  rng = np.random.default_rng(0)
  shape = tuple(settings.input_shape)
  x = rng.normal(size=(logical,) + shape).astype(np.float32)
  label_shape = (logical,) + (tuple(model.output_shape[1:-1])
                              if segmentation else ())
  y = rng.integers(0, settings.num_classes,
                   size=label_shape).astype(np.int32)

  class Driver(tf.keras.callbacks.Callback):
    """Answers the parent's 'step' commands between fit's steps."""

    def __init__(self):
      super().__init__()
      self.count, self.resumed = 0, 0.0

    def _wait(self) -> None:
      if commands.readline().strip() == 'step':
        self.resumed = time.perf_counter()
      else:
        self.model.stop_training = True

    def on_train_begin(self, logs=None):
      self.resumed = time.perf_counter()
      if warmup == 0:
        _say(out, 'ready')
        self._wait()

    def on_train_batch_end(self, batch, logs=None):
      elapsed = time.perf_counter() - self.resumed
      self.count += 1
      if self.count < warmup:
        self.resumed = time.perf_counter()
        return
      _say(out, 'ready' if self.count == warmup else f'{elapsed:.6f}')
      self._wait()

  private.fit(x, y, epochs=total, verbose=0, callbacks=[Driver()])
  _say(out, json.dumps({'peak_mb': round(_peak_mb(), 1)}))


# ---------------------------------------------------------------- the parent


class _Runner:
  """One variant's process, driven line by line."""

  def __init__(self, label: str, variant: str, settings: Settings,
               child_command: Sequence[str]):
    self.label = label
    self._stderr = tempfile.TemporaryFile(mode='w+')
    self.proc = subprocess.Popen(
        [*child_command, f'--child={variant}', *settings.to_flags()],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
        text=True)
    self.times: list[float] = []

  def _read(self) -> str:
    line = self.proc.stdout.readline()
    if not line:
      self.proc.wait()
      self._stderr.seek(0)
      tail = self._stderr.read()[-1500:]
      raise RuntimeError(f'{self.label} exited with code '
                         f'{self.proc.returncode}: {tail}')
    return line.strip()

  def _send(self, command: str) -> None:
    try:
      self.proc.stdin.write(command + '\n')
      self.proc.stdin.flush()
    except BrokenPipeError:
      pass  # _read reports the exit.

  def wait_ready(self) -> None:
    while self._read() != 'ready':
      pass

  def step(self) -> None:
    self._send('step')
    self.times.append(float(self._read()))

  def finish(self) -> dict[str, Any]:
    self._send('done')
    peak = json.loads(self._read())['peak_mb']
    self.proc.wait()
    return {'s_per_step': round(statistics.median(self.times), 4),
            'peak_mb': peak, 'step_times': [round(t, 4) for t in self.times]}

  def close(self) -> None:
    if self.proc.poll() is None:
      self.proc.kill()
      self.proc.wait()
    self._stderr.close()


def _failed(error: Exception) -> dict[str, Any]:
  return {'s_per_step': None, 'peak_mb': None, 'skipped': f'failed: {error}'}


def _round_robin(runners: list[_Runner], steps: int) -> dict[str, dict]:
  """Steps the ready runners in turn, `steps` rounds; results by label."""
  alive = list(runners)
  results = {}
  for _ in range(steps):
    for r in list(alive):
      try:
        r.step()
      except RuntimeError as e:
        results[r.label] = _failed(e)
        alive.remove(r)
  for r in alive:
    try:
      results[r.label] = r.finish()
    except RuntimeError as e:
      results[r.label] = _failed(e)
  return results


Spec = tuple[str, str, Settings]  # (label, variant, its settings)


def _measure(specs: Sequence[Spec], steps: int, child_command: Sequence[str],
             interleave: bool) -> dict[str, dict[str, Any]]:
  """Runs each spec in its own process; results by label.

  Interleaved: all warm up (one after another), then are timed round-robin.
  Otherwise each runs to the end before the next starts.
  """
  results = {}
  groups = [list(specs)] if interleave else [[spec] for spec in specs]
  for group in groups:
    runners = []
    try:
      for label, variant, settings in group:
        runner = _Runner(label, variant, settings, child_command)
        runners.append(runner)
        try:
          runner.wait_ready()
        except RuntimeError as e:
          results[label] = _failed(e)
          runners.remove(runner)
          runner.close()
      results.update(_round_robin(runners, steps))
    finally:
      for r in runners:
        r.close()
  return results


def probe_batches(batch: int, chosen: Sequence[int] | None = None
                  ) -> list[int]:
  """Where tf_privacy is measured before its full batch.

  Args:
    batch: the full batch B.
    chosen: the probe batches asked for; None: B/8 and B/4.

  Returns:
    The distinct probe batches in [1, B), sorted; [] if fewer than two.
  """
  chosen = (list(chosen) if chosen is not None
            else [batch // 8, batch // 4])
  chosen = sorted({b for b in chosen if 1 <= b < batch})
  return chosen if len(chosen) >= 2 else []


def _tf_privacy_from_probes(probes: list[dict[str, Any]], settings: Settings,
                            child_command: Sequence[str],
                            memory_budget: float) -> dict[str, Any]:
  """tf_privacy at the full batch if its estimated memory fits, else why not."""
  batch = settings.batch_size
  result = {'probes': probes}
  if any(p['peak_mb'] is None for p in probes):
    return {**result, 'skipped': 'a probe failed'}
  points = {key: [(p['batch_size'], p[key]) for p in probes]
            for key in ('peak_mb', 's_per_step')}
  estimate = {'batch_size': batch,
              'peak_mb': round(quadratic_estimate(points['peak_mb'], batch), 1),
              's_per_step': round(quadratic_estimate(points['s_per_step'],
                                                     batch), 3),
              'fit': 'a + c B^2 through the two probes'}
  result['estimate'] = estimate
  needed = ESTIMATE_MARGIN * estimate['peak_mb']
  if needed > memory_budget:
    return {**result, 'skipped': (
        f'estimated peak {estimate["peak_mb"]:.0f} MB at batch {batch} '
        f'(x{ESTIMATE_MARGIN} margin: {needed:.0f} MB) exceeds the memory '
        f'budget of {memory_budget:.0f} MB; measured at batches '
        f'{[p["batch_size"] for p in probes]} instead (probes, timed with '
        'the others)')}
  full = _measure([(TF_PRIVACY, TF_PRIVACY, settings)], settings.steps,
                  child_command, False)
  return {**result, **full[TF_PRIVACY], 'interleaved': False}


def benchmark(settings: Settings, variants: Sequence[str], *,
              child_command: Sequence[str], interleave: bool = True,
              memory_budget: int | None = None,
              tf_privacy_probes: Sequence[int] | None = None
              ) -> dict[str, Any]:
  """Measures the variants, each in its own process.

  Args:
    settings: the model, batches and steps.
    variants: which of VARIANTS to measure (repeats are measured once).
    child_command: the command that runs one variant: it is given
      `--child=<variant>` and settings.to_flags() and must run `serve`.
    interleave: keep all variants alive and time them round-robin; False:
      one after another (less memory at once).
    memory_budget: MB that tf_privacy may use at the full batch; None: see
      memory_budget_mb.
    tf_privacy_probes: the batches tf_privacy is first measured at; None:
      B/8 and B/4.

  Returns:
    The JSON-ready report: model, width, input_shape, batch_size,
    logical_batch_size, chunks_per_step, views, default_engine, steps,
    warmup and results (one dict per variant, in order; a variant that was
    not measured has null figures and a 'skipped' reason).

  Raises:
    ValueError: naming the flag, for an impossible setting (validate).
  """
  batch, logical = settings.batch_size, settings.logical
  variants = list(dict.fromkeys(variants))
  validate(variants, batch, logical, settings.steps, settings.warmup)
  chunks = settings.chunks
  with_tf_privacy = TF_PRIVACY in variants

  specs = [(v, v, settings) for v in variants if v != TF_PRIVACY]
  probes = []
  if with_tf_privacy and chunks == 1:
    probes = probe_batches(batch, tf_privacy_probes)
    if probes:
      specs += [(f'{TF_PRIVACY}@{b}', TF_PRIVACY, dataclasses.replace(
          settings, batch_size=b, logical_batch_size=b)) for b in probes]
    else:
      specs.append((TF_PRIVACY, TF_PRIVACY, settings))
  results = _measure(specs, settings.steps, child_command, interleave)

  if with_tf_privacy and chunks > 1:
    results[TF_PRIVACY] = {
        'skipped': 'TF Privacy noises every call, so a logical batch must be '
                   'one chunk; it cannot accumulate chunks'}
  elif probes:
    measured = [{'batch_size': b, **results.pop(f'{TF_PRIVACY}@{b}')}
                for b in probes]
    results[TF_PRIVACY] = _tf_privacy_from_probes(
        measured, settings, child_command, memory_budget_mb(memory_budget))

  ordered = ratios([{'name': v, 's_per_step': None, 'peak_mb': None,
                     **results[v]} for v in variants])
  base = next((r for r in ordered if r['name'] == NON_PRIVATE), None)
  for r in ordered:
    estimate = r.get('estimate')
    if estimate and base and base.get('s_per_step'):
      estimate['ratio_to_non_private'] = round(
          estimate['s_per_step'] / base['s_per_step'], 2)
  return {'model': settings.model, 'width': settings.width,
          'input_shape': list(settings.input_shape), 'batch_size': batch,
          'logical_batch_size': logical, 'chunks_per_step': chunks,
          'views': settings.views, 'default_engine': default_engine(),
          'steps': settings.steps, 'warmup': settings.warmup,
          'results': ordered}
