"""One harness for every Keras layer of the project.

`check_layer(make_layer, input_shape)` checks that the layer
  1. round-trips through get_config / from_config (and the registered name
     through tf.keras.layers.deserialize) and computes the same output with
     the same weights,
  2. trains one step inside a tf.function with non-zero gradients, and
  3. survives a SavedModel export and reload with the same output.
"""

from __future__ import annotations

import os
import tempfile
from typing import Callable

import numpy as np
import tensorflow as tf


def check_layer(make_layer: Callable[[], tf.keras.layers.Layer],
                input_shape: tuple[int, ...], batch_size: int = 2,
                atol: float = 1e-5) -> None:
  """Runs the three checks; raises AssertionError on the first failure."""
  x = tf.random.stateless_uniform((batch_size,) + tuple(input_shape),
                                  seed=(1, 2))
  layer = make_layer()
  y = layer(x)

  # 1. Config round trip, by class and by registered name.
  config = layer.get_config()
  clone = layer.__class__.from_config(config)
  clone(x)
  clone.set_weights(layer.get_weights())
  np.testing.assert_allclose(clone(x).numpy(), y.numpy(), atol=atol)
  by_name = tf.keras.layers.deserialize(tf.keras.layers.serialize(layer))
  assert type(by_name) is type(layer), type(by_name)

  # 2. A training step in a tf.function.
  if layer.trainable_variables:
    @tf.function
    def step(inp):
      with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(layer(inp, training=True)))
      grads = tape.gradient(loss, layer.trainable_variables)
      return loss, grads

    loss, grads = step(x)
    assert np.isfinite(loss.numpy())
    assert any(g is not None and float(tf.reduce_sum(tf.abs(g))) > 0
               for g in grads), 'no gradient reaches the layer weights'

  # 3. SavedModel export and reload.
  inputs = tf.keras.Input(shape=input_shape)
  model = tf.keras.Model(inputs, layer(inputs))
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, 'saved')
    tf.saved_model.save(model, path)
    reloaded = tf.saved_model.load(path)
    out = reloaded.signatures['serving_default'](
        **{model.input_names[0]: x})
    np.testing.assert_allclose(list(out.values())[0].numpy(),
                               model(x).numpy(), atol=atol)
