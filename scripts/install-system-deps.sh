#!/usr/bin/env bash
# Install the Debian packages the Slurm testbed (scripts/slurm-testbed.sh) and the
# etcd-based tests need. Idempotent: when everything is installed it only runs
# dpkg-query (well under a second) and does not touch apt.
#
# Debian 12, run as root. No systemd is assumed: apt must not leave distro
# daemons holding the testbed's ports (6817 slurmctld, 6819 slurmdbd, 3306 mariadb,
# 2379 etcd), so service starts are blocked during the install (policy-rc.d) and
# anything a postinst started anyway is stopped afterwards.
set -euo pipefail

PACKAGES=(
  slurmctld slurmd slurm-client munge
  slurmdbd mariadb-server
  etcd-server
  haproxy  # the proxy in front of a frontend pair (frontend.replicas=2)
  iproute2 util-linux
  chromium tmux  # ctl report rendered in headless Chromium; ctl watch in a real terminal
)

log() { printf '[install-system-deps] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root"
command -v apt-get >/dev/null || die "apt-get not found (Debian/Ubuntu host required)"

missing=()
for p in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
  [[ $status == "ii"* ]] || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
  log "all packages present: ${PACKAGES[*]}"
  exit 0
fi

log "installing: ${missing[*]}"
start=$(date +%s.%N)

# Block service starts from maintainer scripts (invoke-rc.d honours policy-rc.d).
policy=/usr/sbin/policy-rc.d
made_policy=0
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  made_policy=1
fi
cleanup() { if ((made_policy)); then rm -f "$policy"; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
  "${missing[@]}" >/dev/null

# Stop any distro daemon that was started anyway (a host with systemd, or no
# policy-rc.d honoured) and that would hold a testbed port. Only processes that
# listen on those ports *and* are the distro binaries are touched; the testbed's
# own daemons (which run with configs under its lab directory) are left alone.
for svc in slurmctld slurmd slurmdbd munge mariadb etcd haproxy; do
  if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
    systemctl stop "$svc" >/dev/null 2>&1 || true
    systemctl disable "$svc" >/dev/null 2>&1 || true
  elif [[ -x /etc/init.d/$svc ]]; then
    service "$svc" stop >/dev/null 2>&1 || true
  fi
done
for port in 6817 6818 6819 3306 2379; do
  for pid in $(ss -Hltnp "sport = :$port" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u); do
    cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
    case $cmd in
      *orchestrator-slurm-lab* | *"${LAB:-/nonexistent-lab}"*) continue ;;
    esac
    case $(cat "/proc/$pid/comm" 2>/dev/null) in
      slurmctld | slurmd | slurmdbd | mariadbd | mysqld | etcd | haproxy)
        log "stopping distro daemon pid $pid on port $port: $cmd"
        kill "$pid" 2>/dev/null || true
        ;;
    esac
  done
done
# System munged (socket /run/munge) is irrelevant to the testbed but not needed either.
if [[ -f /run/munge/munged.pid ]]; then
  kill "$(cat /run/munge/munged.pid)" 2>/dev/null || true
fi

log "done in $(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN{printf "%.1f", e-s}') s"
