"""The package's layers: weight-centred convolutions, reflection padding and
the single-logit head, through the shared harness and against their
definitions."""

import numpy as np
import pytest
import tensorflow as tf

from dp_medtf import losses
from dp_medtf.models import layers
from tests import layer_harness

L = tf.keras.layers
# (centred class, plain class, input shape, keyword arguments).
CENTRED = [
    (layers.CentredConv2D, L.Conv2D, (6, 6, 3),
     dict(filters=4, kernel_size=3, strides=2, padding='same')),
    (layers.CentredConv2D, L.Conv2D, (5, 5, 2),
     dict(filters=3, kernel_size=1, use_bias=False)),
    (layers.CentredConv3D, L.Conv3D, (4, 5, 5, 1),
     dict(filters=3, kernel_size=3, padding='same')),
    (layers.CentredConv2DTranspose, L.Conv2DTranspose, (3, 3, 2),
     dict(filters=4, kernel_size=3, strides=2, padding='same')),
    (layers.CentredConv2DTranspose, L.Conv2DTranspose, (3, 4, 2),
     dict(filters=2, kernel_size=3, strides=2, output_padding=1,
          activation='tanh')),
    (layers.CentredConv3DTranspose, L.Conv3DTranspose, (2, 3, 3, 3),
     dict(filters=2, kernel_size=2, strides=2, use_bias=False)),
]
IDS = [f'{c.__name__}-{i}' for i, (c, *_) in enumerate(CENTRED)]


@pytest.mark.parametrize('centred,plain,shape,kwargs', CENTRED, ids=IDS)
def test_centred_conv_harness(centred, plain, shape, kwargs):
  del plain
  layer_harness.check_layer(lambda: centred(**kwargs), shape)


@pytest.mark.parametrize('centred,plain,shape,kwargs', CENTRED, ids=IDS)
def test_centred_conv_is_the_plain_conv_of_the_centred_kernel(
    centred, plain, shape, kwargs):
  """Output: the plain conv with W - mean(W) over all axes but the last;
  kernel gradient: the centring projection of the plain conv's gradient."""
  x = tf.random.stateless_normal((2,) + shape, seed=(0, 1))
  layer, reference = centred(**kwargs), plain(**kwargs)
  layer(x)
  reference(x)
  kernel = layer.kernel.numpy()
  axes = tuple(range(kernel.ndim - 1))
  reference.set_weights([kernel - kernel.mean(axis=axes, keepdims=True)] +
                        layer.get_weights()[1:])
  upstream = tf.random.stateless_normal(layer(x).shape, seed=(2, 3))
  grads = []
  for l in (layer, reference):
    with tf.GradientTape() as tape:
      y = l(x)
    grads.append(tape.gradient(y, l.kernel, output_gradients=upstream))
    if l is layer:
      out = y
  np.testing.assert_allclose(out, reference(x), rtol=1e-5, atol=1e-5)
  g = grads[1].numpy()
  np.testing.assert_allclose(grads[0], g - g.mean(axis=axes, keepdims=True),
                             rtol=1e-5, atol=1e-5)
  assert layer.trainable_weights[0] is layer.kernel


def test_centred_conv_refuses_a_single_entry_slice():
  with pytest.raises(ValueError, match='centred_single.*plain convolution'):
    layers.CentredConv2D(3, 1, name='centred_single')(tf.ones([1, 4, 4, 1]))


def test_centred_transpose_refuses_dilation():
  with pytest.raises(ValueError, match='centred_dilated.*dilation_rate 1'):
    layers.CentredConv2DTranspose(2, 3, dilation_rate=2,
                                  name='centred_dilated')(tf.ones([1, 4, 4, 2]))


def test_conv_class():
  assert layers.conv_class(2, False) is L.Conv2D
  assert layers.conv_class(3, True) is layers.CentredConv3D
  assert layers.conv_class(2, True, transpose=True) is (
      layers.CentredConv2DTranspose)


@pytest.mark.parametrize('padding,shape', [
    (((0, 1), (2, 1)), (3, 4, 2)), (((1, 1), (0, 0), (0, 2)), (2, 3, 3, 1))])
def test_reflection_padding(padding, shape):
  x = tf.random.stateless_normal((2,) + shape, seed=(4, 5))
  got = layers.ReflectionPadding(padding)(x)
  want = np.pad(x.numpy(), [(0, 0), *padding, (0, 0)], mode='reflect')
  np.testing.assert_array_equal(got, want)
  layer_harness.check_layer(lambda: layers.ReflectionPadding(padding), shape)


def test_reflection_padding_needs_a_longer_axis():
  with pytest.raises(ValueError, match='pad_short.*longer than 2'):
    layers.ReflectionPadding([(0, 2)], name='pad_short')(tf.ones([1, 2, 1]))


def test_binary_logits_train_and_predict_as_one_sigmoid_logit():
  z = tf.constant([[-3.0], [-0.5], [0.0], [0.25], [4.0]])
  labels = tf.constant([0, 1, 1, 0, 1])
  logits = layers.BinaryLogits()(z)
  # Two float32 formulas of one value: a few ulps of the logits' scale (4).
  np.testing.assert_allclose(
      losses.classification_loss(labels, logits),
      tf.nn.sigmoid_cross_entropy_with_logits(
          tf.cast(labels, tf.float32)[:, None], z)[:, 0],
      atol=8 * 4 * np.finfo(np.float32).eps)
  np.testing.assert_array_equal(tf.argmax(logits, -1),
                                (z[:, 0] > 0).numpy().astype(np.int64))
  layer_harness.check_layer(layers.BinaryLogits, (1,))
  with pytest.raises(ValueError, match='one logit'):
    layers.BinaryLogits()(tf.zeros([1, 2]))
