"""make_private + fit inside a MirroredStrategy scope: one noise draw in
total, and every replica equals the single-device run (NAdam, noise 0).

Logical CPU devices must be configured before TensorFlow starts, so the runs
happen in a fresh interpreter that reports every replica's copy of every
weight.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

_SCRIPT = textwrap.dedent('''
    import contextlib, json, os, sys
    os.environ['TF_CPP_MIN_LOG_LEVEL'] = '2'
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices('CPU')[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from dp_medtf.keras import DPKerasConfig, make_private

    rng = np.random.default_rng(0)
    x = rng.random([40, 5], np.float32)
    y = rng.integers(0, 3, 40).astype(np.int32)

    def run(strategy, noise, optimizer):
      config = DPKerasConfig(epsilon=None, noise_multiplier=noise,
                             clipping_norm=0.5, batch_size=10, train_size=40,
                             epochs=2, insecure_seeded_randomness=True,
                             seed=5)
      scope = strategy.scope() if strategy else contextlib.nullcontext()
      with scope:
        tf.keras.utils.set_random_seed(0)
        net = tf.keras.Sequential([
            tf.keras.Input([5]), tf.keras.layers.Dense(16, activation='tanh'),
            tf.keras.layers.Dense(3)])
        private = make_private(net, config)
        private.compile(
            optimizer=(tf.keras.optimizers.Nadam(1e-2, epsilon=1e-3)
                       if optimizer == 'nadam' else
                       tf.keras.optimizers.SGD(1.0)),
            loss=tf.keras.losses.SparseCategoricalCrossentropy(
                from_logits=True))
        before = [np.array(v.numpy()) for v in net.trainable_variables]
        private.fit(x, y, epochs=2, verbose=0)
      if strategy is None:
        copies = [[v.numpy() for v in net.trainable_variables]]
      else:
        per_var = [[t.numpy() for t in
                    strategy.experimental_local_results(v)]
                   for v in net.trainable_variables]
        copies = [list(r) for r in zip(*per_var)]
      return before, copies, private

    def diff(a, b):
      return max(float(np.abs(p - q).max()) for p, q in zip(a, b))

    strategy = tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])
    out = {}
    for optimizer in ('sgd', 'nadam'):
      _, single, _ = run(None, 0.0, optimizer)
      _, multi, private = run(strategy, 0.0, optimizer)
      out[optimizer] = dict(
          replicas=len(multi),
          across=max(diff(c, multi[0]) for c in multi),
          vs_single=max(diff(c, single[0]) for c in multi),
          step=type(private.train_step_object()).__name__,
          moved=diff(single[0], run(None, 0.0, optimizer)[0]))
    # Noise: all-zero inputs and targets make every gradient of the last
    # layer's kernel zero except through the tanh layer; use the spread of
    # one noised step of SGD on a bias-free linear model instead.
    config = DPKerasConfig(epsilon=None, noise_multiplier=2.0,
                           clipping_norm=1.0, batch_size=10, train_size=40,
                           train_steps=1)
    with strategy.scope():
      net = tf.keras.Sequential([tf.keras.Input([4]),
                                 tf.keras.layers.Dense(1000, use_bias=False)])
      private = make_private(net, config)
      private.compile(optimizer=tf.keras.optimizers.SGD(1.0),
                      loss=tf.keras.losses.MeanSquaredError())
      before = np.array(net.get_weights()[0])
      private.fit(np.zeros([40, 4], np.float32),
                  np.zeros([40, 1000], np.float32), epochs=1, verbose=0)
    per_replica = [t.numpy() - before for t in
                   strategy.experimental_local_results(net.weights[0])]
    out['noise_std'] = float(np.std(per_replica[0]))
    out['noise_n'] = int(per_replica[0].size)
    out['noise_across'] = float(np.abs(per_replica[0] - per_replica[1]).max())
    print(json.dumps(out))
''')

# As in tests/privacy/test_replicated.py: the replicas add their partial
# sums in another order than one device; over 4 steps of O(1) values, SGD
# (lr 1) and NAdam (lr 1e-2 / epsilon 1e-3 = 10x) stay within 1e3 eps.
_TOL = 1e3 * float(np.finfo(np.float32).eps)


@pytest.fixture(scope='module')
def result():
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  proc = subprocess.run([sys.executable, '-c', _SCRIPT], capture_output=True,
                        text=True, timeout=900, env=env, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize('optimizer', ['sgd', 'nadam'])
def test_every_replica_equals_the_single_device_fit(result, optimizer):
  r = result[optimizer]
  assert r['replicas'] == 2 and r['step'] == 'ReplicatedDPStep'
  assert r['across'] == 0.0
  assert r['vs_single'] < _TOL
  assert r['moved'] > 100 * _TOL  # Training changed the weights.


def test_one_noise_draw_in_total(result):
  # One draw of std z C on the sum, divided by B: 2 * 1 / 10. R draws (one
  # per replica, summed) would give sqrt(2) times that. The sample std of
  # n = 4000 values has relative std 1/sqrt(2(n-1)) = 0.011; 5 of those.
  expected = 2.0 * 1.0 / 10
  tolerance = 5 / np.sqrt(2 * (result['noise_n'] - 1))
  assert abs(result['noise_std'] / expected - 1) < tolerance
  assert result['noise_across'] == 0.0
