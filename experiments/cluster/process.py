"""Running the commands of the coordinator and of its tasks (git, dvc), and the guard that ties a
task's command to the Ray worker that started it."""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path

from experiments.cluster.errors import ClusterError

PROJECT = Path(__file__).resolve().parents[2]  # holds the experiments package
TAIL_LINES = 30


def command_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment for git and dvc: no analytics, no prompts, plus `extra`."""
    return {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_TERMINAL_PROMPT": "0", **(extra or {})}


def capture(cmd: list[str], cwd: str | Path) -> str:
    """Run a quick command, return its stdout; ClusterError with its output when it fails."""
    try:
        result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=command_env())
    except OSError as err:  # no such folder, or no such program
        raise ClusterError(f"cannot run `{' '.join(cmd)}` in {cwd}: {err}") from None
    if result.returncode:
        raise ClusterError(f"`{' '.join(cmd)}` failed in {cwd} (exit {result.returncode}):\n"
                           f"{result.stdout}{result.stderr}".rstrip())
    return result.stdout


def tail(text: str) -> str:
    """The last lines of a command's output, for a failure message."""
    return "\n".join(text.rstrip().splitlines()[-TAIL_LINES:])


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


def helper_code(module: str, name: str, call: str) -> str:
    """`python -c` code running `call` with `name` from this project's `module`, not a copy in the
    repository at hand (the child's working folder comes first on its sys.path)."""
    return f"import sys; sys.path.insert(0, {str(PROJECT)!r}); from {module} import {name}; {call}"


def run_guarded(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    """Run `cmd` under `guard`; return (exit code, stdout + stderr)."""
    script = helper_code(__name__, "guard", "sys.exit(guard(int(sys.argv[1]), sys.argv[2:]))")
    result = subprocess.run([sys.executable, "-c", script, str(os.getpid()), *cmd], cwd=cwd, env=env,
                            capture_output=True, text=True, start_new_session=True)
    return result.returncode, result.stdout + result.stderr
