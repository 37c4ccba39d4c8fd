"""LightningModules: the shared classifier loop, fine-tuning, and the distillation modules."""

from tmkd.modules.base import FineTuneModule, OptimConfig, StageModule

__all__ = ["FineTuneModule", "OptimConfig", "StageModule"]
