"""KD on QA spans: aggregators and KL on [T, B, 2, S], the per-window soft-target store, and the quick QA plan end
to end (teachers, cross-tokenizer teacher, m-o-1 student, official-format outputs, answering with the export)."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import BertConfig, BertForQuestionAnswering

from tmkd.data import STUDENT, TaskDataModule, get_task
from tmkd.data.qa import FILL
from tmkd.distill.aggregators import AGGREGATORS, build_aggregator
from tmkd.distill.ensemble import Teacher, TeacherEnsemble
from tmkd.distill.losses import build_kd_loss
from tmkd.distill.targets import SoftTargetStore
from tmkd.models.tokenizers import synthetic_tokenizer

from ..data.test_qa import split_tokenizer


def _span_logits(t: int = 3, b: int = 4, s: int = 9) -> torch.Tensor:
    x = torch.randn(t, b, 2, s) * 3
    x[..., 7:] = FILL  # padding beyond the windows
    return x


@pytest.mark.parametrize("name", AGGREGATORS.names())
def test_aggregators_on_span_logits_weigh_examples_and_mix_distributions(name):
    logits, labels = _span_logits(), torch.tensor([[1, 2], [0, 0], [3, 6], [5, 5]])
    kwargs = {"weights": [1.0, 2.0, 1.0]} if name == "weighted" else {}
    target = build_aggregator(name, **kwargs)(logits, labels, 2.0)
    assert target.weights.shape == (3, 4) and target.probs.shape == (4, 2, 9)
    torch.testing.assert_close(target.weights.sum(0), torch.ones(4))
    torch.testing.assert_close(target.probs.sum(-1), torch.ones(4, 2))
    assert float(target.probs[..., 7:].max()) < 1e-30  # FILL positions carry ~0 probability


def test_confidence_uses_gold_probability_averaged_over_start_and_end():
    logits = torch.zeros(2, 1, 2, 4)
    logits[0, 0, 0, 1] = 5.0  # teacher 0: sure of the start, not of the end
    logits[1, 0, 1, 2] = 5.0  # teacher 1: the reverse, equally sure
    w = build_aggregator("confidence")(logits, torch.tensor([[1, 2]]), 1.0).weights
    torch.testing.assert_close(w, torch.full((2, 1), 0.5))
    best = build_aggregator("best")(logits, torch.tensor([[1, 0]]), 1.0).weights
    torch.testing.assert_close(best[:, 0], torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match=r"labels must have shape \[batch, ...\] = \[1, 2\]"):
        build_aggregator("mean")(logits, torch.tensor([1]), 1.0)


def test_kl_on_spans_is_zero_for_identical_teachers_and_scales_with_t_squared():
    one = _span_logits(t=1)
    same = one.expand(3, -1, -1, -1)
    kl = build_kd_loss("kl")
    target = build_aggregator("mean")(same, None, 2.0)
    assert float(kl(one[0], target, 2.0)) == pytest.approx(0.0, abs=1e-6)  # a mean of 3 equal rows: rounding only
    student = torch.randn(4, 2, 9)
    per_example = torch.stack([kl(student[:, j], build_aggregator("mean")(same[:, :, j], None, 1.0), 1.0)
                               for j in range(2)]).mean()
    whole = kl(student, build_aggregator("mean")(same, None, 1.0), 1.0)
    torch.testing.assert_close(whole, per_example)  # mean over examples and the start/end pair
    torch.testing.assert_close(kl(student, build_aggregator("mean")(same, None, 3.0), 3.0) / 9,
                               torch.stack([kl(student[:, j] / 3, build_aggregator("mean")(same[:, :, j] / 3, None,
                                                                                          1.0), 1.0)
                                            for j in range(2)]).mean())


def _qa_teacher(tokenizer, seed: int) -> BertForQuestionAnswering:
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id)
    return BertForQuestionAnswering(cfg)


def test_qa_soft_targets_are_cached_once_per_window_and_map_other_tokenizers(tmp_path):
    task = get_task("synth_qa", synthetic={"n_train": 40, "n_eval": 10, "context_words": 40}, max_length=32,
                    doc_stride=8)
    student_tok = synthetic_tokenizer()
    dm = TaskDataModule(task, {STUDENT: student_tok})
    dm.setup()
    feats, raw = dm.encoded["train"], dm.raw["train"]
    renumbered, split = synthetic_tokenizer(7), split_tokenizer()
    models = [_qa_teacher(student_tok, 0), _qa_teacher(renumbered, 1), _qa_teacher(split, 2)]
    for m, tok in zip(models[1:2], [renumbered], strict=True):  # same weights per word as teacher 0
        m.load_state_dict(models[0].state_dict())
        perm = [student_tok.convert_tokens_to_ids(w) for w in tok.convert_ids_to_tokens(list(range(len(tok))))]
        m.bert.embeddings.word_embeddings.weight.data = models[0].bert.embeddings.word_embeddings.weight.data[perm]
    ensemble = TeacherEnsemble([Teacher("same", models[0], student_tok), Teacher("vocab7", models[1], renumbered),
                                Teacher("split", models[2], split)], task)
    store = SoftTargetStore(ensemble, task, task.max_length, tmp_path / "cache")
    out = store.split_logits(raw, "train", features=feats, student_tokenizer=student_tok)
    assert out.shape == (len(feats), 3, 2, 32) and out.dtype == torch.float16
    assert (store.hits, store.misses) == (0, 3)
    lengths = [len(x) for x in feats["student.input_ids"]]
    for r, n in enumerate(lengths):
        assert torch.all(out[r, :, :, n:] == FILL)  # padded to max_length with FILL
        # a renumbered vocabulary reads the same tokens: the mapping is the identity on CLS + context
        ctx = [0] + [j for j, o in enumerate(feats[r]["offset_mapping"]) if o[0] >= 0]
        torch.testing.assert_close(out[r, 1, :, ctx].float(), out[r, 0, :, ctx].float(), atol=2e-2, rtol=1e-2)
    # the finer-splitting teacher is mapped onto student tokens: finite everywhere a context word starts
    assert torch.all(out[:, 2, 0, 0] > FILL)
    ran = ensemble.forward_batches
    again = SoftTargetStore(ensemble, task, task.max_length, tmp_path / "cache")
    assert torch.equal(again.split_logits(raw, "train", features=feats, student_tokenizer=student_tok), out)
    assert (again.hits, again.misses) == (3, 0) and ensemble.forward_batches == ran  # no teacher ran
    other = SoftTargetStore(ensemble, get_task("synth_qa", synthetic=dict(task.synthetic), max_length=32,
                                               doc_stride=4), 32, tmp_path / "cache")
    assert other.split_logits(raw, "train", features=feats, student_tokenizer=student_tok) is not None
    assert other.misses == 3  # window settings are part of the key


@pytest.mark.slow
def test_quick_qa_plan_end_to_end_with_a_cross_tokenizer_teacher_and_the_export_answers():
    from tmkd.cli import prepare_argv
    from tmkd.models.qa_answer import QuestionAnswerer
    from tmkd.pipeline.compose import compose_run
    from tmkd.pipeline.plan import build_plan
    from tmkd.pipeline.runner import run_plan

    overrides = prepare_argv(["experiment=m_o_1_quick_qa", "data.max_eval_samples=100", "trainer.max_epochs=8",
                              "logger=none", "report.latency=false", "trainer.enable_progress_bar=false"])
    plan = build_plan(compose_run(overrides), overrides)
    results = run_plan(plan)
    assert results[plan.final]["best"]["val/f1"] > 30.0  # predicting nothing scores 0 on v1.1
    main = plan.runs[plan.final].out_dir
    metrics = json.loads((main / "metrics.json").read_text())
    assert set(metrics["teachers"]) == {"tiny_s1", "tiny_vocab7"}
    assert all(t["val/f1"] > 10 for t in metrics["teachers"].values())  # scored through the same post-processing
    preds = json.loads((main / "predictions.json").read_text())
    assert len(preds) == 100 and set(json.loads((main / "na_probs.json").read_text())) == set(preds)

    ask = QuestionAnswerer(main / "hf", max_length=64, doc_stride=16)
    dev = get_task("synth_qa")
    from tmkd.data.loading import load_splits

    rows = load_splits(dev, max_eval_samples=20)["validation"]
    answers = [ask(question=r["question"], context=r["context"])["answer"] for r in rows]
    assert sum(a == r["answers"]["text"][0] for a, r in zip(answers, rows, strict=True)) >= 4
    assert all(a for a in answers)  # v1.1: always a span
    never = QuestionAnswerer(main / "hf", max_length=64, doc_stride=16, null_threshold=-1e9)
    assert never(question=rows[0]["question"], context=rows[0]["context"], handle_impossible_answer=True)[
        "answer"] == ""  # the v2 rule can say "no answer"
    with pytest.raises(KeyError, match="has been removed"):  # transformers 5: hence QuestionAnswerer
        import transformers

        transformers.pipeline("question-answering", model=str(main / "hf"))


def test_question_answerer_uses_the_evaluation_windows():
    """The answerer cuts a long context into the windows the run was scored with (max_length / doc_stride)."""
    from tmkd.data.synthetic_qa import generate_qa
    from tmkd.models.build import ModelSpec, build_model
    from tmkd.models.qa_answer import QuestionAnswerer

    task = get_task("synth_qa")
    model, tok = build_model(ModelSpec(tiny={"max_position_embeddings": 64}), task)
    ask = QuestionAnswerer(model, tokenizer=tok, max_length=48, doc_stride=24)
    assert (ask.max_length, ask.doc_stride) == (48, 24)
    row = generate_qa(1, seed=0)[0]
    assert ask(question=row["question"], context=" ".join([row["context"]] * 4))["answer"] != ""


def test_many_to_many_on_spans_trains_one_head_per_teacher_and_exports_their_mean(tmp_path):
    """m-o-m on QA: each ``qa_outputs`` copy learns one teacher's start/end distributions; the export is one
    ``qa_outputs`` whose start/end logits equal the mean of the heads' (what the module predicted)."""
    import pytorch_lightning as pl

    from tmkd.models.build import ModelSpec, build_model
    from tmkd.modules import OptimConfig
    from tmkd.modules.distill import DistillConfig, distillation_module

    pl.seed_everything(0)
    task = get_task("synth_qa", synthetic={"n_train": 64, "n_eval": 16, "context_words": 40}, max_length=32,
                    doc_stride=8)
    student, tok = build_model(ModelSpec(tiny={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                               "intermediate_size": 64, "max_position_embeddings": 64}), task)
    ensemble = TeacherEnsemble([Teacher("a", _qa_teacher(tok, 0), tok), Teacher("b", _qa_teacher(tok, 1), tok)],
                               task)
    module = distillation_module(student, task, OptimConfig(lr=5e-3, warmup_ratio=0.0), ensemble,
                                 DistillConfig(alpha=1.0, cache_dir=str(tmp_path / "cache")), per_teacher_heads=True)
    dm = TaskDataModule(task, {STUDENT: tok}, batch_size=16)
    pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, num_sanity_val_steps=0).fit(module, datamodule=dm)
    assert len(module.heads) == 2
    assert not torch.allclose(module.heads[0].weight, module.heads[1].weight)  # each followed its own teacher
    module.eval()
    batch = next(iter(dm.val_dataloader()[0]))
    inputs = batch["inputs"][STUDENT]
    with torch.no_grad():
        predicted = module.predict_logits(inputs)  # [B, 2, S]: start and end
        exported = module.export_model()
        exported.save_pretrained(tmp_path / "export")
        reloaded = BertForQuestionAnswering.from_pretrained(tmp_path / "export").eval()
        out = reloaded(**inputs)
    mask = inputs["attention_mask"].bool()
    for i, logits in enumerate((out.start_logits, out.end_logits)):
        torch.testing.assert_close(logits[mask], predicted[:, i][mask], atol=1e-5, rtol=1e-5)
