"""A synthetic extractive QA task (SQuAD schema), generated from a seed so QA code can be tested without data.

The fixed pseudo-word vocabulary of :mod:`tmkd.data.synthetic` (so the synthetic tokenizer reads every word
as one token) is split once into roles: 20 *key* words, one *stop* word and the rest *filler*. A context is
filler with ``facts`` facts embedded, each ``<key> <answer: 1..max_answer_words filler words> <stop>``; the
question is one key word and the answer is the words between that key and the next stop.

With the defaults (one fact) a tiny encoder learns the span quickly: a 2-layer, 64-wide BERT trained from
scratch (lr 1e-3, batch 32, one CPU thread) reached ~98 HasAns F1 in ~45 s (at lr 3e-3 it did not learn).
More facts make the question matter (which key?) and learning much slower: a harder setting, not a smoke test.

v2 flavour (``unanswerable > 0``): that share of questions (exact count, ``round(n * share)``) names a key
word that is not in the context; their answers are empty, as in SQuAD v2.0.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tmkd.data.synthetic import cache_root, vocabulary

N_KEYS = 20
DEFAULTS: dict[str, Any] = {
    "n_train": 2000, "n_eval": 200, "seed": 0, "unanswerable": 0.0,
    "context_words": 20,  # filler words around the facts
    "facts": 1,  # facts (key, answer, stop) per context; the question asks about one of them
    "max_answer_words": 3,
}

# The hub schema of rajpurkar/squad(_v2), metadata included, so `datasets` reads the same features.
SCHEMA = pa.schema(
    [("id", pa.string()), ("title", pa.string()), ("context", pa.string()), ("question", pa.string()),
     ("answers", pa.struct([("text", pa.list_(pa.field("element", pa.string()))),
                            ("answer_start", pa.list_(pa.field("element", pa.int32())))]))],
    metadata={"huggingface": json.dumps({"info": {"features": {
        "id": {"dtype": "string", "_type": "Value"}, "title": {"dtype": "string", "_type": "Value"},
        "context": {"dtype": "string", "_type": "Value"}, "question": {"dtype": "string", "_type": "Value"},
        "answers": {"feature": {"text": {"dtype": "string", "_type": "Value"},
                                "answer_start": {"dtype": "int32", "_type": "Value"}}, "_type": "Sequence"}}}})},
)


def roles() -> tuple[list[str], str, list[str]]:
    """(key words, the stop word, filler words): a fixed split of the vocabulary, the same for every seed."""
    words = random.Random(4321).sample(vocabulary(), len(vocabulary()))
    return sorted(words[:N_KEYS]), words[N_KEYS], sorted(words[N_KEYS + 1:])


def _options(options: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown synthetic QA option(s) {unknown}; valid: {sorted(DEFAULTS)}")
    opts = {**DEFAULTS, **options}
    if not 0.0 <= opts["unanswerable"] < 1.0:
        raise ValueError(f"synthetic QA 'unanswerable' must be in [0, 1), got {opts['unanswerable']}")
    if not 1 <= opts["facts"] < N_KEYS:
        raise ValueError(f"synthetic QA 'facts' must be in [1, {N_KEYS - 1}] (a key must stay free for "
                         f"unanswerable questions), got {opts['facts']}")
    for name in ("context_words", "max_answer_words", "n_train", "n_eval"):
        if not isinstance(opts[name], int) or opts[name] < (0 if name == "context_words" else 1):
            raise ValueError(f"synthetic QA {name!r} must be a positive integer, got {opts[name]!r}")
    return opts


def generate_qa(n: int, seed: int, prefix: str = "q", **options: Any) -> list[dict[str, Any]]:
    """``n`` rows in the hub SQuAD schema (``id``, ``title``, ``context``, ``question``, ``answers``).

    ``options`` as in :data:`DEFAULTS` (``n_train`` / ``n_eval`` / ``seed`` there are ignored here).
    """
    opts = _options({**options, "n_train": n, "seed": seed})
    keys, stop, filler = roles()
    rng = random.Random(seed)
    no_answer = set(rng.sample(range(n), round(n * opts["unanswerable"])))
    rows: list[dict[str, Any]] = []
    for i in range(n):
        fact_keys = rng.sample(keys, opts["facts"])
        facts = [[k, *rng.choices(filler, k=rng.randint(1, opts["max_answer_words"])), stop] for k in fact_keys]
        noise = rng.choices(filler, k=opts["context_words"])
        # Facts go between noise words at sorted cut points (equal cuts put facts side by side).
        cuts = sorted(rng.choices(range(len(noise) + 1), k=len(facts)))
        words: list[str] = []
        asked = rng.randrange(len(facts))
        answer_word = -1
        prev = 0
        for f, (cut, fact) in enumerate(zip(cuts, facts, strict=True)):
            words += noise[prev:cut]
            if f == asked:
                answer_word = len(words) + 1
            words += fact
            prev = cut
        words += noise[prev:]
        context = " ".join(words)
        if i in no_answer:
            question = rng.choice([k for k in keys if k not in fact_keys])
            answers: dict[str, list[Any]] = {"text": [], "answer_start": []}
        else:
            question = fact_keys[asked]
            text = " ".join(facts[asked][1:-1])
            start = len(" ".join(words[:answer_word])) + 1  # the key word always precedes the answer
            answers = {"text": [text], "answer_start": [start]}
        rows.append({"id": f"{prefix}-{i:06d}", "title": "synthetic", "context": context, "question": question,
                     "answers": answers})
    return rows


def materialise_qa(name: str, options: dict[str, Any]) -> Path:
    """Write ``train.parquet`` and ``validation.parquet`` once (keyed by the options, defaults filled in) and
    return the folder, under ``<cache_root()>/synthetic/<name>-<key>`` like :func:`synthetic.materialise`.

    The validation split is drawn with ``seed + 1``; ids are ``<name>-<split>-<n>``, unique across splits.
    """
    opts = dict(sorted(_options(options).items()))
    key = hashlib.sha256(json.dumps([name, "qa", opts]).encode()).hexdigest()[:12]
    folder = cache_root() / "synthetic" / f"{name}-{key}"
    if (folder / "train.parquet").exists() and (folder / "validation.parquet").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    gen = {k: v for k, v in opts.items() if k not in ("n_train", "n_eval", "seed")}
    for split, n, seed in (("train", opts["n_train"], opts["seed"]), ("validation", opts["n_eval"], opts["seed"] + 1)):
        rows = generate_qa(n, seed, prefix=f"{name}-{split}", **gen)
        tmp = folder / f".{split}.parquet.tmp"
        pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), tmp)
        os.replace(tmp, folder / f"{split}.parquet")
    return folder
