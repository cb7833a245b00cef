#!/usr/bin/env bash
# Start a single-node Slurm cluster on this machine, for development and CI: slurmctld, slurmd,
# slurmdbd with a MariaDB server (so `sacct` works as on a real cluster), and munge.
#
#   sudo slurm/local-cluster/up.sh          # installs the Debian packages if missing, starts everything
#   source /tmp/privstudy-slurm/env.sh      # points sbatch/squeue/sacct at it (SLURM_CONF)
#   slurm/local-cluster/down.sh             # stops every daemon it started, by PID
#
# Everything lives in $PRIVSTUDY_SLURM_DIR (default /tmp/privstudy-slurm): configs, state, logs, the
# MariaDB data. Daemons listen on 127.0.0.1 only; MariaDB on its unix socket only. One node named after
# this host, with its CPUs and memory from `slurmd -C` and one emulated GPU (gres gpu:1, File=/dev/null).
# Needs root (the daemons run as root) and, the first time, apt. Exits 3 when it cannot run here.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
DIR="${PRIVSTUDY_SLURM_DIR:-/tmp/privstudy-slurm}"
PORT_BASE="${PRIVSTUDY_SLURM_PORT_BASE:-6817}"   # slurmctld, slurmd, slurmdbd on this port and the next two
CLUSTER=privstudy

cannot() { echo "local cluster: cannot start: $*" >&2; exit 3; }
[ "$(id -u)" -eq 0 ] || cannot "needs root (the Slurm daemons and munge run as root here); run it with sudo"

if ! command -v slurmctld >/dev/null || ! command -v slurmdbd >/dev/null || ! command -v mariadbd >/dev/null \
    || ! command -v munged >/dev/null; then
    command -v apt-get >/dev/null || cannot "slurm-wlm, slurmdbd, munge and mariadb-server are not installed and there is no apt-get"
    echo "installing slurm-wlm, slurmdbd, munge, mariadb-server (Debian packages) ..."
    export DEBIAN_FRONTEND=noninteractive
    # Package scripts must not start system-wide services: we start our own, in $DIR.
    apt-get update -qq >/dev/null 2>&1 || true
    RUNLEVEL=1 apt-get install -y -qq --no-install-recommends slurm-wlm slurmdbd munge mariadb-server \
        mariadb-client >/dev/null || cannot "apt-get install failed"
fi

if [ -f "$DIR/pids/slurmctld.pid" ] && kill -0 "$(cat "$DIR/pids/slurmctld.pid")" 2>/dev/null; then
    echo "local cluster already running (state in $DIR); run down.sh first to restart it" >&2
    exit 0
fi
rm -rf "$DIR"
mkdir -p "$DIR"/{etc,pids,log,spool/ctld,spool/d,munge,mysql,run}
chmod 700 "$DIR/munge"

started=()
stop_started() {
    for pid in "${started[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap 'echo "local cluster: start failed; stopping what was started (logs in $DIR/log)" >&2; stop_started' ERR

start_daemon() {  # name, command...: start in the foreground mode, detached, PID recorded
    local name=$1; shift
    setsid "$@" >"$DIR/log/$name.out" 2>&1 < /dev/null &
    local pid=$!
    echo "$pid" > "$DIR/pids/$name.pid"
    started+=("$pid")
}

wait_for() {  # description, seconds, command...
    local what=$1 secs=$2; shift 2
    local end=$((SECONDS + secs))
    while [ $SECONDS -lt $end ]; do timeout 5 "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
    echo "local cluster: $what did not come up within ${secs}s; logs in $DIR/log" >&2
    return 1
}

# munge: its own key; the socket at the default path, where every Slurm client looks for it
MUNGE_SOCKET=/run/munge/munge.socket.2
if [ -S "$MUNGE_SOCKET" ] && munge -n -S "$MUNGE_SOCKET" >/dev/null 2>&1; then
    cannot "a munged that up.sh did not start already serves $MUNGE_SOCKET; stop it first"
fi
mkdir -p /run/munge
dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$DIR/munge/munge.key"
start_daemon munged munged --foreground --force --key-file="$DIR/munge/munge.key" \
    --socket="$MUNGE_SOCKET" --pid-file="$DIR/run/munged.pid" --seed-file="$DIR/munge/seed" \
    --log-file="$DIR/log/munged.log"
wait_for munged 10 munge -n -S "$MUNGE_SOCKET"

# MariaDB: unix socket only, its data in $DIR
mariadb-install-db --user=root --datadir="$DIR/mysql" --auth-root-authentication-method=socket \
    --skip-test-db > "$DIR/log/mariadb-install.log" 2>&1
start_daemon mariadbd mariadbd --no-defaults --user=root --datadir="$DIR/mysql" --skip-networking \
    --socket="$DIR/run/mysql.sock" --pid-file="$DIR/run/mariadbd.pid" --log-error="$DIR/log/mariadbd.log" \
    --innodb-buffer-pool-size=64M
wait_for mariadbd 30 mariadb --no-defaults --socket="$DIR/run/mysql.sock" -u root -e "select 1"
export MYSQL_UNIX_PORT="$DIR/run/mysql.sock"   # slurmdbd's client library connects through it

# Slurm configs from the templates
cpus=$(slurmd -C | sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' | head -1)
mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -1)
mem=$(( mem * 9 / 10 ))   # leave the OS some room
host=$(hostname -s)
render() {
    sed -e "s|@DIR@|$DIR|g" -e "s|@HOST@|$host|g" -e "s|@CPUS@|$cpus|g" -e "s|@MEM@|$mem|g" \
        -e "s|@CLUSTER@|$CLUSTER|g" -e "s|@CTLD_PORT@|$PORT_BASE|g" -e "s|@SLURMD_PORT@|$((PORT_BASE + 1))|g" \
        -e "s|@DBD_PORT@|$((PORT_BASE + 2))|g" "$HERE/$1" > "$DIR/etc/$2"
}
render slurm.conf.in slurm.conf
render slurmdbd.conf.in slurmdbd.conf
render gres.conf.in gres.conf
chmod 600 "$DIR/etc/slurmdbd.conf"
export SLURM_CONF="$DIR/etc/slurm.conf"
cat > "$DIR/env.sh" <<ENV
# source this file to use the local cluster
export SLURM_CONF="$SLURM_CONF"
ENV

start_daemon slurmdbd slurmdbd -D
wait_for slurmdbd 30 sacctmgr -n list cluster
sacctmgr -i add cluster "$CLUSTER" >/dev/null
start_daemon slurmctld slurmctld -D -i -f "$SLURM_CONF"
wait_for slurmctld 30 scontrol ping
start_daemon slurmd slurmd -D -f "$SLURM_CONF"
wait_for "node $host" 30 sh -c "sinfo -h -N -o %T | grep -qE '^(idle|mixed|allocated)'"
trap - ERR
echo "local cluster up: node $host ($cpus CPUs, ${mem} MB, gres gpu:1), partition debug, accounting on"
echo "state and logs in $DIR; now run:  source $DIR/env.sh"
