#!/usr/bin/env bash
# Trains dp_medtf on a Cloud TPU VM: creates the VM, installs the package on
# it, runs one training job with --strategy=tpu, copies the outputs back and
# deletes the VM. Each step is a subcommand; --dry_run prints every command.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(dirname "${SCRIPT_DIR}")"
readonly SCRIPT_DIR REPO_DIR
PROG=cloud_tpu.sh
source "${SCRIPT_DIR}/flags.sh"

# Folders on the VM, relative to the ssh user's home.
readonly REMOTE_SRC='dp_medtf'
readonly REMOTE_VENV='dp_medtf_venv'
readonly REMOTE_DATA='dp_medtf_data'
readonly REMOTE_RUNS='dp_medtf_runs'

usage() {
  cat <<'EOF'
Usage: launch/cloud_tpu.sh STEP [STEP...] [FLAGS] [-- TRAIN_FLAGS...]

Trains dp_medtf on a Cloud TPU VM with a TensorFlow 2.15 runtime.

Steps (run in the order given):
  create    gcloud compute tpus tpu-vm create the VM
  install   copy the package (and a local --data_dir) to the VM, pip install it
  run       python -m dp_medtf.train on the VM with --strategy=tpu
  collect   copy the run's workdir (gs:// or on the VM) to --local_dir
  delete    delete the VM
  all       create install run collect

Flags (--flag=value or --flag value):
  --name NAME               TPU VM name (required)
  --zone ZONE               zone with the accelerator, e.g. us-central1-a (required)
  --project PROJECT         Google Cloud project (default: gcloud's)
  --accelerator_type TYPE   default v3-8
  --runtime_version VER     TPU software version (default tpu-vm-tf-2.15.1-pjrt,
                            matching tensorflow==2.15.1 in setup.py)
  --spot                    create a Spot VM
  --package PATH            what install puts on the VM: a source folder (default:
                            this repository, installed with pip install -e), or a
                            wheel or sdist, local or gs://
  --dataset NAME            demo|ham10000|radimagenet|msd_liver (default demo)
  --data_dir DIR            gs://... read in place, or a local folder that install
                            copies to the VM (not needed for the demo)
  --epsilon E               privacy budget, a number or inf (default 8)
  --seed S                  training seed (default 10)
  --workdir DIR             where train writes; gs:// recommended (default
                            ~/dp_medtf_runs/<dataset>_eps<E>_seed<S> on the VM)
  --local_dir DIR           where collect copies the workdir (default ./tpu_results)
  --tpu NAME                train's --tpu (default local: the VM's own TPU; give the
                            VM name for a multi-host slice)
  --python PY               Python on the VM for the venv (default python3)
  --resume                  pass --resume to train
  --detach                  run train in the background on the VM (nohup), logging
                            to ~/dp_medtf_runs/<run>.log
  --dry_run                 print every command instead of running it
  -h, --help                this help

Everything after -- goes to train, e.g. -- --config.epochs=1.

Example:
  launch/cloud_tpu.sh all --name=dp-tpu --zone=us-central1-a \
      --dataset=ham10000 --data_dir=gs://bucket/ham10000 --epsilon=8 \
      --seed=10 --workdir=gs://bucket/runs/ham_eps8_seed10
  launch/cloud_tpu.sh delete --name=dp-tpu --zone=us-central1-a
EOF
}

name=''
zone=''
project=''
accelerator_type='v3-8'
runtime_version='tpu-vm-tf-2.15.1-pjrt'
spot=false
package="${REPO_DIR}"
dataset='demo'
data_dir=''
epsilon='8'
seed='10'
workdir=''
local_dir='tpu_results'
tpu='local'
python='python3'
resume=false
detach=false
dry_run=false

parse_flags 'name zone project accelerator_type runtime_version package dataset
  data_dir epsilon seed workdir local_dir tpu python' \
  'spot resume detach dry_run' "$@"
steps=()
for arg in "${FLAG_ARGS[@]}"; do
  case "${arg}" in
    create|install|run|collect|delete) steps+=("${arg}") ;;
    all) steps+=(create install run collect) ;;
    *) die "unknown step or argument '${arg}' (see --help)." ;;
  esac
done
train_flags=("${FLAG_REST[@]}")

