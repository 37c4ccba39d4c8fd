"""``python -m tmkd.pipeline.node RUN_DIR [--resume CKPT]``: one run of a plan from its resolved config.

The runner uses it for runs that span several processes: Lightning's DDP launcher re-executes this
command line for every rank, and each rank then trains the very same resolved ``RUN_DIR/config.yaml``.
Started by the runner (``TMKD_PARENT_PID`` set), every rank dies with its parent: an orphan would go on writing into
a run folder whose lock, held by the parent, is free for another process then (:func:`locks.die_with_parent`).
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from omegaconf import OmegaConf

from tmkd.pipeline.locks import PARENT_ENV, die_with_parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--resume", type=Path, default=None, help="a last.ckpt to resume from")
    args = ap.parse_args()
    parent = os.environ.get(PARENT_ENV)
    if parent:
        die_with_parent(int(parent))
    config = args.run_dir / "config.yaml"
    if not config.is_file():
        ap.error(f"{config} does not exist (RUN_DIR must be a run folder the planner wrote)")
    logging.basicConfig(level=logging.INFO)
    from tmkd.pipeline.train import run

    run(OmegaConf.load(config), ckpt_path=args.resume)


if __name__ == "__main__":
    main()
