#!/bin/bash
# privstudy sweep driver for Slurm: a small, long-running job that submits a study's trials as job
# arrays (through submitit), follows them, and exits non-zero if any trial failed or was lost.
#
# Usage (from the repository root, where the results/ folder is):
#   sbatch slurm/sweep.sh jobs/STUDY.yaml [privstudy sweep options]
#   sbatch slurm/sweep.sh jobs/mia_cifar10.yaml --smoke
#   sbatch --wait slurm/sweep.sh jobs/demo.yaml            # block until the study is finished
#   sbatch --time=7-00:00:00 --partition=long slurm/sweep.sh jobs/STUDY.yaml   # override any #SBATCH line
#
# The driver needs one core and little memory; the trials' own resources (cpus, mem_gb, gpus,
# timeout_min, partition, qos, account, constraint, extra sbatch flags, trials per task) come from
# the `resources:` of each experiment in the study spec. Its log is results/slurm-driver-<jobid>.log;
# each array task's log is under results/<study>/slurm/<run>/. If the driver itself is cancelled or
# runs out of time, the arrays carry on: follow them with `privstudy status results/<study>` and
# submit the same command again once they have ended (finished trials are skipped).
#
# The privstudy command used: $PRIVSTUDY if set, else .venv/bin/privstudy, else privstudy on PATH
# (activate your conda environment or venv before sbatch: the job inherits your environment).
#SBATCH --job-name=privstudy-driver
#SBATCH --cpus-per-task=1
#SBATCH --mem=2G
#SBATCH --time=2-00:00:00
#SBATCH --output=results/slurm-driver-%j.log
#SBATCH --open-mode=append
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
if [ $# -lt 1 ]; then
    echo "usage: sbatch slurm/sweep.sh jobs/STUDY.yaml [privstudy sweep options]" >&2
    exit 2
fi
if [ -n "${PRIVSTUDY:-}" ]; then cmd=$PRIVSTUDY
elif [ -x .venv/bin/privstudy ]; then cmd=.venv/bin/privstudy
elif command -v privstudy >/dev/null; then cmd=privstudy
else
    echo "error: no privstudy command: run 'make venv' in the repository, activate the environment that has it, or set PRIVSTUDY=/path/to/privstudy" >&2
    exit 2
fi
echo "privstudy driver: job ${SLURM_JOB_ID:-none} on $(hostname) at $(date -Is): $cmd sweep $* --executor slurm"
exec "$cmd" sweep "$@" --executor slurm
