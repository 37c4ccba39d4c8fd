"""Turn a block-pruned BERT into a smaller dense ``tmkd_pruned_bert`` model with the same outputs.

Reads the *effective* weights (``module.weight``: masked while a Pruner is attached, baked after
``finalize()``), so it works on either. Per layer:

- a head is removed when its V rows are all zero (it outputs the constant ``W_o,h @ b_v,h``, folded into the
  attention output bias) or its output columns are all zero (it outputs nothing);
- an FFN unit is removed when its output-dense column is all zero, or its intermediate-dense row is (it then
  outputs the constant ``W2[:, u] * act(b1[u])``, folded into the output bias);
- everything else is copied exactly, zeros inside kept heads included (a head that was only partly pruned and not
  re-filled stays sparse-in-dense).

The result equals the pruned model's outputs in eval mode (in training mode, attention dropout breaks the
"softmax rows sum to 1" that the V-bias fold relies on).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers.activations import ACT2FN

from tmkd.prune.modeling import PRUNED_CLASSES, TmkdPrunedBertConfig, TmkdPrunedBertPreTrainedModel
from tmkd.prune.pruner import EncoderLayerLinears, encoder_layers, live_heads, live_units

# config.to_dict() keys that describe the *source* model, not the compacted one
_DROP_KEYS = ("model_type", "transformers_version", "architectures", "heads_per_layer", "intermediate_sizes")


def _bias(linear: nn.Linear) -> Tensor:
    return linear.bias.detach() if linear.bias is not None else linear.weight.new_zeros(linear.out_features)


def _compact_layer(layer: EncoderLayerLinears, act: nn.Module, prefix: str) -> tuple[int, int, dict[str, Tensor]]:
    """Kept heads, kept units and the layer's new tensors (state-dict names under ``prefix``)."""
    hs = layer.head_size
    v, o = layer.value.weight.detach(), layer.attn_out.weight.detach()
    w1, w2 = layer.intermediate.weight.detach(), layer.output.weight.detach()
    o_bias, out_bias = _bias(layer.attn_out).clone(), _bias(layer.output).clone()

    if layer.num_heads:
        v_live = v.ne(0).reshape(layer.num_heads, hs, -1).flatten(1).any(1)
        heads = live_heads(v, o, layer.num_heads, hs)
        v_bias = _bias(layer.value)
        for h in torch.nonzero(~v_live).flatten():  # constant heads (zero output columns just add 0)
            cols = slice(int(h) * hs, (int(h) + 1) * hs)
            o_bias += o[:, cols] @ v_bias[cols]
    else:
        heads = torch.zeros(0, dtype=torch.bool, device=v.device)
    rows = torch.nonzero(heads.repeat_interleave(hs)).flatten()

    if w1.shape[0]:
        units = live_units(w1, w2)
        constant = ~w1.ne(0).any(1)  # no input weights: act(bias) is constant (a zero output column adds 0)
        if constant.any():
            out_bias += w2[:, constant] @ act(_bias(layer.intermediate)[constant])
    else:
        units = torch.zeros(0, dtype=torch.bool, device=w1.device)
    keep = torch.nonzero(units).flatten()

    t: dict[str, Tensor] = {}
    for name, part in (("attention.self.query", layer.query), ("attention.self.key", layer.key),
                       ("attention.self.value", layer.value)):
        t[f"{prefix}{name}.weight"] = part.weight.detach()[rows]
        t[f"{prefix}{name}.bias"] = _bias(part)[rows]
    t[f"{prefix}attention.output.dense.weight"] = o[:, rows]
    t[f"{prefix}attention.output.dense.bias"] = o_bias
    t[f"{prefix}intermediate.dense.weight"] = w1[keep]
    t[f"{prefix}intermediate.dense.bias"] = _bias(layer.intermediate)[keep]
    t[f"{prefix}output.dense.weight"] = w2[:, keep]
    t[f"{prefix}output.dense.bias"] = out_bias
    return int(heads.sum()), int(keep.numel()), t


@torch.no_grad()
def compact(model: nn.Module) -> TmkdPrunedBertPreTrainedModel:
    """A new ``TmkdPrunedBert{Model,ForSequenceClassification,ForQuestionAnswering}`` without the dead heads and
    FFN units of ``model`` (a BertModel / BertForSequenceClassification / BertForQuestionAnswering, pruned with a
    :class:`~tmkd.prune.Pruner` attached or finalized, or an earlier compacted model). Weights are copied exactly;
    ``model`` is not modified. ``save_pretrained`` the result; ``import tmkd.prune`` makes it loadable by the
    Auto classes and ``transformers.pipeline``."""
    target = PRUNED_CLASSES.get(type(model))
    if target is None:
        supported = sorted({cls.__name__ for cls in PRUNED_CLASSES})
        raise TypeError(f"compact() supports {supported}, got {type(model).__name__} "
                        "(RoBERTa / ELECTRA can be masked by Pruner but have no compacted model class)")
    if model.config.is_decoder or getattr(model.config, "add_cross_attention", False):
        raise TypeError("compact() supports encoders only (config.is_decoder / add_cross_attention is set)")
    act = ACT2FN[model.config.hidden_act] if isinstance(model.config.hidden_act, str) else model.config.hidden_act
    names = {id(module): name for name, module in model.named_modules()}

    heads, sizes, tensors = [], [], {}
    for layer in encoder_layers(model):
        prefix = names[id(layer.query)].removesuffix("attention.self.query")
        n_heads, n_units, layer_tensors = _compact_layer(layer, act, prefix)
        heads.append(n_heads)
        sizes.append(n_units)
        tensors.update(layer_tensors)

    source = {k: v for k, v in model.config.to_dict().items() if k not in _DROP_KEYS}
    config = TmkdPrunedBertConfig(**source, heads_per_layer=heads, intermediate_sizes=sizes)
    first = next(model.parameters())
    small = target._from_config(config, attn_implementation=model.config._attn_implementation, dtype=first.dtype)
    state = {}
    for key, value in small.state_dict().items():
        if key in tensors:
            state[key] = tensors[key]
        else:  # untouched by pruning: same module path in both models
            module_name, _, attr = key.rpartition(".")
            state[key] = getattr(model.get_submodule(module_name), attr).detach()
        if state[key].shape != value.shape:
            raise RuntimeError(f"compact(): {key} has shape {tuple(state[key].shape)}, expected {tuple(value.shape)}")
    small.load_state_dict(state, strict=True)
    return small.to(first.device).train(model.training)
