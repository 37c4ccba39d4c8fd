"""Model construction: classifiers from hub ids / folders / tiny configs, and layer-subset students."""

from tmkd.models.build import ModelSpec, build_classifier, build_model, build_tokenizer
from tmkd.models.student import select_layers, spread_layers

__all__ = ["ModelSpec", "build_classifier", "build_model", "build_tokenizer", "select_layers", "spread_layers"]
