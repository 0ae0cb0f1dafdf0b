"""The shell launchers and launch/flags.sh: syntax, --help, dry runs, errors."""

import os
import pathlib
import shlex
import stat
import subprocess

import pytest

from dp_medtf import sweeps

REPO = pathlib.Path(__file__).resolve().parents[2]
CLOUD_TPU = REPO / 'launch' / 'cloud_tpu.sh'
GPU = REPO / 'launch' / 'gpu.sh'
DEMO_PIPELINE = REPO / 'launch' / 'demo_pipeline.sh'
DEVICE_CHECK = REPO / 'launch' / 'device_check.sh'
FLAGS_LIB = REPO / 'launch' / 'flags.sh'
TPU_VM = ['--name=dp-tpu', '--zone=us-central1-a']
# A train flag that a word-splitting shell would break into three.
SPACED = '--config.input_shape=(64, 64, 3)'


def _bash(script, *args, env=None, cwd=None):
  return subprocess.run(['bash', str(script), *args], capture_output=True,
                        text=True, timeout=60, env=env, cwd=cwd, check=False)


@pytest.fixture
def no_cloud(tmp_path):
  """An environment whose gcloud and gsutil fail loudly if ever called."""
  bin_dir = tmp_path / 'guard_bin'
  bin_dir.mkdir()
  for name in ['gcloud', 'gsutil']:
    path = bin_dir / name
    path.write_text('#!/bin/sh\necho "$0 called" >&2\nexit 99\n')
    path.chmod(0o755)
  return dict(os.environ, PATH=f'{bin_dir}:{os.environ["PATH"]}')


def _commands(stdout):
  """The dry-run's command lines, without the '# step' headers."""
  return [line for line in stdout.splitlines() if not line.startswith('#')]


def _stub(folder, name):
  """An executable that appends its arguments, one per line, to NAME.args."""
  path = folder / name
  path.write_text('#!/usr/bin/env bash\n'
                  f'printf "%s\\n" "$@" >> "{folder}/{name}.args"\n'
                  'echo ---- >> "' + f'{folder}/{name}.args"\n')
  path.chmod(path.stat().st_mode | stat.S_IEXEC)
  return path


@pytest.mark.parametrize(
    'script', [CLOUD_TPU, GPU, DEMO_PIPELINE, DEVICE_CHECK, FLAGS_LIB])
def test_syntax(script):
  proc = subprocess.run(['bash', '-n', str(script)], capture_output=True,
                        text=True, check=False)
  assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize('script,words', [
    (CLOUD_TPU, ['create', 'install', 'run', 'collect', 'delete', '--name',
                 '--zone', '--accelerator_type', '--runtime_version',
                 '--data_dir', '--workdir', '--dry_run',
                 'tpu-vm-tf-2.15.1-pjrt']),
    (GPU, ['setup', 'check', 'run', '--num_gpus', '--data_dir', '--workdir',
           '--dry_run', 'mirrored']),
])
def test_help(script, words):
  for flag in ['--help', '-h']:
    proc = _bash(script, flag)
    assert proc.returncode == 0
    assert proc.stdout.startswith('Usage: launch/')
    for word in words:
      assert word in proc.stdout


