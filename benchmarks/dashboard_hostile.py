"""Benchmark: the dashboard on hostile and huge inputs (issue 30), each case before and after.

    python benchmarks/dashboard_hostile.py [--python-path DIR] [--case NAME ...] [--keep DIR]

Builds each case as a small root of run folders (tests/dashboard_fixtures.py: a 2 x 2 grid of
finished runs of 32x16 frames, then one file made hostile), runs the dashboard of `--python-path`
(default: this checkout; give a worktree of an older commit for the "before" figures) on it as a
fresh process, bounded by a timeout, and prints per command its exit code, seconds, peak memory
(its own, read at exit; a server's from /proc) and what it showed:

- fifo-losses, fifo-sidecar: a FIFO where one run has its losses.csv or its sidecar;
- bomb: a grey PNG of 30000x30000 pixels (a few MB) as the last frame of a finished run;
- near-limit: a PNG of 13000x13000 (under Pillow's own refusal) as the last frame of a pytti run;
- big-losses: a 55 MB losses.csv;
- nan: metrics.json and the sidecar holding NaN and Infinity (`catalog --json` must stay JSON);
- interrupted: an export stopped by Ctrl-C while it packs (what is left at --out);
- components: `GET /components/this/x/y/z` on the served app (does it import `this`?);
- many-frames: a pytti run of 99 990 empty frame files (how many the page requests).

Commands: `catalog --json [--losses]`, `export`, and `serve`, whose page is opened in headless
Chromium (first tile drawn, a frame request sent while the page builds, what the page shows).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from dashboard_fixtures import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    cell_name,
    free_port,
    http_get,
    huge_png,
    interrupted_export,
    make_grid,
    make_pytti_run,
    running,
    write_non_finite,
)
from test_hostile import bounded  # noqa: E402

TIMEOUT = 120  # s a command may take before it counts as hung
READY = "window.gridPlayer && gridPlayer.tiles.some((t) => t.pic.el.complete || t.pic.el.style.backgroundImage)"
VICTIM = cell_name("vq-a", ["P1"])
#: The page's text, shadow roots included (Panel draws its panes inside them).
TEXT = """() => { const parts = [], walk = (root) => root.querySelectorAll('*').forEach((e) => {
    if (e.shadowRoot) { parts.push(e.shadowRoot.textContent); walk(e.shadowRoot); } });
    walk(document); return document.body.innerText + parts.join(' '); }"""


def base(root: Path) -> Path:
    """The 2 x 2 grid every case starts from; its run VICTIM is the one made hostile."""
    make_grid(root, ["vq-a", "vq-b"], ["P0", "P1"], 3, size=(32, 16))
    return root / VICTIM


def fifo(name: str) -> Callable[[Path], None]:
    def build(root: Path) -> None:
        path = base(root) / name
        path.unlink()
        os.mkfifo(path)
    return build


def bomb(root: Path) -> None:
    huge_png(base(root) / f"{VICTIM}_3.png", 30_000)


def near_limit(root: Path) -> None:
    base(root)
    run = make_pytti_run(root, "pytti_run", "vq-b", ["RN50"], n_frames=2)
    huge_png(run / "pytti_run_2.png", 13_000)


def big_losses(root: Path) -> None:
    rows = "".join(f"{s},0,{1 - s * 1e-7:.6f},{0.5 - s * 1e-8:.6f}\n" for s in range(1, 2_050_000))
    (base(root) / "losses.csv").write_text("step,scene,total,s0p0\n" + rows)


def nan(root: Path) -> None:
    write_non_finite(base(root))


def many_frames(root: Path) -> None:
    base(root)
    run = make_pytti_run(root, "crowded", "vq-b", ["RN50"], n_frames=1)
    for n in range(2, 99_991):
        (run / f"crowded_{n}.png").touch()


CASES: dict[str, tuple[Callable[[Path], None], list[str]]] = {
    "fifo-losses": (fifo("losses.csv"), ["catalog-losses", "export", "serve"]),
    "fifo-sidecar": (fifo(f"{VICTIM}_settings.json"), ["catalog-losses", "export", "serve"]),
    "bomb": (bomb, ["catalog-json", "export", "serve"]),
    "near-limit": (near_limit, ["catalog-json", "export", "serve"]),
    "big-losses": (big_losses, ["catalog-losses", "serve"]),
    "nan": (nan, ["catalog-json"]),
    "interrupted": (base, ["export-interrupted"]),
    "components": (base, ["components"]),
    "many-frames": (many_frames, ["serve"]),
}


def cli(python_path: Path, root: Path, out: Path, command: str) -> str:
    """One command as a fresh process: exit code, seconds, peak MB and what it printed."""
    args = {"catalog": ["catalog", "--root", str(root)],
            "catalog-json": ["catalog", "--root", str(root), "--json"],
            "catalog-losses": ["catalog", "--root", str(root), "--json", "--losses"],
            "export": ["export", "--root", str(root), "--out", str(out)]}[command]
    env = {"PYTHONPATH": str(python_path), "DASHBOARD_CACHE": str(out.parent / "cache")}
    try:
        code, err, seconds, peak = bounded(["-m", "dashboard", *args], timeout=TIMEOUT, cwd=python_path, env=env)
    except AssertionError:
        return f"hung: killed after {TIMEOUT} s"
    shown = _json_note(python_path, args, env) if command.startswith("catalog-") else \
        f"{len(list(out.rglob('*')))} files at --out" if command == "export" else ""
    last = err.strip().splitlines()[-1][:160] if err.strip() else ""
    return f"exit {code}, {seconds:.1f} s, {peak:.0f} MB; {shown}; {last}"


def _json_note(python_path: Path, args: list[str], env: dict[str, str]) -> str:
    """Whether the command's output is strict JSON, and what it says of the victim."""
    done = subprocess.run([sys.executable, "-m", "dashboard", *args], cwd=python_path, capture_output=True,
                          text=True, timeout=TIMEOUT, env={**os.environ, **env})

    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    try:
        runs = json.loads(done.stdout, parse_constant=refuse)
    except ValueError as e:
        return str(e)[:60]
    bad = [f"{r['run']} {r['status']}: {r['reason'][:110]}" for r in runs if r["status"] != "complete" or r["reason"]]
    return f"strict JSON, {len(runs)} runs; {' | '.join(bad) or 'all complete'}"


