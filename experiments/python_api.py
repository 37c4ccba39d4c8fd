"""tmkd from Python, on tiny models and in-memory data (README "Python API"; tests/test_api.py runs it, so CI does).

    python experiments/python_api.py [CHECKPOINTS_DIR]

1. fine-tunes two tiny teachers on a pandas DataFrame, 2. distils both into a smaller student (many-to-one, mean of
the soft targets), 3. builds a two-stage plan and runs it, cut to a few rows.
"""

import sys
import tempfile

import pandas as pd

import tmkd
from tmkd.data.synthetic import generate

root = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="tmkd-api-")
# tiny models: one thread (more only contend), no progress bars; runs go under `root`
quiet = [f"paths.checkpoints={root}", "threads=1", "trainer.enable_progress_bar=false"]
common = {"task": "synth_pair", "max_epochs": 1, "logger": "none", "overrides": quiet}


def frame(n: int, seed: int) -> pd.DataFrame:
    """Rows of the synthetic pair task as a DataFrame: the task's text columns and an integer label."""
    rows = generate(num_labels=2, n=n, seed=seed, noise=0.1)
    return pd.DataFrame({"sentence1": [r["first"] for r in rows], "sentence2": [r["second"] for r in rows],
                         "label": [r["label"] for r in rows]})


train, dev = frame(256, seed=0), frame(128, seed=1)

# 1. two teachers: method="finetune" trains on the gold labels alone
teachers = [tmkd.distil(student="tiny", teachers=[], train=train, eval=dev, method="finetune", seed=seed, **common)
            for seed in (1, 2)]

# 2. distil both (in memory: (model, tokenizer) pairs; a folder or hub id works too) into a smaller student
student = {"tiny": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
                    "max_position_embeddings": 128}}
result = tmkd.distil(student=student, teachers=[(t.model, t.tokenizer) for t in teachers], train=train, eval=dev,
                     method="many_to_one", aggregator="mean", temperature=2.0, alpha=0.5, **common)
print("student:", result.metrics)
print("exported to", result.export(f"{root}/student"))

# 3. a two-stage plan built in Python (`tmkd.plan("quickstart", overrides=[...])` builds a named experiment's, the
#    same runs, folders and hashes as `python -m tmkd.run experiment=quickstart ... plan=true`): stage 1 fine-tunes
#    on the 3-label task, stage 2 starts from it (new head) and distils from a teacher the plan trains first
plan = tmkd.plan(name="two_stage", stages={
    "stage1": {"experiment": "finetune_synth_nli"},
    "stage2": {"experiment": "one_to_one_quick", "init_from": "stage1"},
}, overrides=[*quiet, "trainer.max_epochs=1", "logger=none", "data.max_train_samples=64", "data.max_eval_samples=64",
              "report.latency=false"])
print(plan.describe())
results = tmkd.run_plan(plan)
print("stage2:", results[plan.final]["best"])
