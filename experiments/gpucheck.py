"""`python -m experiments.gpucheck [--device cuda:N]`, from a clone of the project: the whole GPU
acceptance run. It is `python -m engine gpucheck`'s report (the engine alone) with what needs the
clone around it: the CUDA tests of tests/ and two demo cells through `experiments.cluster`, half
a GPU each. Run it from the clone's root; each part reports under its title.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from engine.cli import Parser, error_boundary
from engine.errors import InputError

CUDA_TEST_FILES = ["tests/test_cuda_logic.py", "tests/test_cutouts.py", "tests/test_animation.py"]


def cuda_tests(device: object, work: Path) -> list[str]:
    """pytest on the clone's CUDA tests (they skip without CUDA)."""
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-k", "cuda", *CUDA_TEST_FILES],
                          capture_output=True, text=True, timeout=600)
    return done.stdout.strip().splitlines()[-3:] or [f"pytest exited {done.returncode}: {done.stderr[-500:]}"]


def cluster_grid(device: object, work: Path) -> list[str]:
    """Two tiny cells of the demo grid through experiments.cluster, half a GPU each."""
    from experiments import demo

    repo = demo.create_demo(work / "demo")
    for command in (["dvc", "remote", "add", "-d", "shared", str(work / "remote")],
                    ["git", "commit", "-qam", "shared DVC remote"]):
        subprocess.run(command, cwd=repo, check=True, capture_output=True)
    done = subprocess.run([sys.executable, "-m", "experiments.cluster", "cell@tiny-tiny-vit", "cell@tiny-tiny-rn",
                           "--gpus-per-cell", "0.5", "--work-dir", str(work / "cluster-work")],
                          cwd=repo, capture_output=True, text=True, timeout=400)
    return [f"exit {done.returncode}", *done.stdout.strip().splitlines()[-6:],
            *(done.stderr.strip().splitlines()[-4:] if done.returncode else [])]


def acceptance(args: argparse.Namespace) -> None:
    """The report: the CUDA tests, the engine's parts, the cluster grid."""
    from engine import gpucheck

    if not all(Path(f).is_file() for f in CUDA_TEST_FILES):
        raise InputError(f"{Path.cwd()}: no {CUDA_TEST_FILES[0]}; run from the root of a clone of the project "
                         "(`python -m engine gpucheck` checks an installed engine alone)")
    parts = [("CUDA tests", cuda_tests), *gpucheck.PARTS,
             ("2-cell grid through experiments.cluster, --gpus-per-cell 0.5", cluster_grid)]
    print(gpucheck.report(gpucheck.cuda_device(args.device), parts))


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m experiments.gpucheck", description=__doc__)
    parser.add_argument("--device", default="cuda", help="the CUDA device to check (default: cuda)")
    args = parser.parse_args(argv)
    return error_boundary(lambda: acceptance(args))


if __name__ == "__main__":
    sys.exit(main())
