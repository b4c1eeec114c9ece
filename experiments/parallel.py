"""Run the grid's pending cells in parallel through DVC's experiment queue, then collect them.

    python -m experiments.parallel --jobs N

`dvc repro` runs one stage at a time, and a second `dvc repro` in the same workspace waits on
the first one's lock, so DVC's way to run cells side by side on one machine is its experiment
queue. This command:

1. checks the grid and runs `dvc repro fetch_models` here, so every model is fetched once
   before any worker starts;
2. asks `dvc status` which cells need running and splits them into N groups;
3. queues one experiment per group (`dvc exp run --queue cell@a cell@b ...`) and starts N
   workers (`dvc queue start -j N`); each runs in its own temporary copy of the repository;
4. waits for them, then runs `dvc repro` here: every queued cell is restored from DVC's run
   cache ("Stage 'cell@...' is cached - skipping run"), nothing is computed twice, and the
   score stage runs on the whole grid.

The queued experiments stay listed in `dvc exp show` (remove them with `dvc exp remove -A` or
`dvc exp remove NAME`); their logs are in `dvc queue logs NAME`. Needs a git repository with at
least one commit (the queue starts from the workspace as it is, uncommitted changes included).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

from experiments.grid import PARAMS_FILE, GridError, load_grid

_QUEUED = re.compile(r"Queued experiment '([^']+)'")
ACTIVE = ("Queued", "Running")


def _dvc(*args: str, capture: bool = True, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run(["dvc", *args], capture_output=capture, text=True, env=env)
    if check and result.returncode:
        output = (result.stdout or "") + (result.stderr or "") if capture else ""
        raise RuntimeError(f"`dvc {' '.join(args)}` failed (exit {result.returncode})\n{output}".rstrip())
    return result


def pending_cells(grid_stages: list[str]) -> list[str]:
    """The cell stages that `dvc status` reports as changed, in grid order."""
    status = json.loads(_dvc("status", "--json").stdout or "{}")
    return [stage for stage in grid_stages if stage in status]


def split(stages: list[str], groups: int) -> list[list[str]]:
    """Round-robin `stages` into at most `groups` non-empty groups."""
    groups = max(1, min(groups, len(stages)))
    return [stages[i::groups] for i in range(groups)]


def queue_status(names: list[str]) -> dict[str, str]:
    """name → status ("Queued", "Running", "Success", "Failed", ...) of the given experiments."""
    text = _dvc("queue", "status").stdout
    result = {}
    for line in text.splitlines():
        parts = line.split()
        for name in names:
            if name in parts:
                result[name] = parts[-1]
    return result


def run_parallel(jobs: int, *, params: str = PARAMS_FILE, poll_s: float = 5.0, collect: bool = True,
                 dry_run: bool = False) -> list[str]:
    """Queue the pending cells in `jobs` experiments, run them, collect them; returns the experiment names."""
    grid = load_grid(params)
    print(f"parallel: {len(grid.cells)} cells; fetching models once (dvc repro fetch_models)", flush=True)
    if not dry_run:
        _dvc("repro", "fetch_models", capture=False)
    stages = pending_cells([c.stage for c in grid.cells])
    groups = split(stages, jobs) if stages else []
    for i, group in enumerate(groups):
        print(f"parallel: experiment {i + 1}/{len(groups)}: {' '.join(group)}", flush=True)
    if dry_run or not groups:
        if not groups:
            print("parallel: no cell needs running")
        if collect and not dry_run:
            _dvc("repro", capture=False)
        return []
    names = []
    for group in groups:
        result = _dvc("exp", "run", "--queue", *group)
        out = (result.stdout or "") + (result.stderr or "")
        match = _QUEUED.search(out)
        if not match:
            raise RuntimeError(f"could not read the queued experiment's name from: {out!r}")
        names.append(match.group(1))
    _dvc("queue", "start", "-j", str(len(groups)), capture=False)
    start, last = time.monotonic(), None
    while True:
        status = queue_status(names)
        summary = ", ".join(f"{n}: {status.get(n, '?')}" for n in names)
        if summary != last:
            print(f"parallel: [{time.monotonic() - start:5.0f} s] {summary}", flush=True)
            last = summary
        if status and all(status.get(n) not in ACTIVE for n in names):
            break
        time.sleep(poll_s)
    failed = [n for n in names if status.get(n) != "Success"]
    if failed:
        raise RuntimeError(f"experiment(s) {', '.join(failed)} did not succeed; see `dvc queue logs NAME`")
    if collect:
        print("parallel: collecting the cells from the run cache (dvc repro)", flush=True)
        _dvc("repro", capture=False)
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.parallel", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-j", "--jobs", type=int, default=2, help="experiments (and workers) at once")
    parser.add_argument("--params", default=PARAMS_FILE)
    parser.add_argument("--no-collect", action="store_true", help="do not run `dvc repro` at the end")
    parser.add_argument("--dry-run", action="store_true", help="only show how the cells would be split")
    parser.add_argument("--poll", type=float, default=5.0, help="seconds between queue checks")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")
    try:
        run_parallel(args.jobs, params=args.params, poll_s=args.poll, collect=not args.no_collect,
                     dry_run=args.dry_run)
    except (GridError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
