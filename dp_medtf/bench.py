"""Step time and peak memory of the DP-SGD engines against non-private training.

Each variant runs in its own process, so that its peak memory (peak RSS) is
its own. After every process has warmed up (traced and run its step), steps
are timed round-robin, one process stepping at a time, so that a change of
machine load hits all variants alike; each variant reports the median of its
step times, and its ratio to non-private training is the median over rounds
of the per-round ratios. One step is one logical batch: ceil(logical /
physical) chunks accumulated, then one update.

TF Privacy's DPKerasAdamOptimizer grows with the square of the batch (its
jacobian runs a backward pass per example over the whole batch), so at
batches of 8 and more it is measured at B/8 and B/4 instead, timed with the
others; a fit a + c B^2 through those estimates its full-batch time and
memory, and it then runs at the full batch (alone) only if that memory, with
a margin, fits the budget (by default half the machine).

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
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Sequence

from absl import app
from absl import flags
from absl import logging

from dp_medtf import cli
from dp_medtf.privacy import step as dp_step

VARIANTS = ('non_private',) + dp_step.ENGINES + ('keras_fit', 'tf_privacy')
# The two-probe fit underestimated TF Privacy's peak on ResNet-9 at batch 32
# (64 x 64 x 3) by 18% (19.8 GB estimated from batches 4 and 8, 23.4 GB
# measured); the decision to run at the full batch carries this margin.
ESTIMATE_MARGIN = 1.25

FLAGS = flags.FLAGS
_MODEL = flags.DEFINE_string('model', 'resnet9', 'A model of dp_medtf.models.')
_WIDTH = flags.DEFINE_integer('width', None, "The model's width; default: "
                              "the model's own.")
_INPUT_SHAPE = flags.DEFINE_list('input_shape', ['64', '64', '3'],
                                 'One input, without the batch axis.')
_NUM_CLASSES = flags.DEFINE_integer('num_classes', 2, 'Output classes.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 32, 'Physical batch (chunk).')
_LOGICAL = flags.DEFINE_integer(
    'logical_batch_size', None, 'Examples per update, accumulated over '
    'chunks of --batch_size; default: --batch_size.')
_VIEWS = flags.DEFINE_integer('views', 1, 'Augmented views per example.')
_VARIANTS = flags.DEFINE_list('variants', list(VARIANTS),
                              f'Which of {VARIANTS} to measure.')
_STEPS = flags.DEFINE_integer('steps', 5, 'Timed steps per variant.')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed steps first.')
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


def parse_shape(values: Sequence[str]) -> tuple[int, ...]:
  """'64,64,3' (as absl's list flag) -> (64, 64, 3).

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
  """Raises ValueError naming the flag for an impossible setting."""
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
  """Fits a + c B^2 through two (B, value) probes; the value at `batch`."""
  (b1, v1), (b2, v2) = sorted(probes)[:2]
  c = (v2 - v1) / (b2 * b2 - b1 * b1)
  return v1 + c * (batch * batch - b1 * b1)


def ratios(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """Adds ratio_to_non_private (time) and memory_ratio_to_non_private.

  For variants timed round-robin with non_private, the time ratio is the
  median over rounds of the per-round ratios, so that a change of machine
  load between rounds cancels; otherwise the ratio of the medians.
  """
  base = next((r for r in results if r['name'] == 'non_private' and
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
  """`override` if set, else min(half of all memory, 80% of available)."""
  if override:
    return float(override)
  return min(0.5 * _meminfo_mb('MemTotal'), 0.8 * _meminfo_mb('MemAvailable'))


def _peak_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------- one variant


def _build_step(variant: str, model, loss_fn, logical: int):
  from dp_medtf.privacy import optimizers  # pylint: disable=import-outside-toplevel
  from dp_medtf.privacy import tf_privacy  # pylint: disable=import-outside-toplevel
  variables = model.trainable_variables
  if variant == 'tf_privacy':
    return tf_privacy.TfPrivacyStep(
        model, loss_fn, tf_privacy.make_optimizer(
            'adam', clip_norm=1.0, noise_multiplier=1.0, learning_rate=1e-3,
            variables=variables), expected_batch_size=logical)
  optimizer = optimizers.make_optimizer('adam', 1e-3, variables)
  if variant == 'non_private':
    return dp_step.NonPrivateStep(model, loss_fn, optimizer)
  return dp_step.DPStep(model, loss_fn, optimizer,
                        clip_norm=1.0, noise_multiplier=1.0,
                        expected_batch_size=logical, seed=0, engine=variant)


def _child(variant: str) -> None:
  """Builds one variant, warms up, then steps on each 'step' from stdin."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from dp_medtf import losses  # pylint: disable=import-outside-toplevel
  from dp_medtf import models  # pylint: disable=import-outside-toplevel

  shape = parse_shape(_INPUT_SHAPE.value)
  batch = _BATCH_SIZE.value
  logical = _LOGICAL.value or batch
  config = {'name': _MODEL.value}
  if _WIDTH.value:
    config['width'] = _WIDTH.value
  tf.keras.utils.set_random_seed(0)
  model = models.build(config, shape, _NUM_CLASSES.value)
  segmentation = len(model.output_shape) > 2
  loss_fn = losses.for_task('segmentation' if segmentation else
                            'classification')
  if variant == 'keras_fit':
    _keras_fit_child(model, loss_fn, shape, segmentation)
    return
  step = _build_step(variant, model, loss_fn, logical)
  rng = np.random.default_rng(0)
  x = tf.constant(rng.normal(size=(batch, _VIEWS.value) + shape), tf.float32)
  label_shape = (batch,) + (tuple(model.output_shape[1:-1]) if segmentation
                            else ())
  y = tf.constant(rng.integers(0, _NUM_CLASSES.value, size=label_shape),
                  tf.int32)
  chunks = math.ceil(logical / batch)
  masks = [tf.constant((np.arange(batch) + c * batch < logical)
                       .astype(np.float32)) for c in range(chunks)]

  def one_step() -> float:
    start = time.perf_counter()
    for mask in masks:
      loss = step.accumulate(x, y, mask)
    step.apply()
    float(loss)
    return time.perf_counter() - start

  for _ in range(_WARMUP.value):
    one_step()
  print('ready', flush=True)
  for line in sys.stdin:
    if line.strip() != 'step':
      break
    print(f'{one_step():.6f}', flush=True)
  print(json.dumps({'peak_mb': round(_peak_mb(), 1)}), flush=True)


def _keras_fit_child(model, loss_fn, shape, segmentation: bool) -> None:
  """The keras_fit variant: dp_medtf.keras's fit, timed step by step.

  With q = 1 (train_size = the logical batch) every step takes every
  example, in the same chunks as the engine variants; one epoch is one step,
  so each step also pays the per-epoch work (epoch plan, tf.data pipeline,
  epsilon). Its time is that of fit's whole loop: loading, normalising and
  viewing the examples, the default engine's chunks, the noised update and
  the callbacks.
  """
  import numpy as np  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from dp_medtf import keras as keras_dp  # pylint: disable=import-outside-toplevel

  batch = _BATCH_SIZE.value
  logical = _LOGICAL.value or batch
  warmup, steps = _WARMUP.value, _STEPS.value
  total = warmup + steps + 1
  config = keras_dp.DPKerasConfig(
      noise_multiplier=1.0, clipping_norm=1.0, batch_size=logical,
      train_size=logical, train_steps=total, physical_batch_size=batch,
      augmentation_multiplicity=_VIEWS.value,
      insecure_seeded_randomness=True)
  private = keras_dp.make_private(model, config)
  private.compile(optimizer='adam', loss=loss_fn)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(logical,) + shape).astype(np.float32)
  label_shape = (logical,) + (tuple(model.output_shape[1:-1])
                              if segmentation else ())
  y = rng.integers(0, _NUM_CLASSES.value, size=label_shape).astype(np.int32)

  class Driver(tf.keras.callbacks.Callback):
    """Answers the parent's 'step' commands between fit's steps."""

    def __init__(self):
      super().__init__()
      self.count, self.resumed = 0, 0.0

    def _wait(self) -> None:
      if sys.stdin.readline().strip() == 'step':
        self.resumed = time.perf_counter()
      else:
        self.model.stop_training = True

    def on_train_begin(self, logs=None):
      self.resumed = time.perf_counter()
      if warmup == 0:
        print('ready', flush=True)
        self._wait()

    def on_train_batch_end(self, batch, logs=None):
      elapsed = time.perf_counter() - self.resumed
      self.count += 1
      if self.count < warmup:
        self.resumed = time.perf_counter()
        return
      print('ready' if self.count == warmup else f'{elapsed:.6f}',
            flush=True)
      self._wait()

  private.fit(x, y, epochs=total, verbose=0, callbacks=[Driver()])
  print(json.dumps({'peak_mb': round(_peak_mb(), 1)}), flush=True)


# --------------------------------------------------------------- the parent


class _Runner:
  """One variant's process, driven line by line."""

  def __init__(self, label: str, variant: str, **overrides):
    self.label = label
    settings = {'model': _MODEL.value, 'input_shape': ','.join(
        _INPUT_SHAPE.value), 'num_classes': _NUM_CLASSES.value,
                'batch_size': _BATCH_SIZE.value,
                'logical_batch_size': _LOGICAL.value or _BATCH_SIZE.value,
                'views': _VIEWS.value, 'warmup': _WARMUP.value}
    if _WIDTH.value:
      settings['width'] = _WIDTH.value
    settings.update(overrides)
    self._stderr = tempfile.TemporaryFile(mode='w+')
    self.proc = subprocess.Popen(
        [sys.executable, '-m', 'dp_medtf.bench', f'--child={variant}',
         *(f'--{k}={v}' for k, v in settings.items())],
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


Spec = tuple[str, str, dict[str, Any]]  # (label, variant, flag overrides)


def _measure(specs: Sequence[Spec], steps: int,
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
      for label, variant, overrides in group:
        runner = _Runner(label, variant, **overrides)
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


def _probe_batches(batch: int) -> list[int]:
  """Where tf_privacy is measured before its full batch (B/8 and B/4)."""
  chosen = ([int(b) for b in _PROBES.value] if _PROBES.value is not None
            else [batch // 8, batch // 4])
  chosen = sorted({b for b in chosen if 1 <= b < batch})
  return chosen if len(chosen) >= 2 else []


def _tf_privacy_from_probes(probes: list[dict[str, Any]], batch: int,
                            steps: int) -> dict[str, Any]:
  """tf_privacy at the full batch if its estimated memory fits, else why not."""
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
  budget = memory_budget_mb(_MEMORY_BUDGET.value)
  needed = ESTIMATE_MARGIN * estimate['peak_mb']
  if needed > budget:
    return {**result, 'skipped': (
        f'estimated peak {estimate["peak_mb"]:.0f} MB at batch {batch} '
        f'(x{ESTIMATE_MARGIN} margin: {needed:.0f} MB) exceeds the memory '
        f'budget of {budget:.0f} MB; measured at batches '
        f'{[p["batch_size"] for p in probes]} instead (probes, timed with '
        'the others)')}
  full = _measure([('tf_privacy', 'tf_privacy', {})], steps, False)
  return {**result, **full['tf_privacy'], 'interleaved': False}


def run() -> dict[str, Any]:
  """Measures the requested variants; the JSON-ready report."""
  shape = parse_shape(_INPUT_SHAPE.value)
  batch = _BATCH_SIZE.value
  logical = _LOGICAL.value or batch
  variants = list(dict.fromkeys(_VARIANTS.value))
  validate(variants, batch, logical, _STEPS.value, _WARMUP.value)
  chunks = math.ceil(logical / batch)
  steps = _STEPS.value

  specs = [(v, v, {}) for v in variants if v != 'tf_privacy']
  probe_batches = []
  if 'tf_privacy' in variants and chunks == 1:
    probe_batches = _probe_batches(batch)
    if probe_batches:
      specs += [(f'tf_privacy@{b}', 'tf_privacy',
                 {'batch_size': b, 'logical_batch_size': b})
                for b in probe_batches]
    else:
      specs.append(('tf_privacy', 'tf_privacy', {}))
  results = _measure(specs, steps, _INTERLEAVE.value)

  if 'tf_privacy' in variants and chunks > 1:
    results['tf_privacy'] = {
        'skipped': 'TF Privacy noises every call, so a logical batch must be '
                   'one chunk; it cannot accumulate chunks'}
  elif probe_batches:
    probes = [{'batch_size': b, **results.pop(f'tf_privacy@{b}')}
              for b in probe_batches]
    results['tf_privacy'] = _tf_privacy_from_probes(probes, batch, steps)

  ordered = ratios([{'name': v, 's_per_step': None, 'peak_mb': None,
                     **results[v]} for v in variants])
  base = next((r for r in ordered if r['name'] == 'non_private'), None)
  for r in ordered:
    estimate = r.get('estimate')
    if estimate and base and base.get('s_per_step'):
      estimate['ratio_to_non_private'] = round(
          estimate['s_per_step'] / base['s_per_step'], 2)
  return {'model': _MODEL.value, 'width': _WIDTH.value,
          'input_shape': list(shape), 'batch_size': batch,
          'logical_batch_size': logical, 'chunks_per_step': chunks,
          'views': _VIEWS.value, 'default_engine': _default_engine(),
          'steps': steps, 'warmup': _WARMUP.value, 'results': ordered}


def _default_engine() -> str | None:
  from dp_medtf import recipes  # pylint: disable=import-outside-toplevel
  return recipes.load('demo').dp.engine


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
    parse_shape(_INPUT_SHAPE.value)
    batch = _BATCH_SIZE.value
    validate(list(dict.fromkeys(_VARIANTS.value)), batch,
             _LOGICAL.value or batch, _STEPS.value, _WARMUP.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from None


def all_failed(report: dict[str, Any]) -> str | None:
  """The first failure's reason when no variant was measured, else None."""
  results = report['results']
  if any(r.get('s_per_step') for r in results):
    return None
  for r in results:
    reason = str(r.get('skipped', ''))
    if reason.startswith('failed: '):
      return f'{r["name"]}: {cli.last_line(reason[len("failed: "):])}'
  return None


def main(argv: Sequence[str]) -> None:
  if _CHILD.value:
    _child(_CHILD.value)
    return
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  check_flags()
  report = run()
  print(json.dumps(report, indent=1))
  reason = all_failed(report)
  if reason:
    raise cli.Fault(f'every variant failed; {reason}')


if __name__ == '__main__':
  cli.run(main)
