"""Cut a student from a pretrained encoder by keeping a subset of its layers (DistilBERT-style init).

Embeddings, pooler and head come along unchanged; the student keeps the parent's tokenizer.
"""

from __future__ import annotations

from torch import nn
from transformers import PreTrainedModel


def spread_layers(total: int, keep: int) -> list[int]:
    """``keep`` layer indices spread evenly over ``total``, starting at 0: 6 of 12 -> [0, 2, 4, 6, 8, 10]."""
    if not 0 < keep <= total:
        raise ValueError(f"num_layers must be between 1 and {total} (the parent's depth), got {keep}")
    return [(i * total) // keep for i in range(keep)]


def find_layer_list(model: PreTrainedModel) -> tuple[nn.Module, str, nn.ModuleList]:
    """The encoder's stack of layers, found by shape rather than by architecture name.

    Works for BERT/RoBERTa/MPNet (``encoder.layer``), DistilBERT (``transformer.layer``) and the like.
    """
    depth = model.config.num_hidden_layers
    for _, module in model.named_modules():
        for child_name, child in module.named_children():
            if isinstance(child, nn.ModuleList) and len(child) == depth and child_name in ("layer", "layers"):
                return module, child_name, child
    raise ValueError(f"cannot find the encoder layer list of {type(model).__name__} ({depth} layers)")


def select_layers(model: PreTrainedModel, layers: list[int] | None = None, num_layers: int | None = None
                  ) -> PreTrainedModel:
    """Keep ``layers`` (explicit indices) or ``num_layers`` (spread evenly) of ``model``'s encoder, in place."""
    total = model.config.num_hidden_layers
    if layers is None:
        if num_layers is None:
            raise ValueError("give layers or num_layers")
        layers = spread_layers(total, num_layers)
    elif num_layers is not None and num_layers != len(layers):
        raise ValueError(f"layers={layers} and num_layers={num_layers} disagree")
    if not layers:
        raise ValueError("layers must not be empty")
    bad = [i for i in layers if not 0 <= i < total]
    if bad or len(set(layers)) != len(layers):
        raise ValueError(f"layers {layers} must be distinct indices in [0, {total - 1}] (the parent has {total})")
    parent, attr, stack = find_layer_list(model)
    kept = nn.ModuleList([stack[i] for i in layers])
    for new_idx, layer in enumerate(kept):
        for sub in layer.modules():  # attention caches index layers; keep them consistent
            if hasattr(sub, "layer_idx"):
                sub.layer_idx = new_idx
    setattr(parent, attr, kept)
    model.config.num_hidden_layers = len(layers)
    if isinstance(getattr(model.config, "layer_types", None), list):
        model.config.layer_types = [model.config.layer_types[i] for i in layers]
    model.config.tmkd_parent_layers = list(layers)  # provenance, saved in config.json
    return model
