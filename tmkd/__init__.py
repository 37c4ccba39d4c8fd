"""tmkd: multi-teacher two-stage knowledge distillation for BERT-style models."""

__version__ = "0.1.0"
