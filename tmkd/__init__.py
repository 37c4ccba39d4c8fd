"""tmkd: multi-teacher two-stage knowledge distillation for BERT-style models."""

__version__ = "0.1.0"

# Importing tmkd registers its own model classes with transformers' Auto classes, so a pruned student's export
# (model_type tmkd_pruned_bert) loads through AutoModelForSequenceClassification and transformers.pipeline.
import tmkd.prune  # noqa: F401
