"""Names that become folder names (run_name, experiment, stage and teacher names, WANDB_SWEEP_ID): checked up front.

A name such as ``run_name=../../victim`` would otherwise put a report, ``metrics.json`` and ``.hydra/`` outside
``paths.checkpoints`` and replace whatever ``student/`` folder lies there. One rule for all of them, so a name that
passes is one path component that stays where it is put.
"""

from __future__ import annotations

import re
from pathlib import Path

NAME = re.compile(r"[A-Za-z0-9._=-]+")
RULE = "letters, digits and . _ = - only (one folder name: no '/', no '..')"


class BadName(ValueError):
    """A name that cannot safely become a folder name; the message names the setting, the value and the rule."""


def check_name(value: object, what: str) -> str:
    """``value`` as a string when it is a safe single folder name, else :class:`BadName`."""
    text = str(value)
    if not NAME.fullmatch(text) or ".." in text or text == ".":
        raise BadName(f"{what}={text!r} cannot be a folder name: use {RULE}")
    return text


def check_inside(path: Path | str, root: Path | str, what: str) -> Path:
    """``path`` when, resolved, it lies inside ``root`` (resolved too); else :class:`BadName`."""
    resolved, top = Path(path).resolve(), Path(root).resolve()
    if resolved != top and top not in resolved.parents:
        raise BadName(f"{what} {path} is outside paths.checkpoints ({top}); folders derived from names must stay "
                      "inside it")
    return Path(path)
