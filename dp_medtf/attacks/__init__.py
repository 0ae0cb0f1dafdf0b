"""The imprint reconstruction attack of a malicious server, under DP.

Example:

  >>> import math
  >>> from dp_medtf import attacks
  >>> model = tf.keras.Sequential([tf.keras.Input((16, 16, 1)),
  ...                              tf.keras.layers.Flatten(),
  ...                              tf.keras.layers.Dense(2)])
  >>> attacked = attacks.imprint_model(model, num_bins=10)
  >>> budgets = attacks.make_budgets([1e9, math.inf], delta=8e-7,
  ...                                num_train_examples=2400, epochs=12,
  ...                                clip_norm=1.0, batch_size=1)
  >>> images = np.random.default_rng(0).uniform(size=(4, 16, 16, 1))
  >>> labels = np.array([0, 1, 0, 1])
  >>> result = attacks.run_attack(attacked, images, labels, budgets)
  >>> [(key, s['num_images']) for key, s in result.summary().items()]
  [('1e9', 4), ('inf', 4)]

Names are imported from their submodules on first use, so that importing
dp_medtf.attacks.imprint (to load a saved model) does not load the rest.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    'data_thresholds': 'imprint',
    'find_imprint_block': 'imprint',
    'gaussian_thresholds': 'imprint',
    'imprint_model': 'imprint',
    'ImprintBlock': 'imprint',
    'Reconstruction': 'recovery',
    'recover': 'recovery',
    'AttackResult': 'runner',
    'Budget': 'runner',
    'attack': 'runner',
    'budget_from_run': 'runner',
    'budgets_from_config': 'runner',
    'clip_example': 'runner',
    'make_budgets': 'runner',
    'privatize': 'runner',
    'run_attack': 'runner',
    'best_match': 'scoring',
    'error_matrix': 'scoring',
    'is_near_empty': 'scoring',
    'Match': 'scoring',
    'reconstruction_error': 'scoring',
    'ssim': 'scoring',
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
  """Imports an exported name from its submodule on first use."""
  if name in _EXPORTS:
    value = getattr(importlib.import_module(f'{__name__}.{_EXPORTS[name]}'),
                    name)
    globals()[name] = value
    return value
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
