"""Evaluation metrics: Matthews correlation coefficient and Dice.

Example:

  >>> round(mcc([0, 1, 1, 0], [0, 1, 0, 0]), 4)
  0.5774
"""

from __future__ import annotations

import numpy as np
from sklearn import metrics as sklearn_metrics


def mcc(y_true, y_pred, num_classes: int | None = None) -> float:
  """Matthews correlation coefficient, multi-class (scikit-learn's).

  Args:
    y_true: integer labels [N].
    y_pred: integer predictions [N].
    num_classes: unused (the coefficient does not depend on classes that
      neither the labels nor the predictions contain); kept so that callers
      may state it.

  Returns:
    MCC in [-1, 1]; 0.0 when it is undefined (a constant prediction or label).

  Raises:
    ValueError: labels and predictions of different shapes.
  """
  del num_classes
  y_true = np.asarray(y_true, np.int64).ravel()
  y_pred = np.asarray(y_pred, np.int64).ravel()
  if y_true.shape != y_pred.shape:
    raise ValueError(f'shape mismatch: {y_true.shape} vs {y_pred.shape}.')
  return float(sklearn_metrics.matthews_corrcoef(y_true, y_pred))


def dice_per_class(y_true, y_pred, num_classes: int) -> np.ndarray:
  """Dice of each class for each volume: [N, num_classes].

  Args:
    y_true: int label maps [N, *spatial].
    y_pred: int predicted maps [N, *spatial].
    num_classes: number of classes.

  Returns:
    2 |P & G| / (|P| + |G|) per volume and class; NaN where the class is in
    neither map (undefined, left out of averages).
  """
  y_true = np.asarray(y_true).reshape(len(y_true), -1)
  y_pred = np.asarray(y_pred).reshape(len(y_pred), -1)
  if y_true.shape != y_pred.shape:
    raise ValueError(f'shape mismatch: {y_true.shape} vs {y_pred.shape}.')
  out = np.full((len(y_true), num_classes), np.nan)
  for c in range(num_classes):
    truth, pred = y_true == c, y_pred == c
    total = truth.sum(1) + pred.sum(1)
    overlap = (truth & pred).sum(1)
    defined = total > 0
    out[defined, c] = 2.0 * overlap[defined] / total[defined]
  return out
