"""Build the model a task trains (its kind's class: sequence classifier or extractive-QA model): from a hub id, a
local folder, a tmkd run folder, or a tiny random config.

Importing this module registers tmkd's own architectures (``tmkd_pruned_bert``, :mod:`tmkd.prune`) with the Auto
classes, so every loader in tmkd reads a pruned export (as a teacher, for a report, for an ONNX export) like any
other model; ``import tmkd`` alone stays light and registers nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoTokenizer,
    BertConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

import tmkd.prune  # noqa: F401  (registers tmkd_pruned_bert: see the module docs)
from tmkd.data.kinds import get_kind
from tmkd.data.tasks import TaskSpec
from tmkd.models.student import select_layers
from tmkd.models.tokenizers import synthetic_tokenizer

log = logging.getLogger(__name__)

HF_EXPORT = "hf"  # sub-folder of a run with its save_pretrained export
DROPOUT_KEYS = ("hidden_dropout_prob", "attention_probs_dropout_prob")  # what `model.dropout` sets


@dataclass
class ModelSpec:
    """How to obtain a model (the ``model`` / ``teacher`` / ``student`` config nodes).

    - ``name_or_path``: hub id, a save_pretrained folder, or a tmkd run folder (its ``hf/`` export is used).
    - ``tiny``: BertConfig kwargs for a small random model (with the synthetic tokenizer); tests only.
    - ``tokenizer``: ``null`` (the model's own), ``synthetic`` / ``synthetic:<seed>``, or a hub id / path.
    - ``layers`` / ``num_layers``: keep only these encoder layers (a student cut from its parent).

    ``name_or_path`` may also be a Lightning ``.ckpt`` inside a tmkd run folder (``<run>/checkpoints/*.ckpt``):
    the architecture comes from the run's export, the weights from the checkpoint (loaded without pickle).
    """

    name_or_path: str | None = None
    tiny: dict[str, Any] | None = None
    tokenizer: str | None = None
    layers: list[int] | None = None
    num_layers: int | None = None
    dropout: float | None = None

    @classmethod
    def from_config(cls, cfg: Any) -> ModelSpec:
        data = dict(cfg)
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known - {"name", "weight"})
        if unknown:
            raise ValueError(f"unknown model option(s) {unknown}; valid: {sorted(known)}")
        return cls(**{k: (list(v) if k == "layers" and v is not None else v) for k, v in data.items() if k in known})

    def describe(self) -> str:
        base = self.name_or_path or f"tiny-bert{self.tiny}"
        if self.layers is not None or self.num_layers is not None:
            base += f" layers={self.layers or self.num_layers}"
        return base


def resolve_path(name_or_path: str) -> str:
    """A tmkd run folder points at its HF export; anything else is passed to from_pretrained as is."""
    path = Path(name_or_path).expanduser()
    if path.suffix == ".ckpt":
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        if not path.is_file() or not (run_dir / HF_EXPORT / "config.json").is_file():
            raise FileNotFoundError(f"{path}: a .ckpt must be a file inside a tmkd run folder (<run>/checkpoints/) "
                                    f"whose {HF_EXPORT}/ export gives the architecture")
        return str(run_dir / HF_EXPORT)
    if (path / HF_EXPORT / "config.json").is_file():
        return str(path / HF_EXPORT)
    if path.exists() and not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} exists but holds no config.json (nor {HF_EXPORT}/config.json)")
    return name_or_path


def build_tokenizer(spec: ModelSpec) -> PreTrainedTokenizerBase:
    name = spec.tokenizer
    if name is None and spec.tiny is not None:
        name = "synthetic"
    if name is not None and name.startswith("synthetic"):
        _, _, seed = name.partition(":")
        return synthetic_tokenizer(int(seed or 0))
    if name is None and spec.name_or_path is None:
        raise ValueError("model needs name_or_path or tiny")
    return AutoTokenizer.from_pretrained(resolve_path(name or spec.name_or_path))


def load_ckpt_weights(model: PreTrainedModel, ckpt: Path) -> None:
    """Copy a tmkd Lightning checkpoint's model weights (``model.*`` keys) into ``model``; never unpickles code."""
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    weights = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    own = model.state_dict()
    weights = {k: v for k, v in weights.items() if k in own and own[k].shape == v.shape}  # a new head keeps its init
    missing = [k for k in own if k not in weights and not _is_head(k)]
    if missing:
        raise ValueError(f"{ckpt} does not fit the model built from its run's export: missing {missing[:5]}")
    model.load_state_dict(weights, strict=False)


def _is_head(key: str) -> bool:
    return key.startswith(("classifier.", "qa_outputs.", "score."))


def build_model(spec: ModelSpec, task: TaskSpec, tokenizer: PreTrainedTokenizerBase | None = None,
                on_label_mismatch: str = "error") -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model class of the task's kind (labels / outputs set from the task) and its tokenizer.

    Classification: a checkpoint fine-tuned with *other* labels is an error for a teacher
    (``on_label_mismatch="error"``); a model trained further (a stage-2 student) passes ``"reinit"``: its
    encoder is kept and its classification head re-initialised, with a logged notice (MNLI 3 labels -> QNLI 2).
    QA: a checkpoint of another kind (e.g. an MNLI classifier starting a SQuAD stage) keeps its encoder and gets
    a new ``qa_outputs`` head, with a logged notice; no label space to check.
    """
    if on_label_mismatch not in ("error", "reinit"):
        raise ValueError(f"on_label_mismatch must be 'error' or 'reinit', got {on_label_mismatch!r}")
    kind = get_kind(task.kind)
    tokenizer = tokenizer or build_tokenizer(spec)
    labels = kind.model_kwargs(task)
    # Dropout must be in the config *before* the model is built: modules read it once, at construction.
    dropout = {} if spec.dropout is None else dict.fromkeys(DROPOUT_KEYS, spec.dropout)
    if spec.tiny is not None:
        if spec.name_or_path is not None:
            raise ValueError("set either model.name_or_path or model.tiny, not both")
        config = BertConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                            **{**spec.tiny, **dropout}, **labels)
        model: PreTrainedModel = kind.tiny_class(config)
    else:
        if spec.name_or_path is None:
            raise ValueError("model needs name_or_path or tiny")
        path = resolve_path(spec.name_or_path)
        config = AutoConfig.from_pretrained(path)
        reinit = False
        if kind.name == "classification":
            try:
                check_label_space(config, task, path)
            except ValueError:
                if on_label_mismatch == "error":
                    raise
                reinit = True
                log.warning("%s was trained on labels %s; task %r has %s: keeping the encoder, re-initialising "
                            "the classification head", path, list(config.id2label.values()), task.name,
                            list(task.label_names))
        else:
            archs = config.architectures or []
            trained_head = [a for a in archs if a.endswith(("ForSequenceClassification", "ForTokenClassification",
                                                            "ForMultipleChoice"))]
            if trained_head:
                log.warning("%s is a %s; task %r is %s: keeping the encoder, with a new %s head", path,
                            trained_head[0], task.name, kind.name, kind.auto_class.__name__)
            reinit = getattr(config, "num_labels", 2) != labels.get("num_labels", 2)
        dropout = {k: v for k, v in dropout.items() if hasattr(config, k)}
        model = kind.auto_class.from_pretrained(path, **labels, **dropout, ignore_mismatched_sizes=reinit)
        if str(spec.name_or_path).endswith(".ckpt"):
            load_ckpt_weights(model, Path(spec.name_or_path))
        if reinit:
            reinit_head(model)
    if spec.layers is not None or spec.num_layers is not None:
        model = select_layers(model, layers=spec.layers, num_layers=spec.num_layers)
    if kind.name == "qa":
        _cap_tokenizer_length(tokenizer, model)
    return model, tokenizer


def build_classifier(spec: ModelSpec, task: TaskSpec, tokenizer: PreTrainedTokenizerBase | None = None,
                     on_label_mismatch: str = "error") -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """:func:`build_model` under its historical name (the model follows the task's kind, QA included)."""
    return build_model(spec, task, tokenizer, on_label_mismatch)


def usable_positions(config: Any) -> int:
    """Tokens a model can embed: RoBERTa-style models (MPNet too) reserve ``pad_token_id + 1`` positions."""
    positions = int(getattr(config, "max_position_embeddings", 512))
    if config.model_type in ("roberta", "mpnet", "xlm-roberta", "camembert", "longformer"):
        positions -= int(config.pad_token_id) + 1
    return positions


def check_max_length(config: Any, max_length: int, where: str) -> None:
    """Fail before training when ``max_length`` tokens exceed the positions ``where`` can embed (else a batch of
    long texts fails deep inside the model: ``The size of tensor a (512) must match the size of tensor b (128)``)."""
    usable = usable_positions(config)
    if int(max_length) > usable:
        offset = int(getattr(config, "max_position_embeddings", usable)) - usable
        detail = f" (max_position_embeddings={usable + offset}, {offset} reserved by {config.model_type})" \
            if offset else ""
        raise ValueError(f"data.max_length={max_length} is more than the {usable} token positions {where} can "
                         f"embed{detail}; set data.max_length={usable} or less")


def _cap_tokenizer_length(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel) -> None:
    """QA windows are cut at ``model_max_length``: keep it within the positions the model can embed (a tiny
    model's 128), so a too-long window fails with a clear error instead of an index error, and exports too."""
    tokenizer.model_max_length = min(int(tokenizer.model_max_length), usable_positions(model.config))


def fresh_init(model: PreTrainedModel, module: torch.nn.Module) -> None:
    """Re-initialise ``module`` with the model's own ``_init_weights``, also when its weights came from a checkpoint.

    transformers 5's init functions skip tensors flagged ``_is_hf_initialized`` (loaded weights), so a bare
    ``_init_weights`` call leaves a loaded head as it was; the flags are cleared first."""
    module._is_hf_initialized = False
    for tensor in [*module.parameters(recurse=False), *module.buffers(recurse=False)]:
        tensor._is_hf_initialized = False
    model._init_weights(module)


def reinit_head(model: PreTrainedModel) -> None:
    """Fresh classification head (the model's own init), so no trace of the old labels' head is kept."""
    for name, module in model.named_modules():
        if _is_head(name + ".") and any(True for _ in module.parameters(recurse=False)):
            fresh_init(model, module)


def trained_labels(config: Any) -> list[str] | None:
    """The label names a checkpoint's trained classification head predicts, in order; None when it has no trained
    head (plain encoders: labels ``LABEL_0``...), whose head is new whatever the task."""
    id2label = getattr(config, "id2label", None) or {}
    names = [id2label[i] for i in sorted(id2label, key=int)]
    generic = all(n == f"LABEL_{i}" for i, n in enumerate(names))
    trained_head = any(a.endswith("ForSequenceClassification") for a in (getattr(config, "architectures", None) or []))
    return names if names and not generic and trained_head else None


def check_labels(names: list[str] | tuple[str, ...], task: TaskSpec, where: str) -> None:
    """``names`` (what ``where`` predicts) must be the task's label names in the task's order."""
    if tuple(names) != tuple(task.label_names):
        raise ValueError(
            f"label space mismatch for {where}: it predicts {list(names)}, "
            f"task {task.name!r} expects {list(task.label_names)} (names and order must match)"
        )


def check_label_space(config: Any, task: TaskSpec, where: str) -> None:
    """A fine-tuned checkpoint must carry the task's label names in the task's order (a plain encoder passes)."""
    names = trained_labels(config)
    if names is not None:
        check_labels(names, task, f"{where} (the checkpoint)")
