"""Benchmark: what `dashboard catalog --json` and a served page's re-read cost at 40, 200, 1000 runs.

    python benchmarks/catalog_scale.py [--runs 40 200 1000] [--keep DIR] [--python-path DIR]

Builds the 40-cell study (tests/dashboard_fixtures.py: 5 VQGANs x 8 perceptors, 40 frames of
256x128, a loss row per step) once, then roots of N runs: the study copied as N/40 experiments,
each copy a real run folder written through `engine.runfolder.RunFolder` (sidecar, losses.csv,
metrics.json) with its frames hard-linked. For each root it prints, for fresh processes of
`python -m dashboard catalog --root R --json` (run from `--python-path`, default this checkout):
- cold: no index on disk (a first read);
- again: a second process (with the on-disk index, where the checkout has one);
- changed: a process after one run got a new frame;
and `live`: in one process, the re-read of `dashboard.state.RootState.catalog` (as a served page
polls) after one run changed.
Then the growth per run between the smallest and the largest root. With `--page`, it serves the
largest root (`dashboard serve`, from `--python-path`) to headless Chromium (1366x768) and prints
the seconds from opening the page to its first frame drawn and to its fingerprint cards shown
(computed in the background), the ←/→
latency (key press to the step label moved, as Playwright sees it) and the seconds from a new
run folder written (into the experiment shown) to its tile on the page.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from dashboard_fixtures import (  # noqa: E402
    CHROMIUM, CHROMIUM_ARGS, STUDY, copy_run, free_port, make_grid, running, write_frame,
)

CELLS = 40
#: One fresh process: the CLI's wall time and peak RSS (stdout discarded).
CLI = ("import resource, runpy, sys, time, io, contextlib\n"
       "sys.argv = ['dashboard', 'catalog', '--root', sys.argv[1], '--json']\n"
       "t = time.perf_counter()\n"
       "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
       "    try:\n        runpy.run_module('dashboard', run_name='__main__')\n"
       "    except SystemExit:\n        pass\n"
       "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,"
       " len(out.getvalue()))\n")
#: One process: the live re-read after one run changed (argv: root, folder of the changed run).
LIVE = ("import sys, time\nsys.path.insert(0, sys.argv[3])\n"
        "from dashboard_fixtures import write_frame\n"
        "from dashboard.state import RootState\n"
        "state = RootState.open(sys.argv[1])\n"
        "state.catalog()\n"
        "write_frame(__import__('pathlib').Path(sys.argv[2]), (9, 9, 9), (256, 128))\n"
        "t = time.perf_counter(); state.catalog(); print(time.perf_counter() - t)\n")


def build(root: Path, runs: int, study: list[Path]) -> None:
    """A root of `runs` runs: the study copied as `runs / 40` experiments."""
    root.mkdir(parents=True)
    for e in range(runs // CELLS):
        for template in study:
            copy_run(template, root, f"{STUDY}-{e:03d}")


def cli(root: Path, python_path: Path, cache: Path) -> tuple[float, float, int]:
    """(seconds, peak MB, bytes printed) of one `dashboard catalog --json` process."""
    env = {**os.environ, "PYTHONPATH": str(python_path), "DASHBOARD_CACHE": str(cache)}
    out = subprocess.run([sys.executable, "-c", CLI, str(root)], cwd=python_path, env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), float(out[1]), int(out[2])


def live(root: Path, python_path: Path, cache: Path, frame: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(python_path), "DASHBOARD_CACHE": str(cache)}
    out = subprocess.run([sys.executable, "-c", LIVE, str(root), str(frame), str(REPO / "tests")],
                         cwd=python_path, env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


def new_frame(root: Path, k: int) -> Path:
    """Path of a new frame (written by the caller) for the first run of `root`."""
    folder = sorted(p for p in root.iterdir() if p.is_dir())[0]
    return folder / f"{folder.name}_{1000 + k}.png"


def measure(root: Path, runs: int, python_path: Path, work: Path) -> tuple[float, float]:
    """Print one root's row; return its cold (seconds, MB)."""
    cache = work / f"cache-{runs}"
    cold = cli(root, python_path, cache)
    again = cli(root, python_path, cache)
    write_frame(new_frame(root, 0), (9, 9, 9), (256, 128))
    changed = cli(root, python_path, cache)
    re_read = live(root, python_path, cache, new_frame(root, 1))
    for k in (0, 1):
        new_frame(root, k).unlink()
    print(f"{runs:5d} | {cold[0]:6.2f} s {cold[1]:6.0f} MB | {again[0]:6.2f} s {again[1]:6.0f} MB"
          f" | {changed[0]:6.2f} s {changed[1]:6.0f} MB | {re_read:6.3f} s | "
          f"{cold[2] / 1e6:7.1f} MB", flush=True)
    return cold[0], cold[1]


