"""Noise calibration over every (q, T, epsilon) the recipes and attack reach.

Each result must spend at most its target (by spent_epsilon), and be close to
the smallest such noise multiplier: 1% less noise overspends, and either the
spend is within 1e-3 of the target or the spending curve jumps there (the KL
branch of the conversion), i.e. 1e-9 less noise already overspends.
"""

import itertools
import subprocess
import sys

import pytest

from dp_medtf.privacy import accounting

DELTA = 8e-7
# N = 2e6 and N = 1.08e6 (RadImageNet) at batch 1, HAM10000 at batch 1, a
# typical batch, HAM10000's batch 2048, full batch.
QS = [1 / 2e6, 1 / 1.08e6, 1 / 8112, 1e-2, 2048 / 8112, 1.0]
STEPS = [1, 1000, 10**6, 10**8]
EPSILONS = [0.1, 1.0, 8.0, 1e3, 1e9, 1e18]


def _check(epsilon, q, steps):
  z = accounting.calibrate_noise_multiplier(epsilon, DELTA, q, steps)
  spent = accounting.spent_epsilon(z, DELTA, q, steps)
  assert spent <= epsilon
  assert accounting.spent_epsilon(0.99 * z, DELTA, q, steps) > epsilon
  assert (spent >= epsilon * (1 - 1e-3) or accounting.spent_epsilon(
      z * (1 - 1e-9), DELTA, q, steps) > epsilon), (z, spent)
  return z


@pytest.mark.parametrize('epsilon', EPSILONS)
@pytest.mark.parametrize('steps', STEPS)
@pytest.mark.parametrize('q', QS)
def test_calibration_grid(q, steps, epsilon):
  _check(epsilon, q, steps)


@pytest.mark.slow
@pytest.mark.parametrize('epsilon', [0.1, 0.3, 2.0, 32.0, 1e2, 1e5, 1e7,
                                     1e12, 1e15, 1e18])
@pytest.mark.parametrize('q,steps', list(itertools.product(
    [1 / 2e6, 1e-5, 1e-4, 1e-3, 0.05, 0.5, 0.9],
    [2, 50, 3000, 10**5, 3 * 10**7])))
def test_calibration_grid_dense(q, steps, epsilon):
  _check(epsilon, q, steps)


# The attack's settings (batch 1, T = epochs * N) that used to fail: HAM10000
# at epsilon 1e9 ('math domain error'), RadImageNet at the paper's budgets
# ('Renyi divergence cannot be negative').
@pytest.mark.parametrize('n,epochs,epsilon', [
    (8112, 100, 1e9), (1_080_000, 50, 1.0), (1_080_000, 50, 8.0),
    (1_080_000, 50, 32.0), (1_080_000, 50, 1e9)])
def test_attack_settings_regression(n, epochs, epsilon):
  _check(epsilon, 1 / n, n * epochs)


def test_risk_cli_at_the_attack_setting():
  result = subprocess.run(
      [sys.executable, '-m', 'dp_medtf.risk', '--num_examples=8112',
       '--batch_size=1', '--epochs=100', '--delta=8e-7', '--epsilon=1e9'],
      capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  row = next(line for line in result.stdout.splitlines()
             if line.startswith('explicit')).split()
  z = accounting.calibrate_noise_multiplier(1e9, DELTA, 1 / 8112, 811_200)
  assert float(row[1]) == 1e9
  assert float(row[2]) == pytest.approx(z, rel=1e-3)  # Printed to 4 digits.
