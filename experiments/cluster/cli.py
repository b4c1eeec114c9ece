"""`python -m experiments.cluster`: the command line of the coordinator."""
from __future__ import annotations

import argparse
import os

from engine.cli import Parser, error_boundary
from experiments.cluster.coordinator import DEFAULT_WORK_DIR, run_cluster
from experiments.grid import PARTIAL_ENV


def _key_value(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"--env {text!r}: expected NAME=VALUE")
    return name, value


def parser() -> argparse.ArgumentParser:
    from experiments import cluster

    p = Parser(prog="python -m experiments.cluster", description=cluster.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cells", nargs="*", metavar="CELL", help="only these cells (stage names or globs)")
    p.add_argument("--address", help="a running Ray cluster: auto, or HOST:PORT of its head "
                   "(default: start Ray here with this machine's GPUs)")
    p.add_argument("--gpus-per-cell", type=float, help="GPUs per cell; a fraction packs cells on one GPU "
                   "(default: 1 where the cluster has GPUs, else 0)")
    p.add_argument("--cpus-per-cell", type=float, default=1.0, help="CPUs per cell (default 1)")
    p.add_argument("--remote", help="DVC remote the tasks push to (default: the default remote)")
    p.add_argument("--max-retries", type=int, default=2, help="retries of a task whose worker or node "
                   "died (default 2); errors that retrying cannot fix are never retried")
    p.add_argument("--partial-dir", default=os.environ.get(PARTIAL_ENV),
                   help=f"cells in progress, on storage every node mounts (default: ${PARTIAL_ENV}, "
                   "else a folder of each node's --work-dir: retries resume on the same node only)")
    p.add_argument("--work-dir", default=str(DEFAULT_WORK_DIR), help="each node's scratch folder for the "
                   f"tasks' clones (default {DEFAULT_WORK_DIR})")
    p.add_argument("--repo-url", help="where the nodes clone the repository from (default: this "
                   "checkout's path; on other machines, a shared path or a git URL holding this commit)")
    p.add_argument("--env", type=_key_value, action="append", default=[], metavar="NAME=VALUE",
                   help="an environment variable for the tasks (repeatable), e.g. VQCLIP_CACHE=/shared/models")
    return p


def main(argv: list[str] | None = None) -> int:
    command = parser()
    args = command.parse_args(argv)
    if args.max_retries < 0:
        command.error(f"--max-retries {args.max_retries}: use 0 or more")
    return error_boundary(lambda: 0 if run_cluster(
        address=args.address, gpus=args.gpus_per_cell, cpus=args.cpus_per_cell, remote=args.remote,
        max_retries=args.max_retries, partial_dir=args.partial_dir, work_dir=args.work_dir,
        repo_url=args.repo_url, env=dict(args.env), cells=args.cells).ok else 1)
