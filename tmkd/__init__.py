"""tmkd: multi-teacher two-stage knowledge distillation for BERT-style models.

``import tmkd`` is light (no torch, transformers or Lightning): the command line plans runs before it trains any,
and tests/test_import.py keeps it that way. tmkd's own model classes (``tmkd_pruned_bert``) are registered with
transformers' Auto classes by ``import tmkd.prune``, which every tmkd model loader does (:mod:`tmkd.models.build`).
"""

__version__ = "0.1.0"
