"""The coordinator: send the pending cells to Ray as tasks, print their progress, restore the results."""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.cluster.errors import CellCrashed, CellFailed, ClusterError
from experiments.cluster.plan import (
    check_clean, check_gpus, gpus_per_cell, pending_stages, repository_root, resolve_remote,
)
from experiments.cluster.process import capture
from experiments.cluster.restore import collect
from experiments.cluster.task import TaskSpec, run_stage

MODELS_STAGE = "fetch_models"  # dvc.yaml: makes the model stamps every cell depends on
DEFAULT_WORK_DIR = Path(tempfile.gettempdir()) / "vqclip-cluster"


@dataclass
class Report:
    """The outcome of one cluster run."""

    pending: list[str]
    attempts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # stage → "started" events
    finished: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage → task result
    failed: dict[str, str] = field(default_factory=dict)  # stage → reason

    @property
    def ok(self) -> bool:
        return not self.failed


def _events_actor() -> Any:
    import ray

    @ray.remote(num_cpus=0)
    class Events:
        """Tasks report here when they start; the coordinator prints the lines."""

        def __init__(self) -> None:
            self.items: list[dict] = []

        def put(self, item: dict) -> None:
            self.items.append(item)

        def take(self) -> list[dict]:
            items, self.items = self.items, []
            return items

    return Events.remote()


def say(line: str) -> None:
    print(f"cluster: {line}", flush=True)


def _where(info: dict) -> str:
    gpus = info.get("cuda_visible_devices")
    return f"node {info['host']} {info['node'][:8]}" + (f", GPU {gpus}" if gpus else "")


def _show_events(events: Any, report: Report) -> None:
    import ray

    for item in ray.get(events.take.remote()):
        tries = report.attempts.setdefault(item["stage"], [])
        tries.append(item)
        again = f" again (attempt {len(tries)})" if len(tries) > 1 else ""
        say(f"{item['stage']} started{again} on {_where(item)}")


def _failure(stage: str, ref: Any) -> str | None:
    """Why the task `ref` failed, or None (its result is then ready)."""
    import ray

    try:
        ray.get(ref)
    except ray.exceptions.RayTaskError as err:  # raised in the task: CellFailed, CellCrashed, a bug
        return str(err.cause if isinstance(err.cause, (CellFailed, CellCrashed)) else err)
    except ray.exceptions.RayError as err:  # the worker or node died, retries used up
        return f"{stage}: {type(err).__name__}: {err}"
    return None


def run_tasks(spec: TaskSpec, stages: list[str], report: Report, *, gpus: float, cpus: float,
              max_retries: int) -> None:
    """Run `stages` as Ray tasks, printing progress; fills `report`."""
    import ray

    remote = ray.remote(run_stage)
    events = _events_actor()
    options = {"num_gpus": gpus, "num_cpus": cpus, "max_retries": max_retries,
               "retry_exceptions": [CellCrashed], "scheduling_strategy": "SPREAD"}
    running = {remote.options(name=stage, **options).remote(spec, stage, events): stage for stage in stages}
    while running:
        count = f"[{len(stages) - len(running) + 1}/{len(stages)}]"
        done, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
        _show_events(events, report)
        for ref in done:
            stage = running.pop(ref)
            reason = _failure(stage, ref)
            if reason is None:
                result = report.finished[stage] = ray.get(ref)
                say(f"{stage} finished ({result['outcome']}) in {result['seconds']:.0f} s {count}")
            else:
                report.failed[stage] = reason
                say(f"{stage} FAILED {count}: {reason}")
    _show_events(events, report)


def _start_ray(address: str | None) -> None:
    """Join the Ray cluster at `address` (None: start one here); ClusterError when there is none."""
    import ray

    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    except ConnectionError as err:
        reason = " ".join(str(err).split())
        raise ClusterError(f"--address {address}: no Ray cluster there ({reason}); start one with "
                           "`ray start --head`, or leave --address out to start Ray here") from None


def _run_on_ray(root: Path, spec: TaskSpec, report: Report, changed: set[str], *, address: str | None,
                gpus: float | None, cpus: float, max_retries: int) -> None:
    """The model stamps (a task when fetch_models is pending, else pushed from here), then the cells."""
    import ray

    started_ray = not ray.is_initialized()
    if started_ray:
        _start_ray(address)
    try:
        per_cell = gpus_per_cell(gpus, ray.nodes())
        say(f"Ray: {len([n for n in ray.nodes() if n.get('Alive')])} node(s), "
            f"{ray.cluster_resources().get('GPU', 0):g} GPU(s); {per_cell:g} GPU(s) per cell")
        if MODELS_STAGE in changed:
            run_tasks(spec, [MODELS_STAGE], report, gpus=0, cpus=cpus, max_retries=max_retries)
            if report.failed:
                say(f"{MODELS_STAGE} failed, so no cell was started")
                return
        else:
            capture(["dvc", "push", "-r", spec.remote, MODELS_STAGE], root)  # the stamps every cell pulls
        run_tasks(spec, report.pending, report, gpus=per_cell, cpus=cpus, max_retries=max_retries)
    finally:
        if started_ray:
            ray.shutdown()


def _restore(root: Path, remote: str, report: Report, *, seconds: float, only_some: bool) -> None:
    """Print the total and restore the results here: everything, or only the finished cells when
    some failed or only some cells were asked for."""
    done = [s for s in report.pending if s in report.finished]
    ran = sum(report.finished[s]["outcome"] == "ran" for s in done)
    say(f"total: {len(done)} of {len(report.pending)} cell(s) finished ({ran} ran, {len(done) - ran} from the "
        f"remote), {len(report.failed)} failed, in {seconds:.0f} s")
    if report.failed or only_some:
        if report.failed:
            say(f"failed: {', '.join(report.failed)}")
        if done:
            say(f"restoring the {len(done)} finished cell(s) here: dvc repro --pull --single-item")
            collect(root, remote, [MODELS_STAGE, *done])
        return
    say("restoring the results here: dvc repro --pull")
    collect(root, remote)
    say("done: `dvc status` is clean; commit dvc.lock and the metrics (git add -A && git commit)")


def run_cluster(root: str | Path = ".", *, address: str | None = None, gpus: float | None = None,
                cpus: float = 1.0, remote: str | None = None, max_retries: int = 2, partial_dir: str | None = None,
                work_dir: str | Path = DEFAULT_WORK_DIR, repo_url: str | None = None,
                env: dict[str, str] | None = None, cells: list[str] | None = None) -> Report:
    """Run the pending cells of the repository at `root` on a Ray cluster (the package doc says how)."""
    check_gpus(gpus)
    root = repository_root(root)
    commit = check_clean(root)
    remote, remote_url = resolve_remote(root, remote)
    pending, changed = pending_stages(root, cells)
    report, start = Report(pending), time.monotonic()
    say(f"{len(pending)} cell(s) to run at commit {commit[:12]}; results through DVC remote "
        f"{remote!r} ({remote_url})")
    if not pending:
        if not cells:
            collect(root, remote)  # whatever else is pending (the scoring stages), as `dvc repro --pull` would
        return report
    spec = TaskSpec(repo_url or str(root), commit, remote, remote_url, str(work_dir), partial_dir, env or {})
    _run_on_ray(root, spec, report, changed, address=address, gpus=gpus, cpus=cpus, max_retries=max_retries)
    if MODELS_STAGE in report.failed:
        return report
    _restore(root, remote, report, seconds=time.monotonic() - start, only_some=bool(cells))
    return report
