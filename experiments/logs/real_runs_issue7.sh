#!/usr/bin/env bash
# Real-data runs for issue 7 (CPU, 2 cores). Logs in /tmp/real_*.log
cd /work/main; . .venv/bin/activate
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline TMKD_CHECKPOINTS=/work/main/checkpoints
COMMON="data.dir=../shared/data logger=csv report.enabled=false trainer.enable_progress_bar=false threads=2"
QT="stages.stage2.distill.use_teachers=[qnli_minilm_s42,qnli_minilm_s7] teachers.qnli_minilm_s42.trainer.max_epochs=1 teachers.qnli_minilm_s7.trainer.max_epochs=1"
RT="stages.stage1.distill.use_teachers=[minilm_s42,minilm_s7] teachers.minilm_s42.trainer.max_epochs=3 teachers.minilm_s7.trainer.max_epochs=3"
MT="stages.stage1.distill.use_teachers=[minilm_s42,minilm_s7] stages.stage1.data.max_train_samples=8000 stages.stage1.data.max_eval_samples=2000 stages.stage1.trainer.max_epochs=2 teachers.minilm_s42.data.max_train_samples=8000 teachers.minilm_s42.data.max_eval_samples=2000 teachers.minilm_s42.trainer.max_epochs=1 teachers.minilm_s7.data.max_train_samples=8000 teachers.minilm_s7.data.max_eval_samples=2000 teachers.minilm_s7.trainer.max_epochs=1"
echo "start $(date)"
/usr/bin/time -v python -m tmkd.run experiment=m_o_1_rte_qnli $COMMON $RT $QT > /tmp/real_rte_qnli.log 2>&1; echo "rte_qnli rc=$? $(date)"
/usr/bin/time -v python -m tmkd.run experiment=baseline_qnli $COMMON > /tmp/real_baseline.log 2>&1; echo "baseline rc=$? $(date)"
/usr/bin/time -v python -m tmkd.run experiment=m_o_1_mnli_qnli $COMMON $MT $QT > /tmp/real_mnli_qnli.log 2>&1; echo "mnli_qnli rc=$? $(date)"
