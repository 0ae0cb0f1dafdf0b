"""Replica-aware DP step: every replica equals one device; noise z C / B once.

Logical CPU devices must be configured before TensorFlow initialises, so each
check runs in a fresh interpreter, which reports every replica's copy of
every weight (strategy.experimental_local_results), not only replica 0's.
"""

import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

_SCRIPT = textwrap.dedent('''
    import json, os, sys
    os.environ['TF_CPP_MIN_LOG_LEVEL'] = '2'
    import numpy as np
    import tensorflow as tf
    replicas, jit = int(sys.argv[1]), sys.argv[2] == 'xla'
    names = sys.argv[3].split(',')
    cpu = tf.config.list_physical_devices('CPU')[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * max(replicas, 1))
    from dp_medtf import fit, losses, models, recipes
    from dp_medtf.privacy import optimizers, replicated, step as dp_step

    def model():
      tf.keras.utils.set_random_seed(0)
      m = tf.keras.Sequential([tf.keras.layers.Dense(40, activation='tanh'),
                               tf.keras.layers.Dense(250)])
      m.build([None, 5])
      return m

    def optimizer(name):
      if name == 'sgd':
        return tf.keras.optimizers.SGD(1.0)
      return optimizers.optimizer_class(name)(1e-2, epsilon=1e-3)

    def make(name, noise, strategy=None, jit_compile=jit):
      kwargs = dict(clip_norm=0.5, noise_multiplier=noise,
                    expected_batch_size=6, seed=1, jit_compile=jit_compile)
      if strategy is None:
        m = model()
        return m, dp_step.DPStep(m, losses.classification_loss,
                                 optimizer(name), **kwargs)
      # Constructed in the scope, not built: the step must build it there.
      with strategy.scope():
        m, opt = model(), optimizer(name)
      return m, replicated.ReplicatedDPStep(
          strategy, m, losses.classification_loss, opt, **kwargs)

    def copies(m, strategy):
      """[replica][variable] arrays."""
      if strategy is None:
        return [[v.numpy() for v in m.trainable_variables]]
      per_var = [[t.numpy() for t in strategy.experimental_local_results(v)]
                 for v in m.trainable_variables]
      return [list(r) for r in zip(*per_var)]

    def max_diff(a, b):
      return max(float(np.abs(x - y).max()) for x, y in zip(a, b))

    devices = [f'/cpu:{i}' for i in range(replicas)]
    strategy = tf.distribute.MirroredStrategy(devices) if replicas else None
    x = tf.random.stateless_normal([6, 1, 5], seed=(0, 1))
    y = tf.constant([0, 1, 2, 0, 1, 2])
    mask = tf.constant([1.0, 1, 1, 1, 1, 0])
    out = {}
    for name in names:
      for noise in (0.0, 2.0):
        ref_model, ref = make(name, noise, jit_compile=False)
        dist_model, dist = make(name, noise, strategy)
        # Three logical batches, each of two chunks.
        for _ in range(3):
          for _ in range(2):
            ref.accumulate(x, y, mask)
            dist.accumulate(x, y, mask)
          ref.apply(); dist.apply()
        ref_w = copies(ref_model, None)[0]
        dist_w = copies(dist_model, strategy)
        out[f'{name}/{noise}'] = dict(
            replicas=len(dist_w),
            across=max(max_diff(w, dist_w[0]) for w in dist_w),
            vs_single=max(max_diff(w, ref_w) for w in dist_w),
            scale=max(float(np.abs(w).max()) for w in ref_w))
    # Noise only (all-padding chunks): the update is the noise / B.
    noisy_model, noisy = make('sgd', 2.0, strategy)
    before = noisy_model.get_weights()
    noisy.accumulate(x, y, tf.zeros([6])); noisy.accumulate(x, y, tf.zeros([6]))
    noisy.apply()
    delta = np.concatenate([(b - a).ravel() for a, b in zip(
        noisy_model.get_weights(), before)])
    out['std'] = float(np.std(delta)); out['n'] = int(delta.size)
    if strategy is not None:
      # The job's own step: its optimizer's variables are all mirrored.
      config = recipes.load('demo')
      config.model = dict(name='resnet9', width=2)
      with strategy.scope():
        job_model = models.build(config.model, (8, 8, 3), 2)
      plan = fit.plan_privacy(config, 2400, replicas)
      step = fit.make_step(config, plan, job_model, strategy)
      out['job_step'] = type(step).__name__
      out['job_optimizer'] = type(step.optimizer).__name__
      out['job_outside_scope'] = [
          v.name for v in optimizers.optimizer_variables(step.optimizer)
          if not strategy.extended.variable_created_in_scope(v)]
    print(json.dumps(out))
''')

# Weights and gradients are O(1); the replicated sum adds the replicas'
# partial sums in another order than one device does: a relative rounding
# difference of a few eps in each gradient. SGD (lr 1) passes it on as is;
# Adam and NAdam (lr 1e-2, epsilon 1e-3) move a weight by at most lr /
# epsilon = 10 times a gradient difference. Over 3 steps and O(1) values,
# 1e3 eps bounds both. Lazily built slots, shared by the replicas, gave
# differences of 6e-3 (Adam) and 8e-3 (NAdam) between the replicas.
_TOL = 1e3 * float(np.finfo(np.float32).eps)


def _run(replicas, mode='graph', names=('sgd', 'adam', 'nadam')):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  proc = subprocess.run(
      [sys.executable, '-c', _SCRIPT, str(replicas), mode, ','.join(names)],
      capture_output=True, text=True, timeout=600, env=env, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope='module')
def two_replicas():
  return _run(2)


@pytest.mark.parametrize('name', ['sgd', 'adam', 'nadam'])
@pytest.mark.parametrize('noise', [0.0, 2.0])
def test_every_replica_equals_the_single_device_run(two_replicas, name,
                                                    noise):
  got = two_replicas[f'{name}/{noise}']
  assert got['replicas'] == 2
  # The replicas apply one update, computed once, with the same element-wise
  # operations: bit-equal. With noise, that includes the one noise draw.
  assert got['across'] == 0.0
  # Same seed, same draws: the noised run equals one device's too.
  assert got['vs_single'] <= _TOL * max(got['scale'], 1.0)


def test_noise_is_drawn_once(two_replicas):
  expected = 2.0 * 0.5 / 6  # z C / B.
  got = two_replicas
  # Relative standard error of a sample std is 1/sqrt(2n); 5 of them. Noise
  # added per replica would give sqrt(2) times (2 replicas).
  assert got['std'] == pytest.approx(expected, rel=5 / math.sqrt(2 * got['n']))


def test_job_step_builds_its_optimizer_under_the_strategy(two_replicas):
  assert two_replicas['job_step'] == 'ReplicatedDPStep'
  assert two_replicas['job_optimizer'] == 'Nadam'
  assert two_replicas['job_outside_scope'] == []


def test_xla_step_equals_graph_step():
  # No strategy; DPStep compiled with XLA vs not, at noise 0 (the XLA
  # kernels of the generator draw other numbers from the same state).
  got = _run(0, 'xla', names=('nadam',))['nadam/0.0']
  assert got['vs_single'] <= _TOL * max(got['scale'], 1.0)
