#!/usr/bin/env bash
# Idempotent installer for the orchestrator and its pinned serving components.
#
#   scripts/install.sh [--with-aiperf] [--with-lm-eval] [--with-sglang] [--with-planner]
#
# Creates .venv in the repo root with the orchestrator (editable, extras test+plot+mocker),
# Dynamo (frontend + mocker), sglang-router and smg, all at the versions pinned in
# scripts/versions.env. Re-running skips every step that is already satisfied.
# --with-aiperf also installs aiperf into its own venv .venvs/aiperf (its
# transformers/pydantic pins must not fight Dynamo's).
# --with-lm-eval installs EleutherAI's lm-evaluation-harness (API models only: no torch) into
# .venvs/lm_eval for benchmark=lm_eval (~760 MB: datasets, pyarrow, scikit-learn; ~40 s).
# --with-sglang installs a minimal CPU SGLang into .venvs/sglang, used only to check the
# generated SGLang command lines with SGLang's own parser before submission (~2.3 GB), and
# Dynamo's dynamo.sglang parser next to it (ai-dynamo + runtime --no-deps, ~260 MB more).
# --with-planner installs Dynamo's planner (autoscale=dynamo_planner) into .venvs/planner: its
# own ai-dynamo with the modules the planner imports (scikit-learn, pandas, prophet, ...) and a
# stand-in for NVIDIA's aisimulate (~1.3 GB; ~75 s on 2 cores with pip's cache warm).
#
# Environment: PYTHON (interpreter used to create venvs, default python3),
# VENV (default <repo>/.venv), AIPERF_VENV (default <repo>/.venvs/aiperf),
# LM_EVAL_VENV (default <repo>/.venvs/lm_eval), SGLANG_VENV (default <repo>/.venvs/sglang),
# PLANNER_VENV (default <repo>/.venvs/planner).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=versions.env source-path=SCRIPTDIR
source "$ROOT/scripts/versions.env"

PYTHON="${PYTHON:-python3}"
VENV="${VENV:-$ROOT/.venv}"
AIPERF_VENV="${AIPERF_VENV:-$ROOT/.venvs/aiperf}"
SGLANG_VENV="${SGLANG_VENV:-$ROOT/.venvs/sglang}"
LM_EVAL_VENV="${LM_EVAL_VENV:-$ROOT/.venvs/lm_eval}"
PLANNER_VENV="${PLANNER_VENV:-$ROOT/.venvs/planner}"
WITH_AIPERF=0
WITH_LM_EVAL=0
WITH_SGLANG=0
WITH_PLANNER=0

# pip's self-update nag costs a network round trip on every call.
export PIP_DISABLE_PIP_VERSION_CHECK=1

# `pip check` lines that are expected: ai-dynamo is installed with --no-deps and
# aisimulate is deliberately left out (see scripts/versions.env).
PIP_CHECK_ALLOWED="^ai-dynamo ${DYNAMO_VERSION//./\\.} requires aisimulate, which is not installed\.$"

log() { printf '[install] %s\n' "$*" >&2; }
die() { printf '[install] ERROR: %s\n' "$*" >&2; exit 1; }

usage() {
  sed -n '2,23s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

parse_args() {
  while (($#)); do
    case "$1" in
      --with-aiperf) WITH_AIPERF=1 ;;
      --with-lm-eval) WITH_LM_EVAL=1 ;;
      --with-sglang) WITH_SGLANG=1 ;;
      --with-planner) WITH_PLANNER=1 ;;
      -h | --help) usage; exit 0 ;;
      *) usage >&2; die "unknown argument: $1" ;;
    esac
    shift
  done
}

# ensure_venv DIR: create a working venv at DIR (recreate it if its interpreter is gone,
# e.g. after the base Python moved) and upgrade pip once, at creation time only.
ensure_venv() {
  local dir="$1"
  if [[ -x "$dir/bin/python" ]] && "$dir/bin/python" -c 'import pip' 2>/dev/null; then
    return 0
  fi
  log "creating venv $dir"
  rm -rf "$dir"
  mkdir -p "$(dirname "$dir")"
  "$PYTHON" -m venv "$dir"
  "$dir/bin/python" -m pip install --quiet --upgrade pip
}

# satisfied PY REQ...: exit 0 iff every requirement specifier is met in PY's environment.
# One interpreter start instead of a pip resolve per component keeps re-runs fast.
satisfied() {
  local py="$1"
  shift
  "$py" - "$@" <<'PYEOF'
import sys
from importlib.metadata import PackageNotFoundError, version

from pip._vendor.packaging.requirements import Requirement

for spec in sys.argv[1:]:
    req = Requirement(spec)
    try:
        have = version(req.name)
    except PackageNotFoundError:
        sys.exit(1)
    if not req.specifier.contains(have, prereleases=True):
        sys.exit(1)
PYEOF
}

