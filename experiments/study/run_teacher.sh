#!/usr/bin/env bash
# One teacher run of the QNLI study (issue 17) on the frozen snapshot 45cf3f7 (experiments/logs/study_teachers.sh
# made it, with /root/venv-lock from requirements/lock.txt): $1 = log name, the rest = overrides. Re-running the
# same line resumes the run from its last checkpoint. THREADS=1 while the machine is shared (two torch threads on a
# busy 2-core machine ran ~8x slower per step than one), 2 when it is idle.
#   THREADS=2 experiments/study/run_teacher.sh mpnet_s42 experiment=finetune_qnli model=mpnet_base seed=42 \
#       trainer.max_epochs=2 optim.lr=3e-5
set -u
COMMIT=45cf3f7
SNAP=/root/snap-$COMMIT
. /root/venv-lock/bin/activate
export PYTHONPATH=$SNAP HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline TMKD_CHECKPOINTS=/root/tmkd-study/checkpoints
cd $SNAP
COMMON="data.dir=/work/shared/data logger=csv trainer.enable_progress_bar=false threads=${THREADS:-2} report.enabled=false"
name=$1; shift
nice -n 10 python -P -m tmkd.run "$@" $COMMON > /root/tmkd-study/$name.log 2>&1; echo "$name rc=$? $(date)" >> /root/tmkd-study/queue.log
