"""The DP step refuses layers that break per-example clipping, by name.

Rejected: batch statistics (BatchNorm and its subclasses), layers whose
output for one example depends on the others, non-trainable state updated
in training, weight sharing the ghost engines cannot see, grouped
convolutions under the vectorized engine. Accepted: the project's models and
per-example custom layers, which still build and step. A measurement shows
what the refused layers do to the sensitivity of the clipped sum.
"""

import time

import numpy as np
import pytest
import tensorflow as tf

from dp_medtf import models
from dp_medtf.privacy import layer_checks
from dp_medtf.privacy import step as dp_step
from tests.privacy import test_engines

ENGINES = dp_step.ENGINES
GHOST_ENGINES = ('ghost', 'ghost_bk')
L = tf.keras.layers


class CenterBatch(L.Layer):
  """Subtracts the batch mean: mixes examples."""

  def call(self, x):
    return x - tf.reduce_mean(x, axis=0, keepdims=True)


class ScaledCenterBatch(L.Layer):
  """A trainable layer with no rule (the fallback) that mixes examples."""

  def build(self, input_shape):
    self.w = self.add_weight('w', shape=input_shape[-1:], initializer='ones')

  def call(self, x):
    return (x - tf.reduce_mean(x, axis=0, keepdims=True)) * self.w


class ScaledTanh(L.Layer):
  """alpha * tanh(x): a trainable per-example layer with no rule."""

  def build(self, input_shape):
    self.alpha = self.add_weight('alpha', shape=(), initializer='ones')

  def call(self, x):
    return self.alpha * tf.tanh(x)


class RunningMean(L.Layer):
  """Per-example output, but a non-trainable mean updated from the batch."""

  def build(self, input_shape):
    self.mean = self.add_weight('mean', shape=input_shape[-1:],
                                initializer='zeros', trainable=False)

  def call(self, x, training=None):
    if training:
      self.mean.assign(0.9 * self.mean + 0.1 * tf.reduce_mean(x, axis=0))
    return x


class MyBatchNorm(L.BatchNormalization):
  """A BatchNorm subclass."""


def _dense_model(middle, name='mid', seed=0):
  """Dense(8) -> middle -> tanh -> Dense(3) on 6 features."""
  tf.keras.utils.set_random_seed(seed)
  inputs = tf.keras.Input(shape=(6,))
  x = L.Dense(8, name='enc')(inputs)
  x = middle(name)(x)
  x = L.Activation('tanh')(x)
  return tf.keras.Model(inputs, L.Dense(3, name='head')(x))


def _tf_op_center(name):
  del name
  return lambda x: x - tf.reduce_mean(x, axis=0, keepdims=True)


def _lambda_tied():
  tf.keras.utils.set_random_seed(0)
  inputs = tf.keras.Input(shape=(6,))
  enc = L.Dense(4, name='enc')
  h = L.Activation('tanh')(enc(inputs))
  # Decoder tied to the encoder's kernel through a closure.
  out = L.Lambda(lambda t: tf.matmul(t, enc.kernel, transpose_b=True),
                 name='tied')(h)
  return tf.keras.Model(inputs, L.Dense(3, name='head')(out))


def _called_twice():
  tf.keras.utils.set_random_seed(0)
  inputs = tf.keras.Input(shape=(6,))
  shared = L.Dense(6, activation='tanh', name='shared')
  return tf.keras.Model(inputs, L.Dense(3, name='head')(shared(shared(inputs))))


def _grouped_conv():
  tf.keras.utils.set_random_seed(0)
  inputs = tf.keras.Input(shape=(6, 6, 4))
  x = L.Conv2D(4, 3, groups=2, name='grouped')(inputs)
  return tf.keras.Model(inputs, L.Dense(3, name='head')(L.Flatten()(x)))


def _conv_bn():
  tf.keras.utils.set_random_seed(0)
  inputs = tf.keras.Input(shape=(6, 6, 2))
  x = L.Conv2D(4, 3, name='conv')(inputs)
  x = L.BatchNormalization(name='bn1')(x)
  return tf.keras.Model(inputs, L.Dense(3, name='head')(L.Flatten()(x)))


