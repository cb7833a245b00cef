#!/usr/bin/env bash
# Stop the daemons that up.sh started, by the PIDs it recorded (never by name); keeps $DIR for the logs.
set -uo pipefail
DIR="${PRIVSTUDY_SLURM_DIR:-/tmp/privstudy-slurm}"
[ -d "$DIR/pids" ] || { echo "local cluster: nothing to stop ($DIR/pids not found)"; exit 0; }
for name in slurmd slurmctld slurmdbd mariadbd munged; do   # reverse start order
    f="$DIR/pids/$name.pid"
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
        echo "stopped $name (pid $pid)"
    fi
    rm -f "$f"
done
