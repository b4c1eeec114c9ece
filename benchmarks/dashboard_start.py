"""Benchmark: how long `python -m dashboard catalog` takes to start and list the 40-cell study.

    python benchmarks/dashboard_start.py [--vqgans 5] [--perceptors 8] [--frames 40] [--repeat 3]
        [--root DIR] [--python-path DIR]

Builds the study's shape as fixture run folders (tests/dashboard_fixtures.py: 5 VQGANs x 8
perceptors, 40 frames of 256x128, a loss row per step), then runs the CLI as a fresh process
`--repeat` times and prints the wall time of each, its peak memory, and whether torch was
imported. `--root` keeps the built root there (built once, reused when it exists);
`--python-path` runs another checkout's dashboard on the same root (a before/after comparison).
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from dashboard_fixtures import make_grid  # noqa: E402

PROBE = ("import runpy, sys; sys.argv = ['dashboard', 'catalog', '--root', sys.argv[1]]\n"
         "try:\n    runpy.run_module('dashboard', run_name='__main__')\n"
         "except SystemExit:\n    pass\n"
         "print('torch imported' if 'torch' in sys.modules else 'no torch', file=sys.stderr)")


def build(root: Path, vqgans: int, perceptors: int, frames: int) -> None:
    make_grid(root, [f"vq{i}" for i in range(vqgans)], [f"P{j}" for j in range(perceptors)],
              frames, size=(256, 128), noise=8)


def time_catalog(root: Path, python_path: Path) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in MB, torch note) of one `dashboard catalog` process."""
    env = {**os.environ, "PYTHONPATH": str(python_path)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", PROBE, str(root)], cwd=python_path, env=env,
                            capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, max(peak, before) / 1024, result.stderr.strip().splitlines()[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vqgans", type=int, default=5)
    parser.add_argument("--perceptors", type=int, default=8)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--root", type=Path, help="build the root here and keep it")
    parser.add_argument("--python-path", type=Path, default=REPO,
                        help="the checkout whose dashboard runs (default: this one)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or Path(tmp) / "runs"
        if not root.is_dir():
            build(root, args.vqgans, args.perceptors, args.frames)
        print(f"{args.python_path}: dashboard catalog of {root} "
              f"({args.vqgans} x {args.perceptors} cells, {args.frames} frames)")
        for k in range(args.repeat):
            wall, peak, torch = time_catalog(root, args.python_path)
            print(f"  run {k + 1}: {wall:.2f} s, peak (max so far) {peak:.0f} MB, {torch}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
