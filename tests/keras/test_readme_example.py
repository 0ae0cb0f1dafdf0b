"""The README's Keras example runs as printed and spends its budget."""

import os
import re
import subprocess
import sys

import pytest

README = os.path.join(os.path.dirname(__file__), '..', '..', 'README.md')


def _example() -> str:
  with open(README) as f:
    text = f.read()
  section = text.split('## Your own Keras model', 1)[1]
  return section.split('```python\n', 1)[1].split('```', 1)[0]


def test_the_example_is_short_and_uses_make_private():
  code = _example()
  assert 'make_private(model, config)' in code and '.fit(' in code
  assert len(code.strip().splitlines()) <= 25


def test_the_readme_example_runs_and_prints_its_epsilon(tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  proc = subprocess.run([sys.executable, '-c', _example()], cwd=tmp_path,
                        capture_output=True, text=True, timeout=600, env=env,
                        check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  spent = re.findall(r'epsilon spent: ([0-9.]+)', proc.stdout)
  assert len(spent) == 1
  # Calibrated to spend the target within the calibration's rtol (1e-3).
  assert 8.0 * (1 - 1e-3) <= float(spent[0]) <= 8.0
  assert 'val_accuracy' in proc.stdout and 'epsilon: ' in proc.stdout
