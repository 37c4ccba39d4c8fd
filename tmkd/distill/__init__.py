"""Distillation building blocks: soft-target aggregators, KD losses and the soft-target cache."""
