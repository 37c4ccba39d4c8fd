"""Hyper-parameter search: W&B sweep files (``experiments/sweeps``), Optuna searches (``configs/hparams_search``).

- :mod:`tmkd.search.sweeps`: load and check sweep files, sample a trial, build its command as ``wandb agent`` does,
  and run trials locally without a W&B server (``python -m tmkd.search.sweeps <sweep file>``).
- :mod:`tmkd.search.trials`: the Hydra callback that writes ``trials.csv`` / ``trials.md`` (best first) into an
  Optuna sweep folder (``python -m tmkd.search.trials <sweep dir>`` rebuilds them).
- :mod:`tmkd.search.wandb_offline`: what an offline W&B run logged (its summary), read from its run folder.
"""
