"""Bring what the tasks pushed into the coordinator's checkout: `dvc repro --pull` from the remote."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from experiments.cluster.errors import ClusterError
from experiments.cluster.process import command_env, helper_code


def collect(root: Path, remote: str, targets: list[str] | None = None) -> None:
    """`dvc repro --pull` in `root` with `remote` as the remote: restores what the tasks pushed.

    With `targets`, only those stages (`--single-item`), e.g. the cells that finished. (The CLI
    has no remote option for `repro --pull`; DVC's API has, so a fresh process runs it.)"""
    script = helper_code(__name__, "reproduce", "sys.exit(reproduce(*sys.argv[1:3], sys.argv[3:]))")
    result = subprocess.run([sys.executable, "-c", script, str(root), remote, *(targets or [])], cwd=root,
                            env=command_env())
    if result.returncode:
        raise ClusterError(f"`dvc repro --pull` with remote {remote!r} failed in {root} (exit {result.returncode}); "
                           "fix the error above, then run `dvc repro --pull` there")


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
