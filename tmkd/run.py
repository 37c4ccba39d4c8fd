"""``python -m tmkd.run experiment=<name> [key=value ...] [--key=value ...]``: one training run (or a sweep)."""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from tmkd.cli import CONFIG_DIR, CONFIG_NAME, main_entry


@hydra.main(config_path=str(CONFIG_DIR), config_name=CONFIG_NAME, version_base="1.3")
def app(cfg: DictConfig) -> float:
    from tmkd.pipeline.train import run  # heavy imports after argument checking

    logging.getLogger("tmkd").setLevel(logging.INFO)
    return run(cfg)


def main() -> None:
    main_entry(app)


if __name__ == "__main__":
    main()
