"""launch/device_check.sh: flags, and a CPU run at tiny shapes."""

import json
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = REPO / 'launch' / 'device_check.sh'


def _bash(*args, timeout=60):
  return subprocess.run(['bash', str(SCRIPT), *args], capture_output=True,
                        text=True, timeout=timeout, check=False)


def test_syntax_and_help():
  assert subprocess.run(['bash', '-n', str(SCRIPT)],
                        check=False).returncode == 0
  proc = _bash('--help')
  assert proc.returncode == 0
  assert 'tensorflow[and-cuda]==2.15.1' in proc.stdout
  gpu_sh = (REPO / 'launch' / 'gpu.sh').read_text()
  assert "tf_package='tensorflow[and-cuda]==2.15.1'" in gpu_sh


@pytest.mark.parametrize('args, message', [
    (['--bogus'], 'unknown flag --bogus'),
    (['--venv'], '--venv needs a value'),
])
def test_bad_flags(args, message):
  proc = _bash(*args)
  assert proc.returncode == 2
  assert proc.stderr.strip() == f'device_check: {message}' + (
      '; see --help.' if 'unknown' in message else '.')


@pytest.mark.slow
def test_cpu_run_prints_one_json_object():
  proc = _bash('--no_install', f'--python={sys.executable}', '--tiny',
               timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert ('device_check: no GPU visible to TensorFlow; running on the CPU at '
          'small shapes.') in proc.stderr
  lines = proc.stdout.strip().splitlines()
  assert len(lines) == 1
  result = json.loads(lines[0])
  assert result['device'] == 'cpu'
  assert any('CPU' in d for d in result['devices'])
  assert set(result['bench']) == {'resnet9', 'unet3d'}
  for model in ('resnet9', 'unet3d'):
    for mode in ('no_xla', 'xla'):
      for variant in ('non_private', 'ghost_bk'):
        key = f'{model}/{variant}/{mode}'
        assert result['images_per_s'][key] > 0
        assert result['peak_rss_mb'][key] > 0
      assert result['ratio_to_non_private'][
          f'{model}/non_private/{mode}'] == 1.0
    assert result['xla_speedup'][f'{model}/ghost_bk'] > 0
    assert result['peak_device_mb'][f'{model}/ghost_bk'] is None
  assert result['demo_training']['status'] in ('finished', 'interrupted')
  assert result['demo_training']['steps'] >= 1
  assert 0 < result['wall_s'] < 600
