"""BERTVision-style adapters: a small head trained on the hidden states of *all* layers of a frozen encoder.

The encoder never trains, so its states can be computed once (tmkd.features.cache, classification) or
streamed (spans); only the adapter (per-layer down-projections, a learned layer mix, one output layer)
learns, a few hundred thousand parameters instead of a full fine-tune.

The predictor is a tmkd class (:class:`AdapterClassifier`) rather than a registered transformers
pipeline: ``transformers.pipeline`` (``PIPELINE_REGISTRY.register_pipeline``) builds its model through
the Auto classes from a ``config.json`` and requires a ``PreTrainedModel``; an adapter folder holds only
the adapter and *names* its frozen encoder, so registering would mean a custom model type registered
with AutoConfig/AutoModel in every process plus a copy of the encoder in every adapter folder. The
predictor returns the same ``[{"label", "score"}]`` shape as the text-classification pipeline instead.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.modeling_outputs import QuestionAnsweringModelOutput, SequenceClassifierOutput

from tmkd.features.encoder import POOLINGS, FrozenEncoder
from tmkd.models.build import resolve_path

ADAPTER_FORMAT = "tmkd-adapter/v1"
WEIGHTS_NAME = "adapter.safetensors"
CONFIG_NAME = "adapter_config.json"
TOKENIZER_DIR = "tokenizer"
COMBINATIONS = ("softmax", "concat")
OUTPUTS = ("classification", "spans")  # one prediction per text | start / end logits per token


@dataclass
class AdapterConfig:
    """Shape and wiring of a :class:`HiddenStateAdapter`.

    ``layers`` are hidden-state indices of the encoder (0 = embeddings, i = layer i), ascending; the
    adapter's input holds exactly these states in this order, and the skip connection reads the last.
    ``pooling`` says how classification features were pooled (the predictor must pool the same way).
    """

    hidden_size: int
    layers: tuple[int, ...]
    num_labels: int = 2
    projection_size: int = 128
    combination: str = "softmax"
    skip: bool = True
    dropout: float = 0.1
    output: str = "classification"
    pooling: str = "cls"

    def __post_init__(self) -> None:
        self.layers = tuple(int(i) for i in self.layers)
        if not self.layers or list(self.layers) != sorted(set(self.layers)) or self.layers[0] < 0:
            raise ValueError(f"layers must be distinct, ascending, non-negative indices, got {list(self.layers)}")
        if self.combination not in COMBINATIONS:
            raise ValueError(f"combination must be one of {COMBINATIONS}, got {self.combination!r}")
        if self.output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {self.output!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.hidden_size <= 0 or self.projection_size <= 0 or self.num_labels <= 0:
            raise ValueError("hidden_size, projection_size and num_labels must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @classmethod
    def for_encoder(cls, encoder: FrozenEncoder, **kwargs: Any) -> AdapterConfig:
        """A config whose hidden size and layers match ``encoder`` (the usual way to make one)."""
        return cls(hidden_size=encoder.hidden_size, layers=encoder.layers, **kwargs)

    @property
    def num_states(self) -> int:
        return len(self.layers)

    @property
    def num_outputs(self) -> int:
        """Classes for classification; 2 (start, end) per token for spans."""
        return self.num_labels if self.output == "classification" else 2


class HiddenStateAdapter(nn.Module):
    """Per-layer Linear+GELU down-projections, a softmax-weighted mix (or concat) over layers, an optional
    skip from the top layer, dropout, and one dense output layer.

    Input ``[batch, layers, hidden]`` (pooled, classification) -> ``[batch, num_labels]``, or
    ``[batch, layers, seq, hidden]`` (per token, spans) -> ``[batch, seq, 2]`` (start, end logits).
    """

    def __init__(self, config: AdapterConfig) -> None:
        super().__init__()
        self.config = config
        h, p, n = config.hidden_size, config.projection_size, config.num_states
        self.down = nn.ModuleList([nn.Sequential(nn.Linear(h, p), nn.GELU()) for _ in range(n)])
        width = p if config.combination == "softmax" else p * n
        # Zeros -> uniform mix at the start; the weights are read back by layer_weights() for analysis.
        self.layer_logits = nn.Parameter(torch.zeros(n)) if config.combination == "softmax" else None
        self.skip = nn.Linear(h, width) if config.skip else None
        self.dropout = nn.Dropout(config.dropout)
        self.output = nn.Linear(width, config.num_outputs)

    def layer_weights(self) -> Tensor | None:
        """The learned mix over layers (sums to 1), or None for concat."""
        return None if self.layer_logits is None else self.layer_logits.softmax(-1)

    def forward(self, states: Tensor, mask: Tensor | None = None) -> Tensor:
        """``mask`` ([batch, seq], spans only) sets padding logits to the dtype's minimum."""
        expected = 3 if self.config.output == "classification" else 4
        if states.ndim != expected or states.shape[1] != self.config.num_states:
            kind = "[batch, layers, hidden]" if expected == 3 else "[batch, layers, seq, hidden]"
            raise ValueError(f"{self.config.output} adapter expects {kind} with {self.config.num_states} layers, "
                             f"got {tuple(states.shape)}")
        states = states.to(self.output.weight.dtype)  # cached features are fp16
        per_layer = [down(x) for down, x in zip(self.down, states.unbind(1), strict=True)]
        if self.layer_logits is not None:
            weights = self.layer_logits.softmax(-1)
            mixed = sum(w * x for w, x in zip(weights.unbind(0), per_layer, strict=True))
        else:
            mixed = torch.cat(per_layer, dim=-1)
        if self.skip is not None:
            mixed = mixed + self.skip(states[:, -1])
        logits = self.output(self.dropout(mixed))
        if mask is not None and self.config.output == "spans":
            logits = logits.masked_fill(~mask.bool()[..., None], torch.finfo(logits.dtype).min)
        return logits


