#!/usr/bin/env bash
# The whole pipeline on the embedded demo, on one CPU machine:
# train sweep (budgets x seeds) -> reconstruction attack on the trained runs'
# settings -> Table 3 + figure.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
PROG=demo_pipeline.sh
source "${SCRIPT_DIR}/flags.sh"

usage() {
  cat <<'USAGE'
Usage: launch/demo_pipeline.sh [--sweep_dir=DIR] [--epsilons=LIST]
         [--seeds=LIST] [--num_images=N] [-- TRAIN_FLAGS...]

  --sweep_dir   where runs, attack and report go (default: sweeps/demo)
  --epsilons    budgets (default: 1,8,1e9,inf)
  --seeds       training seeds (default: 10,11)
  --num_images  images attacked per budget (default: 50)
  TRAIN_FLAGS   passed to every training run (default: --config.epochs=4)

The interpreter is $PYTHON (default: python).
USAGE
}

sweep_dir=sweeps/demo
epsilons=1,8,1e9,inf
seeds=10,11
num_images=50
train_flags=(--config.epochs=4)
parse_flags 'sweep_dir epsilons seeds num_images' '' "$@"
[[ ${#FLAG_ARGS[@]} -eq 0 ]] \
  || die "unknown argument '${FLAG_ARGS[0]}' (see --help)."
[[ "${FLAG_REST_GIVEN}" == false ]] || train_flags=("${FLAG_REST[@]}")

python="${PYTHON:-python}"
# quote keeps a flag with spaces one flag through the sweep's shlex.split.
"${python}" -m dp_medtf.sweep --dataset=demo --epsilons="${epsilons}" \
  --seeds="${seeds}" --sweep_dir="${sweep_dir}" --skip_finished \
  --extra_flags="$(quote "${train_flags[@]}")"
# The attack column of Table 3 at each trained run's own N, q, T, z and C:
# one finished run per budget (the first seed's), with the runs' overrides.
first_seed="${seeds%%,*}"
run_dirs=()
for run in "${sweep_dir}"/demo/eps*_seed"${first_seed}"; do
  if [[ -f "${run}/results.json" ]]; then run_dirs+=("${run}"); fi
done
if [[ ${#run_dirs[@]} -eq 0 ]]; then
  echo "error: no finished run of seed ${first_seed} in ${sweep_dir}/demo" >&2
  exit 1
fi
"${python}" -m dp_medtf.attack --dataset=demo \
  --run_dir="$(IFS=,; echo "${run_dirs[*]}")" \
  --num_images="${num_images}" --workdir="${sweep_dir}/demo/attack" \
  "${train_flags[@]}"
"${python}" -m dp_medtf.report --sweep_dir="${sweep_dir}" \
  --output_dir="${sweep_dir}/report"
