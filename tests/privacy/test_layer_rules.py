"""Per-layer rules: the ghost norm identity and the mixed choice."""

import numpy as np
import pytest

from dp_medtf.privacy import layer_rules
from tests.privacy.test_engines import assert_close


def test_ghost_norm_identity():
  rng = np.random.default_rng(0)
  for rows in (1, 6):
    left = rng.normal(size=(3, rows, 5)).astype(np.float32)
    right = rng.normal(size=(3, rows, 4)).astype(np.float32)
    explicit = np.einsum('btd,btp->bdp', left, right)
    assert_close(layer_rules.ghost_squared_norms(left, right),
                 (explicit ** 2).sum(axis=(1, 2)))


@pytest.mark.parametrize('rows,d,p,expected', [
    (64 * 64, 27, 64, False),      # ResNet-9's first conv at 64 x 64.
    (16 * 16, 2304, 256, False),   # Its block4: T (d + p) = 655K > d p.
    (8 * 8, 2304, 256, True),      # Its res2 convs: 164K < 590K.
    (1, 1024, 2, True),            # A dense head on one view.
])
def test_mixed_picks_the_cheaper(rows, d, p, expected):
  assert layer_rules.use_ghost('mixed', rows, d, p) == expected
  assert layer_rules.use_ghost('ghost', rows, d, p)
  assert not layer_rules.use_ghost('explicit', rows, d, p)
