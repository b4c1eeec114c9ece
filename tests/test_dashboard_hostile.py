"""Hostile and huge inputs to the dashboard (issue 30): nothing hangs, nothing blows up, nothing
of the user's is touched. Each case makes its own small fixture (FIFOs with os.mkfifo, PNG bombs
written row by row, sparse files), runs the real command bounded by a timeout and, for the
memory cases, by its measured peak (test_hostile.bounded: a grandchild's own ru_maxrss; a
server's VmHWM)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dashboard.app import player_grid
from dashboard.catalog import load_catalog
from dashboard.grid import MAX_SHOWN_FRAMES
from dashboard.state import RootState
from dashboard_fixtures import (
    REPO, cell_name, copy_run, free_port, http_get, huge_png, interrupted_export, make_grid, make_our_run,
    make_pytti_run, running, write_non_finite,
)
from test_hostile import MB, bounded, sparse

VICTIM = cell_name("vq-a", ["P1"])
FRAME = f"/frames/{cell_name('vq-b', ['P0'])}/{cell_name('vq-b', ['P0'])}_1.png"


def grid(root: Path) -> Path:
    """A 2 x 2 grid of finished runs (3 frames of 32x16); its run VICTIM, to be made hostile."""
    make_grid(root, ["vq-a", "vq-b"], ["P0", "P1"], 3)
    return root / VICTIM


def dashboard(root: Path, *args: str, timeout: float = 90) -> tuple[int, str, float, float]:
    """`python -m dashboard ARGS --root root`: (exit code, stderr, seconds, peak MB)."""
    cache = {"DASHBOARD_CACHE": str(root.parent / "cache")}
    return bounded(["-m", "dashboard", *args, "--root", str(root)], timeout=timeout, cwd=REPO, env=cache)


def catalog_json(root: Path, *args: str) -> dict[str, dict]:
    """`catalog --json ARGS`, parsed strictly (NaN or Infinity fail): run -> its row."""
    done = subprocess.run([sys.executable, "-m", "dashboard", "catalog", "--root", str(root), "--json", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=90,
                          env={**os.environ, "DASHBOARD_CACHE": str(root.parent / "cache")})
    assert done.returncode == 0, done.stderr

    def refuse(constant: str) -> None:
        raise AssertionError(f"not JSON: {constant}")

    return {r["run"]: r for r in json.loads(done.stdout, parse_constant=refuse)}


def server_peak(pid: int) -> float:
    """A live process's peak resident MB (VmHWM: its own since exec)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", status)[1]) / 1024


# ---------------------------------------------------------------- hangs

@pytest.mark.parametrize("name", ["losses.csv", f"{VICTIM}_settings.json"])
def test_a_fifo_for_a_runs_file_never_hangs_catalog_or_export(tmp_path: Path, name: str) -> None:
    folder = grid(tmp_path / "runs")
    (folder / name).unlink()
    os.mkfifo(folder / name)
    code, err, seconds, _ = dashboard(tmp_path / "runs", "catalog", "--json", "--losses")
    assert code == 0 and seconds < 60, err
    victim = catalog_json(tmp_path / "runs", "--losses")[VICTIM]
    if name == "losses.csv":  # named, the rest of the run read
        assert "is a FIFO (named pipe), not a regular file" in victim["reason"] and victim["n_frames"] == 3
    else:  # not opened: the run is read from its folder name
        assert victim["status"] == "incomplete" and "no settings file" in victim["reason"]
    code, err, seconds, _ = dashboard(tmp_path / "runs", "export", "--out", str(tmp_path / "site"))
    assert code == 0 and seconds < 90 and (tmp_path / "site" / "index.html").is_file(), err


def test_a_fifo_for_losses_does_not_block_the_served_page(tmp_path: Path, chromium_browser) -> None:
    folder = grid(tmp_path / "runs")
    (folder / "losses.csv").unlink()
    os.mkfifo(folder / "losses.csv")
    port = free_port()
    with running([sys.executable, "-m", "dashboard", "serve", "--root", str(tmp_path / "runs"), "--port",
                  str(port)], port, env={**os.environ, "DASHBOARD_CACHE": str(tmp_path / "cache")}):
        page = chromium_browser.new_page()
        page.goto(f"http://127.0.0.1:{port}/", timeout=60_000)
        page.wait_for_function("window.gridPlayer && gridPlayer.tiles.length === 4", timeout=60_000)
        t0 = time.monotonic()
        assert http_get(port, FRAME)[0] == 200 and time.monotonic() - t0 < 5
        page.close()


