"""``python -m tmkd.run experiment=<name> [key=value ...] [--key=value ...]``: plan and run an experiment.

Every experiment is a plan of runs (teachers, stages); see tmkd.pipeline.plan for how overrides reach them.
``plan=true`` prints the plan and exits; ``stage=<name>`` runs one stage and what it needs.
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from tmkd.cli import CONFIG_DIR, CONFIG_NAME, main_entry


@hydra.main(config_path=str(CONFIG_DIR), config_name=CONFIG_NAME, version_base="1.3")
def app(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    from tmkd.pipeline.names import BadName
    from tmkd.pipeline.plan import PlanError
    from tmkd.pipeline.runner import Interrupted, run_experiment  # heavy imports after argument checking

    logging.getLogger("tmkd").setLevel(logging.INFO)
    try:
        return run_experiment(cfg, list(HydraConfig.get().overrides.task))
    except (PlanError, BadName) as err:
        print(f"tmkd: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except Interrupted as err:
        print(f"tmkd: stopped ({err}); the same command resumes from the last checkpoint", file=sys.stderr)
        raise SystemExit(err.exit_code) from None
    except KeyboardInterrupt:  # Ctrl-C outside a run (planning, the report): nothing to resume
        print("tmkd: stopped (received SIGINT)", file=sys.stderr)
        raise SystemExit(130) from None


def main() -> None:
    main_entry(app)


if __name__ == "__main__":
    main()
