"""make_private + fit: the package's DP-SGD behind Keras's interface."""

import math

import numpy as np
import pytest
import tensorflow as tf

from dp_medtf.data import pipeline
from dp_medtf.data import sampling
from dp_medtf.keras import BudgetExceededError
from dp_medtf.keras import DPKerasConfig
from dp_medtf.keras import make_private
from dp_medtf.keras import NonFiniteError
from dp_medtf.keras import PrivateModel
from dp_medtf.privacy import optimizers
from dp_medtf.privacy import step as dp_step
from tests import events

N, B = 48, 12


def _data(n=N, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.random([n, 6, 6, 1], np.float32)
  y = (x.mean(axis=(1, 2, 3)) > 0.5).astype(np.int32)
  return x, y


def _net(seed=0):
  tf.keras.utils.set_random_seed(seed)
  return tf.keras.Sequential([
      tf.keras.Input([6, 6, 1]),
      tf.keras.layers.Conv2D(3, 3, activation='tanh'),
      tf.keras.layers.Flatten(),
      tf.keras.layers.Dense(2)])


def _loss():
  return tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _config(**kwargs):
  base = dict(clipping_norm=0.7, batch_size=B, train_size=N, epochs=2,
              epsilon=8.0, insecure_seeded_randomness=True, seed=3)
  base.update(kwargs)
  return DPKerasConfig(**base)


def _private(config=None, optimizer='nadam', seed=0):
  private = make_private(_net(seed), config or _config())
  private.compile(optimizer=optimizer, loss=_loss(), metrics=['accuracy'])
  return private


@pytest.mark.parametrize('field, kwargs', [
    ('train_size', dict(train_size=0)),
    ('batch_size', dict(batch_size=N + 1)),
    ('epochs and train_steps', dict(train_steps=4)),
    ('epsilon and noise_multiplier', dict(noise_multiplier=1.0)),
    ('epsilon', dict(epsilon=-1.0)),
    ('delta', dict(delta=1.5)),
    ('clipping_norm', dict(clipping_norm=0.0)),
    ('engine', dict(engine='fast')),
    ('augmentation_multiplicity', dict(augmentation_multiplicity=0)),
    ('physical_batch_size', dict(physical_batch_size=-2)),
    ('epsilon=1e-6 cannot be reached', dict(epsilon=1e-6)),
])
def test_config_errors_name_the_field(field, kwargs):
  with pytest.raises(ValueError) as e:
    _config(**kwargs)
  message = str(e.value)
  assert field in message and '\n' not in message


def test_epsilon_is_logged_each_epoch_and_lands_on_the_target():
  private = _private()
  x, y = _data()
  history = private.fit(x, y, epochs=2, verbose=0,
                        validation_data=_data(16, seed=1))
  eps = history.history['epsilon']
  assert len(eps) == 2 and eps[0] < eps[1]
  # Calibration: T steps spend at most the target, within its rtol 1e-3.
  assert 8.0 * (1 - 1e-3) <= eps[1] <= 8.0
  assert eps[1] == private.ledger.epsilon(private.dp_config.delta)
  assert private.ledger.steps == private.steps_taken == 2 * (N // B)
  assert 'val_accuracy' in history.history
  # The training loss of private data is not published.
  assert 'loss' not in history.history and 'accuracy' not in history.history


def test_the_step_gets_the_configs_clip_noise_and_batch():
  private = _private()
  step = private.train_step_object()
  config = private.dp_config
  assert isinstance(step, dp_step.DPStep)
  assert step.clip_norm == 0.7 and step.expected_batch_size == B
  assert step.noise_stddev == pytest.approx(
      config.resolved_noise_multiplier * 0.7)
  # The stock Keras NAdam is replaced by the replica-safe one.
  assert type(private.optimizer) is optimizers.Nadam


def test_noise_std_of_one_update_is_z_c_over_b():
  # Zero inputs and no bias: every gradient is zero, so one SGD step (lr 1)
  # moves each of the 6000 weights by noise / B, noise ~ N(0, (zC)^2).
  config = _config(epsilon=None, noise_multiplier=1.3, clipping_norm=2.0,
                   train_steps=1, epochs=None)
  net = tf.keras.Sequential([tf.keras.Input([4]),
                             tf.keras.layers.Dense(1500, use_bias=False)])
  private = make_private(net, config)
  private.compile(optimizer=tf.keras.optimizers.SGD(1.0),
                  loss=tf.keras.losses.MeanSquaredError())
  before = net.get_weights()[0].copy()
  private.fit(np.zeros([N, 4], np.float32), np.zeros([N, 1500], np.float32),
              epochs=1, verbose=0)
  delta = (net.get_weights()[0] - before).ravel()
  expected = 1.3 * 2.0 / B
  # The sample std of n normal values has relative std 1/sqrt(2(n-1)):
  # 0.0091 for n = 6000; 5 of those bound a false failure by 6e-7.
  tolerance = 5 / math.sqrt(2 * (delta.size - 1))
  assert abs(np.std(delta) / expected - 1) < tolerance
  assert abs(np.mean(delta)) < 5 * expected / math.sqrt(delta.size)


@pytest.mark.parametrize('optimizer', ['sgd', 'nadam'])
def test_fit_equals_the_package_step_loop_at_noise_0(optimizer):
  """The Keras path and the trainer's step loop give the same update."""
  config = _config(epsilon=None, noise_multiplier=0.0)
  x, y = _data()
  private = _private(config, optimizer)
  initial = [np.array(w) for w in private.model.get_weights()]
  private.fit(x, y, epochs=2, verbose=0)

  net = _net()
  opt = (optimizers.Nadam() if optimizer == 'nadam' else
         tf.keras.optimizers.SGD())
  loss = lambda labels, out: _loss().call(labels, out)  # pylint: disable=unnecessary-lambda-assignment
  step = dp_step.DPStep(net, loss, opt, clip_norm=0.7, noise_multiplier=0.0,
                        expected_batch_size=B, seed=3, engine='ghost_bk')
  key = private._dp_state.randomness.sampling_key()  # pylint: disable=protected-access
  split = pipeline.ArraySplit(x, y)
  for epoch in range(2):
    plan = sampling.epoch_plan(N, B, N // B, epoch, config.chunk_size(),
                               private=True, sampling_key=key)
    last = {s: i for i, (s, _) in enumerate(plan)}
    data = pipeline.train_dataset(split, plan)
    for i, ((s, _), (xb, yb, mb)) in enumerate(zip(plan, data)):
      views = pipeline.training_views(xb, pipeline.Normalizer.fixed(0.0, 1.0),
                                      1, {}, seed=3, step=s)
      step.accumulate(views, yb, mb)
      if last[s] == i:
        step.apply()
  for a, b in zip(private.model.get_weights(), net.get_weights()):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  moved = max(np.abs(a - b).max()
              for a, b in zip(private.model.get_weights(), initial))
  assert moved > 1e-3


def test_seeded_runs_repeat_and_secret_runs_differ():
  x, y = _data()
  runs = []
  for insecure in (True, True, False):
    private = _private(_config(insecure_seeded_randomness=insecure))
    private.fit(x, y, epochs=1, verbose=0)
    runs.append(private.model.get_weights()[0])
  np.testing.assert_array_equal(runs[0], runs[1])
  assert np.abs(runs[0] - runs[2]).max() > 1e-4


def test_no_training_past_the_budget():
  private = _private()
  x, y = _data()
  with pytest.raises(BudgetExceededError, match='epochs'):
    private.fit(x, y, epochs=3, verbose=0)
  private.fit(x, y, epochs=2, verbose=0)
  spent = private.epsilon_spent()
  # A second fit finds the budget spent: no step is taken.
  private.fit(x, y, epochs=2, verbose=0)
  assert private.epsilon_spent() == spent
  assert private.steps_taken == 2 * (N // B)


@pytest.mark.parametrize('make_input, match', [
    (lambda x, y: (tf.data.Dataset.from_tensor_slices((x, y)).batch(B), None),
     'Poisson sampling'),
    (lambda x, y: (x[:-1], y[:-1]), 'train_size=48'),
])
def test_unusable_training_data_is_refused(make_input, match):
  private = _private()
  x, y = make_input(*_data())
  with pytest.raises(ValueError, match=match):
    private.fit(x, y, epochs=1, verbose=0)


@pytest.mark.parametrize('kwargs, match', [
    (dict(batch_size=10), 'DPKerasConfig.batch_size=12'),
    (dict(validation_split=0.2), 'validation_data'),
    (dict(class_weight={0: 1.0, 1: 2.0}), 'weight the loss'),
    (dict(callbacks=[tf.keras.callbacks.EarlyStopping(monitor='loss')]),
     'val_'),
])
def test_fit_arguments_a_private_model_cannot_honour(kwargs, match):
  private = _private()
  with pytest.raises(ValueError, match=match):
    private.fit(*_data(), epochs=1, verbose=0, **kwargs)
  assert private.steps_taken == 0


def test_example_mixing_layers_are_refused_at_make_private():
  net = tf.keras.Sequential([tf.keras.Input([4]),
                             tf.keras.layers.Dense(3),
                             tf.keras.layers.BatchNormalization()])
  with pytest.raises(ValueError, match='BatchNormalization'):
    make_private(net, _config())
  with pytest.raises(ValueError, match='build the model'):
    make_private(tf.keras.Sequential([tf.keras.layers.Dense(2)]), _config())


def test_non_finite_weights_stop_fit():
  private = make_private(_net(), _config())
  private.compile(optimizer=tf.keras.optimizers.SGD(float('inf')),
                  loss=_loss())
  with pytest.raises(NonFiniteError, match='Step 1'):
    private.fit(*_data(), epochs=1, verbose=0)
  # The non-finite update was released all the same: it is on the ledger.
  assert private.ledger.steps == private.steps_taken == 1


def test_non_private_fit_logs_the_training_loss():
  private = _private(_config(epsilon=math.inf))
  history = private.fit(*_data(), epochs=2, verbose=0)
  assert history.history['epsilon'] == [math.inf, math.inf]
  assert len(history.history['loss']) == 2
  assert private.steps_taken == 2 * math.ceil(N / B)


def test_the_secret_is_in_checkpoints_and_not_in_exports(tmp_path):
  private = _private()
  private.fit(*_data(), epochs=1, verbose=0)
  saved = tf.train.Checkpoint(model=private).save(str(tmp_path / 'ckpt'))
  names = [n for n, _ in tf.train.list_variables(saved)]
  assert any('dp_state/randomness/noise_generator' in n for n in names)
  assert any('dp_state/randomness/_sampling_key' in n for n in names)
  private.save(str(tmp_path / 'm.keras'))
  tf.saved_model.save(private, str(tmp_path / 'sm'))
  exported = [n for n, _ in tf.train.list_variables(
      str(tmp_path / 'sm' / 'variables' / 'variables'))]
  assert exported and not [n for n in exported if 'dp_state' in n]
  secret = {v.ref() for v in private._dp_state.variables}  # pylint: disable=protected-access
  assert not [w for w in private.weights if w.ref() in secret]
  loaded = tf.keras.models.load_model(str(tmp_path / 'm.keras'))
  assert isinstance(loaded, PrivateModel) and loaded.steps_taken == 0
  assert loaded.dp_config == private.dp_config
  # The (public) ledger travels with the weights it paid for.
  assert loaded.ledger.to_dict() == private.ledger.to_dict()
  x = _data(4)[0]
  np.testing.assert_allclose(loaded.predict(x, verbose=0),
                             private.predict(x, verbose=0), rtol=1e-6)


class _Interrupt(tf.keras.callbacks.Callback):

  def on_epoch_end(self, epoch, logs=None):
    if epoch == 0:
      raise KeyboardInterrupt


@pytest.mark.parametrize('insecure', [True, False])
def test_backup_and_restore_resumes_the_same_run(tmp_path, insecure):
  x, y = _data()
  config = _config(epochs=3, insecure_seeded_randomness=insecure)
  backup = str(tmp_path / 'backup')
  interrupted = _private(config)
  with pytest.raises(KeyboardInterrupt):
    interrupted.fit(x, y, epochs=3, verbose=0, callbacks=[
        tf.keras.callbacks.BackupAndRestore(backup), _Interrupt()])
  # A fresh process: new model, new (secret) randomness, restored from the
  # backup.
  resumed = _private(config, seed=1)
  history = resumed.fit(x, y, epochs=3, verbose=0, callbacks=[
      tf.keras.callbacks.BackupAndRestore(backup)])
  assert len(history.history['epsilon']) == 2  # Epochs 2 and 3.
  assert resumed.steps_taken == resumed.ledger.steps == 3 * (N // B)
  whole = _private(config)
  whole.fit(x, y, epochs=3, verbose=0)
  assert resumed.epsilon_spent() == whole.epsilon_spent()
  if insecure:
    for a, b in zip(resumed.model.get_weights(), whole.model.get_weights()):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_model_checkpoint_weights_restore_the_secret(tmp_path):
  private = _private()
  path = str(tmp_path / 'weights')
  private.fit(*_data(), epochs=1, verbose=0, callbacks=[
      tf.keras.callbacks.ModelCheckpoint(path, save_weights_only=True)])
  restored = _private(seed=1)
  restored.train_step_object()
  restored.load_weights(path)
  key = lambda m: m._dp_state.randomness.sampling_key().tolist()  # pylint: disable=protected-access,unnecessary-lambda-assignment
  assert key(restored) == key(private)
  assert restored.steps_taken == private.steps_taken == N // B


def test_epsilon_reaches_tensorboard_and_the_progress_bar(tmp_path, capsys):
  private = _private()
  private.fit(*_data(), epochs=1, verbose=1, callbacks=[
      tf.keras.callbacks.TensorBoard(str(tmp_path))])
  assert 'epsilon: ' in capsys.readouterr().out
  tags = events.event_tags(tmp_path)
  assert 'epoch_epsilon' in tags
  # Nothing about the training data: no training loss or metric.
  assert not {t for t in tags if t in ('epoch_loss', 'epoch_accuracy')}


def test_the_ledger_follows_the_weights_into_a_new_wrapper():
  private = _private()
  x, y = _data()
  private.fit(x, y, epochs=2, verbose=0)
  again = make_private(private.model, _config())
  again.compile(optimizer='adam', loss=_loss())
  assert again.ledger.to_dict() == private.ledger.to_dict()
  with pytest.raises(BudgetExceededError, match='would spend'):
    again.fit(x, y, epochs=1, verbose=0)
  assert again.ledger.steps == 2 * (N // B)


def test_an_interrupted_step_is_not_counted_twice():
  x, y = _data()
  config = _config(epsilon=None, noise_multiplier=0.0)
  clean = _private(config, 'sgd')
  clean.fit(x, y, epochs=1, verbose=0)
  interrupted = _private(config, 'sgd')
  step = interrupted.train_step_object()
  # One chunk of a step accumulated, then the step broke off.
  step.accumulate(tf.constant(x[:B, None]), tf.constant(y[:B]),
                  tf.ones([B]))
  interrupted.fit(x, y, epochs=1, verbose=0)
  for a, b in zip(clean.model.get_weights(), interrupted.model.get_weights()):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_normalization_is_part_of_the_model():
  norm = {'mean': [0.5], 'std': [0.25]}
  private = make_private(_net(), _config(), normalization=norm)
  x = _data(4)[0]
  np.testing.assert_allclose(
      private.predict(x, verbose=0),
      private.model.predict((x - 0.5) / 0.25, verbose=0), rtol=1e-5)


def test_a_layer_unfrozen_after_make_private_is_refused_at_fit():
  # Frozen, BatchNorm runs in inference mode and mixes no examples; made
  # trainable after make_private's check, it would: the step checks again.
  tf.keras.utils.set_random_seed(0)
  norm = tf.keras.layers.BatchNormalization(trainable=False)
  net = tf.keras.Sequential([tf.keras.Input([6, 6, 1]), norm,
                             tf.keras.layers.Flatten(),
                             tf.keras.layers.Dense(2)])
  private = make_private(net, _config())
  norm.trainable = True
  private.compile(optimizer='sgd', loss=_loss())
  with pytest.raises(ValueError, match=norm.name):
    private.fit(*_data(), epochs=1, verbose=0)
  assert private.steps_taken == 0
