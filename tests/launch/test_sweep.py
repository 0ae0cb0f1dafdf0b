"""The sweep: exact commands, workdir layout, flag errors, sweep.json."""

import io
import json
import os
import pathlib
import shlex
import subprocess
import sys
import threading

import pytest

from dp_medtf import json_files
from dp_medtf import recipes
from dp_medtf import runs as runs_lib
from dp_medtf import sweeps
from tests import run_fixtures

REPO = pathlib.Path(__file__).resolve().parents[2]
# The recipes' sweeps: the paper's budgets (Table 3) and the authors' seeds.
PAPER_EPSILONS = {'demo': ['1', '8', '1e9', 'inf'],
                  'ham10000': ['1', '8', '20', '1e9', 'inf'],
                  'msd_liver': ['1', '8', '20', '1e9', 'inf'],
                  'radimagenet': ['1', '8', '32', '1e12', 'inf']}
PAPER_SEEDS = [10, 11, 100, 101, 110]


def _cli(*flags, timeout=120):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  return subprocess.run([sys.executable, '-m', 'dp_medtf.sweep', *flags],
                        capture_output=True, text=True, timeout=timeout,
                        env=env, check=False)


def _spec(sweep_dir, **kwargs):
  args = dict(dataset='demo', epsilons='8,inf', seeds='10,11',
              sweep_dir=str(sweep_dir))
  args.update(kwargs)
  return sweeps.make_spec(**args)


