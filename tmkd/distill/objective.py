"""The training objective as a weighted sum of registered terms (in the spirit of torchdistill's weighted losses).

A term reads what one training step computed (:class:`Step`: the student's logits and raw output, the teachers'
logits, the gold labels, the batch's inputs) and returns one scalar; :class:`Objective` adds ``weight * value`` over
its terms in order, so the training step never changes when a term is added. The built-in terms:

- ``kd``: a KD loss (:data:`tmkd.distill.losses.KD_LOSSES`) between the student and the teachers' soft target
  (an aggregator mixes the teachers; with per-teacher heads, head ``i`` follows teacher ``i`` alone);
- ``ce``: the gold-label loss of the task kind, on the student's prediction (the mean of its heads);
- ``hidden``: hidden-state matching against one teacher (:class:`tmkd.distill.losses.HiddenStateLoss`);
- ``dist``: DIST's inter- and intra-class relation loss (Pearson correlations; ``+objective=dist``).

Adding a term: subclass :class:`Term`, register it with ``@TERMS.register("name")`` and give its constructor keyword
arguments (``weight`` first); a config file under ``configs/objective/`` then adds it to any stage (README,
"Adding a KD loss term"). :func:`objective_from_distill` is the one place that turns the ``distill`` knobs
(``alpha``, ``temperature``, ``loss``, ``hidden.*``) into terms: ``alpha * KD + (1 - alpha) * CE + w * hidden``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from tmkd.data.datamodule import STUDENT
from tmkd.data.kinds import TaskKind
from tmkd.distill.aggregators import (
    Aggregator,
    BestTeacherAggregator,
    ConfidenceAggregator,
    build_aggregator,
)
from tmkd.distill.ensemble import TeacherEnsemble
from tmkd.distill.losses import HiddenStateLoss, build_kd_loss
from tmkd.models.adapter_teacher import AdapterTeacher
from tmkd.registry import Registry


@dataclass
class Step:
    """What one training step offers the terms, computed once by the module.

    ``logits``: the student's training logits, ``[B, ...]``, or ``[H, B, ...]`` with one head per teacher
    (``per_head``); ``teacher_logits``: ``[T, B, ...]`` (None when no term needs teachers); ``labels``: None on
    an unlabelled train split; ``output``: the student's raw model output (``hidden_states`` when a term asked);
    ``inputs``: the student's view of the batch.
    """

    kind: TaskKind
    logits: Tensor
    labels: Tensor | None = None
    teacher_logits: Tensor | None = None
    teachers: TeacherEnsemble | None = None
    inputs: dict[str, Tensor] | None = None
    output: Any = None
    per_head: bool = False

    @property
    def prediction(self) -> Tensor:
        """The student's prediction: its logits, or the mean of its heads' logits."""
        return self.logits.mean(0) if self.per_head else self.logits


class Term(nn.Module):
    """One weighted part of the objective. Subclasses implement :meth:`forward` and say what they need."""

    name = "term"
    needs_labels = False  # reads the gold labels (refused on an unlabelled train split)
    needs_teachers = False  # reads the teachers' logits
    needs_hidden = False  # reads the student's hidden states (the model runs with output_hidden_states)

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        if not weight >= 0:
            raise ValueError(f"objective term {self.name!r}: weight must be >= 0, got {weight}")
        self.weight = float(weight)

    def bind(self, student: nn.Module, teachers: TeacherEnsemble | None) -> None:
        """Finish building against the student and teachers (shapes, defaults) and check they fit; the module
        calls it once, before training. The default needs nothing."""
        if self.needs_teachers and teachers is None:
            raise ValueError(f"objective term {self.name!r} distils from teachers, but none were given")

    def label_free_problem(self) -> str | None:
        """Why this term cannot train without gold labels (None: it can)."""
        return "it reads the gold labels" if self.needs_labels else None

    def forward(self, step: Step) -> Tensor:
        raise NotImplementedError


TERMS: Registry[Term] = Registry("objective term")


@TERMS.register("ce")
class GoldLoss(Term):
    """The task kind's gold-label loss (classification: cross-entropy; QA: start/end CE) on the prediction."""

    name = "ce"
    needs_labels = True

    def label_free_problem(self) -> str | None:
        return (f"it puts weight {self.weight:g} on the gold-label CE: set distill.alpha=1.0 (teachers' soft targets "
                "only)")

    def forward(self, step: Step) -> Tensor:
        if step.labels is None:
            raise ValueError("objective term 'ce' needs gold labels, but the batch carries none")
        return step.kind.gold_loss(step.prediction, step.labels)


