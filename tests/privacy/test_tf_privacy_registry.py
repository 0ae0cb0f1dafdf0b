"""The project's layer rules inside TF Privacy's norm computation."""

from tensorflow_privacy.privacy.fast_gradient_clipping import clip_grads

from dp_medtf.privacy import layer_registry
from dp_medtf.privacy import step as dp_step
from dp_medtf.privacy import tf_privacy_registry
from tests.privacy import test_engines
from tests.privacy.test_engines import assert_close


def test_rules_plug_into_tf_privacy():
  """TF Privacy's norm computation with the registry covers convolutions."""
  model = test_engines.LAYER_MODELS['group_norm']()
  x, y = test_engines.batch_for(model, 4, 1)
  _, norms = test_engines.loop_gradients(model, x, y)
  registry = tf_privacy_registry.to_tf_privacy(
      layer_registry.default_registry())
  got = clip_grads.compute_gradient_norms(
      model, registry, x[:, 0], y,
      per_example_loss_fn=lambda labels, out, unused_weights: (
          dp_step.classification_loss(labels, out)))
  assert_close(got, norms)
