"""Non-finite numbers (NaN, inf) stop work instead of flowing on: a diverged run must never look finished."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor


class NonFiniteError(RuntimeError):
    """A loss, weight or soft target is NaN or infinite; the message names which and where."""


def non_finite(named: Iterable[tuple[str, Tensor]]) -> list[str]:
    """Names of the floating-point tensors holding a NaN or inf (one device sync for all of them)."""
    items = [(name, t) for name, t in named if t.is_floating_point() and t.numel()]
    if not items:
        return []
    flags = [torch.isfinite(t.detach()).all() for _, t in items]
    devices = {f.device for f in flags}
    ok = torch.stack(flags).tolist() if len(devices) == 1 else [bool(f) for f in flags]  # one sync per device set
    return [name for (name, _), good in zip(items, ok, strict=True) if not good]


def describe(names: list[str], limit: int = 5) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more
