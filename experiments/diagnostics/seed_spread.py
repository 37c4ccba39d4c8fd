"""Why do two seeds of the same QNLI fine-tune end points apart? Early-training diagnostic (issue 17).

Trains the first ``--steps`` optimiser steps of a run exactly as tmkd builds it (same model, data order, optimiser and
the 2-epoch learning-rate schedule, which depends on the run's full length) for several seeds and variants, and
prints the train loss per window of steps. No evaluation split is read: the dev set is untouched, so whatever is
chosen from this stays a train-side choice. A run "stuck at chance" keeps a mean loss near ln 2 = 0.693.

    python experiments/diagnostics/seed_spread.py --seeds 1 42 7 3 --steps 160 \
        --variant default= --variant shuffled=data.group_by_length=false --variant lr3e-5=optim.lr=3e-5
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from tmkd.cli import prepare_argv
from tmkd.pipeline.compose import compose_run
from tmkd.pipeline.factory import build_datamodule, build_module, build_task
from tmkd.pipeline.train import EpochSeed, trainer_kwargs


class Losses(pl.Callback):
    """Collects each step's training loss and stops the fit after ``steps`` steps (the schedule is not shortened)."""

    def __init__(self, steps: int) -> None:
        self.steps, self.losses = steps, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))
        if len(self.losses) >= self.steps:
            trainer.should_stop = True


def reinit_modules(model: torch.nn.Module, names: list[str]) -> list[str]:
    """Re-initialise (the model's own ``_init_weights``) every submodule whose name ends with one of ``names``,
    e.g. ``pooler.dense``: a pretrained part that was never trained for the task (a hypothesis under test)."""
    from tmkd.models.build import fresh_init

    done = []
    for name, module in model.named_modules():
        if any(name.endswith(n) for n in names) and any(True for _ in module.parameters(recurse=False)):
            before = next(module.parameters()).detach().clone()
            fresh_init(model, module)
            if torch.equal(before, next(module.parameters())):
                raise SystemExit(f"--reinit: {name} kept its weights")
            done.append(name)
    if names and not done:
        raise SystemExit(f"--reinit {names}: no such module")
    return done


def run_one(overrides: list[str], steps: int, init_seed: int | None = None, reinit: list[str] | None = None
            ) -> list[float]:
    """``init_seed`` (default: the run's seed) seeds the model build alone (the new classification head's
    initialisation); the run's ``seed`` keeps the data order and the dropout masks (EpochSeed)."""
    argv = prepare_argv(overrides)
    cfg = OmegaConf.create(compose_run(argv))
    pl.seed_everything(cfg.seed, workers=True)
    task = build_task(cfg)
    if init_seed is not None:
        pl.seed_everything(init_seed, workers=True)
    module, tokenizers = build_module(cfg, task)
    if reinit:
        print("re-initialised:", reinit_modules(module.model, reinit), flush=True)
    datamodule = build_datamodule(cfg, task, tokenizers)
    losses = Losses(steps)
    kwargs = {**trainer_kwargs(cfg), "limit_val_batches": 0, "enable_progress_bar": False}
    trainer = pl.Trainer(**kwargs, logger=False, enable_checkpointing=False,
                         callbacks=[losses, EpochSeed(cfg.seed)], enable_model_summary=False)
    trainer.fit(module, datamodule=datamodule)
    return losses.losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="baseline_qnli")
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 42])
    parser.add_argument("--steps", type=int, default=160)
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variant", action="append", default=[],
                        help="NAME=OVERRIDE[,OVERRIDE...] (empty after = for the experiment's defaults)")
    parser.add_argument("--vary", choices=("both", "init", "data"), default="both",
                        help="what --seeds vary: both (the run's seed), init (the head initialisation only; data "
                             "order and dropout keep --fixed-seed) or data (data order and dropout only; the head "
                             "keeps --fixed-seed's initialisation)")
    parser.add_argument("--fixed-seed", type=int, default=42)
    parser.add_argument("--out", default=None, help="JSON file for the raw losses")
    parser.add_argument("--reinit", nargs="*", default=[],
                        help="module name suffixes to re-initialise after the build, e.g. pooler.dense")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    variants = [(v.split("=", 1)[0], [o for o in v.split("=", 1)[1].split(",") if o]) for v in args.variant] or [
        ("default", [])]
    raw: dict[str, dict[int, list[float]]] = {}
    print(f"# {args.experiment}: mean train loss per {args.window} steps (ln 2 = 0.693 is chance); seeds vary "
          f"{args.vary}" + ("" if args.vary == "both" else f" (the other part keeps seed {args.fixed_seed})"))
    for name, extra in variants:
        for seed in args.seeds:
            started = time.perf_counter()
            run_seed = args.fixed_seed if args.vary == "init" else seed
            init_seed = {"both": None, "init": seed, "data": args.fixed_seed}[args.vary]
            losses = run_one([f"experiment={args.experiment}", f"data.dir={args.data_dir}", f"seed={run_seed}",
                              "logger=none", f"threads={args.threads}", *extra], args.steps, init_seed,
                             args.reinit)
            raw.setdefault(name, {})[seed] = losses
            windows = [statistics.fmean(losses[i:i + args.window]) for i in range(0, len(losses), args.window)]
            print(f"{name:>12} seed {seed:>3}: " + " ".join(f"{w:.3f}" for w in windows)
                  + f"   ({time.perf_counter() - started:.0f} s)", flush=True)
    if args.out:
        with open(args.out, "w") as handle:
            json.dump({"args": vars(args), "losses": raw}, handle)


if __name__ == "__main__":
    main()
