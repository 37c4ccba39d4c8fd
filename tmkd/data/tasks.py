"""Task registry: what a task is (data source, columns, labels, metrics) in one declarative record.

Adding a task is one ``register_task(TaskSpec(...))`` call plus one ``configs/task/<name>.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from tmkd.registry import Registry

TASKS: Registry = Registry("task")


@dataclass(frozen=True)
class TaskSpec:
    """Everything tmkd needs to load, tokenise and score a task.

    ``eval_splits`` are evaluated every epoch; the first one drives checkpointing and is logged as
    ``val/<metric>``, the others as ``val_<suffix>/<metric>`` (e.g. MNLI mismatched -> ``val_mismatched``).

    ``train_labelled=False`` reads the train split as unlabelled text: its label column is dropped at loading
    (it may be absent or hold anything), so only a label-free objective (the teachers' soft targets alone) can
    train on it; eval splits stay labelled, as they choose the best checkpoint. ``derived`` builds the train split
    from another task's data (:mod:`tmkd.data.derived`, e.g. QNLI pairs from SQuAD).
    """

    name: str
    text_columns: tuple[str, ...]
    label_names: tuple[str, ...]
    hub_id: str | None = None
    hub_config: str | None = None
    local_path: str | None = None  # relative folder under data.dir, e.g. "glue/rte"
    label_column: str = "label"
    metrics: tuple[str, ...] = ("accuracy",)
    main_metric: str = "accuracy"
    max_length: int = 128
    train_split: str = "train"
    eval_splits: tuple[str, ...] = ("validation",)
    drop_labels: tuple[int, ...] = ()  # e.g. SNLI's -1 (no gold label)
    kind: str = "classification"  # a registered task kind (tmkd/data/kinds.py): classification | qa
    synthetic: dict[str, Any] | None = field(default=None, hash=False)  # generator options, if synthetic
    train_labelled: bool = True  # False: the train split's labels are never read (soft targets only)
    derived: dict[str, Any] | None = field(default=None, hash=False)  # builder options of a derived train split
    # extractive QA (kind "qa") only: windows, answer decoding, SQuAD v2.0 no-answer rule
    doc_stride: int = 128  # overlap of consecutive windows of one context, in tokens
    n_best: int = 20  # start / end candidates per window
    max_answer_length: int = 30  # tokens
    version_2: bool = False  # unanswerable questions allowed (SQuAD v2.0)
    null_threshold: float = 0.0  # v2: "no answer" when null score - best span score exceeds it

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.label_names))

    def __post_init__(self) -> None:
        if self.kind == "qa" and not 0 <= self.doc_stride < self.max_length:
            raise ValueError(f"task {self.name!r}: doc_stride must be in [0, max_length={self.max_length}), "
                             f"got {self.doc_stride}")
        if not isinstance(self.train_labelled, bool):
            raise ValueError(f"task {self.name!r}: train_labelled must be true or false, got {self.train_labelled!r}")
        if not self.train_labelled and self.kind != "classification":
            raise ValueError(f"task {self.name!r}: train_labelled=false is supported for classification tasks only, "
                             f"not kind {self.kind!r}")

    def split_labelled(self, split: str) -> bool:
        """Whether a split's labels may be read: every eval split; the train split unless ``train_labelled`` is off."""
        return self.train_labelled or split != self.train_split

    def split_prefix(self, split: str) -> str:
        """Logging prefix of an eval split: the first is ``val``, others ``val_<suffix>``."""
        if split == self.eval_splits[0]:
            return "val"
        return "val_" + split.removeprefix("validation_")

    def with_overrides(self, **overrides: Any) -> TaskSpec:
        """A copy with config overrides applied (``None`` values mean "keep the registered default")."""
        valid = {f for f in self.__dataclass_fields__}
        unknown = sorted(set(overrides) - valid)
        if unknown:
            raise ValueError(f"unknown task field(s) {unknown} for task {self.name!r}; valid: {sorted(valid)}")
        clean = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items() if v is not None}
        for key in ("synthetic", "derived"):
            if isinstance(clean.get(key), dict) and getattr(self, key) is not None:
                clean[key] = {**getattr(self, key), **clean[key]}  # e.g. only n_train changed
        return replace(self, **clean)


