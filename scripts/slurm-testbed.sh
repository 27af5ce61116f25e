#!/usr/bin/env bash
# A real multi-node Slurm cluster on this one Linux host, for tests and CI.
#
#   scripts/slurm-testbed.sh up            start (idempotent: restarts missing daemons)
#   scripts/slurm-testbed.sh down [--clean] stop and remove everything it made
#                                          (--clean: also state, logs, configs, database)
#   scripts/slurm-testbed.sh status        daemon status and sinfo
#
# Topology (see docs: shared reference "slurm-testbed.md"):
#   host netns: munged (private socket), MariaDB 127.0.0.1:3307, slurmdbd :6819,
#               slurmctld (own UTS ns, hostname "slurmctl"), bridge br-slurm 10.77.0.1/24
#   netns slurm-nodeN: eth0 10.77.0.(10+N), UTS "nodeN", own mount ns with the lab
#               hosts file over /etc/hosts and the lab etc over /etc/slurm, slurmd -N nodeN,
#               GPUS fake GPUs (character devices, major 195) -> CUDA_VISIBLE_DEVICES.
#
# Environment: LAB (default /var/lib/orchestrator-slurm-lab), NODES (3), GPUS (8),
#              PROCTRACK (cgroup|pgid; default cgroup when a v1 freezer exists).
# Needs root (netns, mounts, cgroups, mknod), Debian 12 packages (installed by
# scripts/install-system-deps.sh when missing). No systemd needed.
set -euo pipefail

LAB=${LAB:-/var/lib/orchestrator-slurm-lab}
NODES=${NODES:-3}
GPUS=${GPUS:-8}
BRIDGE=br-slurm
NET=10.77.0
CTL_IP=$NET.1
DB_PORT=3307
DBD_PORT=6819
CTLD_PORT=6817
FREEZER_ROOT=/sys/fs/cgroup/freezer
FREEZER_LAB=$FREEZER_ROOT/slurmlab
HOSTS_MARK="# orchestrator-slurm-testbed"
HOST_CONF_DIR=/etc/slurm
HOST_CONF=$HOST_CONF_DIR/slurm.conf
HOST_CONF_BACKUP=$HOST_CONF_DIR/slurm.conf.before-testbed
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SELF=$SCRIPT_DIR/$(basename "${BASH_SOURCE[0]}")

ETC=$LAB/etc
RUN=$LAB/run
LOG=$LAB/log
MUNGE_DIR=$LAB/munge
MUNGE_SOCK=$MUNGE_DIR/munge.sock
MYSQL_DIR=$LAB/mysql
MYSQL_SOCK=$MYSQL_DIR/mysqld.sock
SLURM_CONF_FILE=$ETC/slurm.conf
export SLURM_CONF=$SLURM_CONF_FILE

T0=$EPOCHREALTIME

log() { printf '[slurm-testbed %6.2fs] %s\n' "$(elapsed)" "$*" >&2; }
elapsed() { awk -v a="$T0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.2f", b-a}'; }

# die MESSAGE [LOGFILE...]: print the message and the tail of each given log file.
die() {
  local msg=$1
  shift
  printf '[slurm-testbed] ERROR: %s\n' "$msg" >&2
  local f
  for f in "$@"; do
    if [[ -s $f ]]; then
      printf -- '----- last lines of %s -----\n' "$f" >&2
      tail -n 25 "$f" >&2
    fi
  done
  exit 1
}

# wait_until TIMEOUT_S CMD...: poll CMD (every 50 ms) until it succeeds or the deadline passes.
wait_until() {
  local timeout=$1
  shift
  local deadline
  deadline=$(awk -v n="$EPOCHREALTIME" -v t="$timeout" 'BEGIN{printf "%.3f", n+t}')
  while ! "$@" >/dev/null 2>&1; do
    if awk -v n="$EPOCHREALTIME" -v d="$deadline" 'BEGIN{exit !(n>d)}'; then
      return 1
    fi
    sleep 0.05
  done
}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# ensure_port_free PORT WHAT: fail clearly when another process listens on PORT.
ensure_port_free() {
  local users
  users=$(ss -Hltnp "sport = :$1" 2>/dev/null || true)
  [[ -z $users ]] || die "port $1 (needed by $2) is already in use; stop that process first:
$users"
}

