#!/usr/bin/env bash
# Issue 9, deployable students: CPU latency (1 thread) of the QNLI teacher (MiniLM-L6, finetune_qnli seed 42) and the
# QNLI student (3-layer, stage 2 of m_o_1_mnli_qnli) in PyTorch and ONNX Runtime, batch 1 and 32, with the ONNX
# parity check. Meant to wait for the SQuAD queue; it started early (in a gap while that queue was restarted) and
# overlapped a training run, so the table in experiments/results/latency_qnli.md comes from the same command run by
# hand at 03:45 on an idle machine.
cd /work/main; . .venv/bin/activate
export PYTHONPATH=/tmp/snap5 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
while pgrep -f "real_runs_squad" > /dev/null; do sleep 15; done
echo "start $(date)"
python -P -m tmkd.bench.latency checkpoints/runs/finetune_qnli/qnli_minilm_s42-de0177db \
  checkpoints/runs/m_o_1_qnli/stage2-983fd2da --task qnli --data-dir ../shared/data --threads 1 --rows 256 \
  --budget-s 5 --onnx > /tmp/latency_qnli.md 2> /tmp/latency_qnli.err; echo "latency qnli rc=$? $(date)"
