"""Run the grid's pending cells as Ray tasks: one cell per task, each on its own GPU (or share).

    python -m experiments.cluster [--address auto|HOST:PORT] [--gpus-per-cell F] [--remote NAME]
                                  [--max-retries N] [--partial-dir DIR] [CELL ...]

From a clean git checkout with a DVC remote (docs/grid.md, "More than one machine"):

1. asks `dvc status` which `cell@...` stages need running (or only the CELL names or globs given);
2. makes sure the model stamps are on the remote: when `fetch_models` is pending it runs first,
   as one task (a model that cannot be fetched stops everything here, reported once);
3. runs one Ray task per cell. A task clones the repository at the current commit into its
   node's work folder, points the clone at the remote, runs `dvc repro --pull cell@X` (the
   stamps and any result already on the remote are pulled, not recomputed) and
   `dvc push --run-cache cell@X`. Ray gives it `--gpus-per-cell` GPUs and sets
   CUDA_VISIBLE_DEVICES to them; a fraction (0.25) packs cells on one GPU;
4. prints one line per cell started, finished or failed, and a total;
5. ends with `dvc repro --pull` here: every cell comes from the remote's run cache, only `score`
   runs. Then `dvc repro` runs nothing and `dvc status` is clean; commit dvc.lock and the metrics.

A task whose worker or node dies is retried (`--max-retries`) and resumes the cell from its last
saved frame: the cell works in `--partial-dir` (environment VQCLIP_PARTIAL_DIR), by default a
folder of the node's work folder; put it on storage every node mounts so retries on another node
resume too. A failure that retrying cannot fix (a model that cannot be fetched, bad settings,
disk full) is reported once with the cell's name and not retried.

Without `--address` a local Ray instance with this machine's GPUs runs the cells: one cell per
GPU on a multi-GPU box (DVC's experiment queue, which the retired `experiments.parallel` used,
sent every worker to GPU 0).
"""
from __future__ import annotations

import argparse
import ctypes
import fnmatch
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parent.parent  # holds this package
MODELS_STAGE = "fetch_models"  # dvc.yaml: makes the model stamps every cell depends on
PARTIAL_ENV = "VQCLIP_PARTIAL_DIR"  # experiments/grid.py: where cells in progress live
DEFAULT_WORK_DIR = Path(tempfile.gettempdir()) / "vqclip-cluster"
_TAIL_LINES = 30
_FAILED_RUN = re.compile(r"failed to run: .*, exited with (-?\d+)")
_DISK_FULL = ("No space left on device", "[Errno 28]")


class ClusterError(RuntimeError):
    """The grid cannot be sent to the cluster (dirty tree, no remote, bad option); nothing ran."""


class CellFailed(RuntimeError):
    """A stage failed in a way that retrying cannot fix; never retried."""


class CellCrashed(RuntimeError):
    """A stage's command died or a transfer failed; Ray retries the task."""


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


# ---------------------------------------------------------------- running commands

def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_TERMINAL_PROMPT": "0", **(extra or {})}


def _capture(cmd: list[str], cwd: str | Path) -> str:
    """Run a quick command, return its stdout; ClusterError with its output when it fails."""
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=_env())
    if result.returncode:
        raise ClusterError(f"`{' '.join(cmd)}` failed in {cwd} (exit {result.returncode}):\n"
                           f"{result.stdout}{result.stderr}".rstrip())
    return result.stdout


def guard(parent: int, cmd: list[str]) -> int:
    """Run `cmd` as a child; kill it with its whole process group when `parent` dies.

    A task's command (dvc, which starts the cell) must not outlive a killed Ray worker: it
    would keep the cell's partial folder locked. The guard leads its own process group, asks
    the kernel for SIGTERM when its parent dies (Linux prctl) and then kills the group.
    """
    signal.signal(signal.SIGTERM, lambda *_: os.killpg(0, signal.SIGKILL))
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # died before the prctl took effect
        return 1
    code = subprocess.run(cmd).returncode
    return code if code >= 0 else 128 - code


def _helper(call: str) -> str:
    """`python -c` code running `call` with this module, not a copy in the repository at hand
    (the child's working folder comes first on its sys.path)."""
    imports = f"import sys; sys.path.insert(0, {str(PROJECT)!r}); from experiments.cluster import guard, reproduce"
    return f"{imports}; {call}"


