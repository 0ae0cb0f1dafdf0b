"""Shared test set-up: quiet TensorFlow, deterministic seeds."""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')


def pytest_configure(config):
  config.addinivalue_line('markers', 'slow: long-running (deselect with '
                          '-m "not slow")')
