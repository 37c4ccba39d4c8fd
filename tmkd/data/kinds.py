"""Task *kinds*: the one seam through which every layer handles classification and extractive QA alike.

A kind says how a split is validated and encoded, how a batch is collated, which model class a task trains,
the gold loss, the logits layout that distillation works on and how validation outputs become metrics. Data
module, modules, soft targets and model building ask ``get_kind(task.kind)`` instead of branching on the task.

Logits layouts (what :meth:`TaskKind.from_output` returns and the KD code consumes, ``[..., classes]``):

- ``classification``: ``[B, C]``;
- ``qa``: ``[B, 2, S]``: start and end logits stacked over the batch's token positions, padding positions set
  to :data:`tmkd.data.qa.FILL` so they carry ~zero probability. Gold labels are ``[B, 2]`` (start, end).

Adding a kind: subclass :class:`TaskKind`, decorate it with ``@KINDS.register("name")``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from datasets import Dataset, concatenate_datasets
from torch import Tensor, nn
from transformers import (
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    PreTrainedTokenizerBase,
)

from tmkd.data import qa, synthetic
from tmkd.data.synthetic_qa import materialise_qa
from tmkd.data.tasks import TaskSpec
from tmkd.data.tokenize import SEP, MultiViewCollator, encode
from tmkd.metrics import squad
from tmkd.metrics.classification import build_metrics
from tmkd.registry import Registry

KINDS: Registry[TaskKind] = Registry("task kind")


class KindDataError(ValueError):
    """A split does not fit its task kind (raised as ``tmkd.data.loading.DataError`` by the loader)."""


class Evaluator(nn.Module):
    """Per-split validation state: ``update`` per batch, ``compute`` once per epoch, ``reset`` after."""

    def update(self, logits: Tensor, batch: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def compute(self, datamodule: Any, split: str) -> dict[str, float]:
        raise NotImplementedError

    def reset(self) -> None:
        raise NotImplementedError

    def outputs(self) -> dict[str, Any]:
        """Files for the run folder from the last ``compute`` (name -> JSON-able object); none by default."""
        return {}

    def predictions(self) -> dict[str, np.ndarray] | None:
        """Per-example predictions of the last ``compute`` (classification: ``row``, ``label``, ``pred``,
        ``probs`` and the dataset's ``idx`` where it has one), rows in ``row`` order; None where the kind keeps
        none (QA writes ``predictions.json`` through :meth:`outputs` instead)."""
        return None


class TaskKind:
    """Base class; one instance per kind (stateless)."""

    name: ClassVar[str]
    auto_class: ClassVar[Any]
    tiny_class: ClassVar[Any]
    precompute_targets: ClassVar[bool] = False  # teachers always run ahead of training (no online mode)

    # --- data -----------------------------------------------------------------------------------------------
    def required_columns(self, task: TaskSpec) -> list[str]:
        raise NotImplementedError

    def validate_split(self, ds: Dataset, task: TaskSpec, split: str) -> Dataset:
        """Check a raw split; may drop rows (returns the split to use). Errors name the task, split and fault."""
        raise NotImplementedError

    def materialise(self, task: TaskSpec) -> Any:
        """Folder holding a synthetic task's generated files."""
        raise NotImplementedError

    def encode(self, ds: Dataset, tokenizers: Mapping[str, PreTrainedTokenizerBase], task: TaskSpec,
               max_length: int, split: str, train: bool) -> Dataset:
        """Model inputs per tokenizer view (``<view>.input_ids``...), ``labels`` and ``row_id`` (the unit
        soft targets are indexed by)."""
        raise NotImplementedError

    def collator(self, tokenizers: Mapping[str, PreTrainedTokenizerBase]) -> Callable[[Sequence[Mapping]], dict]:
        raise NotImplementedError

    # --- model ----------------------------------------------------------------------------------------------
    def model_kwargs(self, task: TaskSpec) -> dict[str, Any]:
        """Config kwargs for ``from_pretrained`` / the tiny config (labels, number of outputs)."""
        raise NotImplementedError

    def check_teacher(self, model: Any, task: TaskSpec, name: str) -> None:
        raise NotImplementedError

    # --- logits and losses ----------------------------------------------------------------------------------
    def from_output(self, output: Any, inputs: Mapping[str, Tensor]) -> Tensor:
        """The kind's logits layout from a HF model output."""
        raise NotImplementedError

    def from_head(self, raw: Tensor, inputs: Mapping[str, Tensor]) -> Tensor:
        """The layout from the raw output of the model's final linear layer (m-o-m heads)."""
        raise NotImplementedError

    def gold_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Cross-entropy on gold labels: over classes, or the mean of the start and end CE for QA."""
        return nn.functional.cross_entropy(logits.float().flatten(0, -2), labels.flatten())

    def fit_targets(self, targets: Tensor, inputs: Mapping[str, Tensor]) -> Tensor:
        """Cached teacher logits ``[T, B, ...]`` cut to this batch's shape (QA: its padded length)."""
        return targets

    # --- evaluation -----------------------------------------------------------------------------------------
    def evaluator(self, task: TaskSpec) -> Evaluator:
        raise NotImplementedError

    def score(self, task: TaskSpec, datamodule: Any, split: str, logits: Tensor) -> dict[str, float]:
        """Metrics of whole-split logits (rows in ``row_id`` order): how teachers are scored."""
        raise NotImplementedError


def get_kind(name: str) -> TaskKind:
    """The strategy object of a task kind (the error lists the registered kinds)."""
    return KINDS.build(name)


# ================================================================================================ classification


class ClassificationEvaluator(Evaluator):
    """torchmetrics collection over argmax predictions (the task's ``metrics``), plus each row's prediction and
    class probabilities (by ``row_id``) so that the run can save them for paired comparisons (``tmkd.compare``)."""

    def __init__(self, task: TaskSpec) -> None:
        super().__init__()
        self.metrics = build_metrics(task.metrics, task.num_labels)
        self.parts: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []  # (row_id, label, pred, probs) per batch
        self.last: dict[str, np.ndarray] | None = None

    def update(self, logits: Tensor, batch: Mapping[str, Any]) -> None:
        scores = logits.detach().float()
        pred = scores.argmax(-1)
        self.metrics.update(pred, batch["labels"])
        if "row_id" in batch:  # scoring helpers (adapter ensembles) pass labels only: nothing to keep then
            self.parts.append((batch["row_id"].detach().cpu(), batch["labels"].detach().cpu(), pred.cpu(),
                               scores.softmax(-1).cpu()))

    def compute(self, datamodule: Any, split: str) -> dict[str, float]:
        self.last = self._table(datamodule, split)
        return {name: float(value) for name, value in self.metrics.compute().items()}

    def _table(self, datamodule: Any, split: str) -> dict[str, np.ndarray] | None:
        if not self.parts:
            return None
        parts = tuple(torch.cat(x).numpy() for x in zip(*self.parts, strict=True))
        if torch.distributed.is_available() and torch.distributed.is_initialized() \
                and torch.distributed.get_world_size() > 1:
            gathered: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, parts)
            parts = tuple(np.concatenate(x) for x in zip(*gathered, strict=True))
        rows, labels, preds, probs = parts
        # row order; a distributed sampler repeats rows to even out ranks: keep each row once
        rows, first = np.unique(rows, return_index=True)
        table = {"row": rows.astype(np.int64), "label": labels[first].astype(np.int64),
                 "pred": preds[first].astype(np.int64), "probs": probs[first]}
        raw = getattr(datamodule, "raw", None)
        if raw is not None and split in raw and "idx" in raw[split].column_names:  # GLUE's own example ids
            table["idx"] = np.asarray(raw[split]["idx"], dtype=np.int64)[rows]
        return table

    def reset(self) -> None:
        self.metrics.reset()
        self.parts = []

    def predictions(self) -> dict[str, np.ndarray] | None:
        return self.last