def _run_guarded(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    """Run `cmd` under `guard`; return (exit code, stdout + stderr)."""
    script = _helper("sys.exit(guard(int(sys.argv[1]), sys.argv[2:]))")
    result = subprocess.run([sys.executable, "-c", script, str(os.getpid()), *cmd], cwd=cwd, env=env,
                            capture_output=True, text=True, start_new_session=True)
    return result.returncode, result.stdout + result.stderr


def _tail(text: str) -> str:
    return "\n".join(text.rstrip().splitlines()[-_TAIL_LINES:])


def classify(stage: str, code: int, output: str) -> Exception:
    """CellFailed when retrying cannot help (the stage reported an error, or the disk is full),
    else CellCrashed (killed, crashed, a transfer that failed)."""
    ran = _FAILED_RUN.search(output)
    reported = ran is not None and ran.group(1) == "1" and re.search(r"^error: ", output, re.M)
    if reported or any(s in output for s in _DISK_FULL):
        return CellFailed(f"{stage} failed (not retried):\n{_tail(output)}")
    return CellCrashed(f"{stage} crashed (exit {code}):\n{_tail(output)}")


# ---------------------------------------------------------------- one task

def _clone(spec: TaskSpec, stage: str, env: dict[str, str]) -> Path:
    """A fresh clone of the coordinator's commit, its default DVC remote the coordinator's."""
    from dvc.config import Config

    clone = Path(spec.work_dir) / "clones" / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', stage)}-{spec.commit[:12]}"
    shutil.rmtree(clone, ignore_errors=True)  # left by an attempt that was killed on this node
    clone.parent.mkdir(parents=True, exist_ok=True)
    for cmd, cwd in ((["git", "clone", "-q", "--no-checkout", spec.repo_url, str(clone)], clone.parent),
                     (["git", "checkout", "-q", spec.commit], clone)):
        result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
        if result.returncode:
            raise CellFailed(f"{stage}: `{' '.join(cmd)}` failed on node {_node()} (not retried):\n"
                             f"{_tail(result.stdout + result.stderr)}")
    with Config(str(clone / ".dvc")).edit("local") as conf:  # = dvc remote add --local --default
        conf["remote"][spec.remote] = {"url": spec.remote_url}
        conf["core"]["remote"] = spec.remote
    return clone


def _node() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def _outcome(stage: str, output: str) -> str:
    if f"Running stage '{stage}'" in output:
        return "ran"
    return "from the remote"


def run_stage(spec: TaskSpec, stage: str, events: Any) -> dict[str, Any]:
    """The body of one Ray task: `stage` in a fresh clone, its results pushed to the remote."""
    import ray

    start = time.monotonic()
    info = {"stage": stage, "node": _node(), "pid": os.getpid(), "host": ray.util.get_node_ip_address(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    events.put.remote({"event": "started", **info})
    partial = spec.partial_dir or str(Path(spec.work_dir) / "partial")
    env = _env({**spec.env, PARTIAL_ENV: partial})
    clone = _clone(spec, stage, env)
    try:
        code, output = _run_guarded(["dvc", "repro", "--pull", stage], clone, env)
        if code:
            raise classify(stage, code, output)
        code, pushed = _run_guarded(["dvc", "push", "--run-cache", stage], clone, env)
        if code:
            raise CellCrashed(f"{stage}: `dvc push --run-cache` failed (exit {code}):\n{_tail(pushed)}")
    finally:
        shutil.rmtree(clone, ignore_errors=True)
    return {**info, "outcome": _outcome(stage, output), "seconds": time.monotonic() - start}


# ---------------------------------------------------------------- the coordinator

def check_clean(root: Path) -> str:
    """The commit the tasks will clone; ClusterError when the working tree differs from it."""
    dirty = _capture(["git", "status", "--porcelain", "--untracked-files=normal"], root)
    if dirty.strip():
        raise ClusterError("the git working tree has uncommitted changes; every task clones the current "
                           "commit, so they would not run what you see. Commit them (or stash them) first:\n"
                           + dirty.rstrip())
    return _capture(["git", "rev-parse", "HEAD"], root).strip()


def pending_stages(root: Path, patterns: list[str] | None = None) -> tuple[list[str], set[str]]:
    """(cells to run in grid order, every stage `dvc status` reports as changed).

    The cells are the grid's (`load_grid`, which checks params.yaml first); `patterns` (stage
    names or globs such as 'cell@tiny-*') limit them; one that matches no cell is an error."""
    from experiments.grid import PARAMS_FILE, GridError, load_grid

    try:
        cells = [cell.stage for cell in load_grid(root / PARAMS_FILE).cells]
    except GridError as err:
        raise ClusterError(str(err)) from None
    status = json.loads(_capture(["dvc", "status", "--json"], root) or "{}")
    changed = {key.rsplit(":", 1)[-1] for key in status}  # "dvc.yaml:cell@x" in a sub-folder's dvc.yaml
    if patterns:
        unknown = [p for p in patterns if not fnmatch.filter(cells, p)]
        if unknown:
            raise ClusterError(f"no cell matches {', '.join(map(repr, unknown))}; the cells are: {', '.join(cells)}")
        cells = [c for c in cells if any(fnmatch.fnmatchcase(c, p) for p in patterns)]
    return [c for c in cells if c in changed], changed


def resolve_remote(root: Path, name: str | None) -> tuple[str, str]:
    """(name, URL) of the DVC remote the tasks push to: `name`, else the default remote."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        remotes = repo.config.get("remote", {})
        name = name or repo.config.get("core", {}).get("remote")
        if not name:
            raise ClusterError("no DVC remote: the tasks hand their results back through one. Add one every "
                               "node can reach, e.g. `dvc remote add -d shared /mnt/shared/vqclip-dvc` "
                               "(or s3://..., ssh://...), commit .dvc/config, or pass --remote NAME")
        if name not in remotes:
            raise ClusterError(f"--remote {name!r}: no such DVC remote; configured: {', '.join(remotes) or 'none'}")
        return name, str(remotes[name]["url"])


def check_gpus(requested: float | None) -> None:
    """ClusterError unless `requested` is None, a fraction of one GPU or a whole number."""
    if requested is not None and (requested < 0 or (requested > 1 and requested != int(requested))):
        raise ClusterError(f"--gpus-per-cell {requested:g}: use a fraction of one GPU (e.g. 0.25: four cells "
                           "share a GPU), or a whole number of GPUs")


def gpus_per_cell(requested: float | None, nodes: list[dict]) -> float:
    """The GPUs each task asks Ray for: `requested`, or 1 where the cluster has GPUs, else 0."""
    per_node = max((n.get("Resources", {}).get("GPU", 0) for n in nodes if n.get("Alive")), default=0)
    if requested is None:
        return 1.0 if per_node else 0.0
    if requested > per_node:
        raise ClusterError(f"--gpus-per-cell {requested:g}: no node has that many GPUs (the most on one node: "
                           f"{per_node:g}); no cell could ever start")
    return requested


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


def _say(line: str) -> None:
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
        _say(f"{item['stage']} started{again} on {_where(item)}")


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
            try:
                result = ray.get(ref)
            except ray.exceptions.RayTaskError as err:  # raised in the task: CellFailed, CellCrashed, a bug
                report.failed[stage] = str(err.cause if isinstance(err.cause, (CellFailed, CellCrashed)) else err)
            except ray.exceptions.RayError as err:  # the worker or node died, retries used up
                report.failed[stage] = f"{stage}: {type(err).__name__}: {err}"
            else:
                report.finished[stage] = result
                _say(f"{stage} finished ({result['outcome']}) in {result['seconds']:.0f} s {count}")
                continue
            _say(f"{stage} FAILED {count}: {report.failed[stage]}")
    _show_events(events, report)


def collect(root: Path, remote: str, targets: list[str] | None = None) -> None:
    """`dvc repro --pull` in `root` with `remote` as the remote: restores what the tasks pushed.

    With `targets`, only those stages (`--single-item`), e.g. the cells that finished. (The CLI
    has no remote option for `repro --pull`; DVC's API has, so a fresh process runs it.)"""
    script = _helper("sys.exit(reproduce(*sys.argv[1:3], sys.argv[3:]))")
    result = subprocess.run([sys.executable, "-c", script, str(root), remote, *(targets or [])], cwd=root,
                            env=_env())
    if result.returncode:
        raise ClusterError(f"`dvc repro --pull` with remote {remote!r} failed in {root} (exit {result.returncode})")


def reproduce(root: str, remote: str, targets: list[str]) -> int:
    """`dvc repro --pull [--single-item TARGETS]` with `remote` as the remote, logging like the CLI."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo  # importing dvc sets up its console logging

    try:
        with Repo(root, remote=remote) as repo:
            repo.reproduce(targets or None, pull=True, single_item=bool(targets))
    except DvcException as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return 1
    return 0


def run_cluster(root: str | Path = ".", *, address: str | None = None, gpus: float | None = None,
                cpus: float = 1.0, remote: str | None = None, max_retries: int = 2, partial_dir: str | None = None,
                work_dir: str | Path = DEFAULT_WORK_DIR, repo_url: str | None = None,
                env: dict[str, str] | None = None, cells: list[str] | None = None) -> Report:
    """Run the pending cells of the repository at `root` on a Ray cluster; see the module doc."""
    import ray

    check_gpus(gpus)
    root = Path(_capture(["git", "rev-parse", "--show-toplevel"], root).strip())
    commit = check_clean(root)
    remote, remote_url = resolve_remote(root, remote)
    pending, changed = pending_stages(root, cells)
    report, start = Report(pending), time.monotonic()
    _say(f"{len(pending)} cell(s) to run at commit {commit[:12]}; results through DVC remote "
         f"{remote!r} ({remote_url})")
    if not pending:
        if not cells:
            collect(root, remote)  # whatever else is pending (score), as `dvc repro --pull` would
        return report
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    try:
        per_cell = gpus_per_cell(gpus, ray.nodes())
        _say(f"Ray: {len([n for n in ray.nodes() if n.get('Alive')])} node(s), "
             f"{ray.cluster_resources().get('GPU', 0):g} GPU(s); {per_cell:g} GPU(s) per cell")
        spec = TaskSpec(repo_url or str(root), commit, remote, remote_url, str(work_dir), partial_dir, env or {})
        if MODELS_STAGE in changed:
            run_tasks(spec, [MODELS_STAGE], report, gpus=0, cpus=cpus, max_retries=max_retries)
            if report.failed:
                _say(f"{MODELS_STAGE} failed, so no cell was started")
                return report
        else:
            _capture(["dvc", "push", "-r", remote, MODELS_STAGE], root)  # the stamps every cell pulls
        run_tasks(spec, pending, report, gpus=per_cell, cpus=cpus, max_retries=max_retries)
    finally:
        if started_ray:
            ray.shutdown()
    done = [s for s in pending if s in report.finished]
    ran = sum(report.finished[s]["outcome"] == "ran" for s in done)
    _say(f"total: {len(done)} of {len(pending)} cell(s) finished ({ran} ran, {len(done) - ran} from the remote), "
         f"{len(report.failed)} failed, in {time.monotonic() - start:.0f} s")
    if report.failed or cells:
        if report.failed:
            _say(f"failed: {', '.join(report.failed)}")
        if done:
            _say(f"restoring the {len(done)} finished cell(s) here: dvc repro --pull --single-item")
            collect(root, remote, [MODELS_STAGE, *done])
        return report
    _say("restoring the results here: dvc repro --pull")
    collect(root, remote)
    _say("done: `dvc status` is clean; commit dvc.lock and the metrics (git add -A && git commit)")
    return report


def _key_value(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"--env {text!r}: expected NAME=VALUE")
    return name, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.cluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cells", nargs="*", metavar="CELL", help="only these cells (stage names or globs)")
    parser.add_argument("--address", help="a running Ray cluster: auto, or HOST:PORT of its head "
                        "(default: start Ray here with this machine's GPUs)")
    parser.add_argument("--gpus-per-cell", type=float, help="GPUs per cell; a fraction packs cells on one GPU "
                        "(default: 1 where the cluster has GPUs, else 0)")
    parser.add_argument("--cpus-per-cell", type=float, default=1.0, help="CPUs per cell (default 1)")
    parser.add_argument("--remote", help="DVC remote the tasks push to (default: the default remote)")
    parser.add_argument("--max-retries", type=int, default=2, help="retries of a task whose worker or node "
                        "died (default 2); errors that retrying cannot fix are never retried")
    parser.add_argument("--partial-dir", default=os.environ.get(PARTIAL_ENV),
                        help=f"cells in progress, on storage every node mounts (default: ${PARTIAL_ENV}, "
                        "else a folder of each node's --work-dir: retries resume on the same node only)")
    parser.add_argument("--work-dir", default=str(DEFAULT_WORK_DIR), help="each node's scratch folder for the "
                        f"tasks' clones (default {DEFAULT_WORK_DIR})")
    parser.add_argument("--repo-url", help="where the nodes clone the repository from (default: this "
                        "checkout's path; on other machines, a shared path or a git URL holding this commit)")
    parser.add_argument("--env", type=_key_value, action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable for the tasks (repeatable), e.g. VQCLIP_CACHE=/shared/models")
    args = parser.parse_args(argv)
    if args.max_retries < 0:
        parser.error(f"--max-retries {args.max_retries}: use 0 or more")
    try:
        report = run_cluster(address=args.address, gpus=args.gpus_per_cell, cpus=args.cpus_per_cell,
                             remote=args.remote, max_retries=args.max_retries, partial_dir=args.partial_dir,
                             work_dir=args.work_dir, repo_url=args.repo_url, env=dict(args.env), cells=args.cells)
    except ClusterError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
