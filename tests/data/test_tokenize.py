"""Tokenisation per view, the datasets cache (no re-tokenising), dynamic padding, length grouping."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import SequentialSampler

from tmkd.data import STUDENT, TaskDataModule, get_task, load_splits
from tmkd.data.sampling import EpochSampler
from tmkd.data.synthetic import vocabulary
from tmkd.data.tokenize import SEP, MultiViewCollator, encode, view_lengths
from tmkd.models.tokenizers import synthetic_tokenizer


def small_task(n_train: int = 64, n_eval: int = 24, seed: int = 0):
    """A synthetic task of its own size, so each test's cache state does not depend on another's."""
    return get_task("synth_pair", synthetic={"n_train": n_train, "n_eval": n_eval, "seed": seed})


class CallCounter:
    """Counts calls of a tokenizer class's ``__call__`` (what ``datasets.map`` would run)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, tokenizer) -> None:
        self.calls = 0
        cls = type(tokenizer)
        original = cls.__call__

        def counting(tok, *args, **kwargs):
            self.calls += 1
            return original(tok, *args, **kwargs)

        monkeypatch.setattr(cls, "__call__", counting)


def test_synthetic_tokenizers_with_different_seeds_disagree_on_ids():
    a, b = synthetic_tokenizer(0), synthetic_tokenizer(7)
    assert len(a) == len(b) == 95  # 5 specials + 90 words
    text = " ".join(vocabulary()[:20])
    ids_a, ids_b = a(text)["input_ids"], b(text)["input_ids"]
    assert a.unk_token_id not in ids_a and b.unk_token_id not in ids_b  # every word is one token
    assert len(ids_a) == len(ids_b) == 22
    assert ids_a[0] == ids_b[0] == a.cls_token_id and ids_a[-1] == ids_b[-1] == a.sep_token_id
    assert sum(x != y for x, y in zip(ids_a[1:-1], ids_b[1:-1], strict=True)) >= 15  # a permuted vocabulary
    assert a.decode(ids_a, skip_special_tokens=True) == b.decode(ids_b, skip_special_tokens=True) == text
    assert a(text)["input_ids"] == synthetic_tokenizer(0)(text)["input_ids"]  # deterministic per seed


def test_encode_produces_per_view_columns_labels_and_row_ids():
    task = small_task(40, 12)
    raw = load_splits(task)["validation"]
    tokenizers = {STUDENT: synthetic_tokenizer(0), "t1": synthetic_tokenizer(7)}
    enc = encode(raw, tokenizers, task, max_length=16, split="validation")
    for view in tokenizers:
        assert {f"{view}{SEP}input_ids", f"{view}{SEP}attention_mask", f"{view}{SEP}token_type_ids"} <= set(
            enc.column_names)
    assert "labels" in enc.column_names and "row_id" in enc.column_names
    assert "sentence1" not in enc.column_names and "label" not in enc.column_names
    assert enc["labels"] == raw["label"] and enc["row_id"] == list(range(12))
    first = raw[0]
    expected = tokenizers["t1"](first["sentence1"], first["sentence2"], truncation=True, max_length=16)
    assert enc[0]["t1.input_ids"] == expected["input_ids"]
    assert enc[0]["student.input_ids"] != enc[0]["t1.input_ids"]
    assert max(view_lengths(enc, STUDENT)) <= 16  # truncated to max_length
    assert view_lengths(enc, STUDENT) == [len(x) for x in enc["student.input_ids"]]


def test_second_datamodule_on_the_same_data_reuses_the_tokenised_cache(monkeypatch):
    task = small_task(72, 20, seed=11)

    def setup(max_length: int | None = None) -> TaskDataModule:
        dm = TaskDataModule(task, {STUDENT: synthetic_tokenizer(0), "t1": synthetic_tokenizer(7)},
                            max_length=max_length)
        dm.setup("fit")
        return dm

    counter = CallCounter(monkeypatch, synthetic_tokenizer(0))
    first = setup()
    assert counter.calls > 0
    calls_after_first = counter.calls
    second = setup()  # new tokenizer objects, same vocabularies and options
    assert counter.calls == calls_after_first, "the second setup re-tokenised instead of using the datasets cache"
    assert second.encoded["train"]["student.input_ids"] == first.encoded["train"]["student.input_ids"]
    assert second.encoded["train"].cache_files == first.encoded["train"].cache_files
    assert sum("cache-" in f["filename"] for f in first.encoded["train"].cache_files) >= 2  # one per view
    setup(max_length=12)  # a different encoding must not hit the cache
    assert counter.calls > calls_after_first


def test_setup_is_idempotent_on_one_datamodule(monkeypatch):
    dm = TaskDataModule(small_task(30, 10, seed=12), {STUDENT: synthetic_tokenizer(0)})
    dm.setup("fit")
    encoded = dm.encoded["train"]
    counter = CallCounter(monkeypatch, synthetic_tokenizer(0))
    dm.setup("validate")
    assert dm.encoded["train"] is encoded and counter.calls == 0


def _features(tok, view, texts):
    return [{"labels": i % 2, "row_id": i, **{f"{view}{SEP}{k}": v for k, v in tok(t).items()}}
            for i, t in enumerate(texts)]


