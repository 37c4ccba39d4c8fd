"""Answer questions with an exported QA model (``<run>/hf``), the way the run scored it.

transformers 5 removed the ``question-answering`` pipeline (``pipeline("question-answering")`` raises
``KeyError: ... has been removed``), so this is the supported way to use a tmkd QA export: the same windows
(:func:`tmkd.data.qa.prepare_features`) and answer decoding (:func:`tmkd.data.qa.postprocess`) as training and
evaluation. The export itself is a plain ``AutoModelForQuestionAnswering`` folder, usable by any QA code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForQuestionAnswering, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from tmkd.data import qa


class QuestionAnswerer:
    """``QuestionAnswerer(EXPORT)(question=..., context=..., handle_impossible_answer=True)`` ->
    ``{"answer": str, "na_score": float}`` (``""`` = no answer; ``na_score`` = null - best span logit margin)."""

    def __init__(self, model: str | Path | PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None = None,
                 max_length: int = 384, doc_stride: int = 128, n_best: int = 20, max_answer_length: int = 30,
                 null_threshold: float = 0.0) -> None:
        self.model = (AutoModelForQuestionAnswering.from_pretrained(model) if isinstance(model, str | Path)
                      else model).eval()
        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(model)  # type: ignore[arg-type]
        self.max_length = min(max_length, int(self.tokenizer.model_max_length))
        # the windows the run was scored with; only a model that embeds fewer positions than asked gets a stride
        # scaled to its length (else the windows could not advance)
        self.doc_stride = doc_stride if self.max_length == max_length else min(doc_stride, self.max_length // 4)
        self.n_best, self.max_answer_length, self.null_threshold = n_best, max_answer_length, null_threshold

    @torch.inference_mode()
    def __call__(self, question: str, context: str, handle_impossible_answer: bool = False) -> dict[str, Any]:
        if not question.strip() or not context.strip():
            raise ValueError("question and context must be non-empty text")
        examples = {"id": ["q"], "question": [question], "context": [context], "row_id": [0]}
        feats = qa.prepare_features(examples, self.tokenizer, self.max_length, self.doc_stride, train=False)
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in feats]
        inputs = self.tokenizer.pad({k: feats[k] for k in keys}, return_tensors="pt")
        out = self.model(**inputs)
        preds, na = qa.postprocess(examples, feats, out.start_logits, out.end_logits, n_best=self.n_best,
                                   max_answer_length=self.max_answer_length, version_2=handle_impossible_answer,
                                   null_threshold=self.null_threshold)
        return {"answer": preds["q"], "na_score": na["q"]}
