"""Frozen teachers, each with its own tokenizer, evaluated together: logits [teachers, batch, ..., classes]
(the task kind's layout: [T, B, C] for classification, [T, B, 2, S] for QA).

Teachers and student may use different vocabularies (an MPNet teacher, a BERT-vocabulary student),
so every teacher reads the raw text through its own tokenizer. Teachers that share a tokenizer
share one tokenised *view* of the data, so nothing is encoded twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tmkd.data.kinds import get_kind
from tmkd.data.tasks import TaskSpec
from tmkd.data.tokenize import tokenizer_fingerprint
from tmkd.fingerprint import fingerprint_module


@dataclass
class Teacher:
    name: str
    model: PreTrainedModel  # or frozen encoder + adapter (tmkd.models.adapter_teacher): HF-style config and outputs
    tokenizer: PreTrainedTokenizerBase
    weight: float = 1.0
    source: str = ""
    view: str = ""  # the tokenised view (see TeacherEnsemble.assign_views) this teacher reads
    _fingerprint: str | None = field(default=None, repr=False)

    @property
    def fingerprint(self) -> str:
        """Hash of the weights (an adapter teacher's: encoder and adapter): soft targets cached under it go stale
        exactly when the weights change."""
        if self._fingerprint is None:
            self._fingerprint = fingerprint_module(self.model)
        return self._fingerprint


class TeacherEnsemble:
    """N frozen teachers. Deliberately *not* an nn.Module: teachers must not land in the student's
    checkpoints, optimiser or ``.parameters()``; the owner moves them with :meth:`to`.
    """

    def __init__(self, teachers: list[Teacher], task: TaskSpec) -> None:
        if not teachers:
            raise ValueError("distillation needs at least one teacher (distill.teachers is empty)")
        names = [t.name for t in teachers]
        if len(set(names)) != len(names):
            raise ValueError(f"teacher names must be unique, got {names}")
        self.kind = get_kind(task.kind)
        for t in teachers:
            self.kind.check_teacher(t.model, task, t.name)
            t.model.eval().requires_grad_(False)
        self.teachers = teachers
        self.task = task
        self.forward_batches = 0  # teacher forward passes run (batches), for tests and benchmarks

    def __len__(self) -> int:
        return len(self.teachers)

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.teachers]

    @property
    def weights(self) -> list[float]:
        return [t.weight for t in self.teachers]

    def assign_views(self, student_view: str, student_tokenizer: PreTrainedTokenizerBase
                     ) -> dict[str, PreTrainedTokenizerBase]:
        """Give each teacher a view name; returns the extra views (tokenizers) the data must provide."""
        by_print = {tokenizer_fingerprint(student_tokenizer): student_view}
        extra: dict[str, PreTrainedTokenizerBase] = {}
        for t in self.teachers:
            fp = tokenizer_fingerprint(t.tokenizer)
            if fp not in by_print:
                by_print[fp] = f"teacher_{t.name}"
                extra[by_print[fp]] = t.tokenizer
            t.view = by_print[fp]
        return extra

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> TeacherEnsemble:
        """Move teachers; on GPU pass ``dtype=torch.bfloat16`` to halve their memory and time."""
        for t in self.teachers:
            t.model.to(device=device, dtype=dtype)
        return self

    @torch.inference_mode()
    def teacher_logits(self, index: int, inputs: dict[str, Tensor]) -> Tensor:
        self.forward_batches += 1
        return self.kind.from_output(self.teachers[index].model(**inputs), inputs).float()

    def logits(self, inputs_by_view: dict[str, dict[str, Tensor]]) -> Tensor:
        """Per-teacher logits, shape [teachers, batch, ..., classes], each from its own view of the batch."""
        return torch.stack([self.teacher_logits(i, inputs_by_view[t.view]) for i, t in enumerate(self.teachers)])

    @torch.inference_mode()
    def hidden_states(self, index: int, inputs: dict[str, Tensor]) -> tuple[Tensor, ...]:
        self.forward_batches += 1
        out = self.teachers[index].model(**inputs, output_hidden_states=True)
        return tuple(h.float() for h in out.hidden_states)

    def describe(self) -> list[dict[str, Any]]:
        return [{"name": t.name, "weight": t.weight, "source": t.source} for t in self.teachers]