def register_task(spec: TaskSpec) -> TaskSpec:
    TASKS.register(spec.name)(spec)
    return spec


def get_task(name: str, **overrides: Any) -> TaskSpec:
    """Look a task up by name (the error lists the registered names) and apply config overrides."""
    spec: TaskSpec = TASKS.get(name)
    return spec.with_overrides(**overrides) if overrides else spec


_NLI2 = ("entailment", "not_entailment")
_NLI3 = ("entailment", "neutral", "contradiction")

register_task(TaskSpec("rte", ("sentence1", "sentence2"), _NLI2, "nyu-mll/glue", "rte", "glue/rte"))
register_task(TaskSpec("qnli", ("question", "sentence"), _NLI2, "nyu-mll/glue", "qnli", "glue/qnli"))
register_task(TaskSpec(
    "mnli", ("premise", "hypothesis"), _NLI3, "nyu-mll/glue", "mnli", "glue/mnli",
    eval_splits=("validation_matched", "validation_mismatched"),
))
register_task(TaskSpec(
    "snli", ("premise", "hypothesis"), _NLI3, "stanfordnlp/snli", None, "snli", drop_labels=(-1,),
))
# MRPC: GLUE reports F1 of the "equivalent" class first (then accuracy); the classes are unbalanced (68% positive).
register_task(TaskSpec("mrpc", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"), "nyu-mll/glue", "mrpc",
                       "glue/mrpc", metrics=("binary_f1", "accuracy"), main_metric="binary_f1"))
register_task(TaskSpec("sst2", ("sentence",), ("negative", "positive"), "nyu-mll/glue", "sst2", "glue/sst2",
                       max_length=66))
# Synthetic tasks (tmkd/data/synthetic.py): generated from a seed, no download; they drive tests and the quickstart.
register_task(TaskSpec(
    "synth_pair", ("sentence1", "sentence2"), ("entailment", "not_entailment"), max_length=48,
    synthetic={"labels": 2, "n_train": 2000, "n_eval": 500, "noise": 0.1, "seed": 0},
))
register_task(TaskSpec(
    "synth_nli", ("premise", "hypothesis"), _NLI3, max_length=48,
    synthetic={"labels": 3, "n_train": 3000, "n_eval": 600, "noise": 0.1, "seed": 0},
))

# QNLI's construction on SQuAD train (tmkd/data/derived.py): every (question, sentence of its paragraph) pair, read
# as QNLI (same columns and labels, evaluated on QNLI dev). Unlabelled by default: its derived label (does the
# sentence hold the answer span) is read only when a config sets train_labelled=true (a control experiment).
register_task(TaskSpec(
    "qnli_from_squad", ("question", "sentence"), _NLI2, "nyu-mll/glue", "qnli", "glue/qnli", train_labelled=False,
    derived={"builder": "qnli_from_squad", "source": "squad", "source_split": "train", "max_pairs": None, "seed": 0},
))

# Extractive QA (kind "qa"): SQuAD's hub schema (id, title, context, question, answers{text, answer_start}).
_QA = {"text_columns": ("question", "context"), "label_names": (), "label_column": "answers", "kind": "qa",
       "metrics": ("exact", "f1"), "main_metric": "f1", "max_length": 384}
register_task(TaskSpec("squad", hub_id="rajpurkar/squad", local_path="squad", **_QA))
register_task(TaskSpec("squad_v2", hub_id="rajpurkar/squad_v2", local_path="squad_v2", version_2=True, **_QA))
# Synthetic QA (tmkd/data/synthetic_qa.py); short contexts, so short windows.
register_task(TaskSpec("synth_qa", **{**_QA, "max_length": 64}, doc_stride=16,
                       synthetic={"n_train": 2000, "n_eval": 200, "seed": 0}))
register_task(TaskSpec("synth_qa_v2", **{**_QA, "max_length": 64}, doc_stride=16, version_2=True,
                       synthetic={"n_train": 2000, "n_eval": 200, "seed": 0, "unanswerable": 0.3}))
