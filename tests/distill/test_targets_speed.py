"""The length-sorted teacher pass stores the same logits, in row order, as a plain pass in dataset order; the cache
key does not depend on how targets were computed."""

from __future__ import annotations

import pytest
import torch

from tmkd.data import STUDENT, TaskDataModule, get_task
from tmkd.data.sampling import length_batches
from tmkd.distill.ensemble import Teacher, TeacherEnsemble
from tmkd.distill.targets import SoftTargetStore
from tmkd.models import ModelSpec, build_classifier
from tmkd.models.tokenizers import synthetic_tokenizer

from .test_qa_distill import _qa_teacher

TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
        "max_position_embeddings": 64}


def test_length_batches_sorts_longest_first_keeps_ties_in_order_and_covers_every_row():
    batches = length_batches([3, 9, 3, 5, 9, 1], 4)
    assert batches == [[1, 4, 3, 0], [2, 5]]
    assert length_batches([], 4) == []
    with pytest.raises(ValueError, match="batch_size must be positive"):
        length_batches([1], 0)
    with pytest.raises(ValueError, match="batch_size must be positive"):
        SoftTargetStore(None, get_task("synth_pair"), 32, None, batch_size=0)  # type: ignore[arg-type]


def test_sorted_pass_equals_plain_pass_in_row_order_and_shares_the_cache_key(tmp_path):
    task = get_task("synth_pair")
    torch.manual_seed(0)
    members = []
    for i, tok in enumerate(("synthetic", "synthetic:3")):
        model, tokenizer = build_classifier(ModelSpec(tiny=TINY, tokenizer=tok), task)
        members.append(Teacher(f"t{i}", model, tokenizer))
    ensemble = TeacherEnsemble(members, task)
    ensemble.assign_views(STUDENT, members[0].tokenizer)
    dm = TaskDataModule(task, {STUDENT: members[0].tokenizer}, max_train_samples=150)
    dm.setup()
    ds = dm.raw["train"]
    plain = SoftTargetStore(ensemble, task, task.max_length, None, batch_size=16, sort_by_length=False)
    fast = SoftTargetStore(ensemble, task, task.max_length, tmp_path / "cache", batch_size=64)
    want = plain.split_logits(ds, "train")
    got = fast.split_logits(ds, "train")
    assert got.shape == (len(ds), 2, task.num_labels)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    lengths = [len(x) for x in dm.encoded["train"][f"{STUDENT}.input_ids"]]
    assert len(set(lengths)) > 1, "rows of one length would not test the reordering"
    # the key names the teacher, data and tokenisation only: a plain-order store reads the sorted store's files
    reader = SoftTargetStore(ensemble, task, task.max_length, tmp_path / "cache", batch_size=7, sort_by_length=False)
    assert torch.equal(reader.split_logits(ds, "train"), got) and (reader.hits, reader.misses) == (2, 0)


def test_sorted_qa_pass_equals_plain_pass_for_same_and_mapped_tokenizers():
    task = get_task("synth_qa", synthetic={"n_train": 30, "n_eval": 6, "context_words": 40}, max_length=32,
                    doc_stride=8)
    student_tok, other_tok = synthetic_tokenizer(), synthetic_tokenizer(5)
    dm = TaskDataModule(task, {STUDENT: student_tok})
    dm.setup()
    feats, raw = dm.encoded["train"], dm.raw["train"]
    ensemble = TeacherEnsemble([Teacher("same", _qa_teacher(student_tok, 0), student_tok),
                                Teacher("other", _qa_teacher(other_tok, 1), other_tok)], task)
    outs = [SoftTargetStore(ensemble, task, task.max_length, None, batch_size=b, sort_by_length=s)
            .split_logits(raw, "train", features=feats, student_tokenizer=student_tok)
            for b, s in ((5, False), (16, True))]
    torch.testing.assert_close(outs[1].float(), outs[0].float(), atol=2e-3, rtol=1e-3)