@KINDS.register("classification")
class ClassificationKind(TaskKind):
    name = "classification"
    auto_class = AutoModelForSequenceClassification
    tiny_class = BertForSequenceClassification

    def required_columns(self, task: TaskSpec) -> list[str]:
        return [*task.text_columns, task.label_column]

    def validate_split(self, ds: Dataset, task: TaskSpec, split: str) -> Dataset:
        labelled = task.split_labelled(split)
        required = self.required_columns(task) if labelled else list(task.text_columns)
        missing = [c for c in required if c not in ds.column_names]
        if missing:
            raise KindDataError(f"{task.name}/{split}: missing column(s) {missing}; columns present: "
                                f"{ds.column_names}")
        if not labelled:  # unlabelled text (train_labelled=false): the loader has dropped any label column
            if task.label_column in ds.column_names:
                raise KindDataError(f"{task.name}/{split} is unlabelled (train_labelled=false) but still has its "
                                    f"label column {task.label_column!r}: drop it before validation")
            if len(ds) == 0:
                raise KindDataError(f"{task.name}/{split} is empty")
            return ds
        if task.drop_labels:
            drop = set(task.drop_labels)
            ds = ds.filter(lambda y: [v not in drop for v in y], input_columns=task.label_column, batched=True,
                           desc=f"Dropping unlabelled rows ({split})")
        if len(ds) == 0:
            raise KindDataError(f"{task.name}/{split} is empty")
        bad = [v for v in ds.unique(task.label_column) if not (isinstance(v, int) and 0 <= v < task.num_labels)]
        try:
            bad.sort()
        except TypeError:  # mixed types, e.g. None (an empty cell) next to numbers
            bad.sort(key=repr)
        if bad:
            raise KindDataError(f"{task.name}/{split}: label value(s) {bad[:10]} outside the label set "
                                f"{dict(enumerate(task.label_names))}")
        return ds

    def materialise(self, task: TaskSpec) -> Any:
        return synthetic.materialise(task.name, task.text_columns, task.eval_splits[0], dict(task.synthetic or {}))

    def encode(self, ds: Dataset, tokenizers: Mapping[str, PreTrainedTokenizerBase], task: TaskSpec,
               max_length: int, split: str, train: bool) -> Dataset:
        return encode(ds, tokenizers, task, max_length, split)

    def collator(self, tokenizers: Mapping[str, PreTrainedTokenizerBase]) -> MultiViewCollator:
        return MultiViewCollator(tokenizers)

    def model_kwargs(self, task: TaskSpec) -> dict[str, Any]:
        return {"num_labels": task.num_labels, "id2label": task.id2label,
                "label2id": {v: k for k, v in task.id2label.items()}}

    def check_teacher(self, model: Any, task: TaskSpec, name: str) -> None:
        n = model.config.num_labels
        if n != task.num_labels:
            raise ValueError(f"teacher {name!r} has {n} labels, task {task.name!r} has {task.num_labels}")

    def from_output(self, output: Any, inputs: Mapping[str, Tensor]) -> Tensor:
        return output.logits

    def from_head(self, raw: Tensor, inputs: Mapping[str, Tensor]) -> Tensor:
        return raw

    def evaluator(self, task: TaskSpec) -> Evaluator:
        return ClassificationEvaluator(task)

    def score(self, task: TaskSpec, datamodule: Any, split: str, logits: Tensor) -> dict[str, float]:
        labels = torch.tensor(datamodule.raw[split][task.label_column])
        scores = build_metrics(task.metrics, task.num_labels)(logits.float().argmax(-1).cpu(), labels)
        return {name: float(value) for name, value in scores.items()}  # the task's metrics, as the student's


