#!/usr/bin/env bash
# Follow-up real-data runs for issue 7, after m_o_1_rte_qnli (pid 10363) ends.
cd /work/main; . .venv/bin/activate
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline TMKD_CHECKPOINTS=/work/main/checkpoints
while kill -0 10363 2>/dev/null; do sleep 10; done; echo "rte_qnli ended $(date)"
COMMON="data.dir=../shared/data logger=csv report.enabled=false trainer.enable_progress_bar=false threads=2"
QT="stages.stage2.distill.use_teachers=[qnli_minilm_s42,qnli_minilm_s7] teachers.qnli_minilm_s42.trainer.max_epochs=1 teachers.qnli_minilm_s7.trainer.max_epochs=1"
MT="stages.stage1.distill.use_teachers=[minilm_s42,minilm_s7] stages.stage1.data.max_train_samples=4000 stages.stage1.data.max_eval_samples=2000 stages.stage1.trainer.max_epochs=2 teachers.minilm_s42.data.max_train_samples=4000 teachers.minilm_s42.data.max_eval_samples=2000 teachers.minilm_s42.trainer.max_epochs=1 teachers.minilm_s7.data.max_train_samples=4000 teachers.minilm_s7.data.max_eval_samples=2000 teachers.minilm_s7.trainer.max_epochs=1"
python -m tmkd.run experiment=baseline_qnli $COMMON > /tmp/real_baseline.log 2>&1; echo "baseline rc=$? $(date)"
python -m tmkd.run experiment=m_o_1_mnli_qnli $COMMON $MT $QT > /tmp/real_mnli_qnli.log 2>&1; echo "mnli_qnli rc=$? $(date)"
