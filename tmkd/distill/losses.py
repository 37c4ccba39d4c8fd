"""Knowledge-distillation losses: logit-level (KL, MSE) and intermediate hidden-state matching."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from tmkd.distill.aggregators import SoftTarget
from tmkd.registry import Registry

KD_LOSSES: Registry[nn.Module] = Registry("kd loss")


def _upcast(x: Tensor) -> Tensor:
    # Mixed-precision logits would lose the small probabilities the KD signal lives in.
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _check_same_shape(student_logits: Tensor, target: Tensor, what: str) -> None:
    # F.kl_div/F.mse_loss silently broadcast mismatched shapes; that hides wrong-task bugs.
    if student_logits.shape != target.shape:
        raise ValueError(
            f"student logits shape {tuple(student_logits.shape)} does not match the {what} "
            f"shape {tuple(target.shape)}"
        )


@KD_LOSSES.register("kl")
class KLDivergenceLoss(nn.Module):
    """Hinton et al. (2015): ``T^2 * KL(p_teacher || p_student)``, summed over classes, batch-mean.

    Logits ``[B, ..., C]``: the mean runs over examples and any middle dims (QA ``[B, 2, S]``: over examples and
    the start/end pair); positions a teacher gives ``FILL`` (-1e4) carry ~0 probability and add ~nothing.

    ``p_teacher`` is ``SoftTarget.probs`` (already softened at T) and ``p_student = softmax(z_s / T)``;
    the ``T^2`` keeps gradient magnitudes comparable across temperatures.
    """

    def forward(self, student_logits: Tensor, target: SoftTarget, temperature: float) -> Tensor:
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        _check_same_shape(student_logits, target.probs, "soft-target probs")
        student = torch.softmax(_upcast(student_logits) / temperature, dim=-1)
        teacher = target.probs.to(student.dtype)
        # Both sides take log of a softmax output (clamped so zero-mass classes give 0, not nan) instead
        # of log_softmax on the student only: mixing the two differs by rounding, so a student equal to
        # its single teacher would get a tiny non-zero loss; this way it is exactly zero.
        tiny = torch.finfo(student.dtype).tiny
        log_ratio = torch.log(teacher.clamp_min(tiny)) - torch.log(student.clamp_min(tiny))
        kl = (teacher * log_ratio).sum(-1)
        return kl.mean() * temperature**2


@KD_LOSSES.register("mse")
class LogitMSELoss(nn.Module):
    """Mean squared error between student logits and the teachers' mixed logits (temperature-free)."""

    def forward(self, student_logits: Tensor, target: SoftTarget, temperature: float) -> Tensor:
        _check_same_shape(student_logits, target.logits, "soft-target logits")
        student = _upcast(student_logits)
        return nn.functional.mse_loss(student, target.logits.to(student.dtype))


def build_kd_loss(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered KD loss by config name (``"kl"`` or ``"mse"``)."""
    return KD_LOSSES.build(name, **kwargs)


class HiddenStateLoss(nn.Module):
    """Intermediate-layer distillation: MSE between mapped student and teacher hidden states.

    ``layer_map`` maps student to teacher indices into the HF ``hidden_states`` tuple (index 0 is the
    embedding output). A learned linear projection bridges different widths, so a narrow student can
    match a wide teacher. Padding is excluded so that batch padding length does not affect the loss.
    """

    def __init__(self, student_width: int, teacher_width: int, layer_map: dict[int, int]) -> None:
        super().__init__()
        if not layer_map:
            raise ValueError("layer_map must map at least one student layer to a teacher layer")
        # int(): YAML/OmegaConf configs can hand over string keys.
        self.layer_map = {int(s): int(t) for s, t in layer_map.items()}
        self.student_width = int(student_width)
        self.teacher_width = int(teacher_width)
        self.proj: nn.Module = (
            nn.Identity()
            if self.student_width == self.teacher_width
            else nn.Linear(self.student_width, self.teacher_width)
        )

    def forward(
        self,
        student_hidden: tuple[Tensor, ...],
        teacher_hidden: tuple[Tensor, ...],
        attention_mask: Tensor,
    ) -> Tensor:
        keep = attention_mask.bool()
        if keep.dim() != 2:
            raise ValueError(f"attention_mask must be [batch, seq_len], got {tuple(attention_mask.shape)}")
        if not keep.any():
            raise ValueError("attention_mask selects no tokens; hidden-state loss is undefined")
        losses = []
        for s_idx, t_idx in self.layer_map.items():
            student = _pick(student_hidden, s_idx, "student")
            teacher = _pick(teacher_hidden, t_idx, "teacher")
            if student.shape[:2] != keep.shape or teacher.shape[:2] != keep.shape:
                raise ValueError(
                    f"hidden states (student layer {s_idx}: {tuple(student.shape)}, teacher layer {t_idx}: "
                    f"{tuple(teacher.shape)}) do not match attention_mask {tuple(keep.shape)} in batch/seq"
                )
            if student.shape[-1] != self.student_width or teacher.shape[-1] != self.teacher_width:
                raise ValueError(
                    f"hidden widths (student {student.shape[-1]}, teacher {teacher.shape[-1]}) do not match "
                    f"the configured widths ({self.student_width}, {self.teacher_width})"
                )
            # Boolean indexing rather than multiplying by the mask: padded positions may hold inf/nan.
            projected = self.proj(_upcast(student)[keep])
            losses.append(nn.functional.mse_loss(projected, teacher[keep].to(projected.dtype)))
        return torch.stack(losses).mean()


def _pick(hidden: tuple[Tensor, ...], index: int, side: str) -> Tensor:
    if not 0 <= index < len(hidden):
        raise ValueError(
            f"{side} hidden-state index {index} is out of range: {len(hidden)} hidden states available "
            f"(valid indices 0..{len(hidden) - 1}, 0 = embeddings)"
        )
    return hidden[index]
