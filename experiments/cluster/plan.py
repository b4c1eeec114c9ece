"""What the coordinator sends: the commit, the DVC remote, the pending cells and the GPUs per cell.
Every check here runs before anything starts; a ClusterError says what to fix."""
from __future__ import annotations

import fnmatch
import json
from pathlib import Path

from experiments.cluster.errors import ClusterError
from experiments.cluster.process import capture


def repository_root(path: str | Path) -> Path:
    """The top folder of the git checkout holding `path`."""
    if not Path(path).is_dir():
        raise ClusterError(f"{path}: no such folder; run from your checkout of the project")
    try:
        return Path(capture(["git", "rev-parse", "--show-toplevel"], path).strip())
    except ClusterError:
        raise ClusterError(f"{Path(path).resolve()}: not inside a git checkout; run from your checkout of the "
                           "project (a git + DVC repository)") from None


def check_clean(root: Path) -> str:
    """The commit the tasks will clone; ClusterError when the working tree differs from it."""
    dirty = [line[3:] for line in capture(["git", "status", "--porcelain", "--untracked-files=normal"],
                                           root).splitlines() if line.strip()]
    if dirty:
        shown = ", ".join(dirty[:5]) + (f" and {len(dirty) - 5} more" if len(dirty) > 5 else "")
        raise ClusterError(f"{root}: the git working tree has uncommitted changes ({shown}); every task clones "
                           "the current commit, so they would not run what you see: commit them first")
    return capture(["git", "rev-parse", "HEAD"], root).strip()


def pending_stages(root: Path, patterns: list[str] | None = None) -> tuple[list[str], set[str]]:
    """(cells to run in grid order, every stage `dvc status` reports as changed).

    The cells are the grid's (`load_grid`, which checks params.yaml first); `patterns` (stage
    names or globs such as 'cell@tiny-*') limit them; one that matches no cell is an error."""
    from experiments.grid import PARAMS_FILE, GridError, load_grid

    try:
        cells = [cell.stage for cell in load_grid(root / PARAMS_FILE).cells]
    except GridError as err:
        raise ClusterError(str(err)) from None
    status = json.loads(capture(["dvc", "status", "--json"], root) or "{}")
    changed = {key.rsplit(":", 1)[-1] for key in status}  # "dvc.yaml:cell@x" in a sub-folder's dvc.yaml
    if patterns:
        unknown = [p for p in patterns if not fnmatch.filter(cells, p)]
        if unknown:
            raise ClusterError(f"no cell matches {', '.join(map(repr, unknown))}; the cells are: {', '.join(cells)}")
        cells = [c for c in cells if any(fnmatch.fnmatchcase(c, p) for p in patterns)]
    return [c for c in cells if c in changed], changed


def resolve_remote(root: Path, name: str | None) -> tuple[str, str]:
    """(name, URL) of the DVC remote the tasks push to: `name`, else the default remote."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(str(root)) as repo:
            remotes = repo.config.get("remote", {})
            name = name or repo.config.get("core", {}).get("remote")
    except DvcException as err:
        raise ClusterError(f"{root}: {err}; run from a checkout of the project (a DVC repository)") from None
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
