"""Block movement pruning (Sanh et al. 2020; Lagunas et al. 2021, nn_pruning's "hybrid filled") of BERT models.

- :class:`PruningConfig`, :class:`Pruner`: learned-score masks on the encoder's linear weights (parametrize).
- :func:`compact`: remove dead heads / FFN units -> a smaller dense ``tmkd_pruned_bert`` model.
- :func:`heatmap_png`: what survived per layer (needs matplotlib).
- :mod:`tmkd.modules.pruning` (``PruneCallback``): pruning while any stage trains (the ``prune`` config node);
  :mod:`tmkd.prune.report` its report files. Not imported here: they need pytorch_lightning, ``import tmkd`` not.

Importing this package (every tmkd model loader does, through :mod:`tmkd.models.build`) registers
``tmkd_pruned_bert`` with the transformers Auto classes, so an exported compacted model loads with
``AutoModelForSequenceClassification.from_pretrained`` and ``transformers.pipeline``, a QA one with
``AutoModelForQuestionAnswering.from_pretrained`` (and answers through ``tmkd.models.qa_answer.QuestionAnswerer``:
transformers 5 has no question-answering pipeline).
"""

from __future__ import annotations

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
)

from tmkd.prune.compact import compact
from tmkd.prune.config import PruningConfig
from tmkd.prune.heatmap import heatmap_png
from tmkd.prune.modeling import (
    MODEL_TYPE,
    TmkdPrunedBertConfig,
    TmkdPrunedBertForQuestionAnswering,
    TmkdPrunedBertForSequenceClassification,
    TmkdPrunedBertModel,
    TmkdPrunedBertPreTrainedModel,
)
from tmkd.prune.pruner import DensityReport, LayerDensity, Pruner, encoder_layers


def register() -> None:
    """Register ``tmkd_pruned_bert`` with AutoConfig / AutoModel / ...ForSequenceClassification /
    ...ForQuestionAnswering (idempotent; done on import)."""
    AutoConfig.register(MODEL_TYPE, TmkdPrunedBertConfig, exist_ok=True)
    AutoModel.register(TmkdPrunedBertConfig, TmkdPrunedBertModel, exist_ok=True)
    AutoModelForSequenceClassification.register(TmkdPrunedBertConfig, TmkdPrunedBertForSequenceClassification,
                                                exist_ok=True)
    AutoModelForQuestionAnswering.register(TmkdPrunedBertConfig, TmkdPrunedBertForQuestionAnswering, exist_ok=True)


register()

__all__ = [
    "MODEL_TYPE",
    "DensityReport",
    "LayerDensity",
    "Pruner",
    "PruningConfig",
    "TmkdPrunedBertConfig",
    "TmkdPrunedBertForQuestionAnswering",
    "TmkdPrunedBertForSequenceClassification",
    "TmkdPrunedBertModel",
    "TmkdPrunedBertPreTrainedModel",
    "compact",
    "encoder_layers",
    "heatmap_png",
    "register",
]
