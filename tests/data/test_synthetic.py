"""Synthetic tasks: deterministic per seed, 2 or 3 balanced labels, materialised once as Parquet."""

from collections import Counter

import pytest

from tmkd.data import get_task, load_splits, synthetic


def test_vocabulary_is_fixed_and_polarities_split_in_thirds():
    words = synthetic.vocabulary()
    assert len(words) == len(set(words)) == 90
    assert words == synthetic.vocabulary()
    counts = Counter(synthetic.polarities().values())
    assert counts == {1: 30, -1: 30, 0: 30}


@pytest.mark.parametrize("num_labels", [2, 3])
def test_generate_is_deterministic_per_seed(num_labels):
    a = synthetic.generate(num_labels, 50, seed=3, noise=0.1)
    assert a == synthetic.generate(num_labels, 50, seed=3, noise=0.1)
    assert a != synthetic.generate(num_labels, 50, seed=4, noise=0.1)
    vocab = set(synthetic.vocabulary())
    for row in a:
        assert set(row["first"].split()) <= vocab and set(row["second"].split()) <= vocab


@pytest.mark.parametrize(("num_labels", "low", "high"), [(2, 0.4, 0.6), (3, 0.2, 0.5)])
def test_labels_cover_the_label_set_and_are_roughly_balanced(num_labels, low, high):
    rows = synthetic.generate(num_labels, 900, seed=0, noise=0.1)
    counts = Counter(r["label"] for r in rows)
    assert set(counts) == set(range(num_labels))
    for label, n in counts.items():
        assert low <= n / len(rows) <= high, (label, counts)


def test_noise_free_labels_follow_the_polarity_rule():
    pol = synthetic.polarities()
    for num_labels in (2, 3):
        for row in synthetic.generate(num_labels, 200, seed=1, noise=0.0):
            d = sum(pol[w] for w in row["first"].split()) - sum(pol[w] for w in row["second"].split())
            if num_labels == 2:
                assert row["label"] == (0 if d > 0 else 1) and d != 0
            else:
                assert row["label"] == (0 if d >= 2 else 2 if d <= -2 else 1)


def test_noise_flips_about_that_share_of_labels():
    clean = synthetic.generate(2, 2000, seed=5, noise=0.0)
    noisy = synthetic.generate(2, 2000, seed=5, noise=0.2)
    pol = synthetic.polarities()
    wrong = sum(
        r["label"] != (0 if sum(pol[w] for w in r["first"].split()) > sum(pol[w] for w in r["second"].split()) else 1)
        for r in noisy
    )
    assert all(r["label"] in (0, 1) for r in clean)
    assert 0.15 <= wrong / len(noisy) <= 0.25


def test_bad_options_are_errors():
    with pytest.raises(ValueError, match="2 or 3 labels"):
        synthetic.generate(4, 10, seed=0, noise=0.1)
    with pytest.raises(ValueError, match="noise"):
        synthetic.generate(2, 10, seed=0, noise=1.0)


@pytest.mark.parametrize(("name", "num_labels", "columns"),
                         [("synth_pair", 2, ("sentence1", "sentence2")), ("synth_nli", 3, ("premise", "hypothesis"))])
def test_synthetic_tasks_load_like_local_data(name, num_labels, columns):
    task = get_task(name, synthetic={"n_train": 60, "n_eval": 30})
    assert task.num_labels == num_labels
    out = load_splits(task)
    assert len(out["train"]) == 60 and len(out["validation"]) == 30
    assert set(out["train"].column_names) >= {*columns, "label", "row_id"}
    assert set(out["train"]["label"]) == set(range(num_labels))
    again = load_splits(task)
    assert out["train"][:] == again["train"][:]
    assert out["train"][columns[0]] != out["validation"][columns[0]][:60]  # eval is drawn with another seed


def test_materialise_writes_once_per_options_under_the_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TMKD_CACHE_DIR", str(tmp_path))
    opts = {"labels": 2, "n_train": 20, "n_eval": 10, "noise": 0.1, "seed": 0}
    folder = synthetic.materialise("synth_pair", ("sentence1", "sentence2"), "validation", opts)
    assert folder.parent == tmp_path / "synthetic"
    train = folder / "train.parquet"
    stamp = train.stat().st_mtime_ns
    same = synthetic.materialise("synth_pair", ("sentence1", "sentence2"), "validation", dict(reversed(opts.items())))
    assert same == folder and train.stat().st_mtime_ns == stamp  # option order does not matter; not rewritten
    other = synthetic.materialise("synth_pair", ("sentence1", "sentence2"), "validation", {**opts, "seed": 1})
    assert other != folder
