#!/usr/bin/env bash
# Issue 17, QNLI study: the teachers, fine-tuned on the whole 10,475-row QNLI train subset (no cap), scored on the
# complete dev set (5,463). Pre-declared recipes (not chosen on dev): MiniLM-L6 3 epochs at lr 1e-4 (finetune_qnli's
# lr), MPNet-base 2 epochs at lr 3e-5 (the usual BERT-base fine-tuning range); batch 32, warm-up 10%, seed 42 (MiniLM
# also seed 7). Frozen snapshot: a clone of the commit below (`python -P` so that the snapshot, not the checkout, is
# imported; manifests record its commit); packages from requirements/lock.txt (transformers 5.23.0, torch 2.13.0+cpu)
# in /root/venv-lock. Runs live outside the work tree so that an interrupted queue resumes from last.ckpt when re-run
# with the same snapshot. nice: the tests and code work of the session keep priority.
set -u
COMMIT=45cf3f7
SNAP=/root/snap-$COMMIT
[[ -d $SNAP ]] || { git clone -q /work/main $SNAP && git -C $SNAP checkout -q $COMMIT; }
[[ -x /root/venv-lock/bin/python ]] || { python3 -m venv /root/venv-lock && /root/venv-lock/bin/pip install -q torch==2.13.0 \
  && /root/venv-lock/bin/pip install -q -r $SNAP/requirements/lock.txt; }
. /root/venv-lock/bin/activate
export PYTHONPATH=$SNAP HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline TMKD_CHECKPOINTS=/root/tmkd-study/checkpoints
cd $SNAP
COMMON="data.dir=/work/shared/data logger=csv trainer.enable_progress_bar=false threads=2 report.enabled=false"
echo "start $(date)"
nice -n 10 python -P -m tmkd.run experiment=finetune_qnli model=minilm_l6 seed=42 trainer.max_epochs=3 $COMMON > /root/tmkd-study/minilm_s42.log 2>&1; echo "minilm_s42 rc=$? $(date)"
nice -n 10 python -P -m tmkd.run experiment=finetune_qnli model=mpnet_base seed=42 trainer.max_epochs=2 optim.lr=3e-5 $COMMON > /root/tmkd-study/mpnet_s42.log 2>&1; echo "mpnet_s42 rc=$? $(date)"
nice -n 10 python -P -m tmkd.run experiment=finetune_qnli model=minilm_l6 seed=7 trainer.max_epochs=3 $COMMON > /root/tmkd-study/minilm_s7.log 2>&1; echo "minilm_s7 rc=$? $(date)"
