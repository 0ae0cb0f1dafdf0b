#!/usr/bin/env bash
# Checks dp_medtf on this machine's accelerator in one go: installs the package
# (pip install -e . and, on a GPU host, the CUDA extra that launch/gpu.sh uses),
# runs python -m dp_medtf.bench at the paper's shapes with and without XLA, a
# peak device memory probe and one short demo training, and prints one JSON
# object on stdout. Without a GPU it says so on stderr and runs on the CPU at
# small shapes.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(dirname "${SCRIPT_DIR}")"
readonly SCRIPT_DIR REPO_DIR
PROG=device_check
source "${SCRIPT_DIR}/flags.sh"
FLAGS_UNKNOWN='unknown flag %s; see --help.'
FLAGS_NO_VALUE='%s needs a value.'

usage() {
  cat <<'EOF'
Usage: launch/device_check.sh [FLAGS]

Benchmarks the DP step on this machine's GPU and prints one JSON object:
{"device", "tensorflow", "devices", "shapes", "bench": {MODEL: {"no_xla",
"xla"}}, "images_per_s", "ratio_to_non_private", "xla_speedup",
"peak_device_mb", "peak_rss_mb", "demo_training", "wall_s"}.

GPU: ResNet-9 224x224x1 (physical batch 64, 165 classes) and 3D U-Net
50x128x128x1 (batch 1, 3 classes), non_private and ghost_bk, 3 timed steps,
then 2 epochs of the demo recipe. Under 8 minutes on one modern GPU.
No GPU: ResNet-9 32x32x1 (batch 8) and U-Net 16x32x32x1, a few minutes on CPU.
XLA is TensorFlow's auto-clustering (TF_XLA_FLAGS=--tf_xla_auto_jit=2).

Flags (--flag=value or --flag value):
  --venv DIR      virtual environment to create and install into
                  (default <repo>/.venv-device)
  --python PY     interpreter that creates the venv (default python3.11)
  --no_install    use --python as it is (an environment with dp_medtf)
  --tf_package S  installed after the package on a GPU host
                  (default 'tensorflow[and-cuda]==2.15.1', as launch/gpu.sh)
  --tiny          tiny shapes, for testing this script (CPU, seconds)
  --help
EOF
}

venv="${REPO_DIR}/.venv-device"
python=python3.11
no_install=false
tf_package='tensorflow[and-cuda]==2.15.1'
tiny=false

