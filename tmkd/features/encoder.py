"""A frozen encoder that yields hidden states of selected layers, stacked: the input of BERTVision adapters.

One class serves both uses: the feature cache runs it once per split (pooled states, classification),
and span tasks stream its per-token states during training (see :mod:`tmkd.features.cache` for why).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel

from tmkd.fingerprint import fingerprint_module

Pooling = Literal["cls", "mean"]
POOLINGS: tuple[str, ...] = ("cls", "mean")


def base_encoder(model: PreTrainedModel) -> PreTrainedModel:
    """The bare encoder of ``model``: a classifier's base model (its head is irrelevant), or the model itself."""
    return model.base_model


def resolve_layers(layers: Sequence[int] | None, num_hidden_layers: int) -> tuple[int, ...]:
    """Hidden-state indices (0 = embeddings, i = output of layer i) as a sorted, validated tuple.

    ``None`` means all ``num_hidden_layers + 1`` states; negative indices count from the top. Sorted order
    matters: the adapter's skip connection reads the *last* entry as the top selected layer.
    """
    total = num_hidden_layers + 1
    if layers is None:
        return tuple(range(total))
    resolved = [i + total if i < 0 else i for i in layers]
    bad = [i for i, r in zip(layers, resolved, strict=True) if not 0 <= r < total]
    if bad or not resolved or len(set(resolved)) != len(resolved):
        raise ValueError(f"layers {list(layers)} must be distinct, non-empty hidden-state indices in "
                         f"[0, {total - 1}] (0 = embeddings; the encoder has {num_hidden_layers} layers)")
    return tuple(sorted(resolved))


def pool_states(states: Tensor, attention_mask: Tensor, pooling: str) -> Tensor:
    """[batch, layers, seq, hidden] -> [batch, layers, hidden] by the first real token or a masked mean.

    "cls" takes the first non-padding token rather than position 0, so left-padding tokenizers work too.
    """
    if pooling == "cls":
        first = attention_mask.long().argmax(dim=1)  # index of the first 1 in each row
        return states[torch.arange(states.shape[0], device=states.device), :, first]
    if pooling == "mean":
        mask = attention_mask.to(states.dtype)[:, None, :, None]
        return (states * mask).sum(dim=2) / mask.sum(dim=2).clamp_min(1.0)
    raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")


class FrozenEncoder(nn.Module):
    """Wraps a HF encoder (or the base model of a classifier), frozen and always in eval mode.

    ``forward_batches`` counts encoder passes, so tests and benchmarks can tell computed from cached.
    """

    def __init__(self, model: PreTrainedModel, layers: Sequence[int] | None = None) -> None:
        super().__init__()
        self.model = base_encoder(model).eval().requires_grad_(False)
        self.layers = resolve_layers(layers, self.model.config.num_hidden_layers)
        self.forward_batches = 0
        # Tokenizers may emit inputs an encoder does not take (token_type_ids for MPNet / DistilBERT).
        self._accepted = set(inspect.signature(self.model.forward).parameters)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    def fingerprint(self) -> str:
        """Weights hash, recomputed per call so that weights changed in place are never missed."""
        return fingerprint_module(self.model)

    def train(self, mode: bool = True) -> FrozenEncoder:
        """Frozen means dropout off as well: the encoder stays in eval mode whatever the owner does."""
        super().train(mode)
        self.model.eval()
        return self

    @torch.no_grad()
    def hidden_states(self, inputs: Mapping[str, Tensor]) -> Tensor:
        """Selected hidden states, [batch, layers, seq, hidden] in the encoder's dtype.

        ``no_grad`` rather than ``inference_mode``: streamed states feed a trained adapter, and inference
        tensors cannot be saved for its backward pass. The cache wraps calls in ``inference_mode`` itself.
        """
        self.forward_batches += 1
        kwargs = {k: v for k, v in inputs.items() if k in self._accepted}
        out = self.model(**kwargs, output_hidden_states=True, return_dict=True)
        return torch.stack([out.hidden_states[i] for i in self.layers], dim=1)

    def pooled(self, inputs: Mapping[str, Tensor], pooling: str) -> Tensor:
        """Pooled states of the selected layers, [batch, layers, hidden], float32."""
        return pool_states(self.hidden_states(inputs).float(), inputs["attention_mask"], pooling)
