"""Keras-native DP training: `make_private(model, DPKerasConfig(...))`, then
`compile` and `fit`.

Example:

  >>> config = DPKerasConfig(epsilon=1.0, clipping_norm=1.0, batch_size=32,
  ...                        train_size=1000, epochs=1)
  >>> config.private
  True
"""

from dp_medtf.keras.config import DPKerasConfig
from dp_medtf.keras.private_model import make_private
from dp_medtf.keras.private_model import NonFiniteError
from dp_medtf.keras.private_model import per_view_loss
from dp_medtf.keras.private_model import PrivateModel
from dp_medtf.privacy.ledger import BudgetExceededError

__all__ = ['BudgetExceededError', 'DPKerasConfig', 'make_private',
           'NonFiniteError', 'per_view_loss', 'PrivateModel']
