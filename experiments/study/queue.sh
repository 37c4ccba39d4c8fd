#!/usr/bin/env bash
# The QNLI study's compute queue (issue 17, experiments/study/PLAN.md), in order; each step is resumable (plan runs
# reuse finished runs and resume interrupted ones), so after a stop the same step goes on where it stopped.
#   experiments/study/queue.sh teachers            # MPNet-base and MiniLM-L6 s42 (frozen snapshot 45cf3f7)
#   COMMIT=<sha> experiments/study/queue.sh grid   # the held-out grid (PLAN.md step 1)
#   ... write the grid's choice into the study configs (distill/qnli_study.yaml, the epochs of qnli_study_m_o_1 and
#       qnli_study_baseline, the aggregator of qnli_study_m_o_1_agg) and commit; then, on that commit:
#   COMMIT=<sha> experiments/study/queue.sh table  # every row of the table, each its one command
#   COMMIT=<sha> experiments/study/queue.sh report # latency (idle machine) and experiments/results/qnli_study.*
# Paths of this machine: the study's checkpoints in /root/tmkd-study/checkpoints (TMKD_CHECKPOINTS), data in
# /work/shared/data. The teachers were trained by the older snapshot as runs of finetune_qnli (folders main-<hash>),
# so the students name them by folder (teachers.<name>.name_or_path=...).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
runs=/root/tmkd-study/checkpoints/runs/finetune_qnli
data=/work/shared/data

teacher_folder() {  # the finished finetune_qnli run of this model and seed
  for d in "$runs"/main-*; do
    if grep -q "name_or_path: sentence-transformers/$1" "$d/config.yaml" && grep -q "^seed: $2$" "$d/config.yaml" \
        && [ -f "$d/metrics.json" ]; then echo "$d"; return; fi
  done
  echo "no finished teacher $1 seed $2 under $runs" >&2; exit 1
}

teacher_args() {
  echo "--teacher qnli_mpnet_s42=$(teacher_folder all-mpnet-base-v2 42)" \
       "--teacher qnli_minilm_s42=$(teacher_folder all-MiniLM-L6-v2 42)"
}

case "${1:?teachers | grid | table | report}" in
  teachers)
    THREADS=2 "$here/run_teacher.sh" mpnet_s42 experiment=finetune_qnli model=mpnet_base seed=42 \
      trainer.max_epochs=2 optim.lr=3e-5
    # MiniLM-L6 s42 finished earlier (same snapshot); s7 was cut for CPU (PLAN.md)
    ;;
  grid)
    # shellcheck disable=SC2046
    THREADS=2 NICE=0 "$here/run.sh" grid python experiments/study/grid.py --data-dir "$data" --threads 2 \
      $(teacher_args)
    ;;
  table)
    all="teachers.qnli_mpnet_s42.name_or_path=$(teacher_folder all-mpnet-base-v2 42)
         teachers.qnli_minilm_s42.name_or_path=$(teacher_folder all-MiniLM-L6-v2 42)"
    mpnet="teachers.qnli_mpnet_s42.name_or_path=$(teacher_folder all-mpnet-base-v2 42)"
    common="data.dir=$data logger=csv trainer.enable_progress_bar=false report.enabled=false threads=2"
    # the rows the issue's claims compare come first (KD vs none, m-o-1 vs 1-o-1, TMKD vs m-o-1 and vs the control)
    for row in baseline:"" m_o_1:"$all" one_to_one:"$mpnet" tmkd:"$all" control:"$all" m_o_1_agg:"$all" \
               m_o_m:"$all" mnli_qnli:"$all"; do
      name=${row%%:*}
      # shellcheck disable=SC2086
      THREADS=2 NICE=0 "$here/run.sh" "table_$name" python -P -m tmkd.run "experiment=qnli_study_$name" \
        ${row#*:} $common
    done
    ;;
  report)
    # shellcheck disable=SC2046
    THREADS=1 NICE=0 "$here/run.sh" report python experiments/study/report.py --data-dir "$data" --latency \
      $(teacher_args)
    ;;
  *) echo "unknown step $1: teachers | grid | table | report" >&2; exit 2 ;;
esac