def _build_step(model, engine, clip_norm=1.0):
  return dp_step.DPStep(model, dp_step.classification_loss,
                        tf.keras.optimizers.SGD(0.1), clip_norm=clip_norm,
                        noise_multiplier=0.0, expected_batch_size=4, seed=0,
                        engine=engine)


REJECTED_EVERYWHERE = {
    'batch_norm': (_conv_bn,
                   r"Layer 'bn1' \(BatchNormalization\) uses batch statistics"),
    'batch_norm_subclass': (
        lambda: _dense_model(lambda n: MyBatchNorm(name=n)),
        r"Layer 'mid' \(MyBatchNorm\) uses batch statistics"),
    'sync_batch_norm': (
        lambda: _dense_model(
            lambda n: L.experimental.SyncBatchNormalization(name=n)),
        r"Layer 'mid' \(SyncBatchNormalization\) uses batch statistics"),
    'batch_mean_layer': (
        lambda: _dense_model(lambda n: CenterBatch(name=n)),
        r"Layer 'mid' \(CenterBatch\)'s output for one example depends on"),
    'batch_mean_fallback_layer': (
        lambda: _dense_model(lambda n: ScaledCenterBatch(name=n)),
        r"Layer 'mid' \(ScaledCenterBatch\)'s output for one example"),
    'batch_mean_tf_op': (
        lambda: _dense_model(_tf_op_center),
        r"\(TFOpLambda\)'s output for one example depends on"),
    'running_mean_update': (
        lambda: _dense_model(lambda n: RunningMean(name=n)),
        r"Layer 'mid' \(RunningMean\) updates its non-trainable variable"),
    'wideresnet_batch_norm': (
        lambda: models.build({'name': 'wideresnet', 'depth': 10,
                              'width': 16, 'norm': 'batch'},
                             (8, 8, 1), 3),
        r"Layer 'group1_block1_norm1' \(BatchNormalization\) uses batch"),
}


@pytest.mark.parametrize('engine', ENGINES)
@pytest.mark.parametrize('case', sorted(REJECTED_EVERYWHERE))
def test_rejected_under_every_engine(case, engine):
  build, match = REJECTED_EVERYWHERE[case]
  with pytest.raises(ValueError, match=match):
    _build_step(build(), engine)


def test_non_trainable_state_is_restored_after_the_probe():
  model = _dense_model(lambda n: RunningMean(name=n))
  mean = model.get_layer('mid').mean
  with pytest.raises(ValueError, match='RunningMean'):
    _build_step(model, 'vectorized')
  np.testing.assert_array_equal(mean.numpy(), np.zeros(8))


SHARED = {
    'lambda_tied': (_lambda_tied,
                    r"Variable 'enc/kernel:0' is used by layers 'enc' "
                    r"\(Dense\), 'tied' \(Lambda\).*engine='vectorized'"),
    'called_twice': (_called_twice,
                     r"Variable 'shared/kernel:0' is used by Layer 'shared' "
                     r"\(Dense\), called 2 times.*engine='vectorized'"),
}


@pytest.mark.parametrize('engine', ENGINES)
@pytest.mark.parametrize('case', sorted(SHARED))
def test_weight_sharing_needs_the_vectorized_engine(case, engine):
  build, match = SHARED[case]
  model = build()
  if engine in GHOST_ENGINES:
    with pytest.raises(ValueError, match=match):
      _build_step(model, engine)
    return
  # Exact under the vectorized engine: its clipped sum equals the loop's.
  x, y = test_engines.batch_for(model, 4, 2)
  mask = tf.ones([4])
  grads, norms = test_engines.loop_gradients(model, x, y)
  clip_norm = float(np.median(norms))
  _build_step(model, engine)
  summed, got_norms, _ = dp_step.clipping_engine(engine)(
      model, test_engines.example_loss, x, y, mask, clip_norm)
  test_engines.assert_close(got_norms, norms)
  for got, want in zip(summed, test_engines.clipped_sum(grads, norms, mask,
                                                        clip_norm)):
    test_engines.assert_close(got, want)


