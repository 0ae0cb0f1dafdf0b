#!/usr/bin/env bash
# Trains dp_medtf on this GPU host: creates a virtual environment, installs the
# package with pip install -e and TensorFlow's CUDA libraries, checks the GPUs
# with nvidia-smi, then runs one training job (MirroredStrategy when more than
# one GPU is used). --dry_run prints every command instead of running it.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(dirname "${SCRIPT_DIR}")"
readonly SCRIPT_DIR REPO_DIR
PROG=gpu.sh
source "${SCRIPT_DIR}/flags.sh"

usage() {
  cat <<'EOF'
Usage: launch/gpu.sh [STEP...] [FLAGS] [-- TRAIN_FLAGS...]

Trains dp_medtf on the GPUs of this machine.

Steps (default: setup check run):
  setup     create the venv (if missing), pip install -e the package and
            --tf_package
  check     nvidia-smi, and make sure TensorFlow sees --num_gpus GPUs
  run       python -m dp_medtf.train (--strategy=mirrored for several GPUs)

Flags (--flag=value or --flag value):
  --dataset NAME     demo|ham10000|radimagenet|msd_liver (default demo)
  --data_dir DIR     the dataset folder, local or gs:// (not needed for the demo)
  --epsilon E        privacy budget, a number or inf (default 8)
  --seed S           training seed (default 10)
  --workdir DIR      where train writes, local or gs://
                     (default workdir/<dataset>_eps<E>_seed<S>)
  --num_gpus N       GPUs to use (default: all that nvidia-smi lists); fewer than
                     there are sets CUDA_VISIBLE_DEVICES
  --strategy S       train's --strategy (default: mirrored when N > 1, else
                     train's default)
  --venv DIR         virtual environment (default <repo>/.venv-gpu)
  --python PY        interpreter that creates the venv (default python3.11)
  --tf_package SPEC  installed after the package for the CUDA libraries
                     (default 'tensorflow[and-cuda]==2.15.1'; '' to skip)
  --resume           pass --resume to train
  --dry_run          print every command instead of running it
  -h, --help         this help

Everything after -- goes to train, e.g. -- --config.epochs=1.

Example:
  launch/gpu.sh --dataset=ham10000 --data_dir=/data/ham10000 --epsilon=8 \
      --seed=10 --workdir=runs/ham_eps8_seed10 --num_gpus=4
EOF
}

dataset='demo'
data_dir=''
epsilon='8'
seed='10'
workdir=''
num_gpus=''
strategy=''
venv="${REPO_DIR}/.venv-gpu"
python='python3.11'
tf_package='tensorflow[and-cuda]==2.15.1'
resume=false
dry_run=false

parse_flags 'dataset data_dir epsilon seed workdir num_gpus strategy venv python
  tf_package' 'resume dry_run' "$@"
steps=()
for arg in "${FLAG_ARGS[@]}"; do
  case "${arg}" in
    setup|check|run) steps+=("${arg}") ;;
    *) die "unknown step or argument '${arg}' (see --help)." ;;
  esac
done
train_flags=("${FLAG_REST[@]}")

[[ ${#steps[@]} -gt 0 ]] || steps=(setup check run)
check_train_flags "${dataset}" "${data_dir}" "${epsilon}" "${seed}"
[[ -n "${workdir}" ]] || workdir="workdir/${dataset}_eps${epsilon}_seed${seed}"

# GPUs on this machine, 0 when nvidia-smi is missing or fails.
detected_gpus=0
if command -v nvidia-smi >/dev/null 2>&1; then
  detected_gpus="$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)"
fi

visible_env=()
if [[ -z "${num_gpus}" ]]; then
  # Without nvidia-smi (or under --dry_run off a GPU host) count one GPU;
  # the check step then says what is missing.
  num_gpus="${detected_gpus}"
  [[ "${num_gpus}" -gt 0 ]] || num_gpus=1
else
  [[ "${num_gpus}" =~ ^[1-9][0-9]*$ ]] || die "--num_gpus must be a positive integer, got '${num_gpus}'."
  visible="$(seq -s, 0 $((num_gpus - 1)))"
  visible_env=(env "CUDA_VISIBLE_DEVICES=${visible}")
fi
if [[ -z "${strategy}" && "${num_gpus}" -gt 1 ]]; then
  strategy='mirrored'
fi

step_setup() {
  if [[ ! -x "${venv}/bin/python" ]]; then
    run_cmd "${python}" -m venv "${venv}"
  fi
  run_cmd "${venv}/bin/python" -m pip install --upgrade pip
  run_cmd "${venv}/bin/python" -m pip install -e "${REPO_DIR}"
  if [[ -n "${tf_package}" ]]; then
    # setup.py pins tensorflow itself; the and-cuda extra adds the CUDA and
    # cuDNN wheels that TensorFlow 2.15 needs to see the GPUs.
    run_cmd "${venv}/bin/python" -m pip install "${tf_package}"
  fi
}

step_check() {
  if [[ "${dry_run}" != true ]] && ! command -v nvidia-smi >/dev/null 2>&1; then
    die "nvidia-smi not found; is the NVIDIA driver installed?"
  fi
  run_cmd nvidia-smi
  local probe="import sys, tensorflow as tf; n = len(tf.config.list_physical_devices(\"GPU\")); print(\"TensorFlow\", tf.__version__, \"sees\", n, \"GPU(s)\"); sys.exit(0 if n >= ${num_gpus} else \"TensorFlow sees fewer GPUs than --num_gpus=${num_gpus}\")"
  run_cmd "${visible_env[@]}" "${venv}/bin/python" -c "${probe}"
}

step_run() {
  if [[ "${dry_run}" != true && ! -x "${venv}/bin/python" ]]; then
    die "no venv at ${venv}; run 'launch/gpu.sh setup' first (or pass --venv)."
  fi
  local cmd=("${visible_env[@]}" "${venv}/bin/python" -m dp_medtf.train
             "--dataset=${dataset}" "--epsilon=${epsilon}" "--seed=${seed}"
             "--workdir=${workdir}")
  [[ -z "${data_dir}" ]] || cmd+=("--data_dir=${data_dir}")
  [[ -z "${strategy}" ]] || cmd+=("--strategy=${strategy}")
  [[ "${resume}" != true ]] || cmd+=(--resume)
  cmd+=("${train_flags[@]}")
  run_cmd "${cmd[@]}"
}

for step in "${steps[@]}"; do
  [[ "${dry_run}" != true ]] || echo "# ${step}"
  "step_${step}"
done