def ensemble_logits(adapter_logits: Tensor, model_logits: Tensor, weight: float) -> Tensor:
    """``weight * adapter + (1 - weight) * model``: the adapter's share of a weighted mean of logits."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"ensemble weight must be in [0, 1], got {weight}")
    if adapter_logits.shape != model_logits.shape:
        raise ValueError(f"logit shapes differ: {tuple(adapter_logits.shape)} vs {tuple(model_logits.shape)}")
    return weight * adapter_logits.float() + (1.0 - weight) * model_logits.float()


class AdapterWithEncoder(nn.Module):
    """Frozen encoder + adapter on raw tokenised inputs, returning HF-style outputs.

    Classification returns ``SequenceClassifierOutput(logits=[batch, labels])``, spans
    ``QuestionAnsweringModelOutput(start_logits, end_logits)`` (each [batch, seq]), like HF heads.
    """

    def __init__(self, encoder: FrozenEncoder, adapter: HiddenStateAdapter) -> None:
        super().__init__()
        if encoder.layers != adapter.config.layers or encoder.hidden_size != adapter.config.hidden_size:
            raise ValueError(f"encoder yields layers {list(encoder.layers)} x {encoder.hidden_size}, the adapter "
                             f"expects {list(adapter.config.layers)} x {adapter.config.hidden_size}")
        self.encoder = encoder
        self.adapter = adapter

    def forward(self, input_ids: Tensor, attention_mask: Tensor, **inputs: Tensor
                ) -> SequenceClassifierOutput | QuestionAnsweringModelOutput:
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, **inputs}
        config = self.adapter.config
        if config.output == "classification":
            return SequenceClassifierOutput(logits=self.adapter(self.encoder.pooled(inputs, config.pooling)))
        logits = self.adapter(self.encoder.hidden_states(inputs), mask=attention_mask)
        start, end = logits.unbind(-1)
        return QuestionAnsweringModelOutput(start_logits=start, end_logits=end)


@dataclass
class SavedAdapter:
    """What :func:`load_adapter` returns: the adapter and what it needs at inference."""

    adapter: HiddenStateAdapter
    encoder: str  # hub id or path of the frozen encoder
    id2label: dict[int, str] = field(default_factory=dict)
    max_length: int = 512
    encoder_fingerprint: str | None = None
    tokenizer_path: str | None = None  # a tokenizer saved with the adapter, else the encoder's


def save_adapter(adapter: HiddenStateAdapter, encoder_name_or_path: str, out_dir: str | Path, *,
                 id2label: Mapping[int, str] | None = None, max_length: int = 512,
                 encoder_fingerprint: str | None = None,
                 tokenizer: PreTrainedTokenizerBase | None = None) -> Path:
    """Write ``adapter.safetensors`` + ``adapter_config.json`` (naming the frozen encoder) to ``out_dir``.

    The encoder is referenced, not copied (it is frozen and usually a hub model). Pass
    ``encoder_fingerprint`` (``FrozenEncoder.fingerprint()``) to have loading refuse a changed encoder, and
    ``tokenizer`` when the encoder's folder has none. A path is stored absolute, so the folder can move.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    local = Path(encoder_name_or_path).expanduser()
    encoder_ref = str(local.resolve()) if local.exists() else encoder_name_or_path
    state = {k: v.detach().cpu().contiguous() for k, v in adapter.state_dict().items()}
    save_file(state, str(out / WEIGHTS_NAME), metadata={"format": ADAPTER_FORMAT})
    if tokenizer is not None:
        tokenizer.save_pretrained(out / TOKENIZER_DIR)
    config = asdict(adapter.config)
    config["layers"] = list(adapter.config.layers)
    payload = {"format": ADAPTER_FORMAT, "encoder": encoder_ref, "encoder_fingerprint": encoder_fingerprint,
               "pooling": adapter.config.pooling, "max_length": max_length,
               "id2label": {str(k): v for k, v in (id2label or {}).items()}, "config": config}
    (out / CONFIG_NAME).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    return out