@pytest.mark.parametrize('engine', ENGINES)
def test_grouped_convolution(engine):
  model = _grouped_conv()
  if engine == 'vectorized':
    with pytest.raises(ValueError, match=r"Layer 'grouped' \(Conv2D\) is a "
                       r'grouped convolution \(groups=2\)'):
      _build_step(model, engine)
    return
  # The ghost engines take the per-example loop for it: exact.
  _build_step(model, engine)
  x, y = test_engines.batch_for(model, 3, 2)
  mask = tf.ones([3])
  grads, norms = test_engines.loop_gradients(model, x, y)
  clip_norm = float(np.median(norms))
  summed, got_norms, _ = dp_step.clipping_engine(engine)(
      model, test_engines.example_loss, x, y, mask, clip_norm)
  test_engines.assert_close(got_norms, norms)
  for got, want in zip(summed, test_engines.clipped_sum(grads, norms, mask,
                                                        clip_norm)):
    test_engines.assert_close(got, want)


def _frozen_bn():
  model = _dense_model(lambda n: L.BatchNormalization(name=n))
  model.get_layer('mid').trainable = False
  return model


ACCEPTED = {
    'resnet9': lambda: models.build({'name': 'resnet9', 'width': 2},
                                    (16, 16, 3), 3),
    'wideresnet_group_norm': lambda: models.build(
        {'name': 'wideresnet', 'depth': 10, 'width': 16}, (8, 8, 1), 3),
    'unet2d_small': lambda: models.build(
        {'name': 'unet3d', 'width': 2, 'levels': 2}, (9, 8, 1), 3),
    'scaled_tanh': lambda: _dense_model(lambda n: ScaledTanh(name=n)),
    'frozen_batch_norm': _frozen_bn,
    'dropout': lambda: _dense_model(lambda n: L.Dropout(0.5, name=n)),
}


@pytest.mark.parametrize('engine', ENGINES)
@pytest.mark.parametrize('case', sorted(ACCEPTED))
def test_accepted_models_build_and_step(case, engine):
  tf.keras.utils.set_random_seed(0)
  model = ACCEPTED[case]()
  before = [w.copy() for w in model.get_weights()]
  step = _build_step(model, engine)
  # The probe leaves every weight as it was.
  for a, b in zip(model.get_weights(), before):
    np.testing.assert_array_equal(a, b)
  x, y = test_engines.batch_for(model, 2, 1)
  loss = step.accumulate(x, y, tf.ones([2]))
  step.apply()
  assert np.isfinite(float(loss))
  assert any(not np.array_equal(a, b)
             for a, b in zip(model.get_weights(), before))


def test_subclassed_model_is_refused_by_the_ghost_engines_at_build():
  class Net(tf.keras.Model):

    def __init__(self):
      super().__init__(name='net')
      self.dense = L.Dense(2)

    def call(self, x):
      return self.dense(x - tf.reduce_mean(x, axis=0))

  model = Net()
  model.build([None, 3])
  with pytest.raises(ValueError, match=r"Model 'net' \(Net\) is not "
                     'functional'):
    _build_step(model, 'ghost')
  # The vectorized engine probes it as a whole.
  with pytest.raises(ValueError, match=r"Layer 'net' \(Net\)'s output for "
                     'one example depends'):
    _build_step(model, 'vectorized')


def test_random_custom_layer_needs_a_declaration():
  class Jitter(L.Layer):

    def call(self, x):
      return x + tf.random.normal(tf.shape(x))

  model = _dense_model(lambda n: Jitter(name=n))
  with pytest.raises(ValueError, match=r"Layer 'mid' \(Jitter\) has a random "
                     'output'):
    _build_step(model, 'ghost_bk')
  layer_checks.register_per_example(Jitter)
  try:
    _build_step(model, 'ghost_bk')
  finally:
    layer_checks.PER_EXAMPLE_LAYERS.discard(Jitter)


# ---------------------------------------------------------------- measurement


