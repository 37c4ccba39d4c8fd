"""A saved hidden-state adapter as a member of a teacher ensemble (a cheap teacher).

A teacher spec's ``name_or_path`` may point at an adapter export (``adapter_config.json`` of format
``tmkd-adapter/v1``, written by :func:`tmkd.models.adapter.save_adapter`) or at an adapter run's folder (its
``hf/`` export), e.g. the folder the planner resolves a ``run: {experiment: adapter_head_rte}`` teacher to. What
the folder holds decides how it loads (:func:`find_adapter_export`); nobody declares a type.

The teacher is a thin ``nn.Module`` around frozen encoder + adapter (:class:`AdapterWithEncoder`) that looks like a
HF head to the ensemble: a ``config`` (the encoder's, with the adapter's labels) and HF outputs
(``SequenceClassifierOutput.logits``; ``QuestionAnsweringModelOutput`` for a span adapter). Its ``state_dict``
holds the encoder's *and* the adapter's weights, so ``Teacher.fingerprint`` (the soft-target cache key) changes
when either does. The class names end like HF heads' (``...ForSequenceClassification`` /
``...ForQuestionAnswering``) because that is what :meth:`tmkd.data.kinds.TaskKind.check_teacher` checks.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase
from transformers.modeling_outputs import QuestionAnsweringModelOutput, SequenceClassifierOutput

from tmkd.data.tasks import TaskSpec
from tmkd.models.adapter import ADAPTER_FORMAT, CONFIG_NAME, AdapterWithEncoder, load_adapter_with_encoder
from tmkd.models.build import HF_EXPORT, usable_positions

OUTPUT_OF_TASK = {"classification": "classification", "qa": "spans"}  # task kind -> adapter kind it needs


def _is_adapter_export(folder: Path) -> bool:
    """``folder`` holds a tmkd adapter export (a PEFT ``adapter_config.json`` has another format and is not one)."""
    config = folder / CONFIG_NAME
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("format") == ADAPTER_FORMAT
    except (json.JSONDecodeError, AttributeError):
        return False


def find_adapter_export(name_or_path: str | Path) -> Path | None:
    """The adapter export a teacher's ``name_or_path`` points at (the folder itself or a run's ``hf/``), or None
    for what :func:`tmkd.models.build.build_model` loads (a HF folder, a run with a HF export, a ``.ckpt``, a hub
    id). An existing folder that is neither raises, naming the path and what was looked for."""
    path = Path(name_or_path).expanduser()
    if not path.is_dir():
        return None  # a hub id or a .ckpt (build_model / resolve_path judge those)
    for folder in (path, path / HF_EXPORT):
        if _is_adapter_export(folder):
            return folder
        if (folder / "config.json").is_file():
            return None
    raise FileNotFoundError(
        f"{path} is neither a HF model (config.json), a tmkd run folder ({HF_EXPORT}/config.json) nor a saved tmkd "
        f"adapter ({CONFIG_NAME} of format {ADAPTER_FORMAT!r}, or {HF_EXPORT}/{CONFIG_NAME}); a run that has not "
        f"finished has no {HF_EXPORT}/ export yet")


class AdapterTeacher(nn.Module):
    """Frozen encoder + adapter with a HF-style ``config`` and outputs (base of the two kinds below)."""

    def __init__(self, model: AdapterWithEncoder, id2label: dict[int, str] | None = None) -> None:
        super().__init__()
        self.model = model
        adapter = model.adapter.config
        # The encoder's config (model_type, positions, hidden size: what QA targets read), with the adapter's labels.
        config = copy.deepcopy(model.encoder.model.config)
        if adapter.output == "classification":
            names = {i: (id2label or {}).get(i, f"LABEL_{i}") for i in range(adapter.num_labels)}
            config.id2label = names
            config.label2id = {v: k for k, v in names.items()}
        self.config = config

    def forward(self, input_ids: Tensor, attention_mask: Tensor, output_hidden_states: bool | None = None,
                **inputs: Any) -> SequenceClassifierOutput | QuestionAnsweringModelOutput:
        if output_hidden_states:
            raise ValueError("an adapter teacher has no hidden states to distil from (its encoder is a frozen "
                             "pretrained model); pick another distill.hidden.teacher")
        inputs = {k: v for k, v in inputs.items() if k != "return_dict"}  # the encoder sets it itself
        return self.model(input_ids, attention_mask, **inputs)


class AdapterForSequenceClassification(AdapterTeacher):
    """A classification adapter as a teacher: ``.logits`` [batch, labels]."""


class AdapterForQuestionAnswering(AdapterTeacher):
    """A span adapter as a teacher: ``.start_logits`` / ``.end_logits`` [batch, seq]."""


def load_adapter_teacher(export: str | Path, task: TaskSpec
                         ) -> tuple[AdapterTeacher, PreTrainedTokenizerBase, str]:
    """(model, tokenizer, source description) of an adapter export used as a teacher of ``task``.

    The encoder must be the one the adapter was trained on (its recorded weights fingerprint); the adapter's
    kind and label names must fit the task (the ensemble checks the number of labels).
    """
    model, tokenizer, saved = load_adapter_with_encoder(export, check_encoder=True)
    config = saved.adapter.config
    needed = OUTPUT_OF_TASK.get(task.kind)
    if config.output != needed:
        raise ValueError(f"adapter {export} is a {config.output} adapter; task {task.name!r} ({task.kind}) needs "
                         f"{'a ' + needed + ' adapter' if needed else 'a model of its kind, not an adapter'}")
    if config.output == "classification":
        names = [saved.id2label.get(i, f"LABEL_{i}") for i in range(config.num_labels)]
        generic = all(n == f"LABEL_{i}" for i, n in enumerate(names))
        if not generic and tuple(names) != tuple(task.label_names):
            raise ValueError(f"label space mismatch for adapter {export}: it predicts {names}, task {task.name!r} "
                             f"expects {list(task.label_names)} (names and order must match)")
        teacher: AdapterTeacher = AdapterForSequenceClassification(model, saved.id2label)
    else:
        teacher = AdapterForQuestionAnswering(model)
        # QA windows are cut at model_max_length: keep it within what the encoder embeds (as build_model does)
        tokenizer.model_max_length = min(int(tokenizer.model_max_length), usable_positions(teacher.config))
    source = f"adapter {export} (encoder {saved.encoder}, layers {list(config.layers)}, {config.pooling} pooling)"
    return teacher.eval(), tokenizer, source
