#!/usr/bin/env bash
# The test command (README, CI): install everything the tests need on a fresh Debian/Ubuntu
# machine (as root), bring up the one-host Slurm testbed, run the whole suite.
#
#   bash scripts/test.sh [pytest args ...]
#
# Idempotent and quick when everything is already installed and the testbed is up.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash scripts/install-system-deps.sh                 # slurm, munge, mariadb, etcd, iproute2
bash scripts/install.sh --with-aiperf --with-lm-eval --with-sglang --with-planner # .venv (+ .venvs/aiperf, lm_eval, sglang, planner)
bash scripts/slurm-testbed.sh up                    # 3 nodes x 8 fake GPUs, with accounting

exec .venv/bin/python -m pytest -q "$@"