def clipped_sum_sensitivity(model, engine, x, y, clip_norm):
  """max over j of ||S(D) - S(D')|| / C for the engine's clipped sum S.

  D' is D without example j (add/remove adjacency: the bound is 1) or with
  x_j replaced by f x_j, f in REPLACEMENTS (replacement: the bound is 2).

  Returns:
    (remove sensitivity, replace sensitivity), in units of C.
  """
  clipped_sum = dp_step.clipping_engine(engine)

  def total(xs, ys):
    summed, _, _ = clipped_sum(model, test_engines.example_loss, xs, ys,
                               tf.ones([xs.shape[0]]), clip_norm)
    return np.concatenate([s.numpy().ravel() for s in summed])

  full = total(x, y)
  remove, replace = 0.0, 0.0
  for j in range(x.shape[0]):
    keep = [i for i in range(x.shape[0]) if i != j]
    without = total(tf.gather(x, keep), tf.gather(y, keep))
    remove = max(remove, np.linalg.norm(full - without) / clip_norm)
    for factor in REPLACEMENTS:
      replaced = tf.tensor_scatter_nd_update(x, [[j]], factor * x[j:j + 1])
      replace = max(replace, np.linalg.norm(full - total(replaced, y)) /
                    clip_norm)
  return remove, replace


REPLACEMENTS = (-1.0, 10.0, 100.0)
MIXING = {
    'batch_norm': lambda: _dense_model(
        lambda n: L.BatchNormalization(name=n)),
    'batch_mean_layer': lambda: _dense_model(lambda n: CenterBatch(name=n)),
}


@pytest.mark.parametrize('engine', ENGINES)
@pytest.mark.parametrize('case', sorted(MIXING))
def test_refused_layers_break_the_sensitivity_bound(case, engine):
  """Without the check the engines accept these; the sum's sensitivity shows
  why the step refuses them."""
  model = MIXING[case]()
  x, y = test_engines.batch_for(model, 6, 1, seed=1)
  _, norms = test_engines.loop_gradients(model, x, y)
  # Every example clipped: each contributes exactly C when alone.
  clip_norm = 0.5 * float(norms.min())
  moving = [v.numpy() for v in model.non_trainable_variables]
  remove, replace = clipped_sum_sensitivity(model, engine, x, y, clip_norm)
  moved = max((float(np.abs(v.numpy() - m).max())
               for v, m in zip(model.non_trainable_variables, moving)),
              default=0.0)
  print(f'\n{case} {engine}: sensitivity remove-one {remove:.2f} C '
        f'(bound 1), replace-one {replace:.2f} C (bound 2); moving '
        f'statistics moved by {moved:.3g}')
  if engine == 'vectorized':
    # One example per forward pass: the sum is bounded, but the model
    # trained is not the model evaluated.
    assert remove <= 1.0 + test_engines.RTOL
    assert replace <= 2.0 + test_engines.RTOL
  else:
    assert remove > 1.0 + test_engines.RTOL
    assert replace > 2.0 + test_engines.RTOL
  if case == 'batch_norm':  # Fitted to the private batch, without noise.
    assert moved > 0.0
  with pytest.raises(ValueError, match=r"Layer 'mid'"):
    _build_step(model, engine)


def test_check_cost_on_resnet9():
  """The check runs at every DP step construction: it must stay cheap."""
  model = models.build({'name': 'resnet9', 'width': 16}, (64, 64, 3), 10)
  layer_checks.check_model(model, 'ghost_bk')  # Warm-up (tracing, kernels).
  start = time.perf_counter()
  layer_checks.check_model(model, 'ghost_bk')
  seconds = time.perf_counter() - start
  start = time.perf_counter()
  model(tf.zeros([layer_checks.PROBE_EXAMPLES, 64, 64, 3]), training=True)
  forward = time.perf_counter() - start
  print(f'\ncheck_model on ResNet-9 (width 16, 64x64): {seconds:.3f} s; '
        f'one eager forward pass of the probe batch: {forward:.3f} s')
  # One layer-by-layer forward pass plus probes of the few unknown layers.
  assert seconds < 10 * forward + 0.5
