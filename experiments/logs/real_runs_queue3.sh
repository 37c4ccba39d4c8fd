#!/usr/bin/env bash
# After real_runs_queue2.sh: the adapter data-fraction curve again with the adapter defaults the first runs chose
# (mean pooling, 30 epochs; the first curve used [CLS], 10 epochs). Frozen snapshot /tmp/snap3 (`python -P` so that
# PYTHONPATH, not the current folder, supplies tmkd). QNLI: 10/25/50/100% of the 10,475-row subset, full dev.
cd /work/main; . .venv/bin/activate
export PYTHONPATH=/tmp/snap3 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline TMKD_CHECKPOINTS=/work/main/checkpoints
COMMON="data.dir=../shared/data logger=csv trainer.enable_progress_bar=false threads=2"
while pgrep -f real_runs_queue2.sh > /dev/null; do sleep 15; done
echo "start $(date)"
for n in 1048 2619 5238 10475; do
  python -P -m tmkd.run experiment=adapter_qnli_fraction $COMMON data.max_train_samples=$n > /tmp/real_adapter_frac_mean_$n.log 2>&1; echo "fraction $n rc=$? $(date)"
done
