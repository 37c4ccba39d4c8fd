#!/usr/bin/env bash
# Runs after real_runs_pruning.sh (same snapshot /tmp/snap2, same caps): (1) adapter variants — mean pooling instead
# of [CLS] (sentence-transformers MiniLM is trained with mean pooling) and 30 epochs (an epoch is seconds on cached
# features); (2) the 3-layer RTE student distilled from 2 fine-tuned MiniLM-L6 teachers + the adapter as a third,
# cheap teacher (teachers=rte_with_adapter), to set against m_o_1_rte with the 2 MiniLM teachers only.
cd /work/main; . .venv/bin/activate
export PYTHONPATH=/tmp/snap2 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline TMKD_CHECKPOINTS=/work/main/checkpoints
COMMON="data.dir=../shared/data logger=csv trainer.enable_progress_bar=false threads=2"
while pgrep -f real_runs_pruning.sh > /dev/null; do sleep 20; done
echo "start $(date)"
python -m tmkd.run experiment=adapter_rte $COMMON stages.minilm_s42.trainer.max_epochs=3 adapter.pooling=mean stages.adapter.trainer.max_epochs=30 > /tmp/real_adapter_rte_mean.log 2>&1; echo "adapter_rte mean rc=$? $(date)"
python -m tmkd.run experiment=adapter_qnli $COMMON data.max_train_samples=3000 stages.qnli_minilm_s42.trainer.max_epochs=1 adapter.pooling=mean stages.adapter.trainer.max_epochs=30 > /tmp/real_adapter_qnli_mean.log 2>&1; echo "adapter_qnli mean rc=$? $(date)"
python -m tmkd.run experiment=m_o_1_rte $COMMON teachers=rte_with_adapter teachers.minilm_s42.trainer.max_epochs=3 teachers.minilm_s7.trainer.max_epochs=3 > /tmp/real_m_o_1_rte_adapter.log 2>&1; echo "m_o_1_rte + adapter teacher rc=$? $(date)"