def interrupted(python_path: Path, root: Path, out: Path) -> str:
    """An export stopped by SIGINT once it has packed a sheet: what is left at --out."""
    for k in range(30):  # enough cells that packing takes a while
        make_grid(root, [f"vq{k}"], ["P9"], 40, size=(256, 128), noise=8)
    env = {**os.environ, "PYTHONPATH": str(python_path), "DASHBOARD_CACHE": str(out.parent / "cache")}
    code = interrupted_export(root, out, env, cwd=python_path)
    left = sorted(p.relative_to(out.parent).as_posix() for p in out.parent.glob("site*/**/*"))
    return f"exit {code}; left at --out: {len(left)} entries {left[:3]}"


def serve(python_path: Path, root: Path, out: Path, probe: str | None = None) -> str:
    """The served page in Chromium: seconds to a drawn tile, a frame's answer time while the page
    builds, frames requested, whether a traceback shows; the server's peak memory."""
    from playwright.sync_api import TimeoutError as PageTimeout
    from playwright.sync_api import sync_playwright

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(python_path), "DASHBOARD_CACHE": str(out.parent / "cache")}
    command = [sys.executable, "-m", "dashboard", "serve", "--root", str(root), "--port", str(port)]
    frame = f"/frames/{cell_name('vq-b', ['P0'])}/{cell_name('vq-b', ['P0'])}_1.png"
    with running(command, port, ready_path=frame, env=env, cwd=python_path) as proc:
        if probe:
            status = http_get(port, probe)[0]
            time.sleep(1)
            proc.send_signal(signal.SIGINT)
            output = proc.communicate(timeout=30)[0]
            return f"GET {probe}: {status}; the server printed the Zen of Python: {'Beautiful is better' in output}"
        answered: list[float] = []

        def request_frame() -> None:
            time.sleep(0.5)
            t0 = time.monotonic()
            with contextlib.suppress(TimeoutError):  # no answer: recorded as such
                http_get(port, frame)
                answered.append(time.monotonic() - t0)

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            frames: list[str] = []
            page.on("request", lambda r: "/frames/" in r.url and frames.append(r.url))
            asker = threading.Thread(target=request_frame)
            t0 = time.monotonic()
            asker.start()
            try:
                page.goto(f"http://127.0.0.1:{port}/", timeout=TIMEOUT * 1000)
            except PageTimeout:  # the server never answered: there is no page to read (evaluate would wait forever)
                shown, traceback = f"no page after {time.monotonic() - t0:.0f} s (the server never answered)", None
            else:
                try:
                    page.wait_for_function(READY, timeout=TIMEOUT * 1000, polling=100)
                    shown = f"grid in {time.monotonic() - t0:.1f} s, {page.evaluate('gridPlayer.tiles.length')} tiles"
                except PageTimeout:
                    shown = f"no grid after {time.monotonic() - t0:.0f} s"
                time.sleep(5)
                traceback = "Traceback" in page.evaluate(TEXT)
            asker.join(TIMEOUT)
            browser.close()
        peak = _peak(proc.pid)
    frame_time = f"{answered[0]:.2f} s" if answered else "no answer"
    return (f"{shown}; a frame answered in {frame_time} while the page built; {len(frames)} frame requests in "
            f"5 s; traceback on the page: {traceback}; server peak {peak:.0f} MB")


def _peak(pid: int) -> float:
    """A live process's peak resident MB (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_case(name: str, python_path: Path, work: Path) -> None:
    build, commands = CASES[name]
    for command in commands:
        case = work / f"{name}-{command}"
        root, out = case / "runs", case / "site"
        case.mkdir(parents=True)
        build(root)
        if command == "serve":
            result = serve(python_path, root, out)
        elif command == "components":
            result = serve(python_path, root, out, probe="/components/this/x/y/z")
        elif command == "export-interrupted":
            result = interrupted(python_path, root, out)
        else:
            result = cli(python_path, root, out, command)
        print(f"{name:13s} {command:18s} {result}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python-path", type=Path, default=REPO, help="the checkout whose dashboard runs")
    parser.add_argument("--case", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--keep", type=Path, help="build the cases here and keep them")
    args = parser.parse_args(argv)
    print(f"{args.python_path}: case, command, result (the machine may be shared)")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.case:
            run_case(name, args.python_path.resolve(), args.keep or Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
