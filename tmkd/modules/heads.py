"""How a student's logits are formed: its own output layer (one head), or one head per teacher (TMKD's m-o-m)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel

from tmkd.data.kinds import TaskKind


class SingleHead:
    """The model's own output layer: training and prediction logits are the model's."""

    per_head = False

    def logits(self, model: nn.Module, kind: TaskKind, inputs: dict[str, Tensor], hidden: bool
               ) -> tuple[Tensor, Any]:
        """Training-time logits ``[B, ...]`` and the raw model output."""
        out = model(**inputs, output_hidden_states=hidden) if hidden else model(**inputs)
        return kind.from_output(out, inputs), out

    def predict(self, model: nn.Module, kind: TaskKind, inputs: dict[str, Tensor]) -> Tensor:
        return kind.from_output(model(**inputs), inputs)

    def fold(self, model: PreTrainedModel) -> PreTrainedModel:
        return model


def find_output_layer(model: PreTrainedModel) -> nn.Linear:
    """The final linear layer (BERT ``classifier``, RoBERTa/MPNet ``classifier.out_proj``, QA ``qa_outputs``)."""
    found = [m for _, m in model.named_modules() if isinstance(m, nn.Linear)
             and m.out_features == model.config.num_labels]
    if not found:
        raise ValueError(f"no output layer with {model.config.num_labels} outputs in {type(model).__name__}")
    return found[-1]


class TeacherHeads(nn.ModuleList):
    """One output head per teacher on a shared encoder (the TMKD multi-head student).

    Head ``i`` is a copy of the model's final linear layer, fed the same features, and learns teacher ``i``'s soft
    targets. The prediction is the *mean of the heads' logits*. A mean of linear heads is itself one linear layer
    (mean weight, mean bias), so :meth:`fold` writes that layer into the model: the saved model is an ordinary
    single-head model that computes exactly what the multi-head student predicted.
    """

    per_head = True

    def __init__(self, model: PreTrainedModel, n_teachers: int) -> None:
        out_layer = find_output_layer(model)
        super().__init__([nn.Linear(out_layer.in_features, out_layer.out_features) for _ in range(n_teachers)])
        for head in self:
            head.load_state_dict(out_layer.state_dict())
        out_layer.requires_grad_(False)  # replaced by the heads; rewritten by fold()
        self._features: Tensor | None = None
        out_layer.register_forward_hook(self._capture)

    def _capture(self, module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
        self._features = args[0]

    def logits(self, model: nn.Module, kind: TaskKind, inputs: dict[str, Tensor], hidden: bool
               ) -> tuple[Tensor, Any]:
        """Training-time logits ``[heads, B, ...]`` and the raw model output."""
        out = model(**inputs, output_hidden_states=hidden)
        features, self._features = self._features, None
        return torch.stack([kind.from_head(head(features), inputs) for head in self]), out

    def predict(self, model: nn.Module, kind: TaskKind, inputs: dict[str, Tensor]) -> Tensor:
        return self.logits(model, kind, inputs, hidden=False)[0].mean(0)

    def fold(self, model: PreTrainedModel) -> PreTrainedModel:
        out_layer = find_output_layer(model)
        with torch.no_grad():
            out_layer.weight.copy_(torch.stack([h.weight for h in self]).mean(0))
            out_layer.bias.copy_(torch.stack([h.bias for h in self]).mean(0))
        return model
