#!/usr/bin/env bash
# Issue 9: tmkd vs TextBrewer on real RTE. 3 fine-tuned MiniLM-L6 RTE teachers (finetune_rte seeds 42, 7, 3; full RTE,
# 3 epochs), MiniLM-L3 student (layers of MiniLM-L6), train capped at 1,000 rows (seeded), full dev (277), 2 epochs,
# lr 1e-4, K=2 runs per system (K=16 extrapolated), 2 threads. Run from a frozen snapshot (/tmp/snap4) as the working
# folder, so the per-system worker processes import the snapshot too.
. /work/main/.venv/bin/activate
export PYTHONPATH=/tmp/snap4 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline
R=/work/main/checkpoints/runs/finetune_rte
cd /tmp/snap4 && echo "start $(date)" && python -m tmkd.bench.peers --task rte --data-dir /work/shared/data \
  --teachers $R/minilm_s42-78378c4b $R/minilm_s7-1c6bfe41 $R/main-09e96728 --train-rows 1000 --epochs 2 --lr 1e-4 \
  --k 2 --threads 2 --out /work/main/experiments/results/bench_peers_rte.md; echo "peers rc=$? $(date)"