# is_lab_proc PID COMM: PID is alive, is COMM, and belongs to this lab (its
# command line or environment names the lab directory).
is_lab_proc() {
  local pid=$1 comm=$2
  local c=
  [[ -n $pid ]] || return 1
  { read -r c <"/proc/$pid/comm"; } 2>/dev/null || return 1
  [[ $c == "$comm" ]] || return 1
  if { tr '\0' '\n' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -qF "$LAB/"; then
    return 0
  fi
  { tr '\0' '\n' <"/proc/$pid/environ"; } 2>/dev/null | grep -qxF "SLURM_CONF=$SLURM_CONF_FILE"
}

# pid_of PIDFILE COMM: print the pid if the daemon of that pid file is alive.
pid_of() {
  local pidfile=$1 comm=$2 pid
  [[ -r $pidfile ]] || return 1
  pid=$(tr -dc '0-9' <"$pidfile")
  is_lab_proc "$pid" "$comm" || return 1
  printf '%s\n' "$pid"
}

# All live processes of this lab (daemons and step daemons), by scanning /proc.
lab_pids() {
  local d pid comm
  for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    { read -r comm <"$d/comm"; } 2>/dev/null || continue
    case $comm in
      munged | mariadbd | slurmdbd | slurmctld | slurmscriptd | slurmd | slurmstepd)
        if is_lab_proc "$pid" "$comm"; then printf '%s\n' "$pid"; fi
        ;;
    esac
  done
}

node_ip() { printf '%s.%d\n' "$NET" $((10 + $1)); }

have_freezer() {
  [[ -d $FREEZER_ROOT ]] && awk '$2 == "/sys/fs/cgroup/freezer" && $3 == "cgroup" {f=1} END{exit !f}' /proc/mounts
}

choose_proctrack() {
  if [[ -n ${PROCTRACK:-} ]]; then
    printf '%s\n' "$PROCTRACK"
  elif have_freezer; then
    printf 'cgroup\n'
  else
    printf 'pgid\n'
  fi
}

# ---------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------

# write_if_changed FILE MODE: write stdin to FILE only when its content differs.
write_if_changed() {
  local file=$1 mode=$2 tmp
  tmp=$(mktemp "$file.XXXXXX")
  cat >"$tmp"
  chmod "$mode" "$tmp"
  if [[ -f $file ]] && cmp -s "$tmp" "$file"; then
    rm -f "$tmp"
  else
    mv -f "$tmp" "$file"
  fi
}

# A running cluster whose slurm.conf changed (this script's new version): its Slurm daemons
# restart, since slurmctld reads some settings (PreemptType, partitions) at start-up only;
# jobs on it are cancelled first.
restart_if_reconfigured() {
  pid_of "$RUN/slurmctld.pid" slurmctld >/dev/null || return 0
  [[ $SLURM_CONF_FILE -nt $RUN/slurmctld.pid ]] || return 0
  log "slurm.conf changed: restarting slurmctld and slurmd"
  timeout 10 scancel --full --quiet --user=root 2>/dev/null || true
  # shellcheck disable=SC2046
  term_and_wait 10 $(slurm_daemon_pids)
}

# The lab's slurmctld, slurmscriptd and slurmd pids.
slurm_daemon_pids() {
  local pid
  for pid in $(lab_pids); do
    case $(cat "/proc/$pid/comm" 2>/dev/null) in
      slurmctld | slurmd | slurmscriptd) printf '%s\n' "$pid" ;;
    esac
  done
}

gpu_files() {
  if ((GPUS == 1)); then
    printf '%s/dev/nvidia0' "$LAB"
  else
    printf '%s/dev/nvidia[0-%d]' "$LAB" $((GPUS - 1))
  fi
}

