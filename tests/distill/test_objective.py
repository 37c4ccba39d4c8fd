"""The objective as weighted terms: the arithmetic the modules always used, new terms without touching the step."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from tmkd.data import get_task
from tmkd.data.kinds import get_kind
from tmkd.distill.aggregators import WeightedAggregator, build_aggregator
from tmkd.distill.ensemble import Teacher, TeacherEnsemble
from tmkd.distill.losses import build_kd_loss
from tmkd.distill.objective import (
    TERMS,
    GoldLoss,
    KDLoss,
    Objective,
    Step,
    Term,
    build_term,
    objective_from_distill,
)
from tmkd.models import ModelSpec, build_classifier
from tmkd.modules import FineTuneModule
from tmkd.modules.distill import DistillConfig, distillation_module
from tmkd.pipeline.distill_factory import extra_terms
from tmkd.pipeline.stages import STAGE_TYPES, stage_type

KIND = get_kind("classification")


def _step(labels: bool = True, per_head: bool = False) -> Step:
    g = torch.Generator().manual_seed(0)
    shape = (2, 8, 3) if per_head else (8, 3)
    return Step(KIND, torch.randn(*shape, generator=g), torch.randint(0, 3, (8,), generator=g) if labels else None,
                torch.randn(2, 8, 3, generator=g), per_head=per_head)


def test_distill_knobs_give_alpha_kd_plus_one_minus_alpha_ce_exactly():
    step = _step()
    objective = objective_from_distill(alpha=0.3, temperature=2.0, loss="kl", labelled=True)
    loss, parts = objective(step)
    assert objective.names() == ["kd", "ce"]
    target = build_aggregator("mean")(step.teacher_logits, step.labels, 2.0)
    kd = build_kd_loss("kl")(step.logits.float(), target, 2.0)
    ce = KIND.gold_loss(step.logits, step.labels)
    assert torch.equal(loss, 0.3 * kd + (1.0 - 0.3) * ce)  # bit for bit: the numbers of every run stay
    assert torch.equal(parts["kd"], kd) and torch.equal(parts["ce"], ce)


def test_per_head_kd_follows_one_teacher_per_head_and_ce_scores_the_mean():
    step = _step(per_head=True)
    loss, parts = objective_from_distill(alpha=0.5, temperature=2.0, loss="kl", labelled=True)(step)
    mean, kl = build_aggregator("mean"), build_kd_loss("kl")
    kd = torch.stack([kl(step.logits[i].float(), mean(step.teacher_logits[i:i + 1], step.labels, 2.0), 2.0)
                      for i in range(2)]).mean()
    assert torch.equal(parts["kd"], kd)
    assert torch.equal(parts["ce"], KIND.gold_loss(step.logits.mean(0), step.labels))
    assert torch.equal(loss, 0.5 * kd + 0.5 * parts["ce"])


def test_unlabelled_split_has_no_ce_term_and_refuses_alpha_below_one():
    objective = objective_from_distill(alpha=1.0, temperature=2.0, loss="kl", labelled=False)
    assert objective.names() == ["kd"]
    loss, parts = objective(_step(labels=False))
    assert torch.equal(loss, parts["kd"])
    with pytest.raises(ValueError, match=r"distill.alpha=0.5 puts weight 0.5 on the gold-label CE"):
        objective_from_distill(alpha=0.5, temperature=2.0, loss="kl", labelled=False)


def test_label_free_check_names_the_term():
    objective = Objective([KDLoss(aggregator="best")])
    with pytest.raises(ValueError, match=r"term 'kd' cannot train on task 'qnli'.*aggregator=best"):
        objective.check_label_free("qnli")
    with pytest.raises(ValueError, match=r"term 'ce' cannot train.*distill.alpha=1.0"):
        Objective([GoldLoss(0.5)]).check_label_free("qnli")


def test_weighted_without_weights_takes_the_teachers_own():
    class Ensemble:  # what bind reads: the teachers' weights
        weights = (3.0, 1.0)

    term = KDLoss(aggregator={"name": "weighted", "weights": None})
    assert term.aggregator is None
    term.bind(torch.nn.Linear(1, 1), Ensemble())  # type: ignore[arg-type]
    assert isinstance(term.aggregator, WeightedAggregator)
    assert term.aggregator.teacher_weights.tolist() == [0.75, 0.25]


def test_bad_term_settings_fail_clearly():
    with pytest.raises(ValueError, match="weight must be >= 0"):
        GoldLoss(-1.0)
    with pytest.raises(ValueError, match="temperature must be positive"):
        KDLoss(temperature=0.0)
    with pytest.raises(KeyError, match="unknown objective term 'nope'"):
        build_term("nope")
    with pytest.raises(ValueError, match="unique"):
        Objective([GoldLoss(), GoldLoss()])


@TERMS.register("test_logit_l2")
class LogitL2(Term):
    """A new loss term with a parameter, as a user adds one: one class (plus, optionally, a config file)."""

    name = "test_logit_l2"

    def __init__(self, weight: float = 1.0, scale: float = 1.0) -> None:
        super().__init__(weight)
        self.scale = scale

    def forward(self, step: Step) -> Tensor:
        return self.scale * step.prediction.pow(2).mean()


def test_a_new_term_joins_the_sum_without_touching_the_step():
    step = _step()
    base = objective_from_distill(alpha=0.5, temperature=2.0, loss="kl", labelled=True)
    extended = objective_from_distill(alpha=0.5, temperature=2.0, loss="kl", labelled=True,
                                      extra=[build_term("test_logit_l2", weight=0.1, scale=2.0)])
    (without, _), (with_term, parts) = base(step), extended(step)
    assert torch.equal(parts["test_logit_l2"], 2.0 * step.logits.pow(2).mean())
    assert torch.equal(with_term, without + 0.1 * parts["test_logit_l2"])


def test_a_new_term_reaches_the_module_from_the_config(compose_cfg, tmp_path):
    """``objective.terms.<name>`` (what ``configs/objective/<name>.yaml`` sets) adds the term to the stage."""
    cfg = compose_cfg(["experiment=m_o_1_quick", "+objective.terms.test_logit_l2.weight=0.1",
                       "+objective.terms.test_logit_l2.scale=3.0"])
    (term,) = extra_terms(cfg)
    assert isinstance(term, LogitL2) and term.weight == 0.1 and term.scale == 3.0


def test_stage_types_say_what_each_method_needs():
    assert {"finetune", "one_to_one", "many_to_one", "many_to_many", "adapter"} <= set(STAGE_TYPES)
    assert not stage_type("finetune").uses_teachers and stage_type("finetune").uses_labels
    assert stage_type("many_to_many").uses_teachers
    with pytest.raises(ValueError, match="unknown method 'm_o_1'; valid: finetune"):
        stage_type("m_o_1")


def test_finetune_is_the_module_with_the_gold_loss_alone():
    task = get_task("synth_pair")
    model, _ = build_classifier(ModelSpec(tiny={"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                                                "intermediate_size": 32, "max_position_embeddings": 64}), task)
    module = FineTuneModule(model, task)
    assert module.objective.names() == ["ce"] and module.teachers is None and module.configure_callbacks() == []


def test_the_python_builder_makes_the_command_lines_checks():
    """Hidden-state teacher index, teacher count and the label-free objective are checked by
    ``distillation_module`` itself, not only by the Hydra factory."""
    task = get_task("synth_pair")
    tiny = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32,
            "max_position_embeddings": 64}
    student, tok = build_classifier(ModelSpec(tiny=tiny), task)
    teachers = TeacherEnsemble([Teacher(f"t{i}", build_classifier(ModelSpec(tiny=tiny), task)[0], tok)
                                for i in range(2)], task)
    teachers.assign_views("student", tok)
    with pytest.raises(ValueError, match=r"distill.hidden.teacher=5 but there are 2 teachers"):
        distillation_module(student, task, None, teachers,
                            DistillConfig(hidden_weight=1.0, hidden_layer_map={1: 1}, hidden_teacher=5))
    with pytest.raises(ValueError, match="one_to_one takes exactly one teacher, got 2"):
        distillation_module(student, task, None, teachers, exact_teachers=1)
    unlabelled = get_task("synth_pair", train_labelled=False)
    with pytest.raises(ValueError, match="aggregator=best"):
        distillation_module(student, unlabelled, None, teachers, DistillConfig(alpha=1.0), "best")
    module = distillation_module(student, task, None, teachers, DistillConfig(), {"name": "weighted"})
    assert module.objective.terms[0].aggregator.teacher_weights.tolist() == [0.5, 0.5]
