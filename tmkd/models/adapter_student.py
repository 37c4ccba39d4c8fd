"""Adapters as students: what :class:`tmkd.modules.base.StageModule` trains for ``method: adapter``.

The one training module calls its student as it calls an HF model (``model(**inputs)`` -> an output with
``.logits``) and exports ``module.export_model()``; these wrappers give an adapter that shape, so adapters need no
LightningModule of their own (objective, teacher targets and metrics are the module's).

- :class:`AdapterStudent`: a classification adapter on cached features (``inputs = {"features": [B, layers,
  hidden]}``, :class:`tmkd.features.datamodule.FeatureDataModule`). It is its own export: its parameters are the
  adapter's alone, and ``save_pretrained`` writes :func:`~tmkd.models.adapter.save_adapter`'s files (a tmkd
  predictor, not a transformers model).
- :class:`SpanAdapterStudent`: a span adapter on streamed per-token states (the QA teacher wrapper, so the QA
  fine-tune's batches, loss and metrics apply unchanged); ``export_model()`` returns the adapter's export without the
  frozen encoder.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase
from transformers.modeling_outputs import SequenceClassifierOutput

from tmkd.models.adapter import AdapterConfig, AdapterWithEncoder, HiddenStateAdapter, save_adapter
from tmkd.models.adapter_teacher import AdapterForQuestionAnswering


class AdapterStudent(nn.Module):
    """A hidden-state adapter with what the training module and the export need: ``forward(features)`` returns
    ``SequenceClassifierOutput``; ``config`` is the adapter's; ``save_pretrained(dir)`` writes the adapter export
    (naming the frozen encoder and its weights fingerprint, with the encoder's tokenizer)."""

    def __init__(self, adapter: HiddenStateAdapter, encoder: str, encoder_fingerprint: str,
                 tokenizer: PreTrainedTokenizerBase, id2label: dict[int, str], max_length: int) -> None:
        super().__init__()
        self.adapter = adapter
        self.encoder = encoder
        self.encoder_fingerprint = encoder_fingerprint
        self.tokenizer = tokenizer
        self.id2label = id2label
        self.max_length = max_length

    @property
    def config(self) -> AdapterConfig:
        return self.adapter.config

    def forward(self, features: Tensor, **_: Tensor) -> SequenceClassifierOutput:
        return SequenceClassifierOutput(logits=self.adapter(features))

    def save_pretrained(self, out_dir: str | Path) -> Path:
        return save_adapter(self.adapter, self.encoder, out_dir, id2label=self.id2label, max_length=self.max_length,
                            encoder_fingerprint=self.encoder_fingerprint, tokenizer=self.tokenizer)


class SpanAdapterStudent(AdapterForQuestionAnswering):
    """Frozen encoder + span adapter, trained as a QA model. The encoder has ``requires_grad`` off and stays in eval
    mode (:meth:`tmkd.features.FrozenEncoder.train`), so only the adapter reaches the optimiser; the checkpoint holds
    the encoder's weights too (as a teacher's ``state_dict`` does), the export the adapter alone."""

    def __init__(self, model: AdapterWithEncoder, encoder: str, tokenizer: PreTrainedTokenizerBase,
                 max_length: int) -> None:
        if model.adapter.config.output != "spans":
            raise ValueError(f"SpanAdapterStudent needs a spans adapter, got output={model.adapter.config.output!r}")
        super().__init__(model)
        self.encoder_name = encoder
        self.encoder_fingerprint = model.encoder.fingerprint()
        self.tokenizer = tokenizer
        self.max_length = max_length

    @property
    def adapter(self) -> HiddenStateAdapter:
        return self.model.adapter

    def export_model(self) -> AdapterStudent:
        """What ``train.run`` counts and saves: the adapter alone (its export names the encoder)."""
        return AdapterStudent(self.adapter, self.encoder_name, self.encoder_fingerprint, self.tokenizer, {},
                              self.max_length)
