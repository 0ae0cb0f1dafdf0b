"""Tests of the attack runner, on synthetic and on real medical images.

The real-image fixture is built at test time from images that ship with
installed packages: pydicom's CT_small.dcm (a 128 x 128 CT slice) and
scikit-image's retina() (an RGB fundus photograph), cropped and reduced to
32 x 32 pixels.
"""

import dataclasses
import math

import numpy as np
import pydicom
from pydicom import data as pydicom_data
import pytest
import skimage.data
import tensorflow as tf

from dp_medtf import fit
from dp_medtf import recipes
from dp_medtf.attacks import imprint
from dp_medtf.attacks import runner
from dp_medtf.privacy import accounting
from tests import run_fixtures

SIZE = 32


def _block_mean(image: np.ndarray, factor: int) -> np.ndarray:
  h, w = image.shape[:2]
  return image.reshape(h // factor, factor, w // factor, factor,
                       -1).mean(axis=(1, 3))


def ct_images() -> np.ndarray:
  """20 CT images [20, 32, 32, 1] in [0, 1] (soft-tissue window).

  The whole slice and nine 64 x 64 crops, each also mirrored; air and lung
  are exactly 0 after windowing.
  """
  ds = pydicom.dcmread(pydicom_data.get_testdata_file('CT_small.dcm'))
  hu = (ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) +
        float(ds.RescaleIntercept))
  window = np.clip((hu + 160.0) / 400.0, 0.0, 1.0)[..., None]
  crops = [_block_mean(window, 4)]
  crops += [_block_mean(window[y:y + 64, x:x + 64], 2)
            for y in (0, 32, 64) for x in (0, 32, 64)]
  crops += [c[:, ::-1] for c in crops]
  return np.stack(crops).astype(np.float32)


def fundus_images() -> np.ndarray:
  """16 fundus crops [16, 32, 32, 3] in [0, 1], background masked to 0.

  A 4 x 4 grid of 352 x 352 crops of the 1411 x 1411 photograph, each
  reduced 11-fold.
  """
  retina = skimage.data.retina().astype(np.float64) / 255.0
  retina[retina.max(axis=-1) < 10 / 255] = 0.0  # The black surround.
  starts = (0, 353, 706, 1059)
  crops = [_block_mean(retina[y:y + 352, x:x + 352], 11)
           for y in starts for x in starts]
  return np.stack(crops).astype(np.float32)


