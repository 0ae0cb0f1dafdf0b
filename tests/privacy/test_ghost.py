"""Ghost clipping: each rule mode against the loop, fallbacks, refusals."""

import logging

import numpy as np
import pytest
import tensorflow as tf

from dp_medtf.privacy import ghost
from dp_medtf.privacy import layer_registry
from dp_medtf.privacy import layer_rules
from dp_medtf.privacy import step as dp_step
from tests.privacy import test_engines
from tests.privacy.test_engines import assert_close


@pytest.mark.parametrize('model_name', [
    'conv2d_strided', 'conv2d_dilated', 'conv1d', 'conv3d', 'conv2d_transpose',
    'conv3d_transpose', 'dense_sequence', 'centred_conv2d',
    'centred_conv2d_nobias', 'centred_conv3d', 'centred_conv3d_nobias',
    'centred_conv2d_transpose', 'centred_conv3d_transpose_nobias'])
@pytest.mark.parametrize('mode', ['ghost', 'explicit'])
def test_each_mode_matches_the_loop(model_name, mode):
  model = test_engines.LAYER_MODELS[model_name]()
  x, y = test_engines.batch_for(model, 3, 2)
  mask = tf.ones([3])
  grads, norms = test_engines.loop_gradients(model, x, y)
  clip_norm = float(np.median(norms))
  summed, got_norms, _ = ghost.ghost_clipped_sum(
      model, test_engines.example_loss, x, y, mask, clip_norm,
      reweighting='bookkeeping',
      registry=layer_registry.default_registry(mode))
  assert_close(got_norms, norms)
  for got, want in zip(summed, test_engines.clipped_sum(grads, norms, mask,
                                                        clip_norm)):
    assert_close(got, want)


@pytest.mark.parametrize('model_name', [
    'conv2d_strided', 'conv3d', 'conv2d_transpose', 'centred_conv2d',
    'centred_conv3d_transpose_nobias'])
def test_explicit_mode_past_the_unrolled_count_matches_the_loop(model_name):
  """More examples than map_examples unrolls: the vectorised path."""
  examples = layer_rules.UNROLL_EXAMPLES + 3
  model = test_engines.LAYER_MODELS[model_name]()
  x, y = test_engines.batch_for(model, examples, 2)
  mask = tf.ones([examples])
  grads, norms = test_engines.loop_gradients(model, x, y)
  clip_norm = float(np.median(norms))
  summed, got_norms, _ = ghost.ghost_clipped_sum(
      model, test_engines.example_loss, x, y, mask, clip_norm,
      reweighting='bookkeeping',
      registry=layer_registry.default_registry('explicit'))
  assert_close(got_norms, norms)
  for got, want in zip(summed, test_engines.clipped_sum(grads, norms, mask,
                                                        clip_norm)):
    assert_close(got, want)


class _Scale(tf.keras.layers.Layer):
  """A layer with no rule: y = x * w."""

  def build(self, input_shape):
    self.w = self.add_weight('w', shape=input_shape[-1:],
                             initializer='random_normal')

  def call(self, x):
    return x * self.w


def _unregistered_model():
  tf.keras.utils.set_random_seed(0)
  inputs = tf.keras.Input(shape=(4,))
  x = _Scale()(tf.keras.layers.Dense(4, activation='tanh')(inputs))
  return tf.keras.Model(inputs, tf.keras.layers.Dense(3)(x))


def test_unregistered_layer_falls_back_with_a_warning(caplog):
  model = _unregistered_model()
  x, y = test_engines.batch_for(model, 4, 2)
  mask = tf.ones([4])
  grads, norms = test_engines.loop_gradients(model, x, y)
  with caplog.at_level(logging.WARNING):
    summed, got_norms, _ = ghost.ghost_clipped_sum(
        model, test_engines.example_loss, x, y, mask, 0.5,
        reweighting='bookkeeping')
  assert '_Scale' in caplog.text and 'no per-example gradient rule' in (
      caplog.text)
  assert_close(got_norms, norms)
  for got, want in zip(summed, test_engines.clipped_sum(grads, norms, mask,
                                                        0.5)):
    assert_close(got, want)


def test_unregistered_layer_errors_when_asked():
  model = _unregistered_model()
  x, y = test_engines.batch_for(model, 2, 1)
  with pytest.raises(NotImplementedError, match='_Scale'):
    ghost.ghost_clipped_sum(
        model, test_engines.example_loss, x, y, tf.ones([2]), 1.0,
        registry=layer_registry.default_registry(fallback='error'))


def test_subclassed_model_is_refused():
  class Net(tf.keras.Model):

    def __init__(self):
      super().__init__()
      self.dense = tf.keras.layers.Dense(2)

    def call(self, x):
      return self.dense(x)

  model = Net()
  model.build([None, 3])
  with pytest.raises(ValueError, match='vectorized'):
    ghost.ghost_clipped_sum(model, test_engines.example_loss,
                            tf.ones([2, 1, 3]), tf.zeros([2], tf.int32),
                            tf.ones([2]), 1.0)