# install_project: editable orchestrator with extras. A stamp of pyproject.toml's hash
# avoids re-running the (slow, isolated-build) editable install when nothing changed.
install_project() {
  local py="$VENV/bin/python" stamp="$VENV/.orchestrator-pyproject.sha256" want
  want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
  # matplotlib (the plot extra) draws `ctl collect`'s Pareto plot: its absence forces a re-install.
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] && satisfied "$py" orchestrator matplotlib; then
    log "orchestrator: up to date"
    return 0
  fi
  log "orchestrator: pip install -e .[test,plot,mocker]"
  "$py" -m pip install --quiet -e "${ROOT}[test,plot,mocker]"
  printf '%s\n' "$want" >"$stamp"
}

# install_dynamo: ai-dynamo without its deps (aisimulate cannot be built offline), then
# the runtime wheel and the remaining deps listed in versions.env.
install_dynamo() {
  local py="$VENV/bin/python" deps
  read -r -a deps <<<"$DYNAMO_DEPS"
  if satisfied "$py" "ai-dynamo==$DYNAMO_VERSION" "ai-dynamo-runtime==$DYNAMO_VERSION" "${deps[@]}"; then
    log "dynamo $DYNAMO_VERSION: up to date"
    return 0
  fi
  log "dynamo $DYNAMO_VERSION: installing (--no-deps route)"
  "$py" -m pip install --quiet --no-deps "ai-dynamo==$DYNAMO_VERSION"
  "$py" -m pip install --quiet "ai-dynamo-runtime==$DYNAMO_VERSION" "${deps[@]}"
}

install_router() {
  local py="$VENV/bin/python"
  if satisfied "$py" "sglang-router==$SGLANG_ROUTER_VERSION"; then
    log "sglang-router $SGLANG_ROUTER_VERSION: up to date"
    return 0
  fi
  log "sglang-router $SGLANG_ROUTER_VERSION: installing"
  "$py" -m pip install --quiet "sglang-router==$SGLANG_ROUTER_VERSION"
}

install_smg() {
  local py="$VENV/bin/python"
  if satisfied "$py" "smg==$SMG_VERSION"; then
    log "smg $SMG_VERSION: up to date"
    return 0
  fi
  log "smg $SMG_VERSION: installing"
  "$py" -m pip install --quiet "smg==$SMG_VERSION"
}

# install_tool VENV REQUIREMENT EXECUTABLE: a benchmark client in a venv of its own (its pins
# must not fight Dynamo's), checked with `EXECUTABLE --help`.
install_tool() {
  local venv="$1" req="$2" exe="$3"
  ensure_venv "$venv"
  if satisfied "$venv/bin/python" "$req"; then
    log "$req: up to date ($venv)"
  else
    log "$req: installing into $venv"
    "$venv/bin/python" -m pip install --quiet "$req"
  fi
  "$venv/bin/$exe" --help >/dev/null || die "$exe --help failed"
}

# install_sglang: sglang --no-deps + the light deps its argument parser imports + CPU torch.
# No `pip check` here: the --no-deps install leaves sglang's heavy requirements unmet on purpose.
install_sglang() {
  local py="$SGLANG_VENV/bin/python" deps
  read -r -a deps <<<"$SGLANG_LIGHT_DEPS"
  ensure_venv "$SGLANG_VENV"
  if satisfied "$py" "sglang==$SGLANG_VERSION" "$SGLANG_TORCH" "${deps[@]}"; then
    log "sglang $SGLANG_VERSION: up to date ($SGLANG_VENV)"
  else
    log "sglang $SGLANG_VERSION: installing into $SGLANG_VENV (argv check only; CPU torch)"
    "$py" -m pip install --quiet --no-deps "sglang==$SGLANG_VERSION"
    # pip lists every unmet requirement of the --no-deps sglang as an "ERROR" here: expected,
    # so its output is shown only when the install itself fails.
    local out
    out="$("$py" -m pip install --quiet "${deps[@]}" "$SGLANG_TORCH" 2>&1)" || {
      printf '%s\n' "$out" >&2
      die "could not install ${SGLANG_TORCH} and the light deps: stage the CPU torch wheel in a PIP_FIND_LINKS directory"
    }
  fi
  "$py" -c 'from sglang.srt.server_args import prepare_server_args; prepare_server_args(["--model-path", "m"])' ||
    die "sglang's argument parser does not load in $SGLANG_VENV"
  log "sglang $SGLANG_VERSION: argument parser ok"
  install_dynamo_parser
}