# ---------------------------------------------------------------- pixels

@pytest.fixture(scope="module")
def bombed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The grid with a 30000x30000 PNG (a few MB) as the last frame of a finished run, and a pytti
    run (no recorded hashes) whose last frame is a 13000x13000 PNG, under Pillow's own refusal."""
    root = tmp_path_factory.mktemp("bombed") / "runs"
    huge_png(grid(root) / f"{VICTIM}_3.png", 30_000)
    huge_png(make_pytti_run(root, "pytti_run", "vq-b", ["RN50"], n_frames=2) / "pytti_run_2.png", 13_000)
    return root


def test_bomb_frames_mark_their_runs_damaged_in_the_catalog(bombed: Path) -> None:
    runs = catalog_json(bombed)
    assert runs[VICTIM]["status"] == "damaged" and "frame 3" in runs[VICTIM]["reason"]
    pytti = runs["pytti_run"]
    assert pytti["status"] == "damaged" and "a frame of 13000×13000 pixels; the run's frames are 32×16" in pytti["reason"]
    assert {r["status"] for name, r in runs.items() if name not in (VICTIM, "pytti_run")} == {"complete"}


def test_an_export_with_bomb_frames_decodes_none_and_names_them(bombed: Path, tmp_path: Path) -> None:
    code, err, seconds, peak = dashboard(bombed, "export", "--out", str(tmp_path / "site"), timeout=120)
    assert code == 0, err
    assert peak < 400 and seconds < 90, f"{peak:.0f} MB, {seconds:.1f} s"  # 13000² RGB alone would be 507 MB
    spec = json.loads(re.search(r'id="dp-data">(.*?)</script>', (tmp_path / "site" / "index.html").read_text())[1])
    cells = {c["id"]: c for c in spec["cells"]}
    assert len(cells) == 5 and cells["pytti_run"]["status"] == "damaged"
    assert "13000×13000" in cells["pytti_run"]["note"] and "30000×30000" in cells[VICTIM]["note"]


def test_a_bomb_in_the_root_still_serves_the_grid_and_the_other_runs(bombed: Path, chromium_browser) -> None:
    port = free_port()
    command = [sys.executable, "-m", "dashboard", "serve", "--root", str(bombed), "--port", str(port)]
    with running(command, port, env={**os.environ, "DASHBOARD_CACHE": str(bombed.parent / "cache-serve")}) as proc:
        page = chromium_browser.new_page(viewport={"width": 1366, "height": 768})
        page.goto(f"http://127.0.0.1:{port}/", timeout=60_000)
        page.wait_for_function("window.gridPlayer && gridPlayer.tiles.length === 5", timeout=60_000)
        page.keyboard.press("End")
        page.wait_for_function("""gridPlayer.tiles.filter(t => t.pic.el.complete && t.pic.el.naturalWidth > 0)
                                  .length === 3""", timeout=30_000)  # every frame but the two bombs
        assert page.locator(".dp-badge").count() == 2  # both runs damaged, on their tiles
        assert http_get(port, "/frames/pytti_run/pytti_run_2.png")[0] == 404
        assert http_get(port, f"/frames/{VICTIM}/{VICTIM}_3.png")[0] == 404
        assert http_get(port, FRAME)[0] == 200
        page.get_by_text("Fingerprints").first.wait_for(timeout=60_000)
        page.wait_for_function("Object.keys(gridPlayer.prints.runs || {}).length === 3", timeout=60_000)
        assert "Traceback" not in page.content()
        assert server_peak(proc.pid) < 500
        page.close()


# ---------------------------------------------------------------- bytes

def test_a_huge_losses_file_costs_no_memory(tmp_path: Path) -> None:
    folder = grid(tmp_path / "runs")
    sparse(folder / "losses.csv", 55 * MB, b"step,scene,total,s0p0\n")
    code, err, seconds, peak = dashboard(tmp_path / "runs", "catalog", "--json", "--losses")
    assert code == 0 and peak < 250 and seconds < 60, (err, peak, seconds)
    assert f"{55 * MB} bytes, more than the" in catalog_json(tmp_path / "runs", "--losses")[VICTIM]["reason"]