class SoftTargetTerm(Term):
    """A term that learns the teachers' mixed soft targets (``kd``, ``dist``): owns the aggregator (``weighted``
    without weights takes the teachers' own ``weight``\\ s at :meth:`bind`), its label-free check, and the pairing
    of student logits with targets (m-o-m: head ``i`` with teacher ``i`` alone, averaged over heads)."""

    needs_teachers = True

    def __init__(self, weight: float, temperature: float,
                 aggregator: Aggregator | str | dict[str, Any] | None = None) -> None:
        super().__init__(weight)
        self.temperature = temperature
        # a name or dict waits for bind() when it is ``weighted`` without weights (the teachers' own)
        self._aggregator_spec = None if isinstance(aggregator, Aggregator) else aggregator
        self.aggregator = aggregator if isinstance(aggregator, Aggregator) else None
        if self.aggregator is None and not _is_default_weighted(aggregator):
            self.aggregator = aggregator_for(aggregator, None)
        self._per_head = build_aggregator("mean")  # head i follows teacher i alone

    def bind(self, student: nn.Module, teachers: TeacherEnsemble | None) -> None:
        super().bind(student, teachers)
        if self.aggregator is None:  # ``weighted`` without weights: the teachers' own
            assert teachers is not None
            self.aggregator = aggregator_for(self._aggregator_spec, teachers.weights)

    def label_free_problem(self) -> str | None:
        return aggregator_label_problem(self.aggregator)

    def per_target(self, step: Step, loss: Callable[[Tensor, Any], Tensor]) -> Tensor:
        """``loss(student logits, target)`` against the mixed target, or per head (mean over heads)."""
        if step.teacher_logits is None:
            raise ValueError(f"objective term {self.name!r} needs the teachers' logits, but the step has none")
        t = self.temperature
        if step.per_head:
            return torch.stack([loss(step.logits[i], self._per_head(step.teacher_logits[i:i + 1], step.labels, t))
                                for i in range(step.logits.shape[0])]).mean()
        assert self.aggregator is not None, "bind() was not called"
        return loss(step.logits, self.aggregator(step.teacher_logits, step.labels, t))


@TERMS.register("kd")
class KDLoss(SoftTargetTerm):
    """A KD loss at ``temperature`` against the teachers' aggregated soft target (per head: its own teacher).

    ``aggregator``: an :class:`Aggregator`, or a registered name / ``{"name": ..., **options}``; ``weighted``
    without weights takes the teachers' own ``weight``\\ s (at :meth:`bind`).
    """

    name = "kd"

    def __init__(self, weight: float = 1.0, loss: str = "kl", temperature: float = 2.0,
                 aggregator: Aggregator | str | dict[str, Any] | None = None) -> None:
        if not temperature > 0:
            raise ValueError(f"distill.temperature must be positive, got {temperature}")
        super().__init__(weight, float(temperature), aggregator)
        self.loss = build_kd_loss(loss)

    def forward(self, step: Step) -> Tensor:
        return self.per_target(step, lambda logits, target: self.loss(logits.float(), target, self.temperature))


def aggregator_label_problem(agg: Aggregator | None) -> str | None:
    """Why a term mixing teachers with ``agg`` cannot train without gold labels (None: it can)."""
    if isinstance(agg, ConfidenceAggregator) and agg.measure == "gold":
        return ("aggregator=confidence with measure=gold weighs teachers by the gold label: use "
                "aggregator.measure=entropy (label-free), or aggregator=mean / weighted")
    if isinstance(agg, BestTeacherAggregator):
        return ("aggregator=best picks the teacher most confident on the gold label: use aggregator=mean, "
                "weighted, or confidence with measure=entropy")
    return None


def _is_default_weighted(spec: Aggregator | str | dict[str, Any] | None) -> bool:
    if isinstance(spec, str):
        return spec == "weighted"
    return isinstance(spec, dict) and spec.get("name") == "weighted" and spec.get("weights") is None


def aggregator_for(spec: str | dict[str, Any] | None, teacher_weights: list[float] | None) -> Aggregator:
    """The aggregator ``spec`` names (a name or ``{"name": ..., **options}``; None: mean); ``weighted`` without
    weights takes ``teacher_weights`` (the teachers' own ``weight``\\ s)."""
    node = {"name": spec} if isinstance(spec, str) else dict(spec or {"name": "mean"})
    name = node.pop("name")
    if name == "weighted" and node.get("weights") is None:
        node["weights"] = teacher_weights
    return build_aggregator(name, **node)


