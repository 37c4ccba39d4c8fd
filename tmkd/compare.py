"""``python -m tmkd.compare DIR... --baseline NAME``: methods against a baseline, over seeds and dev examples.

DIRs are run folders, experiment folders (plan.json) or folders above runs (``checkpoints/runs/<experiment>``).
Runs that differ only in ``seed`` are seeds of one method (see :mod:`tmkd.analysis.runs`); ``LABEL=DIR`` puts a
folder's runs in the method LABEL instead (repeat it for each seed's run folder). The interval of each
difference is a two-level bootstrap over seeds and paired dev examples (see :mod:`tmkd.analysis.bootstrap`).
Writes ``<out>.md``, ``<out>.json`` and ``<out>.png`` and prints the table.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tmkd.analysis.bootstrap import METRICS
from tmkd.analysis.compare import run_comparison, write_outputs
from tmkd.analysis.runs import GROUPS, CompareError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tmkd.compare", description=__doc__.split("\n\n")[0])
    p.add_argument("dirs", nargs="+", metavar="DIR", help="run, experiment or runs folders; LABEL=DIR names the "
                   "method of that folder's runs (e.g. tmkd=RUN_FOLDER, once per seed)")
    p.add_argument("--baseline", required=True, help="the method to compare against (its label, or a unique part)")
    p.add_argument("--metric", default="accuracy", choices=METRICS)
    p.add_argument("--out", default="comparison", help="output prefix: PREFIX.md, PREFIX.json, PREFIX.png")
    p.add_argument("--group", default="config", choices=GROUPS,
                   help="config: runs equal but for the seed are one method; experiment: by experiment/run name")
    p.add_argument("--split", action="append", help="eval split(s) to compare (default: every split all runs have)")
    p.add_argument("--replicates", type=int, default=10_000)
    p.add_argument("--confidence", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap's random draws")
    p.add_argument("--allow-missing-seeds", action="store_true",
                   help="compare methods that lack some of the baseline's seeds instead of stopping")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        result = run_comparison(args.dirs, args.baseline, args.metric, args.group, args.split, args.replicates,
                                args.confidence, args.seed, args.allow_missing_seeds)
    except (CompareError, FileNotFoundError, ValueError) as err:
        print(f"tmkd.compare: error: {err}", file=sys.stderr)
        return 2
    paths = write_outputs(result, args.out)
    print(paths["md"].read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
