"""BERTVision-style features: frozen-encoder hidden states, cached per split (classification) or streamed (spans)."""

from tmkd.features.cache import CachedFeatureDataset, FeatureCache, FeatureStore, default_feature_dir
from tmkd.features.encoder import FrozenEncoder, base_encoder, pool_states, resolve_layers

__all__ = ["CachedFeatureDataset", "FeatureCache", "FeatureStore", "FrozenEncoder", "base_encoder",
           "default_feature_dir", "pool_states", "resolve_layers"]