@TERMS.register("dist")
class DISTLoss(SoftTargetTerm):
    """DIST (Huang et al., "Knowledge Distillation from A Stronger Teacher", NeurIPS 2022): match *relations*
    rather than exact probabilities, with ``p = softmax(z / temperature)`` for the student and the (aggregated)
    teachers' soft target (per head: its own teacher)::

        beta * T^2 * mean_b(1 - pearson(p_s[b, :], p_t[b, :]))   # inter-class: each example's class ranking
      + gamma * T^2 * mean_c(1 - pearson(p_s[:, c], p_t[:, c]))  # intra-class: each class across the batch

    Pearson correlation is invariant to shift and scale, so a student need not reproduce a much stronger teacher's
    exact confidences, only their order (the paper's argument). ``beta`` and ``gamma`` weigh the two relations
    (the paper: 1 and 1 on ImageNet, 2 and 2 on CIFAR-100). On two classes the inter-class correlation is +-1 (the
    sign of the two examples' margins), so it gives no gradient there and ``gamma`` carries the signal. The
    correlation follows the authors' code (github.com/hunto/DIST_KD): a cosine of centred vectors with ``1e-8`` in
    the denominator, so a constant vector correlates 0 instead of dividing by zero.
    """

    name = "dist"
    EPS = 1e-8

    def __init__(self, weight: float = 1.0, beta: float = 1.0, gamma: float = 1.0, temperature: float = 1.0,
                 aggregator: str | dict[str, Any] | None = None) -> None:
        """``aggregator``: how the teachers mix into the target (a registered name or ``{"name": ..., **options}``;
        None: mean); ``configs/objective/dist.yaml`` sets it to ``distill.aggregator``, the one ``kd`` uses."""
        if not (beta >= 0 and gamma >= 0) or beta + gamma == 0:
            raise ValueError(f"objective term 'dist': beta and gamma must be >= 0 and not both 0, got beta={beta}, "
                             f"gamma={gamma}")
        if not temperature > 0:
            raise ValueError(f"objective term 'dist': temperature must be positive, got {temperature}")
        super().__init__(weight, float(temperature), aggregator)
        self.beta, self.gamma = float(beta), float(gamma)

    @classmethod
    def pearson(cls, a: Tensor, b: Tensor) -> Tensor:
        """Row-wise Pearson correlation of ``[N, D]`` tensors: ``[N]``."""
        a, b = a - a.mean(-1, keepdim=True), b - b.mean(-1, keepdim=True)
        return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1) + cls.EPS)

    def relation_loss(self, student_logits: Tensor, teacher_probs: Tensor) -> Tensor:
        if student_logits.dim() != 2:
            raise ValueError(f"objective term 'dist' compares [batch, classes] distributions, got student logits "
                             f"of shape {tuple(student_logits.shape)} (QA's start/end positions are not classes)")
        half = student_logits.dtype in (torch.float16, torch.bfloat16)  # softmax in half loses small probabilities
        logits = student_logits.float() if half else student_logits
        p_s = torch.softmax(logits / self.temperature, dim=-1)
        p_t = teacher_probs.to(p_s.dtype)
        inter = (1 - self.pearson(p_s, p_t)).mean()
        intra = (1 - self.pearson(p_s.T, p_t.T)).mean()
        return self.temperature**2 * (self.beta * inter + self.gamma * intra)

    def forward(self, step: Step) -> Tensor:
        return self.per_target(step, lambda logits, target: self.relation_loss(logits, target.probs))