# ============================================================================================================ QA

QA_COLUMNS = ("id", "context", "question", "answers")
QA_VIEW_KEYS = ("input_ids", "attention_mask", "token_type_ids")


def qa_evaluate(task: TaskSpec, examples: Any, features: Any, starts: Any, ends: Any
                ) -> tuple[dict[str, float], dict[str, str], dict[str, float]]:
    """(metrics, predictions, no-answer scores) of per-feature start/end logits, the official SQuAD way.

    Span choice is :func:`tmkd.data.qa.postprocess` without the null rule, so that the official evaluation
    applies ``task.null_threshold`` to the margins (identical predictions) and can also search the best
    threshold (``best_f1`` / ``best_f1_thresh``, v2 only). Returned predictions are the model's answers
    (``""`` where v2 says no answer); no-answer scores are margins (``null - best span``, logit scale).
    """
    spans, margins = qa.postprocess(examples, features, starts, ends, n_best=task.n_best,
                                    max_answer_length=task.max_answer_length, version_2=False)
    golds = squad.golds_from_rows(list(examples["id"]), list(examples["answers"]))
    if not spans:
        return {}, {}, {}
    golds = {k: v for k, v in golds.items() if k in spans}  # e.g. the sanity check saw a few windows only
    if task.version_2:
        result = squad.evaluate(golds, spans, na_probs=margins, na_prob_thresh=task.null_threshold,
                                warn_missing=False)
        preds = {k: ("" if margins[k] > task.null_threshold else v) for k, v in spans.items()}
    else:
        result = squad.evaluate(golds, spans, warn_missing=False)
        preds = spans
    metrics = {k: float(v) for k, v in result.items() if not k.endswith("total")}
    if not task.version_2:
        metrics = {k: v for k, v in metrics.items() if k in ("exact", "f1")}
    return metrics, preds, margins


