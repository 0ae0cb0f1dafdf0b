"""The mechanism's randomness: secret by default, seeded only on request.

DP-SGD's guarantee rests on two random draws per step that the adversary must
not know: which examples join the step (Poisson sampling, the source of
privacy amplification) and the Gaussian noise. If either can be recomputed,
for example from a seed printed in results.json, the guarantee is void: two
runs on neighbouring data sets differ by exactly one clipped gradient / B
(the noise cancels), and the steps that hold a given example are known.

So both draw from operating-system entropy (`os.urandom`): a 256-bit key for
the sampler and a fresh Philox state (192 bits: 128-bit counter and 64-bit
key) for the noise generator. The state lives in checkpoints only, so that a
resumed run continues exactly; checkpoints are therefore secret. The training
seed still drives initialisation, augmentation and the non-private data order.

`insecure_seeded=True` derives both from the training seed instead, for tests
and debugging: reproducible, and not private.

Example:

  >>> secret = MechanismRandomness()
  >>> secret.mode
  'secret'
  >>> seeded = MechanismRandomness(seed=3)
  >>> seeded.mode
  'seeded (not private)'
  >>> seeded.sampling_key().tolist()
  [3]
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

SECRET = 'secret'
SEEDED = 'seeded (not private)'
# Bytes of operating-system entropy behind the sampling key (256 bits).
SAMPLING_KEY_BYTES = 32


def secret_words(num_bytes: int) -> np.ndarray:
  """`num_bytes` (a multiple of 8) of OS entropy as int64 words."""
  if num_bytes % 8:
    raise ValueError(f'num_bytes must be a multiple of 8, got {num_bytes}.')
  return np.frombuffer(os.urandom(num_bytes), dtype=np.int64).copy()


class MechanismRandomness(tf.Module):
  """The Poisson sampler's key and the noise generator of one run.

  A tf.Module, so tf.train.Checkpoint saves and restores both with the model.

  Args:
    seed: None (the default): secret OS entropy. An int: both derive from it
      (reproducible, not private).
    name: the module's name.
  """

  def __init__(self, seed: int | None = None, name: str | None = None):
    super().__init__(name=name)
    self.mode = SECRET if seed is None else SEEDED
    if seed is None:
      key = secret_words(SAMPLING_KEY_BYTES)
      # Philox's state: a 128-bit counter and a 64-bit key, all secret.
      self.noise_generator = tf.random.Generator.from_state(
          secret_words(24), alg='philox')
    else:
      key = np.array([int(seed)], np.int64)
      self.noise_generator = tf.random.Generator.from_seed(int(seed))
    self._sampling_key = tf.Variable(key, dtype=tf.int64, trainable=False,
                                     shape=tf.TensorShape([None]),
                                     name='sampling_key')

  def sampling_key(self) -> np.ndarray:
    """The sampler's key as non-negative integers (for numpy's SeedSequence)."""
    return self._sampling_key.numpy().view(np.uint64)