def test_cloud_tpu_dry_run_of_every_step(no_cloud):
  proc = _bash(CLOUD_TPU, 'all', 'delete', *TPU_VM, '--dataset=ham10000',
               '--data_dir=gs://bucket/ham10000', '--epsilon=8', '--seed=10',
               '--workdir=gs://bucket/runs/ham_eps8_seed10', '--dry_run',
               '--', '--config.epochs=1', env=no_cloud)
  assert proc.returncode == 0, proc.stderr
  headers = [l for l in proc.stdout.splitlines() if l.startswith('# ')]
  assert headers == ['# create', '# install', '# run', '# collect',
                     '# delete']
  tarball = os.path.join(os.environ.get('TMPDIR', '/tmp'),
                         'dp_medtf_src_dp-tpu.tgz')
  zone = '--zone=us-central1-a'
  assert _commands(proc.stdout) == [
      'gcloud compute tpus tpu-vm create dp-tpu --zone=us-central1-a '
      '--accelerator-type=v3-8 --version=tpu-vm-tf-2.15.1-pjrt',
      f"tar -czf {tarball} --exclude=.git '--exclude=.venv*' "
      "--exclude=__pycache__ '--exclude=*.egg-info' --exclude=workdir "
      f'--exclude=tpu_results -C {REPO} .',
      f'gcloud compute tpus tpu-vm scp {tarball} dp-tpu:dp_medtf_src.tgz '
      f'{zone} --worker=0',
      f'gcloud compute tpus tpu-vm ssh dp-tpu {zone} --worker=0 --command '
      "'rm -rf dp_medtf && mkdir -p dp_medtf && "
      "tar -xzf dp_medtf_src.tgz -C dp_medtf'",
      f'gcloud compute tpus tpu-vm ssh dp-tpu {zone} --worker=0 --command '
      "'python3 -m venv --system-site-packages dp_medtf_venv && "
      'dp_medtf_venv/bin/pip install --upgrade pip && '
      'dp_medtf_venv/bin/pip install --ignore-requires-python -e dp_medtf && '
      "dp_medtf_venv/bin/python -c '\\''import tensorflow as tf; "
      "print(\"tensorflow\", tf.__version__, tf.__file__)'\\'''",
      f'gcloud compute tpus tpu-vm ssh dp-tpu {zone} --worker=0 --command '
      "'dp_medtf_venv/bin/python -m dp_medtf.train --dataset=ham10000 "
      '--epsilon=8 --seed=10 --workdir=gs://bucket/runs/ham_eps8_seed10 '
      '--data_dir=gs://bucket/ham10000 --strategy=tpu --tpu=local '
      "--config.epochs=1'",
      'mkdir -p tpu_results',
      'gsutil -m cp -r gs://bucket/runs/ham_eps8_seed10 tpu_results/',
      f'gcloud compute tpus tpu-vm delete dp-tpu {zone} --quiet',
  ]


def test_cloud_tpu_dry_run_with_local_data_and_options(tmp_path, no_cloud):
  data = tmp_path / 'rin'
  data.mkdir()
  proc = _bash(CLOUD_TPU, 'create', 'install', 'run', 'collect', *TPU_VM,
               '--project', 'my-project', '--accelerator_type=v4-8',
               '--runtime_version=tpu-vm-tf-2.15.0-pjrt', '--spot',
               '--dataset=radimagenet', f'--data_dir={data}', '--epsilon=1e9',
               '--seed=101', '--tpu=dp-tpu', '--resume', '--detach',
               f'--local_dir={tmp_path}/out', '--dry_run', env=no_cloud)
  assert proc.returncode == 0, proc.stderr
  lines = _commands(proc.stdout)
  flags = '--zone=us-central1-a --project=my-project'
  assert lines[0] == (f'gcloud compute tpus tpu-vm create dp-tpu {flags} '
                      '--accelerator-type=v4-8 '
                      '--version=tpu-vm-tf-2.15.0-pjrt --spot')
  assert (f'gcloud compute tpus tpu-vm scp --recurse {data} '
          f'dp-tpu:dp_medtf_data/ {flags} --worker=0') in lines
  run_dir = 'dp_medtf_runs/radimagenet_eps1e9_seed101'
  assert (f"gcloud compute tpus tpu-vm ssh dp-tpu {flags} --worker=0 "
          "--command 'mkdir -p dp_medtf_runs && nohup "
          'dp_medtf_venv/bin/python -m dp_medtf.train --dataset=radimagenet '
          f'--epsilon=1e9 --seed=101 --workdir={run_dir} '
          '--data_dir=dp_medtf_data/rin --strategy=tpu --tpu=dp-tpu --resume '
          f"> {run_dir}.log 2>&1 &'") in lines
  assert lines[-1] == (f'gcloud compute tpus tpu-vm scp --recurse '
                       f'dp-tpu:{run_dir} {tmp_path}/out/ {flags} --worker=0')
  assert not (tmp_path / 'out').exists()  # Printed, not run.