class QAEvaluator(Evaluator):
    """Collects start/end logits per feature (by ``row_id``) over the epoch, then post-processes and scores."""

    def __init__(self, task: TaskSpec) -> None:
        super().__init__()
        self.task = task
        self.rows: dict[int, np.ndarray] = {}
        self.last: tuple[dict[str, str], dict[str, float]] = ({}, {})

    def update(self, logits: Tensor, batch: Mapping[str, Any]) -> None:
        values = logits.detach().float().cpu().numpy()
        for r, row in zip(batch["row_id"].tolist(), values, strict=True):
            self.rows[r] = row

    def _gathered(self) -> dict[int, np.ndarray]:
        if torch.distributed.is_available() and torch.distributed.is_initialized() \
                and torch.distributed.get_world_size() > 1:
            parts: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(parts, self.rows)
            return {k: v for part in parts for k, v in part.items()}
        return self.rows

    def compute(self, datamodule: Any, split: str) -> dict[str, float]:
        rows = self._gathered()
        if not rows:
            return {}
        features = datamodule.encoded[split]
        order = sorted(rows)
        feats = features.select(order).select_columns(["example_index", "offset_mapping"])
        starts = [rows[r][0] for r in order]
        ends = [rows[r][1] for r in order]
        metrics, preds, margins = qa_evaluate(self.task, datamodule.raw[split], feats, starts, ends)
        self.last = (preds, margins)
        return metrics

    def reset(self) -> None:
        self.rows = {}

    def outputs(self) -> dict[str, Any]:
        preds, margins = self.last
        return {"predictions.json": preds, "na_probs.json": margins} if preds else {}


class QACollator:
    """Pads the student view; ``labels`` [B, 2] (start, end), ``row_id`` = ``feature_row`` (the feature's row)
    and ``example_index`` (its question's ``row_id``)."""

    def __init__(self, tokenizers: Mapping[str, PreTrainedTokenizerBase]) -> None:
        self.tokenizers = dict(tokenizers)

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        row_id = torch.tensor([f["row_id"] for f in features], dtype=torch.long)
        batch: dict[str, Any] = {
            "labels": torch.tensor([f["labels"] for f in features], dtype=torch.long),
            "row_id": row_id, "feature_row": row_id,
            "example_index": torch.tensor([f["example_index"] for f in features], dtype=torch.long),
            "inputs": {},
        }
        for view, tok in self.tokenizers.items():
            prefix = view + SEP
            rows = [{k[len(prefix):]: v for k, v in f.items() if k.startswith(prefix)} for f in features]
            batch["inputs"][view] = dict(tok.pad(rows, return_tensors="pt"))
        return batch


def _fill_padding(logits: Tensor, attention_mask: Tensor | None) -> Tensor:
    if attention_mask is None:
        return logits
    keep = attention_mask.bool().unsqueeze(-2)  # [B, 1, S]
    return logits.masked_fill(~keep, qa.FILL)


