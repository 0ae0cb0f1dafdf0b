"""tf.distribute strategies by name, for --strategy.

Example:

  >>> make_strategy('default').num_replicas_in_sync
  1
"""

from __future__ import annotations

import tensorflow as tf

STRATEGIES = ('default', 'mirrored', 'multiworker', 'tpu')


def make_strategy(name: str, tpu: str = '') -> tf.distribute.Strategy:
  """Builds a strategy.

  Args:
    name: 'default' (one device), 'mirrored' (all local GPUs), 'multiworker'
      (TF_CONFIG's cluster), or 'tpu'.
    tpu: the TPU name or address for 'tpu' ('local' on a TPU VM).

  Returns:
    The strategy.

  Raises:
    ValueError: for an unknown name.
  """
  if name == 'default':
    return tf.distribute.get_strategy()
  if name == 'mirrored':
    return tf.distribute.MirroredStrategy()
  if name == 'multiworker':
    return tf.distribute.MultiWorkerMirroredStrategy()
  if name == 'tpu':
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
  raise ValueError(f'Unknown strategy {name!r}; choose one of {STRATEGIES}.')