# install_dynamo_parser: Dynamo next to the CPU SGLang, so `python -m dynamo.sglang` command
# lines are checked by Dynamo's own parsing (its flags, then SGLang's; engines/dynamo_check.py).
# --no-deps like the main venv's ai-dynamo; the parser modules need only PyYAML beyond SGLang's
# light deps (~260 MB, most of it the ai-dynamo-runtime extension).
install_dynamo_parser() {
  local py="$SGLANG_VENV/bin/python" deps
  read -r -a deps <<<"$DYNAMO_PARSER_DEPS"
  if satisfied "$py" "ai-dynamo==$DYNAMO_VERSION" "ai-dynamo-runtime==$DYNAMO_VERSION" "${deps[@]}"; then
    log "dynamo $DYNAMO_VERSION parser: up to date ($SGLANG_VENV)"
  else
    log "dynamo $DYNAMO_VERSION parser: installing into $SGLANG_VENV (argv check only)"
    "$py" -m pip install --quiet --no-deps "ai-dynamo==$DYNAMO_VERSION" \
      "ai-dynamo-runtime==$DYNAMO_VERSION" "${deps[@]}" 2>/dev/null ||
      die "could not install ai-dynamo $DYNAMO_VERSION into $SGLANG_VENV"
  fi
  "$py" -c 'from dynamo.sglang.backend_args import DynamoSGLangArgGroup' ||
    die "Dynamo's dynamo.sglang argument parser does not load in $SGLANG_VENV"
  log "dynamo $DYNAMO_VERSION: dynamo.sglang argument parser ok"
}

# install_planner: Dynamo's planner in a venv of its own (its imports and the aisimulate stand-in
# stay out of .venv): ai-dynamo --no-deps + the runtime and Dynamo's deps as in .venv, plus
# PLANNER_DEPS; then the stand-in, unless NVIDIA's real aisimulate_core is installed there.
install_planner() {
  local py="$PLANNER_VENV/bin/python" deps site
  read -r -a deps <<<"$DYNAMO_DEPS $PLANNER_DEPS"
  ensure_venv "$PLANNER_VENV"
  if satisfied "$py" "ai-dynamo==$DYNAMO_VERSION" "ai-dynamo-runtime==$DYNAMO_VERSION" "${deps[@]}"; then
    log "dynamo $DYNAMO_VERSION planner: up to date ($PLANNER_VENV)"
  else
    log "dynamo $DYNAMO_VERSION planner: installing into $PLANNER_VENV"
    "$py" -m pip install --quiet --no-deps "ai-dynamo==$DYNAMO_VERSION"
    "$py" -m pip install --quiet "ai-dynamo-runtime==$DYNAMO_VERSION" "${deps[@]}"
  fi
  if "$py" -c 'import sys, aisimulate_core as a; sys.exit(getattr(a, "STAND_IN", False))' 2>/dev/null; then
    log "aisimulate_core: NVIDIA's own package found, kept"
  else
    site="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    rm -rf "${site:?}/aisimulate_core"
    cp -r "$ROOT/scripts/planner/aisimulate_core" "$site/"
    log "aisimulate_core: the stand-in (optimization_target=sla is refused)"
  fi
  "$py" -c 'import dynamo.planner.core.planner_factory' ||
    die "Dynamo's planner does not import in $PLANNER_VENV"
  log "dynamo $DYNAMO_VERSION: dynamo.planner imports ok"
}

# check_pip PY: fail on any dependency conflict except the documented missing aisimulate.
check_pip() {
  local py="$1" out unexpected
  out="$("$py" -m pip check 2>&1)" || true
  unexpected="$(grep -vE "$PIP_CHECK_ALLOWED|^No broken requirements found\.$" <<<"$out" || true)"
  if [[ -n "$unexpected" ]]; then
    printf '%s\n' "$out" >&2
    die "pip check found dependency conflicts in $py"
  fi
  log "pip check ($py): ok${out:+ -- $out}"
}

# smoke_test: the entry points the orchestrator launches must at least parse --help.
smoke_test() {
  local py="$VENV/bin/python" mod
  for mod in dynamo.frontend dynamo.mocker sglang_router.launch_router smg.launch_router; do
    "$py" -m "$mod" --help >/dev/null 2>&1 || die "python -m $mod --help failed"
  done
  log "smoke test: dynamo.frontend, dynamo.mocker, sglang_router.launch_router, smg.launch_router --help ok"
}

main() {
  parse_args "$@"
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
    die "$PYTHON is older than 3.10 (Dynamo's wheel is cp310-abi3)"
  ensure_venv "$VENV"
  install_project
  install_dynamo
  install_router
  install_smg
  check_pip "$VENV/bin/python"
  smoke_test
  if ((WITH_AIPERF)); then
    install_tool "$AIPERF_VENV" "aiperf==$AIPERF_VERSION" aiperf
    check_pip "$AIPERF_VENV/bin/python"
  fi
  if ((WITH_LM_EVAL)); then
    install_tool "$LM_EVAL_VENV" "lm-eval[api]==$LM_EVAL_VERSION" lm_eval
    check_pip "$LM_EVAL_VENV/bin/python"
  fi
  if ((WITH_SGLANG)); then
    install_sglang
  fi
  if ((WITH_PLANNER)); then
    install_planner
    check_pip "$PLANNER_VENV/bin/python"
  fi
  log "done: activate with 'source ${VENV#"$ROOT"/}/bin/activate'"
}

# One line, so bash has parsed it all before running: an edit of this file while it runs
# (e.g. a git checkout) cannot make bash read on at a stale offset after main returns.
main "$@"; exit
