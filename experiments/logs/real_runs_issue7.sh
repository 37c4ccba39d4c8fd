#!/usr/bin/env bash
# Issue-7 real-data runs (CPU, 2 cores shared), on a frozen snapshot of the code (git worktree /tmp/snap at 667046e)
# so that concurrent edits cannot change what they import. QNLI train capped at 3,000 rows of the 10,475-row subset
# (seeded sample) for every QNLI run; dev sets complete (QNLI 5,463); MNLI train capped at 3,000, MNLI dev capped at
# 2,000 per split for the stage-1 runs only. Completed runs are reused by hash.
cd /work/main; . .venv/bin/activate
export PYTHONPATH=/tmp/snap HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline TMKD_CHECKPOINTS=/work/main/checkpoints
COMMON="data.dir=../shared/data logger=csv report.enabled=false trainer.enable_progress_bar=false threads=2"
Q="data.max_train_samples=3000"
QT="stages.stage2.distill.use_teachers=[qnli_minilm_s42,qnli_minilm_s7] teachers.qnli_minilm_s42.trainer.max_epochs=1 teachers.qnli_minilm_s7.trainer.max_epochs=1 teachers.qnli_minilm_s42.$Q teachers.qnli_minilm_s7.$Q stages.stage2.$Q"
RT="stages.stage1.distill.use_teachers=[minilm_s42,minilm_s7] teachers.minilm_s42.trainer.max_epochs=3 teachers.minilm_s7.trainer.max_epochs=3"
MC="data.max_train_samples=3000 data.max_eval_samples=2000"
MT="stages.stage1.distill.use_teachers=[minilm_s42,minilm_s7] stages.stage1.trainer.max_epochs=2 teachers.minilm_s42.trainer.max_epochs=1 teachers.minilm_s7.trainer.max_epochs=1 stages.stage1.${MC// / stages.stage1.} teachers.minilm_s42.${MC// / teachers.minilm_s42.} teachers.minilm_s7.${MC// / teachers.minilm_s7.}"
echo "start $(date)"
python -m tmkd.run experiment=m_o_1_rte_qnli $COMMON $RT $QT > /tmp/real_rte_qnli3.log 2>&1; echo "rte_qnli rc=$? $(date)"
python -m tmkd.run experiment=baseline_qnli $COMMON $Q > /tmp/real_baseline2.log 2>&1; echo "baseline rc=$? $(date)"
python -m tmkd.run experiment=m_o_1_mnli_qnli $COMMON $MT $QT > /tmp/real_mnli_qnli2.log 2>&1; echo "mnli_qnli rc=$? $(date)"
