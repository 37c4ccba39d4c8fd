#!/usr/bin/env bash
# After real_runs_queue3.sh: the third RTE teacher of the rte_minilm set (MiniLM-L6, seed 3, 3 epochs, full RTE;
# the same config as teacher minilm_s3, so plans reuse it), for the TextBrewer comparison's 3 teachers.
cd /work/main; . .venv/bin/activate
export PYTHONPATH=/tmp/snap3 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline TMKD_CHECKPOINTS=/work/main/checkpoints
while pgrep -f real_runs_queue3.sh > /dev/null; do sleep 15; done
echo "start $(date)"
python -P -m tmkd.run experiment=finetune_rte model=minilm_l6 seed=3 trainer.max_epochs=3 data.dir=../shared/data logger=csv trainer.enable_progress_bar=false threads=2 report.latency=false > /tmp/real_rte_s3.log 2>&1; echo "finetune_rte s3 rc=$? $(date)"
