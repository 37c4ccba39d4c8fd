#!/usr/bin/env bash
# The rest of real_runs_squad.sh, from /tmp/snap6: waits for its kd_squad_v2 run, then the second teacher and m-o-1.
cd /work/main; . .venv/bin/activate
export PYTHONPATH=/tmp/snap6 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline TMKD_CHECKPOINTS=/work/main/checkpoints
C="data.dir=../shared/data logger=csv trainer.enable_progress_bar=false threads=2 trainer.check_val_every_n_epoch=2"
while pgrep -f "experiment=kd_squad_v2" > /dev/null; do sleep 15; done
while [ ! -f /tmp/suite_done ]; do sleep 15; done  # the full test suite runs alone first (run_suite_after_kd)
echo "start b $(date)"
python -P -m tmkd.run experiment=finetune_squad_v2 model=minilm_l6 seed=7 $C report.latency=false > /tmp/sq_teacher_s7.log 2>&1; echo "teacher s7 rc=$? $(date)"
python -P -m tmkd.run experiment=m_o_1_squad_v2 teachers=squad_v2_minilm $C > /tmp/sq_m_o_1.log 2>&1; echo "m-o-1 rc=$? $(date)"