def test_cloud_tpu_installs_a_wheel_from_a_bucket(no_cloud):
  wheel = 'gs://bucket/dist/dp_medtf-0.1.0-py3-none-any.whl'
  proc = _bash(CLOUD_TPU, 'install', *TPU_VM, f'--package={wheel}',
               '--dry_run', env=no_cloud)
  assert proc.returncode == 0, proc.stderr
  lines = _commands(proc.stdout)
  assert f"--command 'gsutil cp {wheel} .'" in lines[0]
  assert ('dp_medtf_venv/bin/pip install --ignore-requires-python '
          'dp_medtf-0.1.0-py3-none-any.whl &&') in lines[1]
  assert not any(line.startswith('tar ') for line in lines)


def test_cloud_tpu_runs_gcloud_with_the_printed_arguments(tmp_path):
  # A stand-in gcloud records the arguments it would have been given.
  _stub(tmp_path, 'gcloud')
  env = dict(os.environ, PATH=f'{tmp_path}:{os.environ["PATH"]}')
  proc = _bash(CLOUD_TPU, 'create', 'run', *TPU_VM, '--epsilon=inf',
               '--', "--config.note=it's", env=env)
  assert proc.returncode == 0, proc.stderr
  calls = (tmp_path / 'gcloud.args').read_text().split('----\n')
  create = calls[0].splitlines()
  run = calls[1].splitlines()
  assert create[:5] == ['compute', 'tpus', 'tpu-vm', 'create', 'dp-tpu']
  assert run[-2] == '--command'
  assert shlex.split(run[-1]) == [
      'dp_medtf_venv/bin/python', '-m', 'dp_medtf.train', '--dataset=demo',
      '--epsilon=inf', '--seed=10',
      '--workdir=dp_medtf_runs/demo_epsinf_seed10', '--strategy=tpu',
      '--tpu=local', "--config.note=it's"]
  assert '+ gcloud compute tpus tpu-vm create' in proc.stderr


@pytest.mark.parametrize('args,named', [
    (['run', '--zone=z'], '--name'),
    (['run', '--name=n'], '--zone'),
    ([*TPU_VM], 'step'),
    (['launch', *TPU_VM], "'launch'"),
    (['run', *TPU_VM, '--acelerator_type=v3-8'], '--acelerator_type'),
    (['run', *TPU_VM, '--dataset=msd_liver'], '--data_dir'),
    (['run', *TPU_VM, '--dataset=imagenet'], '--dataset'),
    (['run', *TPU_VM, '--epsilon=-1'], '--epsilon'),
    (['run', *TPU_VM, '--epsilon=0'], '--epsilon'),
    (['run', *TPU_VM, '--seed=ten'], '--seed'),
    (['run', *TPU_VM, '--zone'], '--zone needs a value'),
    (['run', *TPU_VM, '--zone', '--seed=1'], '--zone needs a value'),
])
def test_cloud_tpu_bad_arguments(args, named, no_cloud):
  proc = _bash(CLOUD_TPU, '--dry_run', *args, env=no_cloud)
  assert proc.returncode == 2
  assert named in proc.stderr
  assert not proc.stdout


def test_gpu_dry_run_of_every_step_on_several_gpus(tmp_path):
  venv = tmp_path / 'venv'
  proc = _bash(GPU, '--dataset=ham10000', '--data_dir=gs://bucket/ham10000',
               '--epsilon=32', '--seed=11', '--workdir=gs://bucket/runs/x',
               '--num_gpus=2', f'--venv={venv}', '--python=python3.11',
               '--resume', '--dry_run', '--', '--config.epochs=1')
  assert proc.returncode == 0, proc.stderr
  headers = [l for l in proc.stdout.splitlines() if l.startswith('# ')]
  assert headers == ['# setup', '# check', '# run']
  assert _commands(proc.stdout) == [
      f'python3.11 -m venv {venv}',
      f'{venv}/bin/python -m pip install --upgrade pip',
      f'{venv}/bin/python -m pip install -e {REPO}',
      f"{venv}/bin/python -m pip install 'tensorflow[and-cuda]==2.15.1'",
      'nvidia-smi',
      f"env CUDA_VISIBLE_DEVICES=0,1 {venv}/bin/python -c 'import sys, "
      'tensorflow as tf; n = len(tf.config.list_physical_devices("GPU")); '
      'print("TensorFlow", tf.__version__, "sees", n, "GPU(s)"); '
      'sys.exit(0 if n >= 2 else "TensorFlow sees fewer GPUs than '
      "--num_gpus=2\")'",
      f'env CUDA_VISIBLE_DEVICES=0,1 {venv}/bin/python -m dp_medtf.train '
      '--dataset=ham10000 --epsilon=32 --seed=11 '
      '--workdir=gs://bucket/runs/x --data_dir=gs://bucket/ham10000 '
      '--strategy=mirrored --resume --config.epochs=1',
  ]