parse_flags 'venv python tf_package' 'no_install tiny' "$@"
[[ ${#FLAG_ARGS[@]} -eq 0 && "${FLAG_REST_GIVEN}" == false ]] \
  || die "unknown flag ${FLAG_ARGS[0]:---}; see --help."

has_gpu=false
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  has_gpu=true
fi

if [[ "${no_install}" != true ]]; then
  if [[ ! -x "${venv}/bin/python" ]]; then
    "${python}" -m venv "${venv}" >&2
  fi
  "${venv}/bin/python" -m pip install -q --upgrade pip >&2
  "${venv}/bin/python" -m pip install -q -e "${REPO_DIR}" >&2
  if [[ "${has_gpu}" == true && -n "${tf_package}" ]]; then
    # setup.py pins tensorflow; the and-cuda extra adds CUDA and cuDNN.
    "${venv}/bin/python" -m pip install -q "${tf_package}" >&2
  fi
  python="${venv}/bin/python"
fi

cd "${REPO_DIR}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
DEVICE_CHECK_TINY="${tiny}" exec "${python}" - <<'PYTHON'
"""Runs the checks and prints the JSON object (see launch/device_check.sh)."""
import json
import os
import re
import subprocess
import sys
import tempfile
import time

began = time.perf_counter()
tiny = os.environ['DEVICE_CHECK_TINY'] == 'true'
import tensorflow as tf  # pylint: disable=g-import-not-at-top

gpus = tf.config.list_physical_devices('GPU')
device = 'gpu' if gpus else 'cpu'
if not gpus:
  print('device_check: no GPU visible to TensorFlow; running on the CPU at '
        'small shapes.', file=sys.stderr, flush=True)
for gpu in gpus:
  tf.config.experimental.set_memory_growth(gpu, True)

if device == 'gpu':
  shapes = {'resnet9': dict(input_shape=(224, 224, 1), batch=64,
                            num_classes=165, width=None),
            'unet3d': dict(input_shape=(50, 128, 128, 1), batch=1,
                           num_classes=3, width=None)}
  steps, warmup, demo = 3, 1, ['--config.epochs=2']
elif not tiny:
  shapes = {'resnet9': dict(input_shape=(32, 32, 1), batch=8,
                            num_classes=165, width=None),
            'unet3d': dict(input_shape=(16, 32, 32, 1), batch=1,
                           num_classes=3, width=None)}
  steps, warmup, demo = 3, 1, ['--config.epochs=1']
else:
  shapes = {'resnet9': dict(input_shape=(16, 16, 1), batch=4,
                            num_classes=3, width=8),
            'unet3d': dict(input_shape=(16, 16, 16, 1), batch=1,
                           num_classes=3, width=4)}
  steps, warmup, demo = 2, 1, [
      '--config.epochs=1', '--config.stop_after_steps=2',
      '--config.data.image_size=16', '--config.input_shape=(16, 16, 3)',
      '--config.model.width=4', '--config.eval_batch_size=100']
VARIANTS = ('non_private', 'ghost_bk')


def run(args, env=None):
  proc = subprocess.run([sys.executable, *args], capture_output=True,
                        stdin=subprocess.DEVNULL,
                        text=True, env=dict(os.environ, **(env or {})),
                        check=False)
  if proc.returncode != 0:
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    raise SystemExit(f'device_check: {" ".join(args[:3])} failed: '
                     f'{lines[-1] if lines else proc.returncode}')
  return proc.stdout


def bench(model, spec, xla):
  args = ['-m', 'dp_medtf.bench', f'--model={model}',
          '--input_shape=' + ','.join(map(str, spec['input_shape'])),
          f'--batch_size={spec["batch"]}',
          f'--num_classes={spec["num_classes"]}',
          '--variants=' + ','.join(VARIANTS), f'--steps={steps}',
          f'--warmup={warmup}']
  if spec['width']:
    args.append(f'--width={spec["width"]}')
  env = ({'TF_XLA_FLAGS': '--tf_xla_auto_jit=2 --tf_xla_cpu_global_jit'}
         if xla else {})
  out = run(args, env)
  report = json.loads(out[out.index('{'):])
  return {r['name']: {k: r.get(k) for k in ('s_per_step', 'peak_mb',
                                            'ratio_to_non_private',
                                            'skipped')}
          for r in report['results']}


def peak_device_mb(model_name, spec):
  """Peak GPU memory of one ghost_bk DP step (None on the CPU)."""
  if device != 'gpu':
    return None
  import numpy as np  # pylint: disable=g-import-not-at-top
  from dp_medtf import losses, models  # pylint: disable=g-import-not-at-top
  from dp_medtf.privacy import optimizers  # pylint: disable=g-import-not-at-top
  from dp_medtf.privacy import step as dp_step  # pylint: disable=g-import-not-at-top
  tf.keras.backend.clear_session()
  tf.config.experimental.reset_memory_stats('GPU:0')
  config = {'name': model_name}
  if spec['width']:
    config['width'] = spec['width']
  model = models.build(config, spec['input_shape'], spec['num_classes'])
  segmentation = len(model.output_shape) > 2
  loss_fn = losses.for_task('segmentation' if segmentation else
                            'classification')
  optimizer = optimizers.make_optimizer('adam', 1e-3,
                                        model.trainable_variables)
  step = dp_step.DPStep(model, loss_fn, optimizer, clip_norm=1.0,
                        noise_multiplier=1.0,
                        expected_batch_size=spec['batch'], seed=0,
                        engine='ghost_bk')
  batch = spec['batch']
  rng = np.random.default_rng(0)
  x = tf.constant(rng.normal(size=(batch, 1) + spec['input_shape']),
                  tf.float32)
  labels = (batch,) + (tuple(model.output_shape[1:-1]) if segmentation
                       else ())
  y = tf.constant(rng.integers(0, spec['num_classes'], size=labels), tf.int32)
  float(tf.reduce_sum(step.accumulate(x, y, tf.ones([batch]))))
  step.apply()
  peak = tf.config.experimental.get_memory_info('GPU:0')['peak']
  return round(peak / 2**20, 1)


result = {'device': device, 'tensorflow': tf.__version__,
          'devices': [d.name for d in tf.config.list_physical_devices()],
          'shapes': {m: {'input_shape': list(s['input_shape']),
                         'batch': s['batch']} for m, s in shapes.items()},
          'bench': {}, 'images_per_s': {}, 'ratio_to_non_private': {},
          'xla_speedup': {}, 'peak_device_mb': {}, 'peak_rss_mb': {}}
for model, spec in shapes.items():
  runs = {'no_xla': bench(model, spec, False), 'xla': bench(model, spec, True)}
  result['bench'][model] = runs
  for mode, variants in runs.items():
    for variant, r in variants.items():
      key = f'{model}/{variant}/{mode}'
      if r['s_per_step']:
        result['images_per_s'][key] = round(spec['batch'] / r['s_per_step'],
                                            2)
      result['ratio_to_non_private'][key] = r['ratio_to_non_private']
      result['peak_rss_mb'][key] = r['peak_mb']
  for variant in VARIANTS:
    plain, xla = (runs[m][variant]['s_per_step'] for m in ('no_xla', 'xla'))
    result['xla_speedup'][f'{model}/{variant}'] = (
        round(plain / xla, 3) if plain and xla else None)
  result['peak_device_mb'][f'{model}/ghost_bk'] = peak_device_mb(model, spec)

with tempfile.TemporaryDirectory() as workdir:
  start = time.perf_counter()
  out = run(['-m', 'dp_medtf.train', '--dataset=demo', '--epsilon=8',
             f'--workdir={workdir}', *demo])
  with open(os.path.join(workdir, 'results.json')) as f:
    trained = json.load(f)
  result['demo_training'] = {
      'wall_s': round(time.perf_counter() - start, 1),
      'steps': trained.get('steps'), 'status': trained.get('status'),
      'epsilon_spent': trained.get('epsilon_spent'),
      'test_metrics': trained.get('metrics')}
result['wall_s'] = round(time.perf_counter() - began, 1)
print(json.dumps(result))
PYTHON
