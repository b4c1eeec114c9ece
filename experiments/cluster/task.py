"""One Ray task, on its node: clone the coordinator's commit, run one stage, push its results,
and tell failures that retrying cannot fix from crashes that it can."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.cluster.errors import CellCrashed, CellFailed
from experiments.cluster.process import command_env, run_guarded, tail
from experiments.grid import PARTIAL_ENV

_FAILED_RUN = re.compile(r"failed to run: .*, exited with (-?\d+)")
_DISK_FULL = ("No space left on device", "[Errno 28]")


@dataclass(frozen=True)
class TaskSpec:
    """What every task needs to rebuild the coordinator's repository on its node."""

    repo_url: str  # a path or URL git can clone on every node
    commit: str
    remote: str  # DVC remote name and URL, set as the clone's default remote
    remote_url: str
    work_dir: str  # on each node: clones, and the default partial folder
    partial_dir: str | None = None  # shared storage: retries on any node resume
    env: dict[str, str] = field(default_factory=dict)


def classify(stage: str, code: int, output: str) -> Exception:
    """CellFailed when retrying cannot help (the stage reported an error, or the disk is full),
    else CellCrashed (killed, crashed, a transfer that failed)."""
    ran = _FAILED_RUN.search(output)
    reported = ran is not None and ran.group(1) == "1" and re.search(r"^error: ", output, re.M)
    if reported or any(s in output for s in _DISK_FULL):
        return CellFailed(f"{stage} failed (not retried):\n{tail(output)}")
    return CellCrashed(f"{stage} crashed (exit {code}):\n{tail(output)}")


def clone(spec: TaskSpec, stage: str, env: dict[str, str]) -> Path:
    """A fresh clone of the coordinator's commit, its default DVC remote the coordinator's."""
    from dvc.config import Config

    path = Path(spec.work_dir) / "clones" / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', stage)}-{spec.commit[:12]}"
    shutil.rmtree(path, ignore_errors=True)  # left by an attempt that was killed on this node
    path.parent.mkdir(parents=True, exist_ok=True)
    for cmd, cwd in ((["git", "clone", "-q", "--no-checkout", spec.repo_url, str(path)], path.parent),
                     (["git", "checkout", "-q", spec.commit], path)):
        result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
        if result.returncode:
            raise CellFailed(f"{stage}: `{' '.join(cmd)}` failed on node {node_id()} (not retried):\n"
                             f"{tail(result.stdout + result.stderr)}")
    with Config(str(path / ".dvc")).edit("local") as conf:  # = dvc remote add --local --default
        conf["remote"][spec.remote] = {"url": spec.remote_url}
        conf["core"]["remote"] = spec.remote
    return path


def node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def run_stage(spec: TaskSpec, stage: str, events: Any) -> dict[str, Any]:
    """The body of one Ray task: `stage` in a fresh clone, its results pushed to the remote."""
    import ray

    start = time.monotonic()
    info = {"stage": stage, "node": node_id(), "pid": os.getpid(), "host": ray.util.get_node_ip_address(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    events.put.remote({"event": "started", **info})
    partial = spec.partial_dir or str(Path(spec.work_dir) / "partial")
    env = command_env({**spec.env, PARTIAL_ENV: partial})
    work = clone(spec, stage, env)
    try:
        code, output = run_guarded(["dvc", "repro", "--pull", stage], work, env)
        if code:
            raise classify(stage, code, output)
        code, pushed = run_guarded(["dvc", "push", "--run-cache", stage], work, env)
        if code:
            raise CellCrashed(f"{stage}: `dvc push --run-cache` failed (exit {code}):\n{tail(pushed)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    outcome = "ran" if f"Running stage '{stage}'" in output else "from the remote"
    return {**info, "outcome": outcome, "seconds": time.monotonic() - start}
