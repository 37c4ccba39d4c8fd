#!/usr/bin/env bash
# NB: `python -m` puts the current folder ahead of PYTHONPATH, so these runs imported /work/main, not the snapshot
# (use `python -P -m` for a snapshot to take effect).
# Issue-11 real-data runs (CPU, 2 cores shared with tests), on a frozen snapshot of the code (git worktree /tmp/snap2)
# so that concurrent edits cannot change what they import. RTE: full train (2,490) and dev (277). QNLI: train capped
# at 3,000 rows of the 10,475-row subset (seeded sample; the same cap as experiments/results/pipeline_qnli.md, so the
# fine-tuned MiniLM-L6 run is reused), full dev (5,463). Fraction curve: 10/25/50/100% of the 10,475-row subset.
cd /work/main; . .venv/bin/activate
export PYTHONPATH=/tmp/snap2 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline TMKD_CHECKPOINTS=/work/main/checkpoints
COMMON="data.dir=../shared/data logger=csv trainer.enable_progress_bar=false threads=2"
echo "start $(date)"
python -m tmkd.run experiment=adapter_rte $COMMON stages.minilm_s42.trainer.max_epochs=3 > /tmp/real_adapter_rte.log 2>&1; echo "adapter_rte rc=$? $(date)"
python -m tmkd.run experiment=adapter_qnli $COMMON data.max_train_samples=3000 stages.qnli_minilm_s42.trainer.max_epochs=1 > /tmp/real_adapter_qnli.log 2>&1; echo "adapter_qnli rc=$? $(date)"
for n in 1048 2619 5238 10475; do
  python -m tmkd.run experiment=adapter_qnli_fraction $COMMON data.max_train_samples=$n > /tmp/real_adapter_frac_$n.log 2>&1; echo "fraction $n rc=$? $(date)"
done
