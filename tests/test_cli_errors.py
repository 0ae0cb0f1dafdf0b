"""Every command-line program answers a bad input with one line, at once.

Each bad input runs the program in a subprocess (with the package's own
TensorFlow log level, as a user gets it) and checks the exit status, that
stderr is exactly one line `error: ...` naming the flag, and that nothing
ran: the errors come before any training, attack or measurement.
"""

import os
import subprocess
import sys

from absl import app
import pytest

from dp_medtf import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = ['-m', 'dp_medtf.train']
ATTACK = ['-m', 'dp_medtf.attack', '--num_images=2']
REPORT = ['-m', 'dp_medtf.report']
RISK = ['-m', 'dp_medtf.risk', '--dataset=demo', '--epsilon=8']
SWEEP = ['-m', 'dp_medtf.sweep', '--epsilons=8', '--seeds=1']
BENCH = ['-m', 'dp_medtf.bench']
THROUGHPUT = ['-m', 'dp_medtf.data.throughput']


def _run(args, cwd, timeout=120):
  env = dict(os.environ)
  env.pop('TF_CPP_MIN_LOG_LEVEL', None)  # The package's default applies.
  return subprocess.run([sys.executable, *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=timeout,
                        check=False)


def _assert_one_line(proc, named, code=cli.USAGE_EXIT):
  lines = proc.stderr.strip().splitlines()
  assert proc.returncode == code, proc.stderr[-2000:]
  assert len(lines) == 1, proc.stderr[-2000:]
  assert lines[0].startswith('error: ') and named in lines[0], lines[0]


@pytest.fixture(name='places')
def fixture_places(tmp_path):
  """Output locations that cannot be used, by kind."""
  a_file = tmp_path / 'a_file'
  a_file.write_text('not a folder')
  if os.geteuid() == 0:
    unwritable = '/sys/dp_medtf_test_out'  # Even root cannot write there.
  else:
    read_only = tmp_path / 'read_only'
    read_only.mkdir()
    read_only.chmod(0o555)
    unwritable = str(read_only / 'out')
  try:
    os.mkdir(unwritable)
  except OSError:
    pass
  else:
    os.rmdir(unwritable)
    pytest.skip(f'{unwritable} is writable here')
  return {'file': str(a_file), 'under_file': str(a_file / 'out'),
          'unwritable': unwritable, 'folder': str(tmp_path)}


# (name, program, flag, extra flags, location kinds); train, sweep and risk
# answer in a second, the others load TensorFlow first: they try fewer kinds.
_OUTPUTS = [
    ('train', TRAIN, 'workdir', [], ('file', 'under_file', 'unwritable')),
    ('sweep', SWEEP, 'sweep_dir', [], ('file', 'under_file', 'unwritable')),
    ('attack', ATTACK, 'workdir', [], ('file', 'unwritable')),
    ('report', REPORT, 'output_dir', ['--sweep_dir={folder}'],
     ('file', 'unwritable')),
    ('risk', RISK, 'output', [], ('folder', 'under_file', 'unwritable')),
    ('risk', RISK, 'plot', [], ('under_file',)),
]
_PROGRAMS = {'train': TRAIN, 'attack': ATTACK, 'report': REPORT, 'risk': RISK,
             'sweep': SWEEP, 'bench': BENCH, 'throughput': THROUGHPUT}


@pytest.mark.parametrize('program,flag,extra,kind', [
    pytest.param(program, flag, extra, kind, id=f'{name}-{flag}-{kind}')
    for name, program, flag, extra, kinds in _OUTPUTS for kind in kinds])
def test_bad_output_location_is_one_line(program, flag, extra, kind, places,
                                         tmp_path):
  path = places[kind]
  if flag in ('output', 'plot') and kind == 'unwritable':
    path += '.json'
  args = [*program, *(e.format(**places) for e in extra), f'--{flag}={path}']
  proc = _run(args, cwd=tmp_path)
  _assert_one_line(proc, f'--{flag}=')
  assert 'cuDNN factory' not in proc.stderr
  assert os.path.isfile(places['file']) and not os.path.exists(
      places['under_file'])


@pytest.mark.parametrize('args,named', [
    pytest.param(TRAIN + ['--config=missing_recipe.py'], '--config=',
                 id='train-missing-config'),
    pytest.param(TRAIN + ['--config=missing_recipe.py', '--config.epochs=2'],
                 '--config=', id='train-missing-config-override'),
    pytest.param(TRAIN + ['--config.no_such_field=1'],
                 '--config.no_such_field', id='train-unknown-field'),
    pytest.param(TRAIN + ['--epsilon=-1'], '--epsilon', id='train-epsilon'),
    pytest.param(TRAIN + ['--dataset=ham10000'], '--data_dir',
                 id='train-no-data-dir'),
    pytest.param(TRAIN + ['--epsilo=8'], '--epsilon', id='train-typo'),
    pytest.param(ATTACK + ['--dataset=ham10000', '--workdir=out'],
                 '--data_dir', id='attack-no-data-dir'),
    pytest.param(ATTACK + ['--delta=2', '--workdir=out'], '--delta',
                 id='attack-delta'),
    pytest.param(ATTACK, '--workdir', id='attack-no-workdir'),
    pytest.param(REPORT + ['--sweep_dir=missing'], '--sweep_dir',
                 id='report-missing-sweep'),
    pytest.param(BENCH + ['--input_shape=a,b'], '--input_shape',
                 id='bench-shape'),
    pytest.param(THROUGHPUT + ['--dataset=ham10000'], '--data_dir',
                 id='throughput-no-data-dir'),
])
def test_bad_input_is_one_line(args, named, tmp_path):
  proc = _run(args, cwd=tmp_path)
  _assert_one_line(proc, named)
  assert 'Usage:' not in proc.stdout + proc.stderr  # No docstring dump.
  assert 'cuDNN factory' not in proc.stderr
  assert os.listdir(tmp_path) == []  # Nothing was written.


def test_bench_unknown_model_starts_no_process(tmp_path):
  proc = _run(BENCH + ['--model=foo'], cwd=tmp_path, timeout=60)
  _assert_one_line(proc, '--model=foo')
  assert proc.stdout == ''  # No (all-null) report: no variant ran.


def test_failed_sweep_run_prints_its_error_line(tmp_path):
  proc = _run(SWEEP + [f'--sweep_dir={tmp_path / "sweep"}',
                       '--extra_flags=--config.no_such_field=1'],
              cwd=tmp_path)
  assert proc.returncode == 1, proc.stderr[-2000:]
  lines = proc.stdout.splitlines()
  failed = [i for i, line in enumerate(lines) if 'failed (exit 2' in line]
  assert failed, proc.stdout
  assert ('error: --config.no_such_field: the recipe has no such field.'
          in lines[failed[0] + 1]), proc.stdout


@pytest.mark.parametrize('name', ['attack', 'risk', 'sweep', 'train'])
def test_helpshort_exits_zero(name, tmp_path):
  program = _PROGRAMS[name]
  proc = _run([program[0], program[1], '--helpshort'], cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stderr.strip() == ''


@pytest.mark.parametrize('kind', ['file', 'under_file', 'unwritable'])
def test_check_output_dir_rejects(kind, places):
  with pytest.raises(app.UsageError, match='^--workdir='):
    cli.check_output_dir('workdir', places[kind])


@pytest.mark.parametrize('kind', ['folder', 'under_file', 'unwritable'])
def test_check_output_file_rejects(kind, places):
  path = places[kind] + ('.json' if kind == 'unwritable' else '')
  with pytest.raises(app.UsageError, match='^--output='):
    cli.check_output_file('output', path)


def test_output_checks_accept_new_and_existing_paths_and_create_nothing(
    tmp_path):
  cli.check_output_dir('workdir', str(tmp_path))
  cli.check_output_dir('workdir', str(tmp_path / 'new' / 'deeper'))
  cli.check_output_dir('workdir', 'gs://bucket/run')
  (tmp_path / 'old.json').write_text('{}')
  cli.check_output_file('output', str(tmp_path / 'old.json'))
  cli.check_output_file('output', str(tmp_path / 'new' / 'risk.json'))
  assert sorted(os.listdir(tmp_path)) == ['old.json']
