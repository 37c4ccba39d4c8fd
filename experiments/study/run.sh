#!/usr/bin/env bash
# One command of the QNLI study (issue 17) on a frozen snapshot of the code: a git worktree of COMMIT at
# /root/snap-COMMIT (made if missing), the lock's packages (/root/venv-lock, from requirements/lock.txt), the study's
# checkpoints folder, and the log in /root/tmkd-study/NAME.log. Re-running the same line reuses finished runs and
# resumes an interrupted one from its last checkpoint.
#   COMMIT=<sha> [THREADS=1] [NICE=10] experiments/study/run.sh NAME python -m tmkd.run experiment=... [overrides]
#   COMMIT=<sha> experiments/study/run.sh grid python experiments/study/grid.py --data-dir /work/shared/data ...
# THREADS=1 while another job shares the 2 cores (two jobs with 2 torch threads each ran ~8x slower per step).
set -u
COMMIT=${COMMIT:?set COMMIT to the commit to run}
SNAP=/root/snap-$COMMIT
[ -d "$SNAP" ] || git -C "$(dirname "$0")" worktree add --detach "$SNAP" "$COMMIT" > /dev/null
. /root/venv-lock/bin/activate
export PYTHONPATH=$SNAP HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline
export TMKD_CHECKPOINTS=/root/tmkd-study/checkpoints OMP_NUM_THREADS=${THREADS:-2}
cd "$SNAP"
name=$1; shift
nice -n "${NICE:-10}" "$@" > "/root/tmkd-study/$name.log" 2>&1
echo "$name rc=$? commit=$COMMIT $(date)" >> /root/tmkd-study/queue.log