#: `dashboard serve` of another checkout: argv[1] goes first on sys.path.
SERVE = ("import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); sys.argv[0] = 'dashboard'; "
         "runpy.run_module('dashboard', run_name='__main__')")
FIRST_FRAME = ("window.gridPlayer && gridPlayer.tiles.some((t) => t.pic.el.complete && "
               "t.pic.el.naturalWidth > 0)")
CARDS = "gridPlayer.gridEl.querySelector('.dp-card') !== null"  # fingerprints computed in the background


def page_figures(root: Path, python_path: Path, study: list[Path]) -> None:
    """Print the page's first frame, ←/→ latency and new-run delay for `root`."""
    from playwright.sync_api import sync_playwright

    port = free_port()
    command = [sys.executable, "-c", SERVE, str(python_path), "serve", "--root", str(root),
               "--port", str(port)]
    with running(command, port, timeout=600), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1366, "height": 768})
        start = time.perf_counter()
        page.goto(f"http://127.0.0.1:{port}/", timeout=600_000)
        page.wait_for_function(FIRST_FRAME, timeout=600_000, polling=50)
        first = time.perf_counter() - start
        cards = None
        if (python_path / "dashboard" / "fingerprints.py").is_file():  # a checkout with fingerprints
            page.wait_for_function(CARDS, timeout=600_000, polling=100)
            cards = time.perf_counter() - start
        tiles = page.evaluate("gridPlayer.tiles.length")
        keys = []
        for _ in range(10):
            label = page.evaluate("gridPlayer.label.textContent")
            t0 = time.perf_counter()
            page.keyboard.press("ArrowRight")
            page.wait_for_function(f"gridPlayer.label.textContent !== {label!r}", polling=10)
            keys.append(time.perf_counter() - t0)
        shown = page.evaluate("gridPlayer.grid.cells[0].id").split("__")[0]
        t0 = time.perf_counter()
        new = copy_run(study[0], root, shown, vqgan="vqnew")
        page.wait_for_function(f"gridPlayer.cells.has({new.name!r})", timeout=600_000,
                               polling=50)
        appear = time.perf_counter() - t0
        browser.close()
    for path in new.iterdir():
        path.unlink()
    new.rmdir()
    prints = "no fingerprints" if cards is None else f"fingerprint cards shown {cards:.1f} s after opening"
    print(f"page ({tiles} tiles on opening): first frame {first:.1f} s; {prints}; ←/→ median "
          f"{statistics.median(keys):.3f} s, max {max(keys):.3f} s; new run shown after "
          f"{appear:.1f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[40, 200, 1000])
    parser.add_argument("--keep", type=Path, help="build the roots here and keep them")
    parser.add_argument("--python-path", type=Path, default=REPO,
                        help="the checkout whose dashboard runs (default: this one)")
    parser.add_argument("--page", action="store_true",
                        help="also measure the served page on the largest root (Chromium)")
    args = parser.parse_args(argv)
    if bad := [n for n in args.runs if n < CELLS or n % CELLS]:
        parser.error(f"--runs {bad[0]}: give multiples of {CELLS}")
    with tempfile.TemporaryDirectory() as tmp:
        keep = args.keep or Path(tmp)
        study_root = keep / "study"
        if not study_root.is_dir():
            make_grid(study_root, [f"vq{i}" for i in range(5)], [f"P{j}" for j in range(8)], 40,
                      size=(256, 128), noise=8)
        study = sorted(p for p in study_root.iterdir() if p.is_dir())
        print(f"{args.python_path}: dashboard catalog --json (fresh process each; the machine "
              "may be shared)")
        print(" runs |  cold (no index)  |  again            |  one run changed  | live re-read "
              "| JSON out")
        figures = {}
        for runs in sorted(args.runs):
            root = keep / f"runs-{runs}"
            if not root.is_dir():
                build(root, runs, study)
            figures[runs] = measure(root, runs, args.python_path, Path(tmp))
        lo, hi = min(figures), max(figures)
        if hi > lo:
            (t0, m0), (t1, m1) = figures[lo], figures[hi]
            print(f"growth per run (cold, {lo} -> {hi}): {(t1 - t0) / (hi - lo) * 1e3:.2f} ms, "
                  f"{(m1 - m0) / (hi - lo) * 1e3:.0f} kB")
        if args.page:
            page_figures(keep / f"runs-{hi}", args.python_path, study)
    return 0


if __name__ == "__main__":
    sys.exit(main())