def test_gpu_one_gpu_keeps_the_default_strategy_and_an_existing_venv(
    tmp_path):
  venv = tmp_path / 'venv'
  _stub(tmp_path, 'python')
  (venv / 'bin').mkdir(parents=True)
  (tmp_path / 'python').rename(venv / 'bin' / 'python')
  proc = _bash(GPU, 'setup', 'run', '--num_gpus=1', f'--venv={venv}',
               "--tf_package=", '--dry_run')
  assert proc.returncode == 0, proc.stderr
  assert _commands(proc.stdout) == [
      f'{venv}/bin/python -m pip install --upgrade pip',
      f'{venv}/bin/python -m pip install -e {REPO}',
      f'env CUDA_VISIBLE_DEVICES=0 {venv}/bin/python -m dp_medtf.train '
      '--dataset=demo --epsilon=8 --seed=10 '
      '--workdir=workdir/demo_eps8_seed10',
  ]
  # Without --num_gpus (and no GPU here) nothing is restricted.
  proc = _bash(GPU, 'run', f'--venv={venv}', '--strategy=one_device',
               '--dry_run')
  assert _commands(proc.stdout) == [
      f'{venv}/bin/python -m dp_medtf.train --dataset=demo --epsilon=8 '
      '--seed=10 --workdir=workdir/demo_eps8_seed10 --strategy=one_device']


def test_gpu_run_executes_the_printed_command(tmp_path):
  venv = tmp_path / 'venv'
  (venv / 'bin').mkdir(parents=True)
  _stub(venv / 'bin', 'python')
  proc = _bash(GPU, 'run', f'--venv={venv}', '--num_gpus=3', '--epsilon=1',
               '--', '--config.epochs=1')
  assert proc.returncode == 0, proc.stderr
  args = (venv / 'bin' / 'python.args').read_text().splitlines()
  assert args == ['-m', 'dp_medtf.train', '--dataset=demo', '--epsilon=1',
                  '--seed=10', '--workdir=workdir/demo_eps1_seed10',
                  '--strategy=mirrored', '--config.epochs=1', '----']
  assert '+ env CUDA_VISIBLE_DEVICES=0,1,2 ' in proc.stderr


@pytest.mark.parametrize('args,named', [
    (['--num_gpus=0'], '--num_gpus'),
    (['--num_gpus=two'], '--num_gpus'),
    (['--dataset=radimagenet'], '--data_dir'),
    (['--dataset=imagenet'], '--dataset'),
    (['--epsilon=abc'], '--epsilon'),
    (['--epsilon=0'], '--epsilon'),
    (['--epsilon=0.0e5'], '--epsilon'),
    (['--gpus=2'], '--gpus'),
    (['train'], "'train'"),
])
def test_gpu_bad_arguments(args, named):
  proc = _bash(GPU, '--dry_run', *args)
  assert proc.returncode == 2
  assert named in proc.stderr
  assert not proc.stdout


def test_gpu_run_without_a_venv_says_to_set_up(tmp_path):
  proc = _bash(GPU, 'run', f'--venv={tmp_path}/none')
  assert proc.returncode == 2
  assert 'gpu.sh setup' in proc.stderr


@pytest.mark.parametrize('script', [CLOUD_TPU, GPU, DEMO_PIPELINE,
                                    DEVICE_CHECK])
