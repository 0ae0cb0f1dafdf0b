"""The demo pipeline end to end: sweep -> attack -> report."""

import csv
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_demo_pipeline_writes_table3(tmp_path):
  sweep = tmp_path / 'sweep'
  proc = subprocess.run(
      ['bash', os.path.join(HERE, 'launch', 'demo_pipeline.sh'),
       f'--sweep_dir={sweep}', '--epsilons=8,inf', '--seeds=10,11',
       '--num_images=4', '--', '--config.epochs=1',
       '--config.data.image_size=16', '--config.input_shape=(16,16,3)',
       '--config.model.width=4'],
      capture_output=True, text=True, timeout=1200, check=False,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHON=sys.executable))
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(sweep / 'report' / 'table3.csv') as f:
    rows = list(csv.DictReader(f))
  assert [(r['dataset'], r['epsilon'], r['seeds']) for r in rows] == [
      ('demo', '8', '2'), ('demo', 'inf', '2')]
  dp, non_private = rows
  assert 0.0 <= float(dp['p (mcc)']) <= 1.0
  assert non_private['p (mcc)'] == '–'
  assert 0.0 <= float(dp['relaxed ReRo (%)']) <= float(
      dp['worst-case ReRo (%)']) <= 100.0
  # Without DP the imprint attack recovers every image.
  assert float(non_private['attack error < 0.1 (%)']) == pytest.approx(100.0)
  assert os.path.getsize(sweep / 'report' / 'performance_vs_risk.png') > 10_000
