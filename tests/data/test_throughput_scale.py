"""The throughput app's scale mode: its corpus, and a run at a tiny scale."""

import json
import os
import subprocess
import sys

import pytest

from dp_medtf import recipes
from dp_medtf.data import radimagenet
from dp_medtf.data import input_rates


def test_corpus_has_radimagenet_layout_and_splits(tmp_path):
  data_dir = input_rates.generate_corpus(str(tmp_path), 120)
  config = input_rates.scale_config(recipes.load('radimagenet'))
  index = radimagenet.read_index(config, data_dir)
  assert [len(index.splits[s]) for s in ('train', 'validation', 'test')] == [
      96, 12, 12]
  assert len(index.class_names) == len(input_rates.SCALE_CLASSES)
  assert index.modalities == ('CT', 'MR', 'US')
  # Ultrasound sits one folder less deep, as in RadImageNet.
  assert os.path.isdir(os.path.join(data_dir, 'radiology_ai', 'US',
                                    'gallstone'))
  pngs = {open(p, 'rb').read() for p in index.splits['train'].paths}
  assert 1 < len(pngs) <= input_rates.SCALE_DISTINCT
  # A finished corpus is reused, not written again.
  before = os.path.getmtime(os.path.join(data_dir, 'RadiologyAI_train.csv'))
  input_rates.generate_corpus(str(tmp_path), 120)
  assert os.path.getmtime(
      os.path.join(data_dir, 'RadiologyAI_train.csv')) == before


@pytest.mark.slow
def test_scale_mode_reports_both_sources(tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  proc = subprocess.run(
      [sys.executable, '-m', 'dp_medtf.data.throughput',
       '--dataset=radimagenet', '--scale=240', f'--scale_dir={tmp_path}',
       '--config.batch_size=48', '--config.physical_batch_size=16',
       '--config.model.width=4', '--scale_batches=2', '--scale_step_chunk=2',
       '--step_repeats=1'],
      capture_output=True, text=True, timeout=600, env=env, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result['scale'] == 240
  for source in ('raw', 'records'):
    r = result[source]
    assert r['num_train'] == 192
    assert r['examples'] > 0 and r['examples_per_s'] > 0
    assert r['first_chunk_s'] > 0 and r['peak_rss_mb'] > 0
    assert r['reader_examples_per_s'] > 0
    assert r['first_batch_examples_per_s'] > 0
  assert result['step']['examples_per_s'] > 0 and result['step']['chunk'] == 2
  assert 'records / raw:' in proc.stdout
  assert os.path.exists(tmp_path / 'prepared' / 'prepared.json')