write_configs() {
  local proctrack=$1 n
  mkdir -p "$ETC" "$RUN" "$LOG" "$LAB/state/ctld" "$LAB/dev" "$MUNGE_DIR" "$MYSQL_DIR"
  for ((n = 1; n <= NODES; n++)); do mkdir -p "$LAB/state/node$n"; done

  {
    cat <<EOF
# Generated by scripts/slurm-testbed.sh; do not edit.
ClusterName=lab
SlurmctldHost=slurmctl($CTL_IP)
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCK
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$CTLD_PORT
SlurmdPort=6818
StateSaveLocation=$LAB/state/ctld
SlurmdSpoolDir=$LAB/state/%n
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd-%n.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
ProctrackType=proctrack/$proctrack
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
MessageTimeout=10
KillWait=5
UnkillableStepTimeout=30
MinJobAge=600
InactiveLimit=0
GresTypes=gpu
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$CTL_IP
AccountingStoragePort=$DBD_PORT
AccountingStoragePass=$MUNGE_SOCK
AccountingStorageTRES=gres/gpu
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/none
EOF
    for ((n = 1; n <= NODES; n++)); do
      printf 'NodeName=node%d NodeAddr=%s NodeHostname=node%d CPUs=8 RealMemory=4096 Gres=gpu:%d State=UNKNOWN\n' \
        "$n" "$(node_ip "$n")" "$n" "$GPUS"
    done
    printf 'PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP\n'
  } | write_if_changed "$SLURM_CONF_FILE" 644

  printf 'AutoDetect=off\nNodeName=node[1-%d] Name=gpu File=%s\n' "$NODES" "$(gpu_files)" |
    write_if_changed "$ETC/gres.conf" 644

  if [[ $proctrack == cgroup ]]; then
    printf 'CgroupPlugin=cgroup/v1\nCgroupAutomount=yes\nCgroupMountpoint=/sys/fs/cgroup\n'
  else
    printf 'CgroupPlugin=cgroup/v1\n'
  fi | write_if_changed "$ETC/cgroup.conf" 644

  # Lab hosts file: the host's /etc/hosts without our lines, plus the cluster names.
  {
    grep -vF "$HOSTS_MARK" /etc/hosts || true
    printf '%s slurmctl %s\n' "$CTL_IP" "$HOSTS_MARK"
    for ((n = 1; n <= NODES; n++)); do printf '%s node%d %s\n' "$(node_ip "$n")" "$n" "$HOSTS_MARK"; done
  } | write_if_changed "$ETC/hosts" 644

  # Database password: made once, kept with the database.
  if [[ ! -s $MYSQL_DIR/slurm.pass ]]; then
    (umask 077 && head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$MYSQL_DIR/slurm.pass")
  fi
  cat <<EOF | write_if_changed "$ETC/slurmdbd.conf" 600
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCK
DbdHost=localhost
DbdPort=$DBD_PORT
SlurmUser=root
LogFile=$LOG/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$(cat "$MYSQL_DIR/slurm.pass")
StorageLoc=slurm_acct_db
EOF

  printf 'export SLURM_CONF=%s\n' "$SLURM_CONF_FILE" | write_if_changed "$LAB/env.sh" 644

  # Fake GPUs: character devices, major 195 (only stat()ed by slurmd).
  local g dev
  for ((g = 0; g < GPUS; g++)); do
    dev=$LAB/dev/nvidia$g
    if [[ ! -c $dev ]]; then
      rm -f "$dev"
      mknod "$dev" c 195 "$g"
    fi
  done
}

# Host-side integration: node names in /etc/hosts, /etc/slurm/slurm.conf symlink.
install_host_files() {
  local n tmp
  tmp=$(mktemp)
  grep -vF "$HOSTS_MARK" /etc/hosts >"$tmp" || true
  for ((n = 1; n <= NODES; n++)); do printf '%s node%d %s\n' "$(node_ip "$n")" "$n" "$HOSTS_MARK" >>"$tmp"; done
  # Rewrite in place (keeps the inode: /etc/hosts may be a bind mount).
  cmp -s "$tmp" /etc/hosts || cat "$tmp" >/etc/hosts
  rm -f "$tmp"

  if [[ ! -d $HOST_CONF_DIR ]]; then
    mkdir -p "$HOST_CONF_DIR"
    : >"$RUN/host-conf-dir-created"
  fi
  if [[ -L $HOST_CONF && $(readlink "$HOST_CONF") == "$SLURM_CONF_FILE" ]]; then
    return 0
  fi
  if [[ -e $HOST_CONF || -L $HOST_CONF ]]; then
    [[ -e $HOST_CONF_BACKUP || -L $HOST_CONF_BACKUP ]] || mv "$HOST_CONF" "$HOST_CONF_BACKUP"
    rm -f "$HOST_CONF"
  fi
  ln -s "$SLURM_CONF_FILE" "$HOST_CONF"
}

remove_host_files() {
  local tmp
  if grep -qF "$HOSTS_MARK" /etc/hosts 2>/dev/null; then
    tmp=$(mktemp)
    grep -vF "$HOSTS_MARK" /etc/hosts >"$tmp" || true
    cat "$tmp" >/etc/hosts
    rm -f "$tmp"
  fi
  if [[ -L $HOST_CONF && $(readlink "$HOST_CONF") == "$SLURM_CONF_FILE" ]]; then
    rm -f "$HOST_CONF"
  fi
  if [[ ! -e $HOST_CONF && (-e $HOST_CONF_BACKUP || -L $HOST_CONF_BACKUP) ]]; then
    mv "$HOST_CONF_BACKUP" "$HOST_CONF"
  fi
  if [[ -e $RUN/host-conf-dir-created ]]; then
    rmdir "$HOST_CONF_DIR" 2>/dev/null || true
    rm -f "$RUN/host-conf-dir-created"
  fi
}

# ---------------------------------------------------------------------------
# daemons
# ---------------------------------------------------------------------------

start_munged() {
  if pid_of "$MUNGE_DIR/munged.pid" munged >/dev/null; then return 0; fi
  chmod 711 "$MUNGE_DIR"
  if [[ ! -s $MUNGE_DIR/munge.key ]]; then
    (umask 277 && head -c 1024 /dev/urandom >"$MUNGE_DIR/munge.key")
  fi
  chmod 400 "$MUNGE_DIR/munge.key"
  rm -f "$MUNGE_SOCK" "$MUNGE_SOCK.lock"
  munged --force --socket="$MUNGE_SOCK" --key-file="$MUNGE_DIR/munge.key" \
    --pid-file="$MUNGE_DIR/munged.pid" --log-file="$LOG/munged.log" \
    --seed-file="$MUNGE_DIR/munged.seed" </dev/null >>"$LOG/munged.log" 2>&1 ||
    die "munged failed to start" "$LOG/munged.log"
  wait_until 10 test -S "$MUNGE_SOCK" || die "munged socket did not appear" "$LOG/munged.log"
  log "munged started"
}

setup_network() {
  local n ns ip
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
  fi
  if ! ip -4 addr show dev "$BRIDGE" | grep -q "inet $CTL_IP/24"; then
    ip addr add "$CTL_IP/24" dev "$BRIDGE"
  fi
  ip link set "$BRIDGE" up
  # Delayed ACKs off on the lab routes (Slurm's persistent slurmdbd connections
  # otherwise stall ~40 ms per message, see reference §14.6).
  ip route change table local local "$CTL_IP" dev "$BRIDGE" proto kernel scope host src "$CTL_IP" quickack 1 2>/dev/null || true
  ip route replace "$NET.0/24" dev "$BRIDGE" proto kernel scope link src "$CTL_IP" quickack 1

  for ((n = 1; n <= NODES; n++)); do
    ns=slurm-node$n
    ip=$(node_ip "$n")
    if ! ip netns list | grep -qw "$ns"; then
      ip netns add "$ns"
    fi
    if ! ip -n "$ns" link show eth0 >/dev/null 2>&1; then
      ip link del "veth-n$n" 2>/dev/null || true
      ip link add "veth-n$n" type veth peer name eth0 netns "$ns"
    fi
    ip link set "veth-n$n" master "$BRIDGE"
    ip link set "veth-n$n" up
    ip -n "$ns" link set lo up
    if ! ip -n "$ns" -4 addr show dev eth0 | grep -q "inet $ip/24"; then
      ip -n "$ns" addr add "$ip/24" dev eth0
    fi
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route replace "$NET.0/24" dev eth0 proto kernel scope link src "$ip" quickack 1
    ip -n "$ns" route replace default via "$CTL_IP" quickack 1
  done
}

mysql_admin() { mariadb --no-defaults -S "$MYSQL_SOCK" -u root "$@"; }

start_mariadb() {
  if ! pid_of "$MYSQL_DIR/mariadbd.pid" mariadbd >/dev/null; then
    if [[ ! -d $MYSQL_DIR/data/mysql ]]; then
      rm -rf "$MYSQL_DIR/data"
      mariadb-install-db --no-defaults --user=root --datadir="$MYSQL_DIR/data" \
        --auth-root-authentication-method=socket --skip-test-db >"$LOG/mariadb-install.log" 2>&1 ||
        die "mariadb-install-db failed" "$LOG/mariadb-install.log"
      log "MariaDB datadir initialised"
    fi
    ensure_port_free "$DB_PORT" mariadbd
    setsid mariadbd --no-defaults --user=root --datadir="$MYSQL_DIR/data" \
      --socket="$MYSQL_SOCK" --pid-file="$MYSQL_DIR/mariadbd.pid" \
      --log-error="$LOG/mariadb.log" --bind-address=127.0.0.1 --port="$DB_PORT" \
      --skip-name-resolve --skip-log-bin \
      --innodb-buffer-pool-size=8M --innodb-log-file-size=8M --innodb-log-buffer-size=1M \
      --key-buffer-size=1M --aria-pagecache-buffer-size=1M --query-cache-size=0 \
      --innodb-flush-log-at-trx-commit=0 --innodb-doublewrite=0 \
      </dev/null >>"$LOG/mariadb.log" 2>&1 &
    disown
    wait_until 30 mariadb-admin --no-defaults -S "$MYSQL_SOCK" -u root ping ||
      die "MariaDB did not answer ping within 30 s" "$LOG/mariadb.log"
    log "MariaDB started (127.0.0.1:$DB_PORT)"
  fi
  mysql_admin -e "
    CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$(cat "$MYSQL_DIR/slurm.pass")';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" ||
    die "could not create the accounting database/user" "$LOG/mariadb.log"
}

start_slurmdbd() {
  if ! pid_of "$RUN/slurmdbd.pid" slurmdbd >/dev/null; then
    ensure_port_free "$DBD_PORT" slurmdbd
    slurmdbd </dev/null >>"$LOG/slurmdbd.log" 2>&1 || die "slurmdbd failed to start" "$LOG/slurmdbd.log"
    wait_until 30 port_open "$CTL_IP" "$DBD_PORT" ||
      die "slurmdbd is not listening on $CTL_IP:$DBD_PORT after 30 s" "$LOG/slurmdbd.log" "$LOG/mariadb.log"
    log "slurmdbd started (:$DBD_PORT)"
  fi
  if [[ -z $(sacctmgr -n -P show cluster lab format=cluster 2>/dev/null) ]]; then
    sacctmgr -i add cluster lab >/dev/null 2>&1 || die "sacctmgr add cluster lab failed" "$LOG/slurmdbd.log"
  fi
}

start_slurmctld() {
  if pid_of "$RUN/slurmctld.pid" slurmctld >/dev/null; then return 0; fi
  ensure_port_free "$CTLD_PORT" slurmctld
  unshare --uts /bin/sh -c 'hostname slurmctl && exec slurmctld -f "$1"' sh "$SLURM_CONF_FILE" \
    </dev/null >>"$LOG/slurmctld.log" 2>&1 || die "slurmctld failed to start" "$LOG/slurmctld.log"
  wait_until 30 pid_of "$RUN/slurmctld.pid" slurmctld ||
    die "slurmctld exited during start-up" "$LOG/slurmctld.log"
  wait_until 30 port_open "$CTL_IP" "$CTLD_PORT" ||
    die "slurmctld is not listening on :$CTLD_PORT after 30 s" "$LOG/slurmctld.log"
  log "slurmctld started"
}

start_slurmd() {
  local n=$1 proctrack=$2 cg_args=() launch_log
  if pid_of "$RUN/slurmd-node$n.pid" slurmd >/dev/null; then return 0; fi
  launch_log=$LOG/launch-node$n.log
  mkdir -p "$LAB/state/node$n"
  if [[ $proctrack == cgroup ]]; then
    mkdir -p "$FREEZER_LAB/node$n"
    cg_args=(--cgroup)
  fi
  (
    if [[ $proctrack == cgroup ]]; then
      # Move this subshell into the node's freezer cgroup; with unshare --cgroup
      # that subtree becomes the node's cgroup root.
      echo "$BASHPID" >"$FREEZER_LAB/node$n/cgroup.procs"
    fi
    exec ip netns exec "slurm-node$n" unshare --uts --mount "${cg_args[@]}" \
      env LAB="$LAB" /bin/bash "$SELF" _node "$n" "$proctrack"
  ) </dev/null >>"$launch_log" 2>&1 || die "slurmd on node$n failed to start" "$launch_log" "$LOG/slurmd-node$n.log"
  log "slurmd node$n started"
}

# Runs inside the node's netns + fresh UTS/mount(/cgroup) namespaces.
node_launcher() {
  local n=$1 proctrack=$2
  hostname "node$n"
  mount --make-rprivate /
  mount --bind "$ETC/hosts" /etc/hosts
  mkdir -p /etc/slurm 2>/dev/null || true
  mount --bind "$ETC" /etc/slurm
  if [[ $proctrack == cgroup ]]; then
    mount -t tmpfs -o mode=755 cgroup_root /sys/fs/cgroup
    mkdir -p /sys/fs/cgroup/freezer
    mount -t cgroup -o freezer freezer /sys/fs/cgroup/freezer
  fi
  exec slurmd -f "$SLURM_CONF_FILE" -N "node$n"
}

# Exact per-node states from sinfo, e.g. "node1 idle".
nodes_all_idle() {
  local out
  out=$(sinfo -h -N -o '%N %T' 2>/dev/null) || return 1
  [[ $(awk '$2 == "idle"' <<<"$out" | sort -u | wc -l) -eq $NODES ]] &&
    [[ $(sort -u <<<"$out" | wc -l) -eq $NODES ]]
}

sacct_ready() { sacct -n -X -o JobID -S now-1hour >/dev/null 2>&1; }

params_string() { printf 'NODES=%s GPUS=%s PROCTRACK=%s\n' "$NODES" "$GPUS" "$1"; }

anything_running() {
  ip link show "$BRIDGE" >/dev/null 2>&1 || ip netns list | grep -q '^slurm-node' || [[ -n $(lab_pids) ]]
}

cmd_up() {
  [[ $(id -u) -eq 0 ]] || die "must run as root (network namespaces, mounts, cgroups, mknod)"
  [[ $NODES =~ ^[1-9][0-9]*$ && $NODES -le 200 ]] || die "NODES must be 1..200 (got '$NODES')"
  [[ $GPUS =~ ^[1-9][0-9]*$ && $GPUS -le 64 ]] || die "GPUS must be 1..64 (got '$GPUS')"

  local b
  for b in slurmctld slurmd sinfo srun sacct sacctmgr munged slurmdbd mariadbd mariadb-install-db etcd ip unshare; do
    if ! command -v "$b" >/dev/null; then
      log "'$b' missing: running install-system-deps.sh"
      bash "$SCRIPT_DIR/install-system-deps.sh" || die "installing system packages failed"
      break
    fi
  done

  local proctrack
  proctrack=$(choose_proctrack)
  [[ $proctrack == cgroup || $proctrack == pgid ]] || die "PROCTRACK must be cgroup or pgid"
  if [[ $proctrack == cgroup ]] && ! have_freezer; then
    die "PROCTRACK=cgroup needs a cgroup-v1 freezer at $FREEZER_ROOT"
  fi
  mkdir -p "$RUN"
  if [[ -f $RUN/params ]] && anything_running && [[ $(cat "$RUN/params") != "$(params_string "$proctrack")" ]]; then
    die "cluster is running with $(cat "$RUN/params"); requested $(params_string "$proctrack"). Run '$0 down' first."
  fi
  # A stale slurmctld state with another node count would confuse slurmctld.
  if [[ -f $RUN/params ]] && [[ $(cat "$RUN/params") != "$(params_string "$proctrack")" ]]; then
    rm -rf "$LAB/state/ctld" && mkdir -p "$LAB/state/ctld"
  fi
  params_string "$proctrack" >"$RUN/params"

  write_configs "$proctrack"
  restart_if_reconfigured
  install_host_files
  start_munged
  setup_network
  start_mariadb
  start_slurmdbd
  start_slurmctld
  local n
  for ((n = 1; n <= NODES; n++)); do start_slurmd "$n" "$proctrack"; done
  log "daemons running (proctrack/$proctrack, $NODES nodes x $GPUS GPUs)"

  if ! wait_until 60 nodes_all_idle; then
    sinfo -N -l >&2 || true
    local logs=("$LOG/slurmctld.log")
    for ((n = 1; n <= NODES; n++)); do logs+=("$LOG/slurmd-node$n.log"); done
    die "nodes did not all reach state 'idle' within 60 s" "${logs[@]}"
  fi
  log "all $NODES nodes idle"
  timeout 60 srun -N "$NODES" --ntasks-per-node=1 -t 1 true ||
    die "smoke test 'srun -N$NODES true' failed" "$LOG/slurmctld.log" "$LOG/slurmd-node1.log"
  wait_until 30 sacct_ready || die "sacct does not answer (slurmdbd)" "$LOG/slurmdbd.log"
  log "smoke srun ok, sacct ok"
  printf '[slurm-testbed] cluster up in %s s\n' "$(elapsed)" >&2
  printf '[slurm-testbed] host clients: %s -> %s (or: source %s/env.sh)\n' "$HOST_CONF" "$SLURM_CONF_FILE" "$LAB" >&2
}

# term_and_wait TIMEOUT PID...: SIGTERM the pids together, wait, SIGKILL leftovers.
term_and_wait() {
  local timeout=$1
  shift
  (($# > 0)) || return 0
  kill -TERM "$@" 2>/dev/null || true
  local deadline pid alive
  deadline=$(awk -v n="$EPOCHREALTIME" -v t="$timeout" 'BEGIN{printf "%.3f", n+t}')
  while :; do
    alive=()
    for pid in "$@"; do [[ -d /proc/$pid ]] && alive+=("$pid"); done
    ((${#alive[@]} > 0)) || return 0
    if awk -v n="$EPOCHREALTIME" -v d="$deadline" 'BEGIN{exit !(n>d)}'; then
      log "SIGKILL after ${timeout}s: ${alive[*]}"
      kill -KILL "${alive[@]}" 2>/dev/null || true
      return 0
    fi
    sleep 0.05
  done
}

cmd_down() {
  local clean=${1:-}
  [[ $(id -u) -eq 0 ]] || die "must run as root"
  local pid n ns

  # 1. cancel jobs while slurmctld and munged are still there.
  if pid_of "$RUN/slurmctld.pid" slurmctld >/dev/null && [[ -f $SLURM_CONF_FILE ]]; then
    timeout 10 scancel --full --quiet --user=root 2>/dev/null || true
  fi

  # 2. slurmd + slurmctld in parallel.
  # shellcheck disable=SC2046
  term_and_wait 10 $(slurm_daemon_pids)

  # 3. accounting + munge together (slurmctld is gone, its last records are sent).
  local rest=()
  for pid in $(lab_pids); do
    case $(cat "/proc/$pid/comm" 2>/dev/null) in
      slurmdbd | mariadbd | munged) rest+=("$pid") ;;
    esac
  done
  if ((${#rest[@]} > 0)); then kill -TERM "${rest[@]}" 2>/dev/null || true; fi

  # 4. node namespaces: kill leftovers (slurmstepd, job processes), delete netns.
  for ns in $(ip netns list | awk '$1 ~ /^slurm-node[0-9]+$/ {print $1}'); do
    # shellcheck disable=SC2046
    kill -KILL $(ip netns pids "$ns") 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
  for n in $(ip -o link show type veth 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' | grep '^veth-n[0-9]*$' || true); do
    ip link del "$n" 2>/dev/null || true
  done
  ip link del "$BRIDGE" 2>/dev/null || true

  # 5. per-node freezer cgroups, leaves first (after killing anything left in them).
  if [[ -d $FREEZER_LAB ]]; then
    local procs
    procs=$(find "$FREEZER_LAB" -name cgroup.procs -exec cat {} + 2>/dev/null || true)
    if [[ -n $procs ]]; then
      find "$FREEZER_LAB" -name freezer.state -exec sh -c 'echo THAWED > "$1"' sh {} \; 2>/dev/null || true
      # shellcheck disable=SC2086
      kill -KILL $procs 2>/dev/null || true
      wait_until 5 sh -c '[ -z "$(find "$1" -name cgroup.procs -exec cat {} + 2>/dev/null)" ]' sh "$FREEZER_LAB" || true
    fi
    find "$FREEZER_LAB" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    [[ ! -d $FREEZER_LAB ]] || log "warning: could not remove $FREEZER_LAB"
  fi

  # 6. wait for slurmdbd/mariadbd/munged; anything of the lab still alive gets SIGKILL.
  term_and_wait 10 "${rest[@]}"
  local left
  left=$(lab_pids)
  if [[ -n $left ]]; then
    # shellcheck disable=SC2086
    term_and_wait 5 $left
  fi

  remove_host_files
  rm -f "$RUN"/*.pid "$MUNGE_DIR/munged.pid" "$MYSQL_DIR/mariadbd.pid" "$MUNGE_SOCK" "$MYSQL_SOCK" 2>/dev/null || true

  if [[ $clean == --clean ]]; then
    rm -rf "$LAB"
    log "removed $LAB (state, database, configs, logs)"
  fi
  printf '[slurm-testbed] cluster down in %s s\n' "$(elapsed)" >&2
}

cmd_status() {
  local rc=0 n pid
  show() {
    local name=$1 pidfile=$2 comm=$3
    if pid=$(pid_of "$pidfile" "$comm"); then
      printf '  %-12s running (pid %s)\n' "$name" "$pid"
    else
      printf '  %-12s STOPPED\n' "$name"
      rc=1
    fi
  }
  printf 'lab: %s  %s\n' "$LAB" "$(cat "$RUN/params" 2>/dev/null || echo '(never started)')"
  show munged "$MUNGE_DIR/munged.pid" munged
  show mariadbd "$MYSQL_DIR/mariadbd.pid" mariadbd
  show slurmdbd "$RUN/slurmdbd.pid" slurmdbd
  show slurmctld "$RUN/slurmctld.pid" slurmctld
  for ((n = 1; n <= NODES; n++)); do show "slurmd node$n" "$RUN/slurmd-node$n.pid" slurmd; done
  printf 'netns: %s\n' "$(ip netns list | awk '$1 ~ /^slurm-node/ {print $1}' | sort | tr '\n' ' ')"
  if [[ -f $SLURM_CONF_FILE ]] && pid_of "$RUN/slurmctld.pid" slurmctld >/dev/null; then
    sinfo -N -o '%N %T %G %c %m' || rc=1
  fi
  return "$rc"
}

usage() {
  printf 'usage: %s up | down [--clean] | status\n' "$0" >&2
  exit 2
}

case ${1:-} in
  up) cmd_up ;;
  down)
    [[ -z ${2:-} || ${2:-} == --clean ]] || usage
    cmd_down "${2:-}"
    ;;
  status) cmd_status ;;
  _node) node_launcher "$2" "$3" ;;
  *) usage ;;
esac
