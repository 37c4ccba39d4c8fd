"""Stress test of parallel agents on one checkpoint folder: N agents, K of them SIGKILLed mid-run and started again.

    python -m tmkd.bench.agents --agents 4 --kill 2 --out experiments/results/stress_agents.md

Each agent is ``python -m tmkd.run`` on one quick plan (``m_o_1_quick``, tiny caps): three teachers shared by all,
and a student whose ``distill.alpha`` cycles through ``--settings``, so agents with the same setting share their
student run too. All agents start together on one ``paths.checkpoints``; each writes its own experiment folder
(``paths.experiment_dir``), as sweep trials do. ``--kill`` of them, drawn at random, get SIGKILL at a random moment
(up to ``--kill-delay`` s) after they start training something, i.e. while they hold a run's lock; once dead, they are
started again with the same command. The checks:

- every agent's last process exits 0; every run folder of the plan ends ``done`` and holds its outputs;
- each run folder was trained to the end exactly once (``attempts.jsonl``: one ``done``), and a training started
  over an unfinished one only when that one's process had been killed (never two at once);
- agents with the same setting report identical metrics, the ones of their shared run folder.

The markdown it writes (``--out``) starts with the command; the exit status is 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tmkd.environment import environment, summary
from tmkd.pipeline import locks, manifest

TINY = ["experiment=m_o_1_quick", "data.max_train_samples=64", "data.max_eval_samples=64", "trainer.max_epochs=2",
        "logger=csv", "report.latency=false", "threads=1", "trainer.enable_progress_bar=false"]
STARTED = " -> "  # the runner's log line when it starts training a run: "run NAME (KIND) -> FOLDER"


@dataclass
class Agent:
    index: int
    setting: str
    command: list[str]
    log: Path
    process: subprocess.Popen | None = None
    pids: list[int] = field(default_factory=list)
    kill_after: float | None = None  # seconds after it starts training something
    killed: str = ""  # what it was doing when killed
    codes: list[int] = field(default_factory=list)

    def start(self, env: dict[str, str]) -> None:
        handle = self.log.open("a")
        self.process = subprocess.Popen(self.command, env=env, stdout=handle, stderr=subprocess.STDOUT)
        handle.close()
        self.pids.append(self.process.pid)

    def training(self) -> str | None:
        """The run folder it started training last, if any (from its log)."""
        text = self.log.read_text(errors="replace")
        lines = [line for line in text.splitlines() if STARTED in line and "run " in line]
        return lines[-1].split(STARTED, 1)[1].strip() if lines else None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, default=4, help="agent processes started together")
    ap.add_argument("--kill", type=int, default=2, help="how many of them get SIGKILL (then run again)")
    ap.add_argument("--settings", default="0.3,0.7", help="distill.alpha values, cycled over the agents")
    ap.add_argument("--kill-delay", type=float, default=3.0, help="kill up to this many s after training starts")
    ap.add_argument("--seed", type=int, default=0, help="draws of victims and kill times")
    ap.add_argument("--root", type=Path, default=None, help="checkpoint root (default: a new temporary folder)")
    ap.add_argument("--timeout", type=float, default=1800, help="give up after this many seconds")
    ap.add_argument("--out", type=Path, default=None, help="markdown report (default: print only)")
    ap.add_argument("overrides", nargs="*", help="more overrides for every agent")
    args = ap.parse_args(argv)
    if args.agents < 1 or not 0 <= args.kill <= args.agents:
        ap.error(f"need --agents >= 1 and 0 <= --kill <= --agents, got --agents {args.agents} --kill {args.kill}")
    return args


def run_agents(args: argparse.Namespace, root: Path) -> tuple[list[Agent], float]:
    rng = random.Random(args.seed)
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.pop("WANDB_SWEEP_ID", None)
    agents = []
    for i in range(args.agents):
        setting = settings[i % len(settings)]
        command = [sys.executable, "-m", "tmkd.run", *TINY, *args.overrides, f"paths.checkpoints={root / 'ckpt'}",
                   f"paths.experiment_dir={root / 'agents' / f'agent-{i}'}", f"distill.alpha={setting}"]
        agents.append(Agent(i, setting, command, root / "logs" / f"agent-{i}.log"))
    (root / "logs").mkdir(parents=True, exist_ok=True)
    for victim in rng.sample(agents, args.kill):
        victim.kill_after = rng.uniform(0, args.kill_delay)
    started = time.monotonic()
    for agent in agents:
        agent.start(env)
    training_since: dict[int, float] = {}
    while any(a.process is not None for a in agents):
        if time.monotonic() - started > args.timeout:
            for a in agents:
                if a.process is not None:
                    a.process.kill()
            raise SystemExit(f"agents still running after {args.timeout:.0f} s; logs in {root / 'logs'}")
        for agent in agents:
            proc = agent.process
            if proc is None:
                continue
            code = proc.poll()
            if code is not None:
                agent.codes.append(code)
                agent.process = None
                if code == -signal.SIGKILL:
                    agent.start(env)  # the killed agent, again
                continue
            if agent.kill_after is not None and not agent.killed:
                folder = agent.training()
                if folder is not None:
                    since = training_since.setdefault(agent.index, time.monotonic())
                    if time.monotonic() - since >= agent.kill_after:
                        proc.send_signal(signal.SIGKILL)
                        agent.killed = f"{time.monotonic() - started:.1f} s, training {Path(folder).name}"
        time.sleep(0.1)
    return agents, time.monotonic() - started


def check(agents: list[Agent], root: Path) -> tuple[list[tuple[str, bool, str]], list[dict[str, Any]]]:
    checks: list[tuple[str, bool, str]] = []
    killed_pids = {a.pids[0] for a in agents if a.killed}
    finals = {a.index: a.codes[-1] if a.codes else None for a in agents}
    checks.append(("every agent exits 0 in the end", all(c == 0 for c in finals.values()),
                   ", ".join(f"agent-{i}: {c}" for i, c in finals.items())))
    checks.append(("the killed agents were killed", all(a.codes[0] == -signal.SIGKILL for a in agents if a.killed),
                   ", ".join(f"agent-{a.index}: {a.codes}" for a in agents if a.killed) or "none killed"))
    rows = []
    once = overlap_free = outputs = True
    for folder in sorted(p for p in (root / "ckpt" / "runs").glob("*/*") if p.is_dir()):
        events = locks.attempts(folder)
        found = manifest.read(folder) or {}
        done = sum(e["event"] == "done" for e in events)
        open_token: dict[str, Any] | None = None
        ok = True
        for e in events:  # a start over an unfinished attempt is fine only if that attempt's process was killed
            if e["event"] == "start":
                if open_token is not None and open_token["pid"] not in killed_pids:
                    ok = False
                open_token = e
            elif open_token is not None and e["token"] == open_token["token"]:
                open_token = None
        once &= done == 1
        overlap_free &= ok
        outputs &= found.get("status") == "done" and (folder / "metrics.json").is_file()
        rows.append({"run": folder.name, "experiment": folder.parent.name, "starts": sum(e["event"] == "start"
                     for e in events), "done": done, "by killed agents": sum(e["event"] == "start" and e["pid"] in
                     killed_pids for e in events), "status": found.get("status")})
    checks.append(("every run folder is done and holds metrics.json", outputs and bool(rows), f"{len(rows)} folders"))
    checks.append(("every run folder was trained to the end exactly once", once, "one `done` in each attempts.jsonl"))
    checks.append(("no training started over a live one", overlap_free, "restarts only after a killed owner"))
    expected = 3 + len({a.setting for a in agents})
    checks.append(("one folder per distinct run", len(rows) == expected, f"{len(rows)} folders, {expected} expected"))
    by_setting: dict[str, list[dict[str, Any]]] = {}
    lost = []
    for a in agents:
        path = root / "agents" / f"agent-{a.index}" / "metrics.json"
        if not path.is_file():
            lost.append(a.index)
            continue
        result = json.loads(path.read_text())
        own = json.loads((Path(result["run_folder"]) / "metrics.json").read_text())
        by_setting.setdefault(a.setting, []).append({"best": result["best"], "own": own["best"],
                                                     "folder": result["run_folder"]})
    checks.append(("every agent wrote its result", not lost, f"missing: {lost}" if lost else "all"))
    same = all(r["best"] == rs[0]["best"] == r["own"] and r["folder"] == rs[0]["folder"]
               for rs in by_setting.values() for r in rs)
    checks.append(("identical metrics for identical runs", same,
                   "; ".join(f"alpha={s}: {len(rs)} agents, one folder" for s, rs in by_setting.items())))
    return checks, rows


def markdown(command: str, args: argparse.Namespace, agents: list[Agent], wall: float,
             checks: list[tuple[str, bool, str]], rows: list[dict[str, Any]]) -> str:
    lines = ["# Parallel agents on one checkpoint folder (stress test)", "", f"`{command}`", "",
             f"{args.agents} agents on `m_o_1_quick` (tiny caps: {' '.join(TINY[1:])}), distill.alpha cycling over "
             f"{args.settings}; {args.kill} chosen to be killed with SIGKILL up to {args.kill_delay} s after they "
             f"started training a run ({sum(1 for a in agents if a.killed)} were: one that finished first is not), "
             f"then started again; seed {args.seed}; {os.cpu_count()} CPUs; wall {wall:.0f} s.", "",
             f"Environment: {summary(environment())}.", "",
             "| agent | alpha | killed at | exit codes (in order) |", "|---|---|---|---|"]
    for a in agents:
        lines.append(f"| agent-{a.index} | {a.setting} | {a.killed or '-'} | {', '.join(map(str, a.codes))} |")
    lines += ["", "| run folder | experiment | trainings started | finished | started by killed agents | status |",
              "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['experiment']} | {r['starts']} | {r['done']} | {r['by killed agents']} | "
                     f"{r['status']} |")
    lines += ["", "| check | result | detail |", "|---|---|---|"]
    for name, ok, detail in checks:
        lines.append(f"| {name} | {'PASS' if ok else 'FAIL'} | {detail} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python -m tmkd.bench.agents " + shlex.join(sys.argv[1:] if argv is None else argv)
    root = args.root or Path(tempfile.mkdtemp(prefix="tmkd-agents-"))
    agents, wall = run_agents(args, root)
    checks, rows = check(agents, root)
    text = markdown(command, args, agents, wall, checks, rows)
    print(text)
    print(f"agents' logs and folders: {root}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
