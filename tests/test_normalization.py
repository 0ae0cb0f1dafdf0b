"""Private runs standardise inputs with fixed constants, never the data's.

Statistics of the private training set computed outside DP are a release the
accountant does not see: with per-channel statistics fitted on N examples,
replacing one example moves every other example's input, hence other
batches' clipped sums, by an amount no clip norm bounds.
"""

import numpy as np
import pytest

from dp_medtf import fit
from dp_medtf import recipes
from dp_medtf.data import demo
from dp_medtf.data import pipeline


def _split(num, seed, outlier=False):
  split = demo.make_lesions(num, 8, np.random.default_rng(seed))
  images = split.images.copy()
  if outlier:
    images[0] = 1.0  # A saturated image replaces example 0.
  return demo.ArraySplit(images, split.labels)


@pytest.mark.parametrize('dataset', recipes.DATASETS)
def test_private_runs_ignore_the_training_data(dataset):
  config = recipes.load(dataset)
  a = fit.normalizer_for(config, _split(106, 0), private=True)
  b = fit.normalizer_for(config, _split(106, 0, outlier=True), private=True)
  np.testing.assert_array_equal(a.mean, b.mean)
  np.testing.assert_array_equal(a.std, b.std)
  np.testing.assert_allclose(a.mean, np.broadcast_to(
      config.normalization.mean, a.mean.shape), rtol=1e-6)
  np.testing.assert_allclose(a.std, np.broadcast_to(
      config.normalization.std, a.std.shape), rtol=1e-6)


def test_fitting_on_data_is_refused_for_private_runs_only():
  config = recipes.load('demo')
  with config.unlocked():
    config.normalization.fit_on_data = True
  with pytest.raises(ValueError, match='normalization.fit_on_data'):
    fit.normalizer_for(config, _split(50, 0), private=True)
  # The non-private baseline may fit: then one example does move the
  # statistics, which is why private runs must not.
  a = fit.normalizer_for(config, _split(50, 0), private=False)
  b = fit.normalizer_for(config, _split(50, 0, outlier=True), private=False)
  assert np.max(np.abs(a.mean - b.mean)) > 1e-3


def test_demo_constants_match_fresh_public_draws():
  # The demo's constants were measured on images from the public generator
  # (other seeds than the data's). A fresh draw of 2,000 images agrees to
  # within a few standard errors of a per-image mean (std over images of
  # each channel's mean is below 0.1, so the error of 2,000 is below 0.003).
  config = recipes.load('demo')
  images = demo.make_lesions(2000, 32, np.random.default_rng(99)).images
  np.testing.assert_allclose(images.mean((0, 1, 2)),
                             config.normalization.mean, atol=0.01)
  np.testing.assert_allclose(images.std((0, 1, 2)),
                             config.normalization.std, atol=0.01)


@pytest.mark.parametrize('mean,std,match', [
    ([0.5, 0.5], [0.2], 'same length'),
    ([np.nan], [0.2], 'mean'),
    ([0.5], [0.0], 'std'),
    ([0.5], [np.inf], 'std'),
])
def test_bad_constants_name_the_field(mean, std, match):
  with pytest.raises(ValueError, match=match):
    pipeline.Normalizer.fixed(mean, std)