def test_every_launcher_prints_help_from_any_directory(script, tmp_path):
  # Without $PYTHON, which demo_pipeline.sh's help names (set -u).
  env = {k: v for k, v in os.environ.items() if k != 'PYTHON'}
  proc = _bash(script, '--help', env=env, cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.startswith(f'Usage: launch/{script.name}')
  assert not proc.stderr
  if script == DEMO_PIPELINE:
    assert 'The interpreter is $PYTHON (default: python).' in proc.stdout


def _guard_python(tmp_path):
  """An environment whose $PYTHON fails loudly if ever called."""
  guard = tmp_path / 'guard_python'
  guard.write_text('#!/bin/sh\necho "$0 called" >&2\nexit 99\n')
  guard.chmod(0o755)
  return dict(os.environ, PYTHON=str(guard))


@pytest.mark.parametrize('script,before,valued', [
    (GPU, ['run', '--dry_run'], '--seed'),
    (CLOUD_TPU, ['run', *TPU_VM, '--dry_run'], '--seed'),
    (DEMO_PIPELINE, [], '--seeds'),
])
@pytest.mark.parametrize('args,message', [
    (['--bogus=1'], 'unknown flag --bogus (see --help).'),
    (['--bogus'], 'unknown flag --bogus (see --help).'),
    (['--bogus', '1'], 'unknown flag --bogus (see --help).'),
    (['VALUED 1'], 'unknown flag VALUED 1 (see --help).'),
    (['VALUED'], 'VALUED needs a value (see --help).'),
    (['VALUED', '--epsilon=1'], 'VALUED needs a value (see --help).'),
])
def test_unknown_flag_and_missing_value_are_one_exact_line(
    script, before, valued, args, message, tmp_path, no_cloud):
  args = [a.replace('VALUED', valued) for a in args]
  env = dict(no_cloud, PYTHON=_guard_python(tmp_path)['PYTHON'])
  proc = _bash(script, *before, *args, env=env)
  assert proc.returncode == 2
  assert proc.stderr == f'{script.name}: {message.replace("VALUED", valued)}\n'
  assert not proc.stdout


@pytest.mark.parametrize('script,args', [
    (GPU, ['run', '--dry_run=yes']),
    (CLOUD_TPU, ['run', *TPU_VM, '--dry_run=yes']),
])
def test_a_switch_with_a_value_is_an_error(script, args, no_cloud):
  proc = _bash(script, *args, env=no_cloud)
  assert proc.returncode == 2
  assert proc.stderr == f'{script.name}: --dry_run takes no value (see --help).\n'
  assert not proc.stdout


def test_demo_pipeline_rejects_a_stray_argument(tmp_path):
  proc = _bash(DEMO_PIPELINE, 'sweeps/x', env=_guard_python(tmp_path))
  assert proc.returncode == 2
  assert proc.stderr == (
      "demo_pipeline.sh: unknown argument 'sweeps/x' (see --help).\n")


def test_parse_flags_sets_the_callers_variables(tmp_path):
  # Flags named like the parser's own variables would catch a local that
  # shadows the caller's variable.
  script = tmp_path / 'parse.sh'
  script.write_text(f"""set -euo pipefail
PROG=parse.sh
source {shlex.quote(str(FLAGS_LIB))}
usage() {{ echo usage; }}
name=default value=default arg=default on=false off=false
parse_flags 'name value
  arg' 'on off' "$@"
printf '%s\\n' "name=$name" "value=$value" "arg=$arg" "on=$on" "off=$off" \\
  "rest_given=$FLAG_REST_GIVEN" "${{FLAG_ARGS[@]/#/pos:}}" \\
  "${{FLAG_REST[@]/#/rest:}}"
""")
  proc = _bash(script, 'step', '--name', 'a b', '--value=x=y', '--on',
               '--arg', '', 'other', '--', '--off', 'c d')
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.splitlines() == [
      'name=a b', 'value=x=y', 'arg=', 'on=true', 'off=false',
      'rest_given=true', 'pos:step', 'pos:other', 'rest:--off', 'rest:c d']
  proc = _bash(script, '--off')
  assert proc.stdout.splitlines() == [
      'name=default', 'value=default', 'arg=default', 'on=false', 'off=true',
      'rest_given=false']
  proc = _bash(script, '-h', '--bogus')
  assert (proc.returncode, proc.stdout) == (0, 'usage\n')


def test_a_spaced_train_flag_is_one_argument_in_gpu_dry_run_and_run(
    tmp_path):
  venv = tmp_path / 'venv'
  (venv / 'bin').mkdir(parents=True)
  _stub(venv / 'bin', 'python')
  train = [SPACED, "--config.note=it's"]
  proc = _bash(GPU, 'run', f'--venv={venv}', '--num_gpus=1', '--dry_run',
               '--', *train)
  assert proc.returncode == 0, proc.stderr
  [line] = _commands(proc.stdout)
  assert shlex.split(line)[-2:] == train
  proc = _bash(GPU, 'run', f'--venv={venv}', '--num_gpus=1', '--', *train)
  assert proc.returncode == 0, proc.stderr
  args = (venv / 'bin' / 'python.args').read_text().splitlines()
  assert args[-3:] == [*train, '----']


def test_a_spaced_train_flag_is_one_argument_on_the_tpu_vm(no_cloud):
  proc = _bash(CLOUD_TPU, 'run', *TPU_VM, '--dry_run', '--', SPACED,
               env=no_cloud)
  assert proc.returncode == 0, proc.stderr
  [line] = _commands(proc.stdout)
  remote = shlex.split(line)[-1]  # The --command that the VM's shell runs.
  assert shlex.split(remote)[-1] == SPACED


def test_a_spaced_train_flag_survives_sweep_to_gpu_sh(tmp_path):
  venv = tmp_path / 'venv'
  (venv / 'bin').mkdir(parents=True)
  _stub(venv / 'bin', 'python')
  spec = sweeps.make_spec(
      dataset='demo', epsilons='8', seeds='10', sweep_dir=str(tmp_path / 's'),
      launcher='gpu', launcher_flags=f'--venv={venv} --num_gpus=1',
      extra_flags=shlex.join([SPACED, '--config.epochs=1']))
  [run] = sweeps.plan_sweep(spec)
  proc = subprocess.run(run.command, capture_output=True, text=True,
                        timeout=60, check=False)
  assert proc.returncode == 0, proc.stderr
  args = (venv / 'bin' / 'python.args').read_text().splitlines()
  assert args[-3:] == [SPACED, '--config.epochs=1', '----']


@pytest.mark.parametrize('train,extra', [
    ([], ['--config.epochs=4']),  # The default.
    (['--'], []),
    (['--', SPACED, "--config.note=it's"], [SPACED, "--config.note=it's"]),
])
def test_demo_pipeline_passes_train_flags_whole(train, extra, tmp_path):
  python = _stub(tmp_path, 'python')
  sweep_dir = tmp_path / 'sweep'
  finished = sweep_dir / 'demo' / 'eps8_seed10'
  finished.mkdir(parents=True)
  (finished / 'results.json').write_text('{}')
  proc = _bash(DEMO_PIPELINE, f'--sweep_dir={sweep_dir}', '--epsilons=8',
               '--seeds', '10', '--num_images=2', *train,
               env=dict(os.environ, PYTHON=str(python)))
  assert proc.returncode == 0, proc.stderr
  sweep_call, attack_call, report_call = [
      call.splitlines() for call in
      (tmp_path / 'python.args').read_text().split('----\n')[:-1]]
  assert sweep_call[:2] == ['-m', 'dp_medtf.sweep']
  [extra_flags] = [a for a in sweep_call if a.startswith('--extra_flags=')]
  assert sweeps.parse_flag_list(extra_flags.split('=', 1)[1],
                               'extra_flags') == extra
  assert attack_call[:2] == ['-m', 'dp_medtf.attack']
  assert f'--run_dir={finished}' in attack_call
  workdir = f'--workdir={sweep_dir}/demo/attack'
  assert attack_call[attack_call.index(workdir) + 1:] == extra
  assert report_call[:2] == ['-m', 'dp_medtf.report']
