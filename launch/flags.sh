# Shared by the launchers in this folder; source it, do not run it:
#
#   PROG=gpu.sh                      # the name error messages start with
#   source "${SCRIPT_DIR}/flags.sh"
#
# The sourcing script defines usage(), which --help prints, and gives every
# flag its default before calling parse_flags.

readonly DATASETS='demo ham10000 radimagenet msd_liver'

# Error message formats; %s is the flag. A launcher may set its own after
# sourcing this file.
FLAGS_UNKNOWN='unknown flag %s (see --help).'
FLAGS_NO_VALUE='%s needs a value (see --help).'

die() {
  echo "${PROG}: $*" >&2
  exit 2
}

# parse_flags 'NAME...' 'SWITCH...' ARG...
#
# Sets the variable NAME for each --NAME=VALUE or --NAME VALUE (a separate
# VALUE may not start with --), and the variable SWITCH to true for each
# --SWITCH. -h and --help print usage and exit 0. Other arguments go, in
# order, to the array FLAG_ARGS; everything after -- to the array FLAG_REST,
# and FLAG_REST_GIVEN says whether there was a --. The names are separated by
# spaces or newlines.
parse_flags() {
  # Prefixed locals, because printf -v would assign to a local that shares a
  # flag's name instead of the caller's variable.
  local _pf_values=" ${1//$'\n'/ } " _pf_switches=" ${2//$'\n'/ } " \
    _pf_arg _pf_key _pf_name _pf_value
  shift 2
  FLAG_ARGS=()
  FLAG_REST=()
  FLAG_REST_GIVEN=false
  while [[ $# -gt 0 ]]; do
    _pf_arg="$1"
    shift
    case "${_pf_arg}" in
      -h|--help) usage; exit 0 ;;
      --) FLAG_REST=("$@"); FLAG_REST_GIVEN=true; return 0 ;;
      --*)
        _pf_key="${_pf_arg%%=*}"
        _pf_name="${_pf_key#--}"
        [[ "${_pf_name}" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] \
          || die "$(printf "${FLAGS_UNKNOWN}" "${_pf_key}")"
        if [[ "${_pf_switches}" == *" ${_pf_name} "* ]]; then
          [[ "${_pf_arg}" != *=* ]] || die "${_pf_key} takes no value (see --help)."
          printf -v "${_pf_name}" '%s' true
        elif [[ "${_pf_values}" == *" ${_pf_name} "* ]]; then
          if [[ "${_pf_arg}" == *=* ]]; then
            _pf_value="${_pf_arg#*=}"
          elif [[ $# -gt 0 && "$1" != --* ]]; then
            _pf_value="$1"
            shift
          else
            die "$(printf "${FLAGS_NO_VALUE}" "${_pf_key}")"
          fi
          printf -v "${_pf_name}" '%s' "${_pf_value}"
        else
          die "$(printf "${FLAGS_UNKNOWN}" "${_pf_key}")"
        fi
        ;;
      *) FLAG_ARGS+=("${_pf_arg}") ;;
    esac
  done
}

# check_train_flags DATASET DATA_DIR EPSILON SEED: dies naming the first of
# train's --dataset, --seed, --epsilon and --data_dir that is invalid.
check_train_flags() {
  local dataset="$1" data_dir="$2" epsilon="$3" seed="$4"
  [[ " ${DATASETS} " == *" ${dataset} "* ]] \
    || die "--dataset must be one of: ${DATASETS}; got '${dataset}'."
  [[ "${seed}" =~ ^[0-9]+$ ]] \
    || die "--seed must be a non-negative integer, got '${seed}'."
  [[ "${epsilon}" =~ ^(inf|[0-9]*\.?[0-9]+([eE][+-]?[0-9]+)?)$ ]] \
    && awk -v e="${epsilon}" 'BEGIN { exit !(e == "inf" || e + 0 > 0) }' \
    || die "--epsilon must be a positive number or inf, got '${epsilon}'."
  if [[ "${dataset}" != demo && -z "${data_dir}" ]]; then
    die "--data_dir is required for --dataset=${dataset}."
  fi
}

# Prints its arguments as one command line that a POSIX shell (and Python's
# shlex.split) reads back as the same arguments.
quote() {
  local arg out=()
  for arg in "$@"; do
    if [[ "${arg}" =~ ^[A-Za-z0-9_./:=@,+%-]+$ ]]; then
      out+=("${arg}")
    else
      out+=("'${arg//\'/\'\\\'\'}'")
    fi
  done
  echo "${out[*]}"
}

# Runs a command, or only prints it when the variable dry_run is true.
run_cmd() {
  if [[ "${dry_run}" == true ]]; then
    quote "$@"
  else
    echo "+ $(quote "$@")" >&2
    "$@"
  fi
}