def _smooth_volumes(num: int, shape=(4, 16, 16, 1), seed=0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  grids = np.meshgrid(*[np.linspace(0, 1, s) for s in shape[:-1]],
                      indexing='ij')
  out = []
  for _ in range(num):
    v = sum(np.sin(2 * np.pi * rng.uniform(0.3, 1.5) * g + rng.uniform(0, 6))
            for g in grids)[..., None]
    out.append((v - v.min()) / (v.max() - v.min()))
  return np.stack(out).astype(np.float32)


def _small_model(input_shape, num_classes=2, seed=0):
  tf.keras.utils.set_random_seed(seed)
  inputs = tf.keras.Input(input_shape)
  if len(input_shape) == 4:
    x = tf.keras.layers.Conv3D(4, 3, strides=2, activation='relu')(inputs)
  else:
    x = tf.keras.layers.Conv2D(8, 3, strides=2, activation='relu')(inputs)
  x = tf.keras.layers.Flatten()(x)
  outputs = tf.keras.layers.Dense(num_classes)(x)
  return tf.keras.Model(inputs, outputs, name='small')


def _budgets(epsilons, clip_norm=1.0):
  return runner.make_budgets(epsilons, delta=8e-7, num_train_examples=2400,
                             epochs=12, clip_norm=clip_norm)


NON_PRIVATE = _budgets([math.inf])


@pytest.fixture(scope='module')
def real_images():
  return {'ct': ct_images(), 'fundus': fundus_images()}


def test_real_image_fixture(real_images):
  assert real_images['ct'].shape == (20, SIZE, SIZE, 1)
  assert real_images['fundus'].shape == (16, SIZE, SIZE, 3)
  for images in real_images.values():
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert images.std() > 0.1


@pytest.mark.parametrize('kind', ['ct', 'fundus'])
def test_without_dp_every_real_image_is_recovered(real_images, kind):
  images = real_images[kind]
  model = imprint.imprint_model(_small_model(images.shape[1:]))
  labels = np.arange(len(images)) % 2
  result = runner.run_attack(model, images, labels, NON_PRIVATE)
  errors = result.errors('inf')
  assert len(errors) + len(result.skipped) == len(images)
  assert len(errors) >= len(images) - 2
  assert errors.max() < 1e-3
  assert result.summary()['inf']['share_below_0.1'] == 1.0


def test_without_dp_every_3d_volume_is_recovered():
  volumes = _smooth_volumes(4)
  model = imprint.imprint_model(_small_model(volumes.shape[1:]), num_bins=6)
  result = runner.run_attack(model, volumes, np.array([0, 1, 0, 1]),
                             NON_PRIVATE)
  errors = result.errors('inf')
  assert len(errors) == 4 and errors.max() < 1e-3


def test_clipping_alone_keeps_recovery_exact(real_images):
  images = real_images['fundus'][5:8]
  model = imprint.imprint_model(_small_model(images.shape[1:]))
  clip_only = runner.Budget(1e30, 8e-7, 0.0, 1e-3, 1 / 2400, 28800)
  result = runner.run_attack(model, images, None, [clip_only])
  assert result.errors('1e30').max() < 1e-3


@pytest.mark.parametrize('shape', [(SIZE, SIZE, 3), (4, 16, 16, 1)],
                         ids=['2d', '3d'])
def test_with_very_large_noise_no_image_is_recovered(real_images, shape):
  images = (real_images['fundus'][4:10] if len(shape) == 3
            else _smooth_volumes(3))
  model = imprint.imprint_model(_small_model(shape))
  budgets = _budgets([1.0])
  assert budgets[0].noise_multiplier > 0.5
  result = runner.run_attack(model, images, None, budgets)
  errors = result.errors('1')
  assert len(errors) == len(images)
  assert errors.min() > 0.5
  assert result.summary()['1']['share_below_0.3'] == 0.0


def test_near_empty_images_are_skipped_and_counted(real_images):
  images = real_images['ct'][:3].copy()
  images[1] = 0.0
  images[2, 3:] = 0.0  # 3 of 32 rows left: under 10% non-zero.
  model = imprint.imprint_model(_small_model(images.shape[1:]))
  done = []
  result = runner.run_attack(model, images, None, _budgets([1e18, math.inf]),
                             image_ids=[10, 11, 12], progress=done.append,
                             skip_near_empty=True)
  assert result.skipped == [11, 12]
  assert done == [1, 2, 3]
  assert [(r.image_id, r.budget) for r in result.records] == [
      (10, '1e18'), (10, 'inf')]
  summary = result.summary()
  assert set(summary) == {'1e18', 'inf'}
  assert summary['inf'] == {
      'noise_multiplier': 0.0, 'share_below_0.1': 1.0,
      'share_below_0.2': 1.0, 'share_below_0.3': 1.0,
      'median_error': pytest.approx(0.0, abs=1e-3), 'num_images': 1,
      'num_skipped': 2, 'sampling_rate': 1 / 2400, 'steps': 28800,
      'clip_norm': None, 'batch_size': 1, 'run_dir': None}
  # Off (every recipe but RadImageNet's), near-empty images are scored.
  kept = runner.run_attack(model, images, None, NON_PRIVATE)
  assert kept.skipped == [] and len(kept.errors('inf')) == 3


def test_best_examples_are_sorted_and_limited(real_images):
  images = real_images['fundus'][:7]
  model = imprint.imprint_model(_small_model(images.shape[1:]))
  result = runner.run_attack(model, images, None, _budgets([1e12]), top_k=3)
  best = result.best['1e12']
  errors = sorted(result.errors('1e12'))
  assert [e.error for e in best] == pytest.approx(errors[:3])
  assert all(e.reconstruction.shape == images.shape[1:] for e in best)
  assert all(0.0 <= e.reconstruction.min() and e.reconstruction.max() <= 1.0
             for e in best)


def test_make_budgets_calibrates_for_batch_size_one():
  budgets = runner.budgets_from_config(recipes.load('demo'), [1e12, math.inf],
                                       2400)
  private, public = budgets
  assert private.sampling_rate == public.sampling_rate == 1 / 2400
  assert private.steps == public.steps == 12 * 2400
  assert private.clip_norm == 1.0 and private.delta == 8e-7
  assert private.noise_multiplier == pytest.approx(
      accounting.calibrate_noise_multiplier(1e12, 8e-7, 1 / 2400, 28800))
  assert accounting.spent_epsilon(private.noise_multiplier, 8e-7, 1 / 2400,
                                  28800) <= 1e12
  assert public.noise_multiplier == 0.0 and public.clip_norm is None
  assert private.key == '1e12' and public.key == 'inf'


def test_make_budgets_takes_per_budget_clip_norms():
  budgets = _budgets([1e9, 1e12], clip_norm={'1e9': 0.5, '1e12': 2.0})
  assert [b.clip_norm for b in budgets] == [0.5, 2.0]
  with pytest.raises(ValueError, match='epsilon'):
    _budgets([-1.0])

  config = recipes.load('demo')
  config.dp.clip_norms = {'1e9': 0.3}
  from_recipe = runner.budgets_from_config(config, [1e9, 1e12], 2400)
  assert [b.clip_norm for b in from_recipe] == [0.3, config.dp.clip_norm]
  overridden = runner.budgets_from_config(config, [1e9], 2400, clip_norm=5.0)
  assert overridden[0].clip_norm == 5.0


@pytest.mark.parametrize('dataset', ['demo', 'ham10000', 'msd_liver'])
@pytest.mark.parametrize('batch_size', [1, 16, 256])
@pytest.mark.parametrize('epsilon', [8.0, 1e12, math.inf])
def test_budgets_match_a_training_runs_plan(dataset, batch_size, epsilon):
  # The attack's calibration is the training app's: same z, q, T and C for
  # the same N, B, epochs and budget (budget rules included).
  n = 300
  config = recipes.load(dataset)
  config.epochs = 3
  budget, = runner.budgets_from_config(config, [epsilon], n,
                                       batch_size=batch_size)
  config.dp.epsilon, config.batch_size = epsilon, batch_size
  plan = fit.plan_privacy(config, n)
  assert budget.noise_multiplier == plan.noise_multiplier
  assert budget.sampling_rate == plan.sampling_rate == batch_size / n
  assert budget.steps == plan.steps
  assert budget.clip_norm == plan.clip_norm
  with pytest.raises(ValueError, match=r'batch_size must lie in \[1, 300\]'):
    runner.budgets_from_config(config, [epsilon], n, batch_size=n + 1)


def test_budget_from_run_takes_the_runs_noise():
  results = run_fixtures.results(
      epsilon_target=8.0, delta=1e-5, noise_multiplier=0.9, clip_norm=2.0,
      sampling_rate=0.1, steps=30, num_train_examples=100)
  budget = runner.budget_from_run(results, '/runs/a')
  assert budget == runner.Budget(8.0, 1e-5, 0.9, 2.0, 0.1, 30, '/runs/a')
  public = runner.budget_from_run(
      dataclasses.replace(results, epsilon_target=math.inf,
                          noise_multiplier=0.0, clip_norm=None), '/runs/b')
  assert not public.private and public.clip_norm is None
  with pytest.raises(ValueError,
                     match='/runs/a/results.json: the run is interrupted'):
    runner.budget_from_run(
        dataclasses.replace(results, status='interrupted'), '/runs/a')


def test_clip_example_bounds_the_whole_gradients_norm():
  grads = [tf.fill([100, 100], 1.0), tf.fill([10], 2.0)]
  norm = math.sqrt(100 * 100 + 10 * 4)
  budget = runner.Budget(8.0, 1e-5, 0.0, 0.5, 0.01, 10)
  # Only part of the gradient is kept; its scale follows the whole norm.
  clipped, = runner.clip_example(grads[1:], tf.constant(norm), budget)
  np.testing.assert_allclose(clipped.numpy(), 2.0 * 0.5 / norm, rtol=1e-5)
  small, = runner.clip_example(grads[1:], tf.constant(0.25), budget)
  np.testing.assert_array_equal(small.numpy(), grads[1].numpy())
  public = runner.Budget(math.inf, 1e-5, 0.0, None, 0.01, 10)
  same, = runner.clip_example(grads[1:], tf.constant(norm), public)
  np.testing.assert_array_equal(same.numpy(), grads[1].numpy())


def test_privatize_adds_noise_to_the_sum_then_divides_by_the_batch():
  generator = tf.random.Generator.from_seed(0)
  clipped_sum = [tf.fill([200, 200], 3.0)]
  noisy = runner.Budget(8.0, 1e-5, 4.0, 0.5, 0.01, 10)
  released, = runner.privatize(clipped_sum, noisy, generator, batch_size=4)
  # Mean 3 / 4, standard deviation z * C / B = 0.5 over 40,000 draws: the
  # sample std is within 5% with probability 1 - 1e-200 or so.
  assert released.numpy().mean() == pytest.approx(0.75, abs=0.02)
  assert released.numpy().std() == pytest.approx(4.0 * 0.5 / 4, rel=0.05)
  public = runner.Budget(math.inf, 1e-5, 0.0, None, 0.01, 10)
  mean, = runner.privatize(clipped_sum, public, generator, batch_size=4)
  np.testing.assert_array_equal(mean.numpy(), 0.75)


def _with_brightness(images, means):
  """Images shifted and scaled to the given mean brightness, in [0, 1]."""
  out = []
  for image, mean in zip(images, means):
    image = (image - image.mean()) * 0.3 + mean
    out.append(np.clip(image, 0, 1))
  return np.stack(out).astype(np.float32)


def test_batch_gradient_recovers_images_in_distinct_bins(real_images):
  # Ten Gaussian bins: thresholds at 0.18, 0.29, ..., 0.82. Mean brightness
  # 0.24, 0.53 and 0.76 falls between different adjacent thresholds, so
  # each image is isolated by a pair candidate 'bins i-(i+1)'.
  images = _with_brightness(real_images['fundus'][5:8], [0.24, 0.53, 0.76])
  model = imprint.imprint_model(_small_model(images.shape[1:]))
  result = runner.run_attack(model, images, np.array([0, 1, 0]), NON_PRIVATE,
                             batch_size=3)
  assert result.errors('inf').max() < 1e-3
  assert all(r.candidate.startswith('bins ') for r in result.records[:2])
  clip_only = runner.Budget(1e30, 8e-7, 0.0, 1e-3, 3 / 2400, 9600)
  clipped = runner.run_attack(model, images, np.array([0, 1, 0]),
                              [clip_only], batch_size=3)
  assert clipped.errors('1e30').max() < 1e-3
  assert clipped.summary()['1e30']['batch_size'] == 3


def test_batch_gradient_mixes_images_in_one_bin(real_images):
  # Two unrelated images of the same brightness activate the same bins:
  # every candidate mixes them, so at most one is recovered.
  images = _with_brightness(real_images['ct'][[0, 7]], [0.4, 0.4])
  model = imprint.imprint_model(_small_model(images.shape[1:]))
  single = runner.run_attack(model, images, None, NON_PRIVATE)
  assert single.errors('inf').max() < 1e-3
  batch = runner.run_attack(model, images, None, NON_PRIVATE, batch_size=2)
  assert batch.errors('inf').max() > 0.1