def test_shared_layer_is_refused():
  inputs = tf.keras.Input(shape=(3,))
  dense = tf.keras.layers.Dense(3)
  model = tf.keras.Model(inputs, dense(dense(inputs)))
  with pytest.raises(ValueError, match='more than once'):
    ghost.ghost_clipped_sum(model, test_engines.example_loss,
                            tf.ones([2, 1, 3]), tf.zeros([2], tf.int32),
                            tf.ones([2]), 1.0)


def test_bad_options():
  with pytest.raises(ValueError, match='mode'):
    layer_registry.default_registry('fastest')
  with pytest.raises(ValueError, match='reweighting'):
    ghost.ghost_clipped_sum(None, None, tf.ones([1, 1, 1]), None, None, 1.0,
                            reweighting='third_pass')


@pytest.mark.parametrize('engine', ['ghost', 'ghost_bk'])
def test_virtual_batch_equals_one_chunk(engine, monkeypatch):
  """Chunks of one logical batch give the update of the whole batch."""
  x, y = test_engines.batch_for(test_engines.LAYER_MODELS['group_norm'](), 6,
                                1, seed=2)
  mask = tf.constant([1.0] * 5 + [0.0])
  grads = []
  for chunk in (6, 3):
    model = test_engines.LAYER_MODELS['group_norm']()
    # Recorded at the call, whatever handlers absl's logger has by now.
    logged = []
    monkeypatch.setattr(dp_step.logging, 'info',
                        lambda msg, *args: logged.append(msg % args))
    step = dp_step.DPStep(model, dp_step.classification_loss,
                          tf.keras.optimizers.SGD(1.0), clip_norm=0.3,
                          noise_multiplier=0.0, expected_batch_size=5,
                          seed=0, engine=engine)
    assert f'engine: {engine}' in ' '.join(logged)
    for start in range(0, 6, chunk):
      step.accumulate(x[start:start + chunk], y[start:start + chunk],
                      mask[start:start + chunk])
    grads.append(step.privatized_gradient())
  for a, b in zip(*grads):
    assert_close(a, b)


@pytest.mark.parametrize('reweighting', ['second_pass', 'bookkeeping'])
def test_unknown_batch_size(reweighting):
  """A batch whose size is only known at run time (a replica's share)."""
  model = test_engines.LAYER_MODELS['group_norm']()
  x, y = test_engines.batch_for(model, 3, 2)
  mask = tf.ones([3])
  grads, norms = test_engines.loop_gradients(model, x, y)
  clip_norm = float(np.median(norms))

  @tf.function(input_signature=[
      tf.TensorSpec([None] + x.shape[1:], tf.float32),
      tf.TensorSpec([None], tf.int32), tf.TensorSpec([None], tf.float32)])
  def run(xs, ys, ms):
    return ghost.ghost_clipped_sum(model, test_engines.example_loss, xs, ys,
                                   ms, clip_norm, reweighting=reweighting)

  summed, got_norms, _ = run(x, y, mask)
  assert_close(got_norms, norms)
  for got, want in zip(summed, test_engines.clipped_sum(grads, norms, mask,
                                                        clip_norm)):
    assert_close(got, want)


@pytest.mark.parametrize('model_name', [
    'centred_conv2d', 'centred_conv3d', 'centred_conv3d_transpose_nobias'])
def test_centred_conv_ghost_norm_is_the_projected_one(model_name, monkeypatch):
  """Ghost norms of weight-centred convs on inputs with a large mean.

  Positive inputs put much of the effective kernel's gradient along the
  centred-away direction; the ghost norm must equal the loop's norm of the
  raw kernel's gradient, and the norm without the projection (the effective
  kernel's) must differ, so that the comparison can fail. The dense head is
  frozen so that the norms are the convolution's.
  """
  model = test_engines.LAYER_MODELS[model_name]()
  model.layers[-1].trainable = False
  x, y = test_engines.batch_for(model, 3, 2)
  x = tf.abs(x) + 2.0
  mask = tf.ones([3])
  _, norms = test_engines.loop_gradients(model, x, y)
  registry = layer_registry.default_registry('ghost')

  def ghost_norms():
    return ghost.ghost_clipped_sum(
        model, test_engines.example_loss, x, y, mask, 1.0,
        reweighting='bookkeeping', registry=registry)[1].numpy()

  assert_close(ghost_norms(), norms)
  monkeypatch.setattr(layer_rules.dp_layers, 'CENTRED_CONVS', ())
  uncorrected = ghost_norms()
  assert np.all(uncorrected > norms * (1 + 10 * test_engines.RTOL))
