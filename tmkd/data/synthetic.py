"""Synthetic sentence-pair tasks, generated from a seed so tests and the quickstart need no download.

Each word of a fixed vocabulary carries a hidden polarity (+1, -1 or 0). A pair's label depends on
``d = score(first) - score(second)`` (score = sum of polarities), so the model has to learn the word
polarities *and* that the same word counts the other way in the second segment: learnable by a tiny
encoder, but not at once, and capped below 100% by label noise.

- 2 labels: ``d > 0`` -> 0, ``d < 0`` -> 1 (ties re-drawn).
- 3 labels: ``d >= 2`` -> 0, ``|d| <= 1`` -> 1, ``d <= -2`` -> 2.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import pandas as pd

_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"


def vocabulary() -> list[str]:
    """The fixed word list (90 two-syllable pseudo-words), the same for every seed."""
    rng = random.Random(1234)
    syllables = [c + v for c in _CONSONANTS for v in _VOWELS]
    words: set[str] = set()
    while len(words) < 90:
        words.add(rng.choice(syllables) + rng.choice(syllables) + rng.choice("nlrs"))
    return sorted(words)


def polarities() -> dict[str, int]:
    """Hidden word polarities: a third positive, a third negative, a third neutral (fixed)."""
    words = vocabulary()
    order = random.Random(99).sample(words, len(words))
    third = len(words) // 3
    return {w: (1 if i < third else -1 if i < 2 * third else 0) for i, w in enumerate(order)}


def _label(d: int, num_labels: int) -> int | None:
    if num_labels == 2:
        return None if d == 0 else (0 if d > 0 else 1)
    return 0 if d >= 2 else (2 if d <= -2 else 1)


def generate(num_labels: int, n: int, seed: int, noise: float) -> list[dict[str, object]]:
    """``n`` examples as dicts with ``first``, ``second``, ``label`` (noise = share of flipped labels)."""
    if num_labels not in (2, 3):
        raise ValueError(f"synthetic tasks have 2 or 3 labels, got {num_labels}")
    if not 0.0 <= noise < 1.0:
        raise ValueError(f"synthetic label noise must be in [0, 1), got {noise}")
    pol = polarities()
    words = list(pol)
    rng = random.Random(seed)
    rows: list[dict[str, object]] = []
    while len(rows) < n:
        first = rng.choices(words, k=rng.randint(5, 12))
        second = rng.choices(words, k=rng.randint(4, 9))
        label = _label(sum(pol[w] for w in first) - sum(pol[w] for w in second), num_labels)
        if label is None:
            continue
        if rng.random() < noise:
            label = rng.choice([k for k in range(num_labels) if k != label])
        rows.append({"first": " ".join(first), "second": " ".join(second), "label": label})
    return rows


def cache_root() -> Path:
    return Path(os.environ.get("TMKD_CACHE_DIR", Path.home() / ".cache" / "tmkd"))


def materialise(task_name: str, columns: tuple[str, ...], eval_split: str, options: dict) -> Path:
    """Write the task's splits as Parquet once (keyed by its options) and return the folder.

    Going through files lets synthetic tasks share the local-file loader, and with it the
    ``datasets`` fingerprint cache, so a second run does not re-tokenise.
    """
    opts = dict(sorted(options.items()))
    key = hashlib.sha256(json.dumps([task_name, columns, opts]).encode()).hexdigest()[:12]
    folder = cache_root() / "synthetic" / f"{task_name}-{key}"
    if (folder / "train.parquet").exists() and (folder / f"{eval_split}.parquet").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", opts["n_train"], opts["seed"]), (eval_split, opts["n_eval"], opts["seed"] + 1)):
        rows = generate(opts["labels"], n, seed, opts["noise"])
        df = pd.DataFrame({columns[0]: [r["first"] for r in rows], columns[1]: [r["second"] for r in rows],
                           "label": [r["label"] for r in rows], "idx": range(len(rows))})
        tmp = folder / f".{split}.parquet.tmp"
        df.to_parquet(tmp, index=False)
        os.replace(tmp, folder / f"{split}.parquet")
    return folder
