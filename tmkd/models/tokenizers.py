"""Tokenizers for tiny test models: a WordPiece vocabulary over the synthetic tasks' words.

``seed`` permutes the word ids, so two "synthetic" tokenizers can disagree on every id: that is how
the tests check that each teacher really tokenises the raw text itself.
"""

from __future__ import annotations

import random

from transformers import BertTokenizerFast

from tmkd.data.synthetic import vocabulary

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def synthetic_tokenizer(seed: int = 0) -> BertTokenizerFast:
    words = vocabulary()
    if seed:
        words = random.Random(seed).sample(words, len(words))
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate([*SPECIALS, *words])}, do_lower_case=True)
    tok.model_max_length = 512
    return tok