def load_adapter(out_dir: str | Path) -> SavedAdapter:
    """Inverse of :func:`save_adapter` (the adapter comes back in eval mode)."""
    folder = Path(out_dir)
    config_path = folder / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"{folder} holds no {CONFIG_NAME}: not a saved tmkd adapter")
    payload = json.loads(config_path.read_text())
    if payload.get("format") != ADAPTER_FORMAT:
        raise ValueError(f"{config_path} has format {payload.get('format')!r}, expected {ADAPTER_FORMAT!r}")
    config = dict(payload["config"])
    if "kind" in config:  # the file format before issue 18 named the adapter's output `kind`
        config["output"] = config.pop("kind")
    adapter = HiddenStateAdapter(AdapterConfig(**config))
    adapter.load_state_dict(load_file(str(folder / WEIGHTS_NAME)))
    tokenizer_dir = folder / TOKENIZER_DIR
    return SavedAdapter(
        adapter=adapter.eval(), encoder=payload["encoder"],
        id2label={int(k): v for k, v in payload.get("id2label", {}).items()},
        max_length=int(payload.get("max_length", 512)), encoder_fingerprint=payload.get("encoder_fingerprint"),
        tokenizer_path=str(tokenizer_dir) if tokenizer_dir.is_dir() else None,
    )


def load_encoder(name_or_path: str) -> PreTrainedModel:
    """The frozen encoder as ``AutoModel`` loads it, with a pooler the checkpoint lacks (a QA model's: its base model
    has none) zeroed rather than left randomly initialised. The pooler feeds no adapter, but its weights are part of
    the encoder's fingerprint, which must be the same at training and at every load (training and teacher loading
    both come here)."""
    model, info = AutoModel.from_pretrained(name_or_path, output_loading_info=True)
    missing = {k for k in info.get("missing_keys", ()) if k.split(".")[0] == "pooler"}
    if missing:
        with torch.no_grad():
            for name, tensor in model.state_dict(keep_vars=True).items():
                if name in missing:
                    tensor.zero_()
    return model


