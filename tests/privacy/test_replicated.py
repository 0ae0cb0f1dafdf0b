"""Replica-aware DP step: equals one device at noise 0; noise std z C / B once.

Logical CPU devices must be configured before TensorFlow initialises, so each
check runs in a fresh interpreter.
"""

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest

_SCRIPT = textwrap.dedent('''
    import json, os, sys
    os.environ['TF_CPP_MIN_LOG_LEVEL'] = '2'
    import numpy as np
    import tensorflow as tf
    replicas, jit = int(sys.argv[1]), sys.argv[2] == 'xla'
    cpu = tf.config.list_physical_devices('CPU')[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * max(replicas, 1))
    from dp_medtf import losses
    from dp_medtf.privacy import replicated, step as dp_step

    def model():
      tf.keras.utils.set_random_seed(0)
      m = tf.keras.Sequential([tf.keras.layers.Dense(40, activation='tanh'),
                               tf.keras.layers.Dense(250)])
      m.build([None, 5])
      return m

    def make(noise, strategy=None, jit_compile=jit):
      kwargs = dict(clip_norm=0.5, noise_multiplier=noise,
                    expected_batch_size=6, seed=1, jit_compile=jit_compile)
      if strategy is None:
        m = model()
        return m, dp_step.DPStep(m, losses.classification_loss,
                                 tf.keras.optimizers.SGD(1.0), **kwargs)
      with strategy.scope():
        m, opt = model(), tf.keras.optimizers.SGD(1.0)
      return m, replicated.ReplicatedDPStep(
          strategy, m, losses.classification_loss, opt, **kwargs)

    devices = [f'/cpu:{i}' for i in range(replicas)]
    strategy = tf.distribute.MirroredStrategy(devices) if replicas else None
    x = tf.random.stateless_normal([6, 1, 5], seed=(0, 1))
    y = tf.constant([0, 1, 2, 0, 1, 2])
    mask = tf.constant([1.0, 1, 1, 1, 1, 0])
    out = {}
    # Noise-free: two logical batches, each of two chunks.
    ref_model, ref = make(0.0, jit_compile=False)
    dist_model, dist = make(0.0, strategy)
    for _ in range(2):
      for chunk in (slice(0, 6), slice(0, 6)):
        ref.accumulate(x[chunk], y[chunk], mask[chunk])
        dist.accumulate(x[chunk], y[chunk], mask[chunk])
      ref.apply(); dist.apply()
    out['max_abs_diff'] = max(float(np.abs(a - b).max()) for a, b in zip(
        ref_model.get_weights(), dist_model.get_weights()))
    # Noise only (all-padding chunks): the update is the noise / B.
    noisy_model, noisy = make(2.0, strategy)
    before = noisy_model.get_weights()
    noisy.accumulate(x, y, tf.zeros([6])); noisy.accumulate(x, y, tf.zeros([6]))
    noisy.apply()
    delta = np.concatenate([(b - a).ravel() for a, b in zip(
        noisy_model.get_weights(), before)])
    out['std'] = float(np.std(delta)); out['n'] = int(delta.size)
    print(json.dumps(out))
''')


def _run(replicas, mode='graph'):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  proc = subprocess.run([sys.executable, '-c', _SCRIPT, str(replicas), mode],
                        capture_output=True, text=True, timeout=300, env=env,
                        check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize('replicas', [1, 2])
def test_replicated_update_equals_single_device_and_noise_is_drawn_once(
    replicas):
  out = _run(replicas)
  assert out['max_abs_diff'] < 1e-6
  expected = 2.0 * 0.5 / 6  # z C / B.
  # Relative standard error of a sample std is 1/sqrt(2n); 5 of them. Noise
  # added per replica would give sqrt(2) times (2 replicas).
  assert out['std'] == pytest.approx(expected, rel=5 / math.sqrt(2 * out['n']))
  print(f"replicas={replicas} std ratio {out['std'] / expected:.4f}")


def test_xla_step_equals_graph_step():
  out = _run(0, 'xla')  # No strategy; DPStep compiled with XLA vs not.
  assert out['max_abs_diff'] < 1e-6