def test_a_damaged_or_huge_index_is_rebuilt_not_read(tmp_path: Path) -> None:
    from dashboard.index import MAX_INDEX_BYTES, Index

    grid(tmp_path / "runs")
    cache = tmp_path / "cache"
    cache.mkdir()
    path = cache / Index.for_root(tmp_path / "runs").path.name
    os.mkfifo(path)  # a FIFO would block a plain read for ever
    code, err, seconds, _ = dashboard(tmp_path / "runs", "catalog")
    assert code == 0 and seconds < 60, err
    path.unlink()
    sparse(path, MAX_INDEX_BYTES + 1, b"{")
    code, err, seconds, peak = dashboard(tmp_path / "runs", "catalog")
    assert code == 0 and peak < 250, (err, peak)
    assert path.stat().st_size < MB  # rebuilt


# ---------------------------------------------------------------- output

def test_catalog_json_is_strict_json(tmp_path: Path) -> None:
    write_non_finite(grid(tmp_path / "runs"))
    victim = catalog_json(tmp_path / "runs")[VICTIM]  # parsed strictly
    assert victim["metrics"]["wall_time_s"] is None and victim["settings"]["cut_pow"] is None


def test_an_interrupted_export_leaves_nothing_or_the_old_export(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    template = make_our_run(tmp_path / "one", cell_name("vq0", ["P0"]), "vq0", ["P0"], n_frames=40,
                            size=(256, 128), noise=8)
    for k in range(40):  # frames hard-linked: cheap to make, slow enough to pack
        copy_run(template, root, "exp", vqgan=f"vq{k:02d}")
    cache = {**os.environ, "DASHBOARD_CACHE": str(tmp_path / "cache")}
    assert interrupted_export(root, tmp_path / "site", cache) != 0
    assert not (tmp_path / "site").exists()  # not even the folder made for it

    small = tmp_path / "small"
    make_grid(small, ["vq1"], ["P1"], 2)
    subprocess.run([sys.executable, "-m", "dashboard", "export", "--root", str(small), "--out",
                    str(tmp_path / "site")], cwd=REPO, check=True, capture_output=True, timeout=120)
    before = {p.relative_to(tmp_path).as_posix(): p.read_bytes() for p in (tmp_path / "site").rglob("*") if p.is_file()}
    assert interrupted_export(root, tmp_path / "site", cache) != 0
    after = {p.relative_to(tmp_path).as_posix(): p.read_bytes() for p in (tmp_path / "site").rglob("*") if p.is_file()}
    assert after == before and not list((tmp_path / "site").glob(".*"))  # the old export, and no temporary


# ---------------------------------------------------------------- what the server exposes

def test_the_server_imports_nothing_named_by_a_url(tmp_path: Path) -> None:
    grid(tmp_path / "runs")
    port = free_port()
    command = [sys.executable, "-m", "dashboard", "serve", "--root", str(tmp_path / "runs"), "--port", str(port)]
    with running(command, port, env={**os.environ, "DASHBOARD_CACHE": str(tmp_path / "cache")}) as proc:
        for path in ("/components/this/x/y/z", "/components/antigravity/x/y/z", "/autoload.js", "/metadata"):
            assert http_get(port, path)[0] == 404, path
        assert http_get(port, "/")[0] == 200 and http_get(port, FRAME)[0] == 200
        assert http_get(port, "/frames/" + VICTIM + "/losses.csv")[0] == 404  # not a frame of the catalog
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=30)[0]
    assert "Beautiful is better than ugly" not in output, output  # `this` was never imported


def test_a_run_of_many_empty_frames_is_damaged_and_its_frame_list_bounded(tmp_path: Path) -> None:
    grid(tmp_path / "runs")
    run = make_pytti_run(tmp_path / "runs", "crowded", "vq-b", ["RN50"], n_frames=1)
    for n in range(2, 1500):
        (run / f"crowded_{n}.png").touch()
    state = RootState(tmp_path / "runs")
    crowded = state.catalog().set_index("run").loc["crowded"]
    assert crowded.n_frames == 1499 and crowded.status == "damaged"
    assert "frame 2: " in crowded.reason and "not an image" in crowded.reason
    assert "1495 more frames cannot be shown" in crowded.reason
    spec = player_grid(state.catalog(), "vqgan", "perceptor_set")
    cell = next(c for c in spec["cells"] if c["id"] == "crowded")
    assert len(cell["frames"]) == len(cell["steps"]) == MAX_SHOWN_FRAMES
    assert cell["frames"][0].endswith("crowded_1.png") and cell["frames"][-1].endswith("crowded_1499.png")
    assert f"1499 frames: the page shows {MAX_SHOWN_FRAMES} of them" in cell["note"]
    assert len(load_catalog(tmp_path / "runs")) == 5
