#!/usr/bin/env bash
# NB: `python -m` puts the current folder ahead of PYTHONPATH, so these runs imported /work/main, not the snapshot
# (use `python -P -m` for a snapshot to take effect).
# Issue-10 real-data runs (CPU, 2 cores shared), frozen code snapshot (git worktree /tmp/snap2). QNLI train capped at
# 3,000 rows of the 10,475-row subset (the cap of experiments/results/pipeline_qnli.md, so the dense MiniLM-L6 and the
# two teachers are reused from those runs), full dev (5,463). The pruned stage: 3 epochs (validated once, at the end,
# to save 2 full dev passes), distilling the 2 QNLI MiniLM-L6 teachers; densities 0.5, 0.3, 0.1.
cd /work/main; . .venv/bin/activate
export PYTHONPATH=/tmp/snap2 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline TMKD_CHECKPOINTS=/work/main/checkpoints
P="data.dir=../shared/data logger=csv trainer.enable_progress_bar=false threads=2 data.max_train_samples=3000 stages.dense.trainer.max_epochs=1 stages.pruned.distill.use_teachers=[qnli_minilm_s42,qnli_minilm_s7] teachers.qnli_minilm_s42.trainer.max_epochs=1 teachers.qnli_minilm_s7.trainer.max_epochs=1 stages.pruned.trainer.max_epochs=3 stages.pruned.trainer.check_val_every_n_epoch=3"
echo "start $(date)"
for d in 0.5 0.3 0.1; do
  python -m tmkd.run experiment=prune_qnli $P stages.pruned.prune.target_density=$d > /tmp/real_prune_$d.log 2>&1; echo "prune $d rc=$? $(date)"
done
