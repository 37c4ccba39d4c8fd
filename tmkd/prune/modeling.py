"""``tmkd_pruned_bert``: BERT with a per-layer number of attention heads and FFN width.

transformers 5 dropped ``pruned_heads``, so a compacted model needs its own config and classes to be saved and
loaded. Everything pruning does not change (embeddings, LayerNorms, pooler, task heads, forward passes, attention
kernels, output capturing) is transformers' BERT code; only each layer's Q/K/V/output widths
(``heads_per_layer[i] * head_size``, with ``head_size = hidden_size // num_attention_heads`` of the original
model) and intermediate width (``intermediate_sizes[i]``) differ.

A layer may keep 0 heads: its attention block is then ``LayerNorm(x + output.dense.bias)`` (the dense's input is
empty), exactly what a fully masked attention computes. A layer may keep 0 FFN units likewise. Encoder-only:
decoders and cross-attention are refused.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import BertConfig
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.models.bert.modeling_bert import (
    BertAttention,
    BertEmbeddings,
    BertEncoder,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertIntermediate,
    BertLayer,
    BertModel,
    BertOutput,
    BertPooler,
    BertPreTrainedModel,
    BertSelfAttention,
    BertSelfOutput,
)

MODEL_TYPE = "tmkd_pruned_bert"


@strict
class TmkdPrunedBertConfig(BertConfig):
    """BertConfig plus ``heads_per_layer`` and ``intermediate_sizes`` (``None``: the dense sizes).

    ``num_attention_heads`` stays the *original* head count: it fixes the head size.
    """

    model_type = MODEL_TYPE

    heads_per_layer: list[int] | None = None
    intermediate_sizes: list[int] | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        if self.heads_per_layer is None:
            self.heads_per_layer = [self.num_attention_heads] * self.num_hidden_layers
        if self.intermediate_sizes is None:
            self.intermediate_sizes = [self.intermediate_size] * self.num_hidden_layers
        self.heads_per_layer = [int(h) for h in self.heads_per_layer]
        self.intermediate_sizes = [int(s) for s in self.intermediate_sizes]
        for name in ("heads_per_layer", "intermediate_sizes"):
            values = getattr(self, name)
            if len(values) != self.num_hidden_layers:
                raise ValueError(f"{name} has {len(values)} entries for {self.num_hidden_layers} layers")
            if any(v < 0 for v in values):
                raise ValueError(f"{name} must be >= 0, got {values}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads "
                             f"{self.num_attention_heads} (the original head count, which fixes the head size)")
        if self.is_decoder or self.add_cross_attention:
            raise ValueError(f"{MODEL_TYPE} is encoder-only (is_decoder / add_cross_attention must be False)")
        super().__post_init__(**kwargs)

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads


def _linear(in_features: int, out_features: int) -> nn.Linear:
    """nn.Linear that may be empty (0 heads / 0 units) without torch's "zero-element init" warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")
        return nn.Linear(in_features, out_features)