@TERMS.register("hidden")
class HiddenMatch(Term):
    """MSE between mapped student and teacher hidden states (``layer_map``: student layer -> teacher layer)."""

    name = "hidden"
    needs_hidden = True

    def __init__(self, weight: float = 1.0, layer_map: dict[int, int] | None = None, teacher: int = 0) -> None:
        super().__init__(weight)
        if not layer_map:
            raise ValueError("distill.hidden.weight > 0 needs distill.hidden.layer_map {student_layer: teacher_layer}")
        self.layer_map = {int(k): int(v) for k, v in layer_map.items()}
        self.teacher = int(teacher)
        self.loss: HiddenStateLoss | None = None

    def bind(self, student: nn.Module, teachers: TeacherEnsemble | None) -> None:
        if teachers is None:
            raise ValueError("hidden-state distillation (distill.hidden.weight > 0) needs a teacher")
        if not 0 <= self.teacher < len(teachers):
            raise ValueError(f"distill.hidden.teacher={self.teacher} but there are {len(teachers)} teachers")
        chosen = teachers.teachers[self.teacher]
        if isinstance(chosen.model, AdapterTeacher):
            raise ValueError(f"distill.hidden.teacher={self.teacher} is adapter teacher {chosen.name!r}: it has no "
                             "hidden states to distil from (its encoder is frozen and pretrained); pick a fine-tuned "
                             "teacher")
        if chosen.view and chosen.view != STUDENT:  # views are named by TeacherEnsemble.assign_views
            raise ValueError("hidden-state distillation needs a teacher that shares the student's tokenizer; "
                             f"teacher {chosen.name!r} tokenises differently")
        if self.loss is None:
            self.loss = HiddenStateLoss(student.config.hidden_size, chosen.model.config.hidden_size, self.layer_map)

    def forward(self, step: Step) -> Tensor:
        assert self.loss is not None and step.teachers is not None and step.inputs is not None, "bind() first"
        teacher_hidden = step.teachers.hidden_states(self.teacher, step.inputs)
        return self.loss(step.output.hidden_states, teacher_hidden, step.inputs["attention_mask"])


class Objective(nn.Module):
    """``sum(weight_i * term_i)`` over the terms, in order; ``parts`` holds each term's unweighted value."""

    def __init__(self, terms: list[Term]) -> None:
        super().__init__()
        if not terms:
            raise ValueError("an objective needs at least one term")
        names = [t.name for t in terms]
        if len(set(names)) != len(names):
            raise ValueError(f"objective term names must be unique, got {names}")
        self.terms = nn.ModuleList(terms)

    @property
    def needs_teachers(self) -> bool:
        return any(t.needs_teachers for t in self.terms)

    @property
    def needs_hidden(self) -> bool:
        return any(t.needs_hidden for t in self.terms)

    @property
    def needs_labels(self) -> bool:
        return any(t.needs_labels for t in self.terms)

    def names(self) -> list[str]:
        return [t.name for t in self.terms]

    def bind(self, student: nn.Module, teachers: TeacherEnsemble | None) -> None:
        for term in self.terms:
            term.bind(student, teachers)

    def check_label_free(self, task_name: str) -> None:
        """Refuse any term that needs gold labels on a train split read as unlabelled text, naming the term."""
        for term in self.terms:
            problem = term.label_free_problem()
            if problem:
                raise ValueError(f"objective term {term.name!r} cannot train on task {task_name!r}: it has "
                                 f"train_labelled=false (its train split is read as unlabelled text: no gold "
                                 f"labels), and {problem}")

    def forward(self, step: Step) -> tuple[Tensor, dict[str, Tensor]]:
        total: Tensor | None = None
        parts: dict[str, Tensor] = {}
        for term in self.terms:
            value = term(step)
            parts[term.name] = value.detach()
            weighted = value if term.weight == 1.0 else term.weight * value  # 1.0 * x == x: same numbers
            total = weighted if total is None else total + weighted
        assert total is not None
        return total, parts


def build_term(name: str, **options: Any) -> Term:
    """A registered term by name with its options (the keys of its ``configs/objective/<name>.yaml``)."""
    return TERMS.build(name, **options)


def objective_from_distill(*, alpha: float, temperature: float, loss: str, labelled: bool,
                           aggregator: Aggregator | str | dict[str, Any] | None = None, hidden_weight: float = 0.0,
                           hidden_layer_map: dict[int, int] | None = None, hidden_teacher: int = 0,
                           extra: list[Term] | None = None) -> Objective:
    """The one translation of the ``distill`` knobs into terms: ``alpha * KD + (1 - alpha) * CE + w * hidden``
    (no CE term on an unlabelled train split, where ``alpha`` must be 1), then any ``extra`` terms."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"distill.alpha must be in [0, 1], got {alpha}")
    terms: list[Term] = [KDLoss(alpha if labelled else 1.0, loss, temperature, aggregator)]
    if labelled:
        terms.append(GoldLoss(1.0 - alpha))
    elif alpha < 1:
        raise ValueError(f"distill.alpha={alpha} puts weight {1 - alpha:g} on the gold-label CE, but the train split "
                         "is unlabelled: set distill.alpha=1.0 (teachers' soft targets only)")
    if hidden_weight > 0:
        terms.append(HiddenMatch(hidden_weight, hidden_layer_map, hidden_teacher))
    return Objective([*terms, *(extra or [])])


def gold_objective() -> Objective:
    """Fine-tuning: the gold-label loss alone."""
    return Objective([GoldLoss(1.0)])
