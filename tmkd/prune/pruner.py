"""Block movement pruning of a BERT-style encoder, attached with ``torch.nn.utils.parametrize``.

Lifecycle (one Lightning run, or a plain loop)::

    pruner = Pruner(model, PruningConfig(target_density=0.3, total_steps=n)).attach()
    optimizer = AdamW(pruner.parameter_groups(lr=3e-5, score_lr=1e-2))
    for step, batch in ...:
        pruner.step(step)                                    # schedule: density / threshold / lambda
        loss = task_loss(model(**batch)) + pruner.regularization_loss()
        ...
    pruner.fill()            # optional "hybrid filled": dense surviving heads, frozen structure; fine-tune more
    model = pruner.finalize()                                # masks baked into the weights, scores gone
    small = tmkd.prune.compact(model)                        # heads / FFN units removed: a smaller dense model

The model classes are not rewritten: each encoder linear weight becomes ``W * mask(scores)``, so the task loss,
distillation losses and checkpoints of the surrounding code see an ordinary model.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from tmkd.prune.config import PruningConfig
from tmkd.prune.masks import ScoreMask

ATTENTION = ("query", "key", "value", "attn_out")


@dataclass
class EncoderLayerLinears:
    """The six linear layers pruning touches in one BERT-style encoder layer, and its head geometry."""

    index: int
    query: nn.Linear
    key: nn.Linear
    value: nn.Linear
    attn_out: nn.Linear
    intermediate: nn.Linear
    output: nn.Linear
    num_heads: int
    head_size: int

    def attention(self) -> dict[str, nn.Linear]:
        return {name: getattr(self, name) for name in ATTENTION}


def encoder_layers(model: nn.Module) -> list[EncoderLayerLinears]:
    """Find ``<base>.encoder.layer[i].{attention.self.{query,key,value}, attention.output.dense, intermediate.dense,
    output.dense}`` (BERT, RoBERTa, ELECTRA, MiniLM, tmkd_pruned_bert; not MPNet, DistilBERT, DeBERTa, ALBERT)."""
    base = getattr(model, "base_model", model)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    kind = type(model).__name__
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        raise TypeError(f"{kind} is not a BERT-like encoder: expected <base_model>.encoder.layer "
                        "(a ModuleList of BertLayer-style modules); MPNet, DistilBERT, DeBERTa, ALBERT are "
                        "not supported")
    found = []
    for i, layer in enumerate(layers):
        try:
            attn = layer.attention.self
            linears = dict(query=attn.query, key=attn.key, value=attn.value, attn_out=layer.attention.output.dense,
                           intermediate=layer.intermediate.dense, output=layer.output.dense)
            num_heads, head_size = int(attn.num_attention_heads), int(attn.attention_head_size)
        except AttributeError as err:
            raise TypeError(f"{kind} layer {i} is not BERT-like ({err}); pruning needs attention.self.query/key/"
                            "value, attention.output.dense, intermediate.dense and output.dense") from err
        bad = [name for name, lin in linears.items() if not isinstance(lin, nn.Linear)]
        if bad:
            raise TypeError(f"{kind} layer {i}: {bad} are not nn.Linear")
        if linears["query"].out_features != num_heads * head_size:
            raise TypeError(f"{kind} layer {i}: query has {linears['query'].out_features} outputs, "
                            f"not num_heads * head_size = {num_heads} * {head_size}")
        found.append(EncoderLayerLinears(i, **linears, num_heads=num_heads, head_size=head_size))
    return found


def live_heads(value_mask: Tensor, out_mask: Tensor, num_heads: int, head_size: int) -> Tensor:
    """Heads that move input-dependent information into the residual stream: some V row *and* some output column
    of the head survive. (V rows all zero: the head outputs the constant ``W_o,h b_v,h``; output columns all zero:
    nothing. Q/K alone decide only where a head looks, not what it passes on.)"""
    v = value_mask.reshape(num_heads, head_size, -1).ne(0).flatten(1).any(1)
    o = out_mask.reshape(out_mask.shape[0], num_heads, head_size).ne(0).transpose(0, 1).flatten(1).any(1)
    return v & o


def live_units(inter_mask: Tensor, out_mask: Tensor) -> Tensor:
    """FFN units with a surviving input row (intermediate dense) and output column (output dense)."""
    return inter_mask.ne(0).any(1) & out_mask.ne(0).any(0)


@dataclass
class LayerDensity:
    layer: int
    attention_density: float  # Q/K/V/output weights kept / their total
    heads_kept: int  # live heads (see live_heads): what fill() keeps dense and compact() keeps
    heads_total: int
    ffn_density: float  # FFN units kept / units
    ffn_units_kept: int
    ffn_units_total: int


@dataclass
class DensityReport:
    """Per-layer densities and ``overall``: the fraction of encoder linear weights kept."""

    layers: list[LayerDensity] = field(default_factory=list)
    overall: float = 1.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DensityReport:
        return cls(layers=[LayerDensity(**layer) for layer in data["layers"]], overall=float(data["overall"]))

    def flat(self, prefix: str = "prune/") -> dict[str, float]:
        """Scalars for a logger: ``prune/overall_density``, ``prune/layer3/heads_kept``, ..."""
        out = {f"{prefix}overall_density": self.overall}
        for ld in self.layers:
            for key in ("attention_density", "heads_kept", "ffn_density"):
                out[f"{prefix}layer{ld.layer}/{key}"] = float(getattr(ld, key))
        return out


def _mask_of(linear: nn.Linear) -> Tensor:
    """The weight's 0/1 mask: the parametrization's while attached, else where the weight is non-zero."""
    if parametrize.is_parametrized(linear, "weight"):
        mask = linear.parametrizations.weight[0]
        if isinstance(mask, ScoreMask):
            return mask.mask().detach()
    return linear.weight.detach().ne(0).float()


class Pruner:
    """Learned-score masks on every encoder linear weight of ``model``, and their schedule.

    Attention Q/K/V/output weights get one score per ``block_size`` x ``block_size`` block; FFN hidden units get
    one score each, shared by the unit's row of ``intermediate.dense`` and column of ``output.dense``. Scores are
    Parameters inside the model (``...parametrizations.weight.0.scores``), so they move with ``.to()`` and are in
    ``model.parameters()``; give them their own lr and no weight decay (:meth:`parameter_groups`).
    """

    def __init__(self, model: nn.Module, config: PruningConfig) -> None:
        self.model = model
        self.config = config
        self.layers = encoder_layers(model)
        b = config.block_size
        for layer in self.layers:
            for name, linear in layer.attention().items():
                rows, cols = linear.weight.shape
                if rows % b or cols % b:
                    raise ValueError(f"block_size {b} does not divide layer {layer.index} {name} weight "
                                     f"({rows}x{cols}); pick a divisor of both (e.g. of the head size "
                                     f"{layer.head_size})")
        self.attention_masks: list[dict[str, ScoreMask]] = []
        self.ffn_masks: list[tuple[ScoreMask, ScoreMask] | None] = []
        self._regularized: list[tuple[nn.Parameter, float]] = []  # (scores, weights each score governs)
        self.attached = False
        self.filled = False
        self.finalized = False
        self.reg_lambda = 0.0
        self.state: dict[str, float] = {}

    # -- setup ------------------------------------------------------------------------------------------------

    def _init_scores(self, magnitudes: Tensor) -> Tensor:
        """Scores for blocks whose mean |w| is ``magnitudes`` (used only by ``score_init='magnitude'``)."""
        cfg = self.config
        if cfg.score_init == "magnitude":
            return (magnitudes / magnitudes.mean().clamp_min(1e-12)).float()
        if cfg.score_init == "uniform":
            return torch.empty_like(magnitudes, dtype=torch.float32).uniform_(-cfg.score_init_scale,
                                                                              cfg.score_init_scale)
        return torch.full_like(magnitudes, cfg.score_init_scale, dtype=torch.float32)

    def attach(self) -> Pruner:
        """Register the mask parametrizations (density 1 until the first :meth:`step`). Returns ``self``."""
        if self.attached or self.finalized:
            raise RuntimeError("Pruner is already attached (or finalized); build a new Pruner for a new model")
        for layer in self.layers:
            for linear in (*layer.attention().values(), layer.intermediate, layer.output):
                if parametrize.is_parametrized(linear, "weight"):
                    raise RuntimeError(f"layer {layer.index} already has a weight parametrization "
                                       "(another Pruner attached?); finalize() that one first")
        cfg, b = self.config, self.config.block_size
        level = 1.0 if cfg.mask == "topk" else 0.0
        with torch.no_grad():
            for layer in self.layers:
                masks: dict[str, ScoreMask] = {}
                for name, linear in layer.attention().items():
                    w = linear.weight
                    if w.numel() == 0:  # a layer already compacted to 0 heads
                        continue
                    grid = (w.shape[0] // b, w.shape[1] // b)
                    magnitude = w.abs().reshape(grid[0], b, grid[1], b).mean((1, 3))
                    scores = nn.Parameter(self._init_scores(magnitude))
                    masks[name] = ScoreMask(scores, grid, (b, b), cfg.mask, level)
                    parametrize.register_parametrization(linear, "weight", masks[name])
                    self._regularized.append((scores, float(b * b)))
                self.attention_masks.append(masks)

                w1, w2 = layer.intermediate.weight, layer.output.weight  # (I, H), (H, I)
                units, hidden = w1.shape
                if units == 0:
                    self.ffn_masks.append(None)
                    continue
                magnitude = (w1.abs().mean(1) / w1.abs().mean().clamp_min(1e-12)
                             + w2.abs().mean(0) / w2.abs().mean().clamp_min(1e-12)) / 2
                scores = nn.Parameter(self._init_scores(magnitude))
                rows = ScoreMask(scores, (units, 1), (1, hidden), cfg.mask, level)
                cols = ScoreMask(scores, (1, units), (w2.shape[0], 1), cfg.mask, level)
                parametrize.register_parametrization(layer.intermediate, "weight", rows)
                parametrize.register_parametrization(layer.output, "weight", cols)
                self.ffn_masks.append((rows, cols))
                self._regularized.append((scores, float(hidden + w2.shape[0])))
        self.attached = True
        return self

    def _require_attached(self) -> None:
        if not self.attached:
            raise RuntimeError("Pruner is not attached: call attach() first (and not after finalize())")

    def _all_masks(self) -> Iterator[tuple[str, ScoreMask]]:
        for masks in self.attention_masks:
            for mask in masks.values():
                yield "attention", mask
        for pair in self.ffn_masks:
            for mask in pair or ():
                yield "ffn", mask

    # -- training ---------------------------------------------------------------------------------------------

    def score_parameters(self) -> list[nn.Parameter]:
        """The score Parameters (each once; FFN rows and columns share theirs)."""
        seen: dict[int, nn.Parameter] = {}
        for _, mask in self._all_masks():
            seen.setdefault(id(mask.scores), mask.scores)
        return list(seen.values())

    def parameter_groups(self, lr: float, score_lr: float, weight_decay: float = 0.0) -> list[dict[str, Any]]:
        """Optimizer groups: the model's trainable weights, and the scores at ``score_lr`` without weight decay
        (decay would pull every score toward 0, i.e. toward "undecided")."""
        scores = {id(p) for p in self.score_parameters()}
        weights = [p for p in self.model.parameters() if p.requires_grad and id(p) not in scores]
        return [{"params": weights, "lr": lr, "weight_decay": weight_decay},
                {"params": self.score_parameters(), "lr": score_lr, "weight_decay": 0.0}]

    def step(self, global_step: int) -> dict[str, float]:
        """Set the masks' density (top-k) or threshold and penalty weight (sigmoid) for ``global_step``.

        Call before the forward pass of each optimizer step. Returns the scheduled values, for logging.
        """
        self._require_attached()
        if self.filled:
            return self.state
        cfg = self.config
        if cfg.mask == "topk":
            attention, ffn = cfg.densities(global_step)
            for kind, mask in self._all_masks():
                mask.level = attention if kind == "attention" else ffn
            self.state = {"attention_density": attention, "ffn_density": ffn}
        else:
            progress = cfg.progress(global_step)
            threshold = cfg.sigmoid_threshold * progress
            for _, mask in self._all_masks():
                mask.level = threshold
            self.reg_lambda = cfg.regularization_weight * progress
            self.state = {"threshold": threshold, "reg_lambda": self.reg_lambda}
        return self.state

    def soft_density(self) -> Tensor:
        """Differentiable expected fraction of encoder linear weights kept: mean ``sigmoid(score)``, each score
        weighted by the number of weights it governs."""
        self._require_attached()
        total = sum(count * s.numel() for s, count in self._regularized)
        return sum(torch.sigmoid(s).sum() * count for s, count in self._regularized) / total

    def regularization_loss(self) -> Tensor:
        """``lambda(step) * soft_density()`` for ``sigmoid``; a zero scalar for ``topk`` and once filled."""
        self._require_attached()
        device = self._regularized[0][0].device if self._regularized else None
        if self.config.mask != "sigmoid" or self.filled:
            return torch.zeros((), device=device)
        return self.reg_lambda * self.soft_density()

    # -- structure --------------------------------------------------------------------------------------------

    @torch.no_grad()
    def density_report(self) -> DensityReport:
        """Densities from the current masks (attached) or from the weights' zeros (after finalize)."""
        layers, kept_total, weights_total = [], 0.0, 0
        for layer in self.layers:
            attn = {name: _mask_of(linear) for name, linear in layer.attention().items()}
            inter, out = _mask_of(layer.intermediate), _mask_of(layer.output)
            attn_kept = sum(float(m.sum()) for m in attn.values())
            attn_total = sum(m.numel() for m in attn.values())
            units = live_units(inter, out) if inter.numel() else torch.zeros(0, dtype=torch.bool)
            heads = live_heads(attn["value"], attn["attn_out"], layer.num_heads, layer.head_size) \
                if layer.num_heads else torch.zeros(0, dtype=torch.bool)
            layers.append(LayerDensity(
                layer=layer.index,
                attention_density=attn_kept / attn_total if attn_total else 0.0,
                heads_kept=int(heads.sum()), heads_total=layer.num_heads,
                ffn_density=float(units.float().mean()) if units.numel() else 0.0,
                ffn_units_kept=int(units.sum()), ffn_units_total=units.numel()))
            kept_total += attn_kept + float(inter.sum() + out.sum())
            weights_total += attn_total + inter.numel() + out.numel()
        return DensityReport(layers=layers, overall=kept_total / weights_total if weights_total else 0.0)

    @torch.no_grad()
    def fill(self) -> Pruner:
        """"Hybrid filled": freeze the structure, re-densify the surviving heads.

        Every live head (see :func:`live_heads`) gets its whole Q/K/V rows and output columns back, with the
        *latent* weights under the mask: the values those weights had when they were masked (a masked weight gets
        zero gradient, so it stays put, up to optimiser momentum / weight decay). Dead heads are masked entirely
        (Q, K, V and output), FFN units keep their current mask. The masks are then fixed: scores stop learning,
        :meth:`step` no longer changes anything, and :meth:`regularization_loss` is 0. Fine-tune (ideally with
        distillation) after this; :func:`tmkd.prune.compact` then removes the dead heads and units exactly.
        """
        self._require_attached()
        if self.filled:
            return self
        for layer, masks in zip(self.layers, self.attention_masks, strict=True):
            if not masks:
                continue
            full = {name: mask.mask().ne(0) for name, mask in masks.items()}
            rows = live_heads(full["value"], full["attn_out"], layer.num_heads, layer.head_size)
            rows = rows.repeat_interleave(layer.head_size)
            for name, mask in masks.items():
                shape = full[name].shape
                fixed = rows[None, :].expand(shape) if name == "attn_out" else rows[:, None].expand(shape)
                mask.fixed = fixed.clone()
        for pair in self.ffn_masks:
            if pair is None:
                continue
            rows, cols = pair
            inter, out = rows.mask(), cols.mask()
            units = live_units(inter, out)
            rows.fixed = units[:, None].expand(inter.shape).clone()
            cols.fixed = units[None, :].expand(out.shape).clone()
        for scores in self.score_parameters():
            scores.requires_grad_(False)
        self.filled = True
        self.state = {"filled": 1.0}
        return self

    def finalize(self) -> nn.Module:
        """Bake the masks into the weights and remove the parametrizations (and with them the scores): the model
        is again a plain transformers model whose state dict has the original keys. Returns the model."""
        self._require_attached()
        for layer in self.layers:
            for linear in (*layer.attention().values(), layer.intermediate, layer.output):
                if parametrize.is_parametrized(linear, "weight"):
                    parametrize.remove_parametrizations(linear, "weight", leave_parametrized=True)
        self.attention_masks, self.ffn_masks, self._regularized = [], [], []
        self.attached, self.finalized = False, True
        return self.model
