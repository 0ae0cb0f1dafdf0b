"""The optimizers: NAdam as its formula in graph and eager mode; built eagerly
under the strategy; misbuilt optimizers refused."""

import numpy as np
import pytest
import tensorflow as tf

from dp_medtf.privacy import optimizers

EPS = float(np.finfo(np.float32).eps)


def nadam_reference(w, grads, lr, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
  """NAdam (Keras's schedule, mu_t = beta_1 (1 - 0.5 * 0.96^t)) in float64."""
  w = np.array(w, np.float64)
  m, v, product = np.zeros_like(w), np.zeros_like(w), 1.0
  mu = lambda t: beta_1 * (1 - 0.5 * 0.96**t)
  for t, g in enumerate(grads, start=1):
    m = beta_1 * m + (1 - beta_1) * g
    v = beta_2 * v + (1 - beta_2) * g**2
    product *= mu(t)
    m_hat = (mu(t + 1) * m / (1 - product * mu(t + 1)) +
             (1 - mu(t)) * g / (1 - product))
    v_hat = v / (1 - beta_2**t)
    w = w - lr * m_hat / (np.sqrt(v_hat) + epsilon)
  return w


def _problem(num_vars, steps):
  rng = np.random.default_rng(0)
  inits = [rng.normal(size=4).astype(np.float32) for _ in range(num_vars)]
  # Per-coordinate signs fixed over the steps, magnitudes over 3 decades.
  base = [rng.choice([-1.0, 1.0], size=4) * 10**rng.uniform(-2, 1, size=4)
          for _ in range(num_vars)]
  grads = [[(b * (1 + 0.3 * t)).astype(np.float32) for b in base]
           for t in range(steps)]
  return inits, grads


@pytest.mark.parametrize('graph', [False, True])
@pytest.mark.parametrize('num_vars', [1, 4])
def test_nadam_follows_its_formula(graph, num_vars):
  steps, lr = 6, 0.1
  inits, grads = _problem(num_vars, steps)
  variables = [tf.Variable(w) for w in inits]
  opt = optimizers.make_optimizer('nadam', lr, variables)

  def step(gs):
    opt.apply_gradients(zip(gs, variables))
  run = tf.function(step) if graph else step
  for t in range(steps):
    run([tf.constant(g) for g in grads[t]])
  for i, var in enumerate(variables):
    want = nadam_reference(inits[i], [grads[t][i] for t in range(steps)], lr)
    # Each step's update is a normalised O(lr) move through ~20 float32
    # operations (relative rounding <= 20 eps), and storing w rounds by
    # eps |w|: over 6 steps, 6 (20 eps lr + eps |w|). Keras 2.15's Nadam in a
    # tf.function misses by 3e-2 here (its schedule product is
    # multiplied in once per variable).
    tol = steps * (20 * EPS * lr + EPS * np.abs(want).max())
    np.testing.assert_allclose(var.numpy(), want, rtol=0, atol=tol)


def test_make_optimizer_creates_every_variable_now():
  model = tf.keras.Sequential([tf.keras.layers.Dense(3)])
  model.build([None, 2])
  for name in optimizers.OPTIMIZERS:
    opt = optimizers.make_optimizer(name, 1e-3, model.trainable_variables)
    assert isinstance(opt, optimizers.OPTIMIZERS[name])
    slots = [v for v in opt.variables if v.name.split('/')[0] in ('m', 'v')]
    assert len(slots) == 2 * len(model.trainable_variables)


def test_unknown_optimizer_names_the_choices():
  with pytest.raises(ValueError, match=r"'sgdx'.*\['adam', 'nadam'\]"):
    optimizers.make_optimizer('sgdx', 1e-3, [])


def _mirrored_model():
  strategy = tf.distribute.MirroredStrategy(['/cpu:0'])
  with strategy.scope():
    model = tf.keras.Sequential([tf.keras.layers.Dense(3)])
    model.build([None, 2])
  return strategy, model.trainable_variables


def test_built_under_the_strategy_holds_only_mirrored_variables():
  strategy, variables = _mirrored_model()
  opt = optimizers.make_optimizer('nadam', 1e-3, variables, strategy)
  held = optimizers.optimizer_variables(opt)
  assert len(held) >= 2 * len(variables) + 2  # Slots, iteration, lr.
  assert all(strategy.extended.variable_created_in_scope(v) for v in held)
  optimizers.ensure_built(opt, variables, strategy)  # Nothing to object to.


def test_ensure_built_builds_an_unbuilt_optimizer_under_the_strategy():
  strategy, variables = _mirrored_model()
  with strategy.scope():
    opt = optimizers.optimizer_class('adam')(1e-3)
  optimizers.ensure_built(opt, variables, strategy)
  held = optimizers.optimizer_variables(opt)
  assert len(held) >= 2 * len(variables) + 2
  assert all(strategy.extended.variable_created_in_scope(v) for v in held)


def test_ensure_built_refuses_variables_made_outside_the_scope():
  strategy, variables = _mirrored_model()
  outside = tf.keras.optimizers.Adam(1e-3)  # Iteration counter outside.
  with pytest.raises(ValueError, match='outside strategy.scope'):
    optimizers.ensure_built(outside, variables, strategy)
  with strategy.scope():
    lazy = tf.keras.optimizers.Adam(1e-3)
  lazy.build(variables)  # Slots outside, as a lazy first apply makes them.
  with pytest.raises(ValueError, match=r"\['m/.*outside strategy.scope"):
    optimizers.ensure_built(lazy, variables, strategy)


def test_legacy_optimizers_are_refused():
  strategy, variables = _mirrored_model()
  with pytest.raises(TypeError, match='legacy'):
    optimizers.ensure_built(tf.keras.optimizers.legacy.Adam(), variables,
                            strategy)
