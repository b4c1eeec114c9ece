"""Benchmark: how fast the player switches every cell of the 40-cell study grid to the next step.

    python benchmarks/dashboard_player.py [--vqgans 5] [--perceptors 8] [--frames 40]

The default is the study's shape: 5 VQGANs x 8 perceptor entries, 40 frames of 256x128 each.

Builds a fixture grid (tests/dashboard_fixtures.py), serves it with `python -m dashboard serve`,
exports it, and measures in headless Chromium, with performance.now(), for both pages:
- switch: the script time to point all cells at the next step (in a 1366x768 window);
- painted: from the switch to the end of the next paint of the page;
- playback: the step interval actually achieved while playing at 25 fps;
and the size of the export (page plus sprite sheets).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / d) for d in ("", "tests")]

from dashboard_fixtures import CHROMIUM, CHROMIUM_ARGS, dashboard_server, make_grid  # noqa: E402

from dashboard.export import export, export_size  # noqa: E402

MEASURE = """async (n) => {
  const p = window.gridPlayer, frame = () => new Promise((r) => requestAnimationFrame(r));
  const out = {switch: [], painted: [], complete: true};
  for (let k = 0; k < n; k++) {
    await frame();
    const t0 = performance.now();
    p.show((p.index + 1) % p.grid.steps.length);
    out.switch.push(performance.now() - t0);
    await new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));
    out.painted.push(performance.now() - t0);
    out.complete &&= p.tiles.every((t) => t.pic.el.tagName !== "IMG" ||
      (t.pic.el.complete && t.pic.el.naturalWidth > 0));
  }
  return out;
}"""
PLAYBACK = """async (ms) => {
  const p = window.gridPlayer, times = [], show = p.show.bind(p);
  p.show = (index) => { times.push(performance.now()); show(index); };
  p.fps = 25; p.play();
  await new Promise((r) => setTimeout(r, ms));
  p.pause(); p.show = show;
  return times.slice(1).map((t, i) => t - times[i]);
}"""


def _stats(xs: list[float]) -> str:
    xs = sorted(xs)
    p95 = xs[min(len(xs) - 1, round(0.95 * (len(xs) - 1)))]
    return f"median {statistics.median(xs):6.2f} ms  p95 {p95:6.2f} ms  max {xs[-1]:6.2f} ms"


def measure(browser, url: str, label: str, steps: int) -> None:
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    page.goto(url)
    page.wait_for_function("window.gridPlayer && window.gridPlayer.tiles.length > 0",
                           timeout=60_000)
    page.wait_for_function("window.gridPlayer.state().pending === 0", timeout=120_000)
    cells = page.evaluate("window.gridPlayer.tiles.length")
    result = page.evaluate(MEASURE, steps)
    gaps = page.evaluate(PLAYBACK, 4000)
    print(f"{label}: {cells} cells, {steps} step switches, all frames loaded: {result['complete']}")
    print(f"  switch   {_stats(result['switch'])}")
    print(f"  painted  {_stats(result['painted'])}")
    print(f"  playback at 25 fps: {1000 / statistics.mean(gaps):.1f} steps/s, "
          f"interval {_stats(gaps)}")
    page.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vqgans", type=int, default=5)
    parser.add_argument("--perceptors", type=int, default=8)
    parser.add_argument("--frames", type=int, default=40)
    args = parser.parse_args(argv)
    if not CHROMIUM.exists():
        sys.exit(f"{CHROMIUM} is missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "runs"
        make_grid(root, [f"vq{i}" for i in range(args.vqgans)],
                  [f"P{j}" for j in range(args.perceptors)], args.frames, size=(256, 128), noise=8)
        page = export(root, Path(tmp) / "site")
        frames = sum(p.stat().st_size for p in root.rglob("*.png"))
        print(f"grid: {args.vqgans} x {args.perceptors} cells, {args.frames} frames of 256x128; "
              f"export: {export_size(Path(tmp) / 'site') / 1e6:.2f} MB "
              f"(PNG frames: {frames / 1e6:.1f} MB)")
        with dashboard_server(root) as url, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            measure(browser, url, "served app (<img> src swap)", args.frames - 1)
            measure(browser, page.as_uri(), "static export (sprite sheets)", args.frames - 1)
            browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