def _read_json(path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  with tf.io.gfile.GFile(str(path)) as f:
    return json.load(f)


def _flag_value(command, name):
  prefix = f'--{name}='
  return next(a[len(prefix):] for a in command if a.startswith(prefix))


def _fake_runner(fail=(), raise_for=(), write_results=True, calls=None,
                 interrupt=()):
  """A runner that 'trains' by writing results.json, failing some runs.

  Args:
    fail: (epsilon, seed) pairs that exit 1 after logging an error.
    raise_for: (epsilon, seed) pairs whose launch raises.
    write_results: whether successful runs write results.json.
    interrupt: (epsilon, seed) pairs that exit 0 with an interrupted run's
      results.json (stop_after_steps).
    calls: a list that collects each (epsilon, seed) launched.

  Returns:
    The runner.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  def runner(command, log_path):
    key = (_flag_value(command, 'epsilon'), int(_flag_value(command, 'seed')))
    if calls is not None:
      calls.append(key)
    if key in raise_for:
      raise OSError('launcher vanished')
    tf.io.gfile.makedirs(os.path.dirname(log_path))
    with tf.io.gfile.GFile(log_path, 'w') as f:
      f.write('step 1\nValueError: noise calibration failed\n'
              if key in fail else 'done\n')
    if key in fail:
      return 1
    if write_results:
      run_fixtures.write_run(
          _flag_value(command, 'workdir'), epsilon_target=float(key[0]),
          epsilon_spent=float(key[0]), seed=key[1],
          **(dict(status=runs_lib.INTERRUPTED, metrics=None)
             if key in interrupt else dict(metrics={'mcc': 0.5})))
    return 0

  return runner


def test_dry_run_prints_the_exact_paper_sweep_commands(tmp_path):
  proc = _cli('--dataset=demo', f'--sweep_dir={tmp_path}', '--dry_run',
              '--extra_flags=--config.epochs=1')
  assert proc.returncode == 0, proc.stderr
  # The demo has no baseline recipe: its inf runs are its own recipe.
  expected = [
      f'{sys.executable} -m dp_medtf.train --dataset=demo --epsilon={e} '
      f'--seed={s} --workdir={tmp_path}/demo/eps{e}_seed{s} --config.epochs=1'
      for e in PAPER_EPSILONS['demo'] for s in PAPER_SEEDS]
  assert proc.stdout.splitlines() == expected
  assert not os.listdir(tmp_path)  # A dry run writes nothing.


@pytest.mark.parametrize('dataset', ['ham10000', 'msd_liver', 'radimagenet'])
def test_default_sweep_is_the_recipes_with_the_baseline_at_inf(dataset,
                                                               tmp_path):
  spec = _spec(tmp_path / 'sw', dataset=dataset, epsilons=None, seeds=None,
               data_dir=str(tmp_path), extra_flags='--config.epochs=1')
  runs = sweeps.plan_sweep(spec)
  assert list(spec.epsilons) == PAPER_EPSILONS[dataset]
  assert [(r.epsilon, r.seed) for r in runs] == [
      (e, s) for e in PAPER_EPSILONS[dataset] for s in PAPER_SEEDS]
  for run in runs:
    private = run.epsilon != 'inf'
    assert run.recipe == (dataset if private else f'{dataset}_baseline')
    assert ('--baseline' not in run.command) == private
    assert run.command[-1] == '--config.epochs=1'
  # The baseline recipe is what train loads for --baseline.
  assert recipes.load(dataset, baseline=True).recipe == (
      f'{dataset}_baseline')
  # Given on the command line, --epsilons and --seeds replace the recipe's.
  spec = _spec(tmp_path / 'sw', dataset=dataset, epsilons='8', seeds=None,
               data_dir=str(tmp_path))
  assert spec.epsilons == ('8',) and list(spec.seeds) == PAPER_SEEDS


def test_a_recipe_file_in_extra_flags_is_not_switched_to_the_baseline(
    tmp_path):
  spec = _spec(tmp_path / 'sw', dataset='ham10000', epsilons='inf',
               seeds='10', data_dir=str(tmp_path),
               extra_flags='--config=my_recipe.py')
  [run] = sweeps.plan_sweep(spec)
  assert '--baseline' not in run.command and run.recipe == '--config'


def test_local_commands_carry_data_dir_strategy_resume_and_extra_flags(
    tmp_path):
  spec = _spec(tmp_path / 'sw', dataset='ham10000', epsilons='1e9',
               seeds='101', data_dir=str(tmp_path), strategy='mirrored',
               resume=True,
               extra_flags="--config.epochs=2 '--config.model.name=resnet9'")
  [run] = sweeps.plan_sweep(spec)
  workdir = f'{tmp_path}/sw/ham10000/eps1e9_seed101'
  assert run.workdir == workdir
  assert run.command == [
      sys.executable, '-m', 'dp_medtf.train', '--dataset=ham10000',
      '--epsilon=1e9', '--seed=101', f'--workdir={workdir}',
      f'--data_dir={tmp_path}', '--strategy=mirrored', '--resume',
      '--config.epochs=2', '--config.model.name=resnet9']
  assert run.log == f'{tmp_path}/sw/logs/ham10000/eps1e9_seed101.log'


def test_gpu_and_tpu_launchers_call_the_shell_scripts():
  gpu = _spec('gs://bucket/sw', launcher='gpu', epsilons='8', seeds='10',
              launcher_flags='--num_gpus=4',
              extra_flags='--config.epochs=1')
  tpu = _spec('gs://bucket/sw/', launcher='tpu', epsilons='inf', seeds='110',
              dataset='msd_liver', data_dir='gs://bucket/msd',
              launcher_flags='--name=dp-tpu --zone=us-central1-a',
              resume=True)
  [gpu_run] = sweeps.plan_sweep(gpu)
  [tpu_run] = sweeps.plan_sweep(tpu)
  assert gpu_run.command == [
      'bash', str(REPO / 'launch' / 'gpu.sh'), 'run', '--dataset=demo',
      '--epsilon=8', '--seed=10', '--workdir=gs://bucket/sw/demo/eps8_seed10',
      '--num_gpus=4', '--', '--config.epochs=1']
  assert tpu_run.command == [
      'bash', str(REPO / 'launch' / 'cloud_tpu.sh'), 'run',
      '--dataset=msd_liver', '--epsilon=inf', '--seed=110',
      '--workdir=gs://bucket/sw/msd_liver/epsinf_seed110',
      '--data_dir=gs://bucket/msd', '--resume', '--name=dp-tpu',
      '--zone=us-central1-a', '--', '--baseline']


def test_shell_launchers_accept_the_commands_the_sweep_builds():
  gpu = _spec('gs://bucket/sw', launcher='gpu', epsilons='8', seeds='10',
              launcher_flags='--num_gpus=2',
              extra_flags='--config.epochs=1')
  tpu = _spec('gs://bucket/sw', launcher='tpu', epsilons='1e9', seeds='11',
              launcher_flags='--name=dp-tpu --zone=us-central1-a')
  baseline = _spec('gs://bucket/sw', launcher='gpu', epsilons='inf',
                   seeds='10', dataset='msd_liver', data_dir='gs://b/msd',
                   launcher_flags='--num_gpus=1')
  for spec, needle in [
      (baseline, '-m dp_medtf.train --dataset=msd_liver --epsilon=inf '
                 '--seed=10 --workdir=gs://bucket/sw/msd_liver/epsinf_seed10 '
                 '--data_dir=gs://b/msd --baseline'),
      (gpu, '-m dp_medtf.train --dataset=demo --epsilon=8 --seed=10 '
            '--workdir=gs://bucket/sw/demo/eps8_seed10 --strategy=mirrored '
            '--config.epochs=1'),
      (tpu, '-m dp_medtf.train --dataset=demo --epsilon=1e9 --seed=11 '
            '--workdir=gs://bucket/sw/demo/eps1e9_seed11 --strategy=tpu '
            '--tpu=local')]:
    [run] = sweeps.plan_sweep(spec)
    command = list(run.command)
    command.insert(3, '--dry_run')  # After `bash SCRIPT run`.
    proc = subprocess.run(command, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert needle in proc.stdout


@pytest.mark.parametrize('text,tags', [
    ('1,8,32,1e9,inf', ['1', '8', '32', '1e9', 'inf']),
    (' 8.0 , 1000000000, 1e+18, Infinity', ['8', '1e9', '1e18', 'inf']),
    ('0.5,123456789,1.5e9', ['0.5', '123456789', '1.5e9']),
])
def test_budgets_are_spelled_once_in_commands_and_folders(text, tags,
                                                          tmp_path):
  spec = _spec(tmp_path, epsilons=text, seeds='10')
  assert spec.epsilons == tuple(tags)
  runs = sweeps.plan_sweep(spec)
  assert [_flag_value(r.command, 'epsilon') for r in runs] == tags
  assert [os.path.basename(r.workdir) for r in runs] == [
      f'eps{tag}_seed10' for tag in tags]


def test_workdir_layout(tmp_path):
  assert (runs_lib.sweep_run_dir('gs://b/sweeps/', 'radimagenet', 32, 100)
          == 'gs://b/sweeps/radimagenet/eps32_seed100')
  spec = _spec(tmp_path, epsilons='1,inf', seeds='10,100')
  runs = sweeps.plan_sweep(spec)
  assert [(r.epsilon, r.seed) for r in runs] == [
      ('1', 10), ('1', 100), ('inf', 10), ('inf', 100)]
  assert [os.path.relpath(r.workdir, tmp_path) for r in runs] == [
      'demo/eps1_seed10', 'demo/eps1_seed100', 'demo/epsinf_seed10',
      'demo/epsinf_seed100']
  assert len({r.log for r in runs}) == 4


@pytest.mark.parametrize('flags,named', [
    (['--epsilons='], '--epsilons'),
    (['--epsilons=1,,8'], '--epsilons'),
    (['--epsilons=1,-8'], '--epsilons'),
    (['--epsilons=0'], '--epsilons'),
    (['--epsilons=nan'], '--epsilons'),
    (['--epsilons=eight'], '--epsilons'),
    (['--epsilons=8,8.0'], '--epsilons'),
    (['--seeds='], '--seeds'),
    (['--seeds=1.5'], '--seeds'),
    (['--seeds=-3'], '--seeds'),
    (['--launcher=slurm'], '--launcher'),
    (['--dataset=imagenet'], '--dataset'),
    (['--dataset=ham10000'], '--data_dir'),
    (['--max_parallel=0'], '--max_parallel'),
    (['--extra_flags=--epsilon=3'], '--extra_flags'),
    (['--extra_flags=--baseline'], '--extra_flags'),
    (['--dataset=demo', '--epsilons=inf', '--extra_flags=--nobaseline'],
     '--extra_flags'),
    (['--extra_flags=--config.epochs=1 "unbalanced'], '--extra_flags'),
    (['--strategy=mirrored', '--launcher=tpu'], '--strategy'),
    (['--launcher_flags=--num_gpus=2'], '--launcher_flags'),
])
def test_bad_flags_exit_non_zero_naming_the_flag(flags, named, tmp_path):
  proc = _cli(*flags, f'--sweep_dir={tmp_path}')
  assert proc.returncode != 0
  assert named in proc.stderr
  assert not os.listdir(tmp_path)


def test_missing_sweep_dir_is_named(tmp_path):
  proc = _cli('--dry_run')
  assert proc.returncode != 0
  assert '--sweep_dir' in proc.stderr


def test_a_failing_run_is_recorded_and_the_sweep_goes_on(tmp_path):
  spec = _spec(tmp_path, epsilons='8,inf', seeds='10,11')
  runs = sweeps.plan_sweep(spec)
  calls = []
  out = io.StringIO()
  record = sweeps.execute_sweep(
      spec, runs, runner=_fake_runner(fail=[('8', 10)], calls=calls), out=out)
  assert calls == [('8', 10), ('8', 11), ('inf', 10), ('inf', 11)]
  saved = _read_json(tmp_path / 'sweep.json')
  assert saved == record
  assert saved['counts'] == {'failed': 1, 'succeeded': 3}
  assert saved['finished'] is not None
  by_key = {(r['epsilon'], r['seed']): r for r in saved['runs']}
  failed = by_key[('8', 10)]
  assert failed['status'] == 'failed' and failed['returncode'] == 1
  assert 'noise calibration failed' in failed['error_tail']
  assert failed['command'] == runs[0].command
  assert failed['command_line'] == shlex.join(runs[0].command)
  assert failed['workdir'] == str(tmp_path / 'demo' / 'eps8_seed10')
  for key in [('8', 11), ('inf', 10), ('inf', 11)]:
    run = by_key[key]
    assert run['status'] == 'succeeded' and run['returncode'] == 0
    # sweep.json is strict JSON: an infinite epsilon is written 'inf'.
    assert run['epsilon_spent'] == {'8': 8.0, 'inf': 'inf'}[key[0]]
    assert run['metrics'] == {'mcc': 0.5}
    assert run['error_tail'] is None
  assert 'eps=8 seed=10: failed (exit 1' in out.getvalue()


def test_a_run_that_raises_or_writes_no_results_counts_as_failed(tmp_path):
  spec = _spec(tmp_path, epsilons='8', seeds='10,11')
  runs = sweeps.plan_sweep(spec)
  record = sweeps.execute_sweep(
      spec, runs, runner=_fake_runner(raise_for=[('8', 10)],
                                      write_results=False),
      out=io.StringIO())
  first, second = record['runs']
  assert first['status'] == 'failed' and first['returncode'] == -1
  assert 'launcher vanished' in first['error_tail']
  assert second['status'] == 'failed' and second['returncode'] == 0
  assert second['error_tail'].startswith('exited 0 but wrote no results.json')


def test_skip_finished_leaves_runs_that_have_results(tmp_path):
  spec = _spec(tmp_path, epsilons='8,inf', seeds='10')
  runs = sweeps.plan_sweep(spec)
  finished = tmp_path / 'demo' / 'epsinf_seed10'
  finished.mkdir(parents=True)
  run_fixtures.write_run(finished, epsilon_target=float('inf'),
                         metrics={'mcc': 0.9})

  out = io.StringIO()
  sweeps.print_dry_run(runs, skip_finished=True, out=out)
  lines = out.getvalue().splitlines()
  assert lines[0] == shlex.join(runs[0].command)
  assert lines[1] == '# finished, skipped: ' + shlex.join(runs[1].command)

  calls = []
  record = sweeps.execute_sweep(spec, runs, runner=_fake_runner(calls=calls),
                               skip_finished=True, out=io.StringIO())
  assert calls == [('8', 10)]
  skipped = record['runs'][1]
  assert skipped['status'] == 'skipped' and skipped['returncode'] is None
  assert skipped['metrics'] == {'mcc': 0.9}
  assert record['counts'] == {'succeeded': 1, 'skipped': 1}


def test_max_parallel_runs_several_at_once(tmp_path):
  spec = _spec(tmp_path, epsilons='8', seeds='10,11')
  runs = sweeps.plan_sweep(spec)
  barrier = threading.Barrier(2, timeout=20)
  inner = _fake_runner()

  def runner(command, log_path):
    barrier.wait()  # Breaks (and the run fails) unless both run together.
    return inner(command, log_path)

  record = sweeps.execute_sweep(spec, runs, runner=runner, max_parallel=2,
                               out=io.StringIO())
  assert record['counts'] == {'succeeded': 2}


def test_remote_sweep_dir_goes_through_gfile():
  # ram:// is TensorFlow's in-memory file system: a stand-in for gs://.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  root = 'ram://sweeps/remote_test'
  spec = _spec(root, epsilons='8', seeds='10,11')
  runs = sweeps.plan_sweep(spec)
  record = sweeps.execute_sweep(spec, runs, runner=_fake_runner(
      fail=[('8', 11)]), out=io.StringIO())
  assert _read_json(f'{root}/sweep.json') == record
  assert record['counts'] == {'succeeded': 1, 'failed': 1}

  # A second pass skips the finished run, found through gfile.
  calls = []
  sweeps.execute_sweep(spec, sweeps.plan_sweep(spec),
                      runner=_fake_runner(calls=calls), skip_finished=True,
                      out=io.StringIO())
  assert calls == [('8', 11)]
  assert tf.io.gfile.exists(f'{root}/demo/eps8_seed11/results.json')


def test_run_subprocess_logs_to_a_remote_path():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  log = 'ram://sweeps/logs_test/demo/eps8_seed10.log'
  code = sweeps.run_subprocess(
      [sys.executable, '-c', 'import sys; print("out"); sys.exit(3)'], log)
  assert code == 3
  with tf.io.gfile.GFile(log) as f:
    text = f.read()
  assert 'out' in text and text.startswith('$ ')


def test_real_local_sweep_records_each_failing_run(tmp_path):
  # An unknown recipe field makes train exit before it loads TensorFlow.
  proc = _cli('--epsilons=8', '--seeds=10,11', f'--sweep_dir={tmp_path}',
              '--extra_flags=--config.no_such_field=1')
  assert proc.returncode == 1, proc.stderr
  record = _read_json(tmp_path / 'sweep.json')
  assert [r['status'] for r in record['runs']] == ['failed', 'failed']
  for run in record['runs']:
    assert run['returncode'] not in (0, None)
    assert 'no_such_field' in run['error_tail']
    assert os.path.exists(run['log'])


def test_real_local_sweep_of_the_demo(tmp_path):
  proc = _cli('--epsilons=inf', '--seeds=10', f'--sweep_dir={tmp_path}',
              '--extra_flags=--config.epochs=1 --config.model.width=4',
              timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  record = _read_json(tmp_path / 'sweep.json')
  [run] = record['runs']
  assert run['status'] == 'succeeded' and run['returncode'] == 0
  assert run['workdir'] == str(tmp_path / 'demo' / 'epsinf_seed10')
  results = _read_json(tmp_path / 'demo' / 'epsinf_seed10' / 'results.json')
  assert results['dataset'] == 'demo' and results['seed'] == 10
  assert results['epsilon_target'] == 'inf'
  assert run['metrics'] == results['metrics']

  # Run again with --skip_finished: nothing is trained.
  proc = _cli('--epsilons=inf', '--seeds=10', f'--sweep_dir={tmp_path}',
              '--skip_finished',
              '--extra_flags=--config.epochs=1 --config.model.width=4')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert _read_json(tmp_path / 'sweep.json')['counts'] == {'skipped': 1}


def test_skip_finished_runs_again_what_did_not_finish(tmp_path):
  spec = _spec(tmp_path, epsilons='8,inf', seeds='10,11')
  runs = sweeps.plan_sweep(spec)
  interrupted, truncated, empty, finished = [r.workdir for r in runs]
  run_fixtures.write_run(interrupted, status=runs_lib.INTERRUPTED,
                         metrics=None)
  os.makedirs(truncated)
  with open(runs_lib.RunLayout(truncated).results, 'w') as f:
    f.write('{"dataset": "de')
  os.makedirs(empty)
  run_fixtures.write_run(finished, epsilon_target=float('inf'))

  out = io.StringIO()
  sweeps.print_dry_run(runs, skip_finished=True, out=out)
  assert [line.startswith('#') for line in out.getvalue().splitlines()] == [
      False, False, False, True]
  calls = []
  record = sweeps.execute_sweep(spec, runs, runner=_fake_runner(calls=calls),
                               skip_finished=True, out=io.StringIO())
  assert calls == [('8', 10), ('8', 11), ('inf', 10)]
  assert record['counts'] == {'succeeded': 3, 'skipped': 1}


def test_a_run_that_exits_0_unfinished_is_recorded_as_interrupted(tmp_path):
  spec = _spec(tmp_path, epsilons='8', seeds='10,11')
  runs = sweeps.plan_sweep(spec)
  out = io.StringIO()
  record = sweeps.execute_sweep(spec, runs, runner=_fake_runner(
      interrupt=[('8', 10)]), out=out)
  assert record['counts'] == {'interrupted': 1, 'succeeded': 1}
  assert 'eps=8 seed=10: interrupted (exit 0' in out.getvalue()
  calls = []
  sweeps.execute_sweep(spec, sweeps.plan_sweep(spec),
                       runner=_fake_runner(calls=calls), skip_finished=True,
                       out=io.StringIO())
  assert calls == [('8', 10)]


def test_an_unreadable_results_json_is_one_sentence_in_the_log(tmp_path,
                                                               caplog):
  spec = _spec(tmp_path, epsilons='8', seeds='10')
  [run] = sweeps.plan_sweep(spec)
  os.makedirs(run.workdir)
  with open(runs_lib.RunLayout(run.workdir).results, 'w') as f:
    f.write('not json')
  with caplog.at_level('WARNING'):
    sweeps.print_dry_run([run], skip_finished=True, out=io.StringIO())
  [message] = [r.getMessage() for r in caplog.records
               if 'results.json' in r.getMessage()]
  assert 'unfinished' in message
  assert '.;' not in message and '..' not in message


def test_sweep_json_is_written_through_json_files(tmp_path, monkeypatch):
  written = []
  write_json = json_files.write_json

  def spy(path, obj):
    written.append(path)
    write_json(path, obj)

  monkeypatch.setattr(json_files, 'write_json', spy)
  spec = _spec(tmp_path, epsilons='8', seeds='10')
  sweeps.execute_sweep(spec, sweeps.plan_sweep(spec), runner=_fake_runner(),
                       out=io.StringIO())
  record = runs_lib.sweep_record_path(str(tmp_path))
  # Created, running, done, finished; the run's own results.json besides.
  assert written.count(record) == 4
  assert set(written) == {record, f'{tmp_path}/demo/eps8_seed10/results.json'}
  assert sorted(os.listdir(tmp_path)) == ['demo', 'logs', 'sweep.json']


@pytest.mark.parametrize('launcher,script', [('gpu', 'gpu.sh'),
                                             ('tpu', 'cloud_tpu.sh')])
def test_a_shell_launcher_missing_beside_the_package_is_named(
    launcher, script, tmp_path, monkeypatch):
  assert sweeps.LAUNCH_DIR == str(REPO / 'launch')
  monkeypatch.setattr(sweeps, 'LAUNCH_DIR', str(tmp_path))
  with pytest.raises(sweeps.SweepError,
                     match=f'--launcher={launcher} runs .*/{script}, which '
                     'is missing'):
    _spec('gs://bucket/sw', launcher=launcher)
  # The local launcher needs no script.
  assert _spec(tmp_path / 'sw').launcher == 'local'
