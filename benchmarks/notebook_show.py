"""Benchmark: what `dashboard.show(root)` costs a notebook on the 40-cell study.

    python benchmarks/notebook_show.py [--vqgans 5] [--perceptors 8] [--frames 40]
        [--width 256 192 128] [--root DIR]

Builds the study's shape as fixture run folders (tests/dashboard_fixtures.py: 40 frames of
256x128 with noise, so the sheets compress as real frames do), then for each `--width` prints
the seconds to build the output (catalog, packing every run's sprite sheets, the Bokeh
document), the bytes of its MIME bundle (what the kernel sends and a saved notebook keeps,
besides Panel's and Bokeh's JS, loaded once per cell by `pn.extension`), the seconds packing
alone takes, and the same again from the cache (what a filter or axis change costs).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from dashboard_fixtures import make_grid  # noqa: E402


def bundle_bytes(app) -> int:
    """Bytes of the output's MIME bundle, as a notebook stores it."""
    data, _ = app._repr_mimebundle_()
    return sum(len(str(value).encode()) for value in data.values())


def measure(root: Path, width: int) -> None:
    import dashboard
    from dashboard.catalog import load_catalog
    from dashboard.notebook import InlineFrames
    from dashboard.player import GridPlayer

    start = time.perf_counter()
    app = dashboard.show(root, width=width, poll_ms=0)
    size = bundle_bytes(app)
    first = time.perf_counter() - start
    (player,) = app.select(GridPlayer)
    sheets = sum(len(c["sprite"]["sheets"]) for c in player.grid["cells"])
    runs = load_catalog(root)
    frames = InlineFrames(root.resolve(), width)
    timed = []
    for _ in range(2):  # packing every run, then the same from the cache (a filter change)
        start = time.perf_counter()
        for _, run in runs.iterrows():
            frames(run)
        timed.append(time.perf_counter() - start)
    print(f"width {width:4d}: output {first:5.1f} s, bundle {size / 1e6:6.1f} MB, "
          f"{len(player.grid['cells'])} cells in {sheets} sheets; packing alone {timed[0]:.1f} s, "
          f"cached {timed[1] * 1e3:.1f} ms", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vqgans", type=int, default=5)
    parser.add_argument("--perceptors", type=int, default=8)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--width", type=int, nargs="+", default=[256, 192, 128])
    parser.add_argument("--root", type=Path, help="build the root here (reused when it exists)")
    args = parser.parse_args()
    root = args.root or Path(tempfile.mkdtemp(prefix="notebook-show-")) / "runs"
    if not root.exists():
        make_grid(root, [f"vq{i}" for i in range(args.vqgans)],
                  [f"P{j}" for j in range(args.perceptors)], args.frames, size=(256, 128), noise=8)
    for width in args.width:
        measure(root, width)


if __name__ == "__main__":
    main()
