"""MCC: the package's (scikit-learn's) against Gorodkin's R_K written out."""

import numpy as np
import pytest
from dp_medtf import metrics


def matthews_corrcoef(y_true, y_pred):
  """Gorodkin's multi-class R_K from the confusion matrix, 0 if undefined."""
  y_true = np.asarray(y_true, np.int64)
  y_pred = np.asarray(y_pred, np.int64)
  k = int(max(y_true.max(), y_pred.max())) + 1
  confusion = np.zeros((k, k))
  np.add.at(confusion, (y_true, y_pred), 1)
  n, correct = confusion.sum(), np.trace(confusion)
  t, p = confusion.sum(axis=1), confusion.sum(axis=0)
  denom = np.sqrt(n * n - p @ p) * np.sqrt(n * n - t @ t)
  return float((correct * n - t @ p) / denom) if denom > 0 else 0.0


def test_a_hand_worked_binary_case():
  # TP 1, TN 2, FP 0, FN 1: (1*2 - 0*1) / sqrt(1 * 2 * 3 * 2) = 0.5774.
  assert metrics.mcc([0, 1, 1, 0], [0, 1, 0, 0]) == pytest.approx(
      2 / np.sqrt(12))


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