class TmkdPrunedBertSelfAttention(BertSelfAttention):
    """BertSelfAttention with ``num_heads`` heads of the original head size (0 allowed)."""

    def __init__(self, config: TmkdPrunedBertConfig, num_heads: int, layer_idx: int | None = None) -> None:
        nn.Module.__init__(self)
        self.config = config
        self.num_attention_heads = num_heads
        self.attention_head_size = config.head_size
        self.all_head_size = num_heads * config.head_size
        self.scaling = self.attention_head_size**-0.5
        self.query = _linear(config.hidden_size, self.all_head_size)
        self.key = _linear(config.hidden_size, self.all_head_size)
        self.value = _linear(config.hidden_size, self.all_head_size)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)
        self.is_decoder = False
        self.is_causal = False
        self.layer_idx = layer_idx

    def forward(self, hidden_states: torch.Tensor, *args: Any,
                **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        # Everything but ``hidden_states`` passes through untouched: BertSelfAttention's other parameters are private
        # to transformers and have changed name and order between releases (5.25 renamed ``past_key_values`` to
        # ``cache``), so naming or re-ordering them here breaks the next release.
        if self.num_attention_heads == 0:  # nothing to attend with: an empty context, the output dense adds its bias
            return hidden_states.new_zeros(*hidden_states.shape[:-1], 0), None
        return super().forward(hidden_states, *args, **kwargs)


class TmkdPrunedBertSelfOutput(BertSelfOutput):
    def __init__(self, config: TmkdPrunedBertConfig, in_features: int) -> None:
        nn.Module.__init__(self)
        self.dense = _linear(in_features, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)


class TmkdPrunedBertAttention(BertAttention):
    def __init__(self, config: TmkdPrunedBertConfig, num_heads: int, layer_idx: int | None = None) -> None:
        nn.Module.__init__(self)
        self.is_cross_attention = False
        self.self = TmkdPrunedBertSelfAttention(config, num_heads, layer_idx=layer_idx)
        self.output = TmkdPrunedBertSelfOutput(config, num_heads * config.head_size)


class TmkdPrunedBertIntermediate(BertIntermediate):
    def __init__(self, config: TmkdPrunedBertConfig, size: int) -> None:
        nn.Module.__init__(self)
        self.dense = _linear(config.hidden_size, size)
        self.intermediate_act_fn = ACT2FN[config.hidden_act] if isinstance(config.hidden_act, str) \
            else config.hidden_act


class TmkdPrunedBertOutput(BertOutput):
    def __init__(self, config: TmkdPrunedBertConfig, size: int) -> None:
        nn.Module.__init__(self)
        self.dense = _linear(size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)


class TmkdPrunedBertLayer(BertLayer):
    def __init__(self, config: TmkdPrunedBertConfig, layer_idx: int) -> None:
        GradientCheckpointingLayer.__init__(self)
        self.chunk_size_feed_forward = config.chunk_size_feed_forward
        self.seq_len_dim = 1
        self.attention = TmkdPrunedBertAttention(config, config.heads_per_layer[layer_idx], layer_idx=layer_idx)
        self.is_decoder = False
        self.add_cross_attention = False
        self.intermediate = TmkdPrunedBertIntermediate(config, config.intermediate_sizes[layer_idx])
        self.output = TmkdPrunedBertOutput(config, config.intermediate_sizes[layer_idx])


class TmkdPrunedBertEncoder(BertEncoder):
    def __init__(self, config: TmkdPrunedBertConfig) -> None:
        nn.Module.__init__(self)
        self.config = config
        self.layer = nn.ModuleList([TmkdPrunedBertLayer(config, i) for i in range(config.num_hidden_layers)])


class TmkdPrunedBertPreTrainedModel(BertPreTrainedModel):
    config_class = TmkdPrunedBertConfig
    _no_split_modules: ClassVar[list[str]] = ["BertEmbeddings", "TmkdPrunedBertLayer"]


class TmkdPrunedBertModel(TmkdPrunedBertPreTrainedModel, BertModel):
    """BertModel (same forward, same state-dict names) with per-layer attention / FFN widths."""

    config_class = TmkdPrunedBertConfig

    def __init__(self, config: TmkdPrunedBertConfig, add_pooling_layer: bool = True) -> None:
        BertPreTrainedModel.__init__(self, config)
        self.config = config
        self.gradient_checkpointing = False
        self.embeddings = BertEmbeddings(config)
        self.encoder = TmkdPrunedBertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.post_init()


class TmkdPrunedBertForSequenceClassification(TmkdPrunedBertPreTrainedModel, BertForSequenceClassification):
    config_class = TmkdPrunedBertConfig

    def __init__(self, config: TmkdPrunedBertConfig) -> None:
        BertPreTrainedModel.__init__(self, config)
        self.num_labels = config.num_labels
        self.config = config
        self.bert = TmkdPrunedBertModel(config)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()


class TmkdPrunedBertForQuestionAnswering(TmkdPrunedBertPreTrainedModel, BertForQuestionAnswering):
    config_class = TmkdPrunedBertConfig

    def __init__(self, config: TmkdPrunedBertConfig) -> None:
        BertPreTrainedModel.__init__(self, config)
        self.num_labels = config.num_labels
        self.bert = TmkdPrunedBertModel(config, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()


# Dense BERT class -> its pruned counterpart (compact() builds the latter from the former).
PRUNED_CLASSES: dict[type[nn.Module], type[TmkdPrunedBertPreTrainedModel]] = {
    BertModel: TmkdPrunedBertModel,
    BertForSequenceClassification: TmkdPrunedBertForSequenceClassification,
    BertForQuestionAnswering: TmkdPrunedBertForQuestionAnswering,
    TmkdPrunedBertModel: TmkdPrunedBertModel,
    TmkdPrunedBertForSequenceClassification: TmkdPrunedBertForSequenceClassification,
    TmkdPrunedBertForQuestionAnswering: TmkdPrunedBertForQuestionAnswering,
}