def test_collator_pads_dynamically_to_the_longest_in_each_batch():
    tok = synthetic_tokenizer(0)
    words = [w for w in tok.get_vocab() if not w.startswith("[")]
    collate = MultiViewCollator({STUDENT: tok})
    long_batch = collate(_features(tok, STUDENT, [" ".join(words[:n]) for n in (1, 5, 3)]))
    short_batch = collate(_features(tok, STUDENT, [" ".join(words[:n]) for n in (1, 2)]))
    inputs = long_batch["inputs"][STUDENT]
    assert inputs["input_ids"].shape == (3, 7)  # 5 words + [CLS] + [SEP]
    assert short_batch["inputs"][STUDENT]["input_ids"].shape == (2, 4)
    assert inputs["attention_mask"].sum(1).tolist() == [3, 7, 5]
    assert inputs["input_ids"][0, 3:].eq(tok.pad_token_id).all()
    assert long_batch["labels"].tolist() == [0, 1, 0] and long_batch["labels"].dtype == torch.long
    assert long_batch["row_id"].tolist() == [0, 1, 2]


def test_collator_pads_each_view_with_its_own_tokenizer():
    a, b = synthetic_tokenizer(0), synthetic_tokenizer(7)
    words = [w for w in a.get_vocab() if not w.startswith("[")]
    texts = [" ".join(words[:2]), " ".join(words[2:6])]
    feats = [{**fa, **{k: v for k, v in fb.items() if k.startswith("t1")}}
             for fa, fb in zip(_features(a, STUDENT, texts), _features(b, "t1", texts), strict=True)]
    batch = MultiViewCollator({STUDENT: a, "t1": b})(feats)
    sa, sb = batch["inputs"][STUDENT], batch["inputs"]["t1"]
    assert sa["input_ids"].shape == sb["input_ids"].shape == (2, 6)
    assert not torch.equal(sa["input_ids"], sb["input_ids"])  # same text, other vocabulary
    assert torch.equal(sa["attention_mask"], sb["attention_mask"])
    assert sb["input_ids"][1].tolist() == b(texts[1])["input_ids"]


def test_datamodule_batches_carry_every_view_and_group_by_length_groups_lengths():
    task = small_task(64, 24, seed=13)
    tokenizers = {STUDENT: synthetic_tokenizer(0), "t1": synthetic_tokenizer(7)}
    dm = TaskDataModule(task, tokenizers, batch_size=8, eval_batch_size=10, group_by_length=True)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, EpochSampler)
    assert list(loader.sampler.lengths) == view_lengths(dm.encoded["train"], STUDENT)
    assert sorted(loader.sampler) == list(range(64))
    # grouped: batches carry less padding than a plain shuffle of the same rows
    lengths = view_lengths(dm.encoded["train"], STUDENT)
    order = list(loader.sampler)
    padded = sum(8 * max(lengths[i] for i in order[k:k + 8]) for k in range(0, 64, 8))
    shuffled = torch.randperm(64, generator=torch.Generator().manual_seed(0)).tolist()
    assert padded < sum(8 * max(lengths[i] for i in shuffled[k:k + 8]) for k in range(0, 64, 8))
    batch = next(iter(loader))
    assert set(batch["inputs"]) == {STUDENT, "t1"}
    assert batch["labels"].shape == (8,)
    width = batch["inputs"][STUDENT]["input_ids"].shape[1]
    assert width == int(batch["inputs"][STUDENT]["attention_mask"].sum(1).max())

    (val,) = dm.val_dataloader()
    assert isinstance(val.sampler, SequentialSampler)
    rows = torch.cat([b["row_id"] for b in dm.split_loader("validation")])
    assert rows.tolist() == list(range(24))  # ordered, for teacher caches

    plain = TaskDataModule(task, tokenizers, batch_size=8, group_by_length=False, seed=3)
    plain.setup("fit")
    sampler = plain.train_dataloader().sampler
    assert isinstance(sampler, EpochSampler) and sampler.lengths is None


def test_training_order_depends_on_seed_and_epoch_only():
    """A resumed run must see the same batches: the order is a function of (seed, epoch), not of RNG state."""
    for lengths in (None, [5, 9, 3, 7, 8, 2, 6, 4, 1, 10, 11, 12]):
        a, b = EpochSampler(12, seed=1, lengths=lengths, batch_size=4), EpochSampler(12, seed=1, lengths=lengths,
                                                                                       batch_size=4)
        a.set_epoch(2)
        torch.manual_seed(123)  # the global RNG is irrelevant
        first = list(a)
        torch.rand(100)
        b.set_epoch(2)
        assert list(b) == first and sorted(first) == list(range(12))
        b.set_epoch(3)
        assert list(b) != first
        assert list(EpochSampler(12, seed=2, lengths=lengths, batch_size=4)) != list(
            EpochSampler(12, seed=1, lengths=lengths, batch_size=4))


def test_datamodule_argument_errors():
    with pytest.raises(ValueError, match="at least one tokenizer"):
        TaskDataModule(small_task(), {})
    with pytest.raises(ValueError, match="positive"):
        TaskDataModule(small_task(), {STUDENT: synthetic_tokenizer(0)}, batch_size=0)
