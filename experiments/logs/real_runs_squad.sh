#!/usr/bin/env bash
# Issue 8, real SQuAD 2.0 on this 2-core CPU: train = the 4,719-question v2.0 train subset in ../shared/data (all of
# it), dev = the complete v2.0 dev (11,873 questions). MiniLM-L6 teachers, the 3-layer MiniLM student, 2 epochs,
# validated once at the end of training (a full-dev pass costs ~8 min for the teacher here). Runs from a frozen
# worktree (/tmp/snap5) so edits to /work/main do not reach a running job.
cd /work/main; . .venv/bin/activate
export PYTHONPATH=/tmp/snap5 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline TMKD_CHECKPOINTS=/work/main/checkpoints
C="data.dir=../shared/data logger=csv trainer.enable_progress_bar=false threads=2 trainer.check_val_every_n_epoch=2"
echo "start $(date)"
python -P -m tmkd.run experiment=finetune_squad_v2 model=minilm_l6 seed=42 $C report.latency=false > /tmp/sq_teacher_s42.log 2>&1; echo "teacher s42 rc=$? $(date)"
python -P -m tmkd.run experiment=finetune_squad_v2 model=minilm_l3 $C report.latency=false > /tmp/sq_student_nokd.log 2>&1; echo "student no-KD rc=$? $(date)"
python -P -m tmkd.run experiment=kd_squad_v2 $C > /tmp/sq_kd.log 2>&1; echo "kd 1-o-1 rc=$? $(date)"
python -P -m tmkd.run experiment=m_o_1_squad_v2 teachers=squad_v2_minilm $C > /tmp/sq_m_o_1.log 2>&1; echo "m-o-1 rc=$? $(date)"
# What ran: the lines above up to kd 1-o-1 ran from /tmp/snap5 (commit 2d61afb). Teacher s7 and m-o-1 ran from
# /tmp/snap6 (real_runs_squad_b.sh), whose runs skip the second dev pass of a best-is-last run (same scores).