@KINDS.register("qa")
class QAKind(TaskKind):
    """Extractive QA (SQuAD v1.1 / v2.0): windows ("features") are the unit of training and soft targets."""

    name = "qa"
    auto_class = AutoModelForQuestionAnswering
    tiny_class = BertForQuestionAnswering
    precompute_targets = True  # a teacher with another tokenizer needs the student's windows mapped per split

    def required_columns(self, task: TaskSpec) -> list[str]:
        return list(QA_COLUMNS)

    def validate_split(self, ds: Dataset, task: TaskSpec, split: str) -> Dataset:
        where = f"{task.name}/{split}"
        missing = [c for c in QA_COLUMNS if c not in ds.column_names]
        if missing:
            raise KindDataError(f"{where}: missing column(s) {missing}; columns present: {ds.column_names}")
        if len(ds) == 0:
            raise KindDataError(f"{where} is empty")
        ids = ds["id"]
        if len(set(ids)) != len(ids):
            seen: set[str] = set()
            dup = [i for i in ids if i in seen or seen.add(i)]  # type: ignore[func-returns-value]
            raise KindDataError(f"{where}: question ids must be unique; repeated: {dup[:5]}")
        empty: list[str] = []
        for qid, context, answers in zip(ids, ds["context"], ds["answers"], strict=True):
            if not isinstance(answers, Mapping) or "text" not in answers or "answer_start" not in answers:
                raise KindDataError(f"{where}: id {qid!r}: answers must be {{'text': [...], 'answer_start': [...]}},"
                                    f" got {answers!r}")
            texts, starts = list(answers["text"]), list(answers["answer_start"])
            if len(texts) != len(starts):
                raise KindDataError(f"{where}: id {qid!r}: {len(texts)} answer texts but {len(starts)} starts")
            if not texts:
                empty.append(qid)
            for text, start in zip(texts, starts, strict=True):
                if not isinstance(start, int) or not 0 <= start <= len(context) - len(text):
                    raise KindDataError(f"{where}: id {qid!r}: answer {text!r} at {start!r} is outside its "
                                        f"context of {len(context)} characters")
        if empty and not task.version_2:
            raise KindDataError(f"{where}: {len(empty)} question(s) without an answer (e.g. {empty[:3]}) in a "
                                "SQuAD v1.1 task; unanswerable questions need a version_2 task (squad_v2)")
        return ds

    def materialise(self, task: TaskSpec) -> Any:
        return materialise_qa(task.name, dict(task.synthetic or {}))

    def encode(self, ds: Dataset, tokenizers: Mapping[str, PreTrainedTokenizerBase], task: TaskSpec,
               max_length: int, split: str, train: bool) -> Dataset:
        """Windows of the student view (the first tokenizer) with labels, offsets and context spans.

        Eval windows keep ``offset_mapping`` / ``example_index`` for post-processing; labels are made for every
        split that has answers (the first gold answer), so a validation loss is possible too.
        """
        if len(tokenizers) != 1:
            raise ValueError(f"QA tasks encode one tokenizer view (the student's); got {list(tokenizers)}: "
                             "teachers with other tokenizers read the student's windows through the soft-target "
                             "store instead")
        (view, tok), = tokenizers.items()
        feats = ds.map(qa.prepare_features, batched=True, remove_columns=ds.column_names,
                       fn_kwargs={"tokenizer": tok, "max_length": max_length, "doc_stride": task.doc_stride,
                                  "train": True},
                       desc=f"QA windows {split} for {view} (max_length={max_length}, stride={task.doc_stride})")
        labels = [[s, e] for s, e in zip(feats["start_positions"], feats["end_positions"], strict=True)]
        feats = feats.remove_columns(["start_positions", "end_positions"])
        feats = feats.rename_columns({k: f"{view}{SEP}{k}" for k in QA_VIEW_KEYS if k in feats.column_names})
        extra = Dataset.from_dict({"labels": labels, "row_id": list(range(len(feats)))})
        return concatenate_datasets([extra, feats], axis=1)

    def collator(self, tokenizers: Mapping[str, PreTrainedTokenizerBase]) -> QACollator:
        return QACollator(tokenizers)

    def model_kwargs(self, task: TaskSpec) -> dict[str, Any]:
        return {"num_labels": 2, "id2label": {0: "start", 1: "end"}, "label2id": {"start": 0, "end": 1}}

    def check_teacher(self, model: Any, task: TaskSpec, name: str) -> None:
        if not type(model).__name__.endswith("ForQuestionAnswering"):
            raise ValueError(f"teacher {name!r} is a {type(model).__name__}, task {task.name!r} needs a "
                             "question-answering model")

    def from_output(self, output: Any, inputs: Mapping[str, Tensor]) -> Tensor:
        return _fill_padding(torch.stack([output.start_logits, output.end_logits], dim=1),
                             inputs.get("attention_mask"))

    def from_head(self, raw: Tensor, inputs: Mapping[str, Tensor]) -> Tensor:
        return _fill_padding(raw.transpose(-1, -2), inputs.get("attention_mask"))  # [B, S, 2] -> [B, 2, S]

    def fit_targets(self, targets: Tensor, inputs: Mapping[str, Tensor]) -> Tensor:
        return targets[..., : inputs["input_ids"].shape[-1]].float()

    def evaluator(self, task: TaskSpec) -> Evaluator:
        return QAEvaluator(task)

    def score(self, task: TaskSpec, datamodule: Any, split: str, logits: Tensor) -> dict[str, float]:
        feats = datamodule.encoded[split].select_columns(["example_index", "offset_mapping"])
        x = logits.float()
        return qa_evaluate(task, datamodule.raw[split], feats, x[:, 0], x[:, 1])[0]
