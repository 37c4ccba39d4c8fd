"""LightningModules: the shared classifier loop, fine-tuning, and the distillation modules."""

from tmkd.modules.base import ClassifierModule, FineTuneModule, OptimConfig

__all__ = ["ClassifierModule", "FineTuneModule", "OptimConfig"]