[[ ${#steps[@]} -gt 0 ]] || die "give at least one step: create, install, run, collect, delete or all (see --help)."
[[ -n "${name}" ]] || die "--name is required."
[[ -n "${zone}" ]] || die "--zone is required."
check_train_flags "${dataset}" "${data_dir}" "${epsilon}" "${seed}"
if [[ "${dry_run}" != true ]] && ! command -v gcloud >/dev/null; then
  die "gcloud not found; install the Google Cloud CLI (or use --dry_run)."
fi

run_name="${dataset}_eps${epsilon}_seed${seed}"
[[ -n "${workdir}" ]] || workdir="${REMOTE_RUNS}/${run_name}"

# The data folder as the VM sees it.
remote_data_dir="${data_dir}"
if [[ -n "${data_dir}" && "${data_dir}" != gs://* ]]; then
  remote_data_dir="${REMOTE_DATA}/$(basename "${data_dir}")"
fi

gcloud_flags=("--zone=${zone}")
[[ -z "${project}" ]] || gcloud_flags+=("--project=${project}")

# Runs a shell command line on the VM (worker 0).
on_vm() {
  run_cmd gcloud compute tpus tpu-vm ssh "${name}" "${gcloud_flags[@]}" \
    --worker=0 --command "$1"
}

# Copies local files to the VM: to_vm SRC DEST [--recurse].
to_vm() {
  run_cmd gcloud compute tpus tpu-vm scp "${@:3}" "$1" "${name}:$2" \
    "${gcloud_flags[@]}" --worker=0
}

step_create() {
  local cmd=(gcloud compute tpus tpu-vm create "${name}" "${gcloud_flags[@]}"
             "--accelerator-type=${accelerator_type}"
             "--version=${runtime_version}")
  [[ "${spot}" != true ]] || cmd+=(--spot)
  run_cmd "${cmd[@]}"
}

step_install() {
  local pip_target
  if [[ "${package}" == gs://* ]]; then
    on_vm "$(quote gsutil cp "${package}" .)"
    pip_target="$(quote "$(basename "${package}")")"
  elif [[ -d "${package}" ]]; then
    local tarball="${TMPDIR:-/tmp}/dp_medtf_src_${name}.tgz"
    run_cmd tar -czf "${tarball}" --exclude=.git --exclude='.venv*' \
      --exclude=__pycache__ --exclude='*.egg-info' --exclude=workdir \
      --exclude=tpu_results -C "${package}" .
    to_vm "${tarball}" dp_medtf_src.tgz
    on_vm "$(quote rm -rf "${REMOTE_SRC}") && $(quote mkdir -p "${REMOTE_SRC}") && $(quote tar -xzf dp_medtf_src.tgz -C "${REMOTE_SRC}")"
    pip_target="$(quote -e "${REMOTE_SRC}")"
  elif [[ -f "${package}" ]]; then
    to_vm "${package}" "$(basename "${package}")"
    pip_target="$(quote "$(basename "${package}")")"
  else
    die "--package=${package} is neither a folder, a file nor gs://."
  fi
  # The TF runtime image ships TensorFlow built for the TPU in its system
  # Python; --system-site-packages lets pip count it as installed instead of
  # pulling a CPU wheel. The image's Python may be older than setup.py's 3.11.
  on_vm "$(quote "${python}" -m venv --system-site-packages "${REMOTE_VENV}") && $(quote "${REMOTE_VENV}/bin/pip" install --upgrade pip) && ${REMOTE_VENV}/bin/pip install --ignore-requires-python ${pip_target} && $(quote "${REMOTE_VENV}/bin/python" -c 'import tensorflow as tf; print("tensorflow", tf.__version__, tf.__file__)')"
  if [[ -n "${data_dir}" && "${data_dir}" != gs://* ]]; then
    on_vm "$(quote mkdir -p "${REMOTE_DATA}")"
    to_vm "${data_dir}" "${REMOTE_DATA}/" --recurse
  fi
}

step_run() {
  local cmd=("${REMOTE_VENV}/bin/python" -m dp_medtf.train
             "--dataset=${dataset}" "--epsilon=${epsilon}" "--seed=${seed}"
             "--workdir=${workdir}")
  [[ -z "${remote_data_dir}" ]] || cmd+=("--data_dir=${remote_data_dir}")
  cmd+=(--strategy=tpu "--tpu=${tpu}")
  [[ "${resume}" != true ]] || cmd+=(--resume)
  cmd+=("${train_flags[@]}")
  if [[ "${detach}" == true ]]; then
    local log="${REMOTE_RUNS}/${run_name}.log"
    on_vm "$(quote mkdir -p "${REMOTE_RUNS}") && nohup $(quote "${cmd[@]}") > $(quote "${log}") 2>&1 &"
  else
    on_vm "$(quote "${cmd[@]}")"
  fi
}

step_collect() {
  run_cmd mkdir -p "${local_dir}"
  if [[ "${workdir}" == gs://* ]]; then
    run_cmd gsutil -m cp -r "${workdir}" "${local_dir}/"
  else
    run_cmd gcloud compute tpus tpu-vm scp --recurse "${name}:${workdir}" \
      "${local_dir}/" "${gcloud_flags[@]}" --worker=0
  fi
}

step_delete() {
  run_cmd gcloud compute tpus tpu-vm delete "${name}" "${gcloud_flags[@]}" \
    --quiet
}

for step in "${steps[@]}"; do
  [[ "${dry_run}" != true ]] || echo "# ${step}"
  "step_${step}"
done
