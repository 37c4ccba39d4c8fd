"""The agreement aggregator on crafted teacher logits; and a tiny run with it and the DIST term, end to end."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tmkd.data import get_task
from tmkd.distill.aggregators import AgreementAggregator, build_aggregator
from tmkd.distill.objective import KDLoss, Objective
from tmkd.models import ModelSpec, build_classifier
from tmkd.pipeline.train import run

# Three teachers, two examples: on example 0 teachers 0 and 1 say class 0 and teacher 2 (the outlier) says class 1;
# on example 1 all three agree.
LOGITS = torch.tensor([[[2.0, 0.0], [1.0, 0.0]],
                       [[2.0, 0.0], [1.0, 0.0]],
                       [[0.0, 2.0], [1.0, 0.0]]], dtype=torch.float64)


def _kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))


def test_the_outlier_teacher_is_down_weighted_as_computed_by_hand():
    s = 5.0
    agree = [1 / (1 + math.exp(-2)), 1 / (1 + math.exp(2))]  # softmax([2, 0]) at temperature 1
    outlier = agree[::-1]
    mean = [(2 * a + o) / 3 for a, o in zip(agree, outlier, strict=True)]
    e_agree, e_outlier = math.exp(-s * _kl(agree, mean)), math.exp(-s * _kl(outlier, mean))
    expected = [e_agree, e_agree, e_outlier]
    expected = [e / sum(expected) for e in expected]

    target = AgreementAggregator(sharpness=s)(LOGITS, temperature=1.0)

    torch.testing.assert_close(target.weights[:, 0], torch.tensor(expected, dtype=torch.float64))
    assert target.weights[2, 0] < 0.1 < 0.45 < target.weights[0, 0]  # the outlier keeps little weight
    torch.testing.assert_close(target.weights[:, 1], torch.full((3,), 1 / 3, dtype=torch.float64))  # all agree
    mean_target = build_aggregator("mean")(LOGITS, temperature=1.0)
    assert target.probs[0, 0] > mean_target.probs[0, 0]  # the target leans to the majority's class


def test_sharpness_moves_from_the_mean_to_the_consensus():
    flat = AgreementAggregator(sharpness=0.0)(LOGITS, temperature=1.0)
    torch.testing.assert_close(flat.probs, build_aggregator("mean")(LOGITS, temperature=1.0).probs)
    weights = [AgreementAggregator(sharpness=s)(LOGITS, temperature=1.0).weights[2, 0].item() for s in (1, 5, 50)]
    assert weights[0] > weights[1] > weights[2] and weights[2] < 1e-4  # sharper: the outlier fades out


def test_agreement_is_label_free():
    labels = torch.tensor([1, 1])  # the outlier is right on example 0: the gold label is not read
    with_labels = AgreementAggregator()(LOGITS, labels, temperature=2.0)
    torch.testing.assert_close(with_labels.weights, AgreementAggregator()(LOGITS, temperature=2.0).weights)
    Objective([KDLoss(aggregator="agreement")]).check_label_free("qnli")  # allowed on unlabelled text


def test_qa_logits_weigh_each_example_by_its_start_and_end_together():
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 2, 7)
    target = build_aggregator("agreement", sharpness=2.0)(logits, temperature=1.0)
    assert target.weights.shape == (3, 4) and target.probs.shape == (4, 2, 7)
    torch.testing.assert_close(target.weights.sum(0), torch.ones(4))


def test_negative_sharpness_fails_clearly():
    with pytest.raises(ValueError, match=r"agreement aggregator: sharpness must be >= 0, got -1"):
        AgreementAggregator(sharpness=-1.0)


def _tiny_teacher(folder: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    model, tok = build_classifier(ModelSpec(tiny={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                                  "intermediate_size": 64, "max_position_embeddings": 128}),
                                  get_task("synth_pair"))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_a_tiny_run_trains_with_the_dist_term_and_the_agreement_aggregator(compose_cfg, tmp_path):
    teachers = ",".join(f"{{name:t{i},name_or_path:'{_tiny_teacher(tmp_path / f't{i}', i)}'}}" for i in range(3))
    out = tmp_path / "run"
    cfg = compose_cfg(["experiment=m_o_1_quick", "+objective=dist", "aggregator=agreement",
                       f"distill.teachers=[{teachers}]", "data.max_train_samples=200", "data.max_eval_samples=100",
                       "trainer.max_epochs=1", "logger=csv", "report.latency=false", "checkpoint.export=false",
                       "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1"], output_dir=out)

    score = run(cfg)["best"]["val/accuracy"]

    assert 0.0 <= score <= 1.0
    with next(out.rglob("metrics.csv")).open() as f:
        rows = list(csv.DictReader(f))
    assert {"train/kd", "train/ce", "train/dist", "train/loss"} <= set(rows[0])
    dist = [float(r["train/dist"]) for r in rows if r.get("train/dist")]
    assert dist and all(0.0 <= v < 4.0 for v in dist)  # beta + gamma bound 1 - rho <= 2 each, at temperature 1
    assert json.loads((out / "metrics.json").read_text())["train_examples"] == 200
    assert OmegaConf.load(out / "config.yaml").distill.aggregator.name == "agreement"
