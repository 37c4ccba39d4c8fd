#!/usr/bin/env bash
# tmkd (cache on) and the TextBrewer systems again, same settings (K=2), on an idle machine: in the first run the
# two TextBrewer systems overlapped with the full test suite while the tmkd systems had the CPU, which favoured tmkd.
. /work/main/.venv/bin/activate
export PYTHONPATH=/tmp/snap4 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline
R=/work/main/checkpoints/runs/finetune_rte
cd /tmp/snap4 && echo "start $(date)" && python -m tmkd.bench.peers --task rte --data-dir /work/shared/data \
  --teachers $R/minilm_s42-78378c4b $R/minilm_s7-1c6bfe41 $R/main-09e96728 --train-rows 1000 --epochs 2 --lr 1e-4 \
  --k 2 --threads 2 --systems "tmkd (cache on)" "textbrewer (online)" "textbrewer (cached)" --out /tmp/bench_peers_rte_tb.md; echo "peers rc=$? $(date)"