def load_adapter_with_encoder(out_dir: str | Path, check_encoder: bool = True
                              ) -> tuple[AdapterWithEncoder, PreTrainedTokenizerBase, SavedAdapter]:
    """A saved adapter with its frozen encoder (``AutoModel``) and tokenizer: what the predictor and an adapter
    teacher (:mod:`tmkd.models.adapter_teacher`) run. With ``check_encoder`` a recorded encoder fingerprint must
    match, since an adapter on other encoder weights gives meaningless scores."""
    saved = load_adapter(out_dir)
    encoder_path = resolve_path(saved.encoder)
    model = load_encoder(encoder_path)
    encoder = FrozenEncoder(model, layers=saved.adapter.config.layers)
    recorded = saved.encoder_fingerprint
    if check_encoder and recorded is not None and encoder.fingerprint() != recorded:
        raise ValueError(f"encoder {saved.encoder!r} differs from the one adapter {out_dir} was trained on "
                         "(weights fingerprint mismatch); pass check_encoder=False to use it anyway")
    tokenizer = AutoTokenizer.from_pretrained(saved.tokenizer_path or encoder_path)
    return AdapterWithEncoder(encoder, saved.adapter), tokenizer, saved


TextInput = str | tuple[str, str] | Mapping[str, str]


class AdapterClassifier:
    """Text(-pair) classification with a saved adapter and its frozen encoder.

    ``clf("text")``, ``clf(("premise", "hypothesis"))``, ``clf({"text": ..., "text_pair": ...})`` or a
    list of those -> one ``{"label", "score"}`` per input (the top class and its softmax probability),
    the output of ``transformers.pipeline("text-classification")``.
    """

    def __init__(self, model: AdapterWithEncoder, tokenizer: PreTrainedTokenizerBase,
                 id2label: Mapping[int, str] | None = None, max_length: int = 512) -> None:
        if model.adapter.config.output != "classification":
            raise ValueError("AdapterClassifier needs a classification adapter")
        self.model = model.eval()
        self.tokenizer = tokenizer
        n = model.adapter.config.num_labels
        self.id2label = {i: (id2label or {}).get(i, f"LABEL_{i}") for i in range(n)}
        self.max_length = max_length

    @classmethod
    def from_pretrained(cls, out_dir: str | Path, device: str | torch.device = "cpu",
                        check_encoder: bool = True) -> AdapterClassifier:
        """Load adapter, encoder (``AutoModel``) and tokenizer; with ``check_encoder`` a recorded encoder
        fingerprint must match, since an adapter on other encoder weights gives meaningless scores."""
        model, tokenizer, saved = load_adapter_with_encoder(out_dir, check_encoder)
        return cls(model.to(device), tokenizer, saved.id2label, saved.max_length)

    @staticmethod
    def _split(item: TextInput) -> tuple[str, str | None]:
        if isinstance(item, str):
            return item, None
        if isinstance(item, Mapping):
            return item["text"], item.get("text_pair")
        if isinstance(item, tuple) and len(item) == 2:
            return item[0], item[1]
        raise TypeError(f"expected a text, a (text, text_pair) tuple or a dict, got {item!r}")

    @torch.no_grad()
    def logits(self, inputs: TextInput | Sequence[TextInput], batch_size: int = 32) -> Tensor:
        """Raw class logits [n, labels] for the inputs, in order."""
        items = [inputs] if isinstance(inputs, str | tuple | Mapping) else list(inputs)
        device = next(self.model.adapter.parameters()).device
        out = []
        for start in range(0, len(items), batch_size):
            firsts, seconds = zip(*(self._split(x) for x in items[start:start + batch_size]), strict=True)
            pairs = None if all(s is None for s in seconds) else list(seconds)
            if pairs is not None and any(s is None for s in pairs):
                raise ValueError("mix of single texts and text pairs in one call")
            enc = self.tokenizer(list(firsts), pairs, truncation=True, max_length=self.max_length,
                                 padding=True, return_tensors="pt")
            out.append(self.model(**{k: v.to(device) for k, v in enc.items()}).logits.float().cpu())
        return torch.cat(out) if out else torch.empty(0, len(self.id2label))

    def __call__(self, inputs: TextInput | Sequence[TextInput], batch_size: int = 32) -> list[dict[str, Any]]:
        probs = self.logits(inputs, batch_size).softmax(-1)
        scores, labels = probs.max(-1)
        return [{"label": self.id2label[int(i)], "score": float(s)} for s, i in zip(scores, labels, strict=True)]
