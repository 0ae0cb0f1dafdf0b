"""MCC against scikit-learn's."""

import numpy as np
import pytest
from sklearn.metrics import matthews_corrcoef

from dp_medtf import metrics


@pytest.mark.parametrize('num_classes', [2, 3, 165])
@pytest.mark.parametrize('seed', [0, 1])
def test_mcc_matches_sklearn(num_classes, seed):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, num_classes, 500)
  noisy = np.where(rng.random(500) < 0.6, y, rng.integers(0, num_classes, 500))
  assert metrics.mcc(y, noisy, num_classes) == pytest.approx(
      matthews_corrcoef(y, noisy), abs=1e-12)


@pytest.mark.parametrize('pred', [np.zeros(6), np.ones(6)])
def test_mcc_of_a_constant_prediction_is_zero(pred):
  y = np.array([0, 1, 0, 1, 1, 0])
  assert metrics.mcc(y, pred) == 0.0 == matthews_corrcoef(y, pred)


def test_mcc_perfect_and_inverted():
  y = np.array([0, 1, 1, 0, 1])
  assert metrics.mcc(y, y) == pytest.approx(1.0)
  assert metrics.mcc(y, 1 - y) == pytest.approx(-1.0)


def test_mcc_shape_mismatch():
  with pytest.raises(ValueError, match='shape'):
    metrics.mcc([0, 1], [0, 1, 1])
