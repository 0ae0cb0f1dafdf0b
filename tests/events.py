"""Reading what a run wrote to TensorBoard, for tests."""

import os

import tensorflow as tf


def event_tags(logdir) -> set[str]:
  """Every summary tag in the event files below `logdir`."""
  tags = set()
  for root, _, names in os.walk(logdir):
    for name in names:
      for event in tf.compat.v1.train.summary_iterator(
          os.path.join(root, name)):
        tags.update(v.tag for v in event.summary.value)
  return tags
