"""Small models covering the layer types of the project's DP models."""

import tensorflow as tf

from dp_medtf.models import layers


def conv_groupnorm_dense(input_shape=(8, 8, 3), num_classes=3, seed=0):
  """Conv2D (no bias) -> GroupNorm -> Mish -> conv + residual -> ScaleNorm ->
  pooling -> Dense."""
  tf.keras.utils.set_random_seed(seed)
  inputs = tf.keras.Input(shape=input_shape)
  x = tf.keras.layers.Conv2D(8, 3, padding='same', use_bias=False)(inputs)
  x = tf.keras.layers.GroupNormalization(4)(x)
  x = tf.keras.layers.Activation('mish')(x)
  y = tf.keras.layers.Conv2D(8, 3, padding='same')(x)
  x = layers.ScaleNorm()(tf.keras.layers.Add()([x, y]))
  x = tf.keras.layers.GlobalAveragePooling2D()(x)
  outputs = tf.keras.layers.Dense(num_classes)(x)
  return tf.keras.Model(inputs, outputs)


def dense_only(input_dim=5, num_classes=2, seed=0):
  """A two-layer perceptron."""
  tf.keras.utils.set_random_seed(seed)
  inputs = tf.keras.Input(shape=(input_dim,))
  x = tf.keras.layers.Dense(7, activation='tanh')(inputs)
  return tf.keras.Model(inputs, tf.keras.layers.Dense(num_classes)(x))


MODELS = {'conv_groupnorm_dense': conv_groupnorm_dense,
          'dense_only': dense_only}
