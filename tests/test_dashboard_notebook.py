"""`dashboard.show(root)`: its grid and errors in this process, then in real JupyterLab and
Notebook 7 started here on 127.0.0.1 and driven in headless Chromium: every tile of a 4-cell
root shows its own frame, ←/→ with the focus in the output moves them all (and not with the
focus elsewhere), a new frame appears while the kernel lives, and nothing is fetched from
anywhere but the local Jupyter server."""
from __future__ import annotations

import base64
import io
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from PIL import Image

from dashboard_fixtures import (REPO, cell_name, free_port, frame_colour, http_get, make_our_run,
                                make_prompt_grid, write_frame)

ARTIFACTS = REPO / "test-artifacts"
CELLS = [("imagenet", "ViT-B32"), ("imagenet", "RN50"), ("wikiart", "ViT-B32"), ("wikiart", "RN50")]
FRAMES, SIZE = 4, (64, 32)
LIVE = cell_name("wikiart", ["RN50"])  # still running: frames 1-3 of 4 at first
PLAYER = "window.gridPlayer && window.gridPlayer.tiles.length === 4"
# Runs Python in the notebook's kernel; the repr of its variable `result`.
IN_KERNEL = """async (code) => {
    const kernel = jupyterapp.shell.currentWidget.sessionContext.session.kernel;
    const future = kernel.requestExecute({code, store_history: false,
                                          user_expressions: {result: "result"}});
    const reply = await future.done;
    const result = reply.content.user_expressions.result;
    return result.status === "ok" ? result.data["text/plain"] : JSON.stringify(result); }"""
# How many dashboard pollers (Panel periodic callbacks running app.refresh_on_change's refresh)
# the kernel runs.
POLLERS = """import asyncio
def _poller(task):
    frame = getattr(task.get_coro(), "cr_frame", None)
    owner = frame and frame.f_locals.get("self")
    return "refresh_on_change" in getattr(getattr(owner, "callback", None), "__qualname__", "")
result = sum(map(_poller, asyncio.all_tasks()))"""
# What each tile shows: its cell, the frame index, and whether its sheet is a data URL.
TILES = """() => gridPlayer.state().tiles.map((t, n) => ({id: t.id, frame: t.frame,
    inline: gridPlayer.tiles[n].pic.el.style.backgroundImage.startsWith('url("data:image/webp')}))"""


def make_runs(root: Path) -> Path:
    """The 4-cell root, its LIVE cell still running."""
    for n, (vqgan, perceptor) in enumerate(CELLS):
        name = cell_name(vqgan, [perceptor])
        make_our_run(root, name, vqgan, [perceptor], cell=n, n_frames=FRAMES, size=SIZE,
                     save_every=10, complete=name != LIVE)
    (root / LIVE / f"{LIVE}_{FRAMES}.png").unlink()
    return root


#: frontend -> (Jupyter app, what the cell runs before `dashboard.show`): JupyterLab, Notebook 7,
#: and JupyterLab rendering through jupyter_bokeh's ipywidget, the way VS Code and Colab do.
FRONTENDS = {"lab": ("lab", ""), "notebook": ("notebook", ""),
             "lab-ipywidgets": ("lab", "import panel as pn\npn.extension(comms='ipywidgets', inline=True)\n")}


@pytest.fixture(scope="module", params=list(FRONTENDS))
def jupyter(request, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    """(URL of the notebook `show.ipynb`, frontend, runs it shows): JupyterLab or Notebook 7 on
    a free port."""
    frontend = request.param
    app, before = FRONTENDS[frontend]
    pytest.importorskip("notebook" if app == "notebook" else "jupyterlab")
    if before:
        pytest.importorskip("jupyter_bokeh")
    home = tmp_path_factory.mktemp(f"jupyter-{frontend}")
    runs = make_runs(home / "runs")
    cell = f"{before}import dashboard\ndashboard.show({str(runs)!r}, poll_ms=500)"
    (home / "show.ipynb").write_text(json.dumps({
        "cells": [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
                   "source": cell}],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                    "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5}), encoding="utf-8")
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(home / "config"),
           "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "IPYTHONDIR": str(home / "ipython"),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab" if app == "lab" else "notebook", "--no-browser",
         "--ip=127.0.0.1", "--allow-root", f"--port={port}", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={home}",
         f"--{'LabApp' if app == 'lab' else 'JupyterNotebookApp'}.expose_app_in_browser=True",
         "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         f"--LabApp.workspaces_dir={home / 'workspaces'}"],
        env=env, stdout=subprocess.DEVNULL, stderr=open(home / "server.log", "w"))
    try:
        _wait_until_up(server, port, f"/api/status?token={token}", home / "server.log")
        path = "lab/tree" if app == "lab" else "notebooks"
        yield f"http://127.0.0.1:{port}/{path}/show.ipynb?token={token}", frontend, runs
    finally:
        server.terminate()
        server.wait(timeout=30)


def _wait_until_up(server: subprocess.Popen, port: int, path: str, log: Path) -> None:
    deadline = time.monotonic() + 90
    while server.poll() is None and time.monotonic() < deadline:
        try:
            if http_get(port, path)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the Jupyter server did not start:\n{log.read_text()[-3000:]}")


def _expected(cell: int, n: int) -> np.ndarray:
    return np.asarray(frame_colour(cell, n, FRAMES), np.float64)


def _tile_colour(page, k: int) -> np.ndarray:
    """The mean colour of tile k's picture as drawn on screen."""
    shot = page.locator(".dp-tile .dp-frame").nth(k).screenshot()
    return np.asarray(Image.open(io.BytesIO(shot)).convert("RGB"), np.float64).reshape(-1, 3).mean(0)


def _assert_frames_shown(page, n: int) -> None:
    """Every tile shows frame `n` (1-based) of its own cell: its hue, at that brightness."""
    for k, tile in enumerate(page.evaluate(TILES)):
        cell = next(i for i, (v, p) in enumerate(CELLS) if cell_name(v, [p]) == tile["id"])
        shown = _tile_colour(page, k)
        # the fixture frames are shaded by 0.5-1.0 across the frame: compare directions and level
        want = _expected(cell, n) * 0.87
        assert np.abs(shown - want).max() < 30, (tile["id"], n, shown, want)


def _grid(app) -> dict:
    from dashboard.player import GridPlayer

    (player,) = app.select(GridPlayer)
    return player.grid


def _decoded(url: str) -> Image.Image:
    head, data = url.split(",", 1)
    assert head == "data:image/webp;base64"
    return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")


def test_show_puts_each_runs_frames_inline_and_ticks_the_chosen_runs(tmp_path: Path) -> None:
    import dashboard
    from dashboard.export import GUTTER

    runs = make_runs(tmp_path / "runs")
    app = dashboard.show(runs, vqgans="wikiart", width=32)
    grid = _grid(app)
    assert sorted(c["id"] for c in grid["cells"]) == [cell_name("wikiart", ["RN50"]),
                                                      cell_name("wikiart", ["ViT-B32"])]
    for cell in grid["cells"]:
        n = next(i for i, (v, p) in enumerate(CELLS) if cell_name(v, [p]) == cell["id"])
        assert (cell["width"], cell["height"]) == (32, 16)  # 64 x 32 frames at width=32
        (sheet,) = cell["sprite"]["sheets"]
        image = _decoded(sheet["url"])
        for k in range(len(cell["steps"])):  # the middle pixel of each frame: its colour
            x = (k % sheet["cols"]) * (32 + 2 * GUTTER) + GUTTER + 16
            y = (k // sheet["cols"]) * (16 + 2 * GUTTER) + GUTTER + 8
            got = np.asarray(image.getpixel((x, y)), np.float64)
            assert np.abs(got - _expected(n, k + 1) * 0.87).max() < 40, (cell["id"], k, got)


def test_inline_frames_are_packed_again_only_when_a_runs_frames_change(tmp_path: Path) -> None:
    from dashboard.catalog import load_catalog
    from dashboard.notebook import InlineFrames

    def live_run():
        catalog = load_catalog(runs)
        return catalog[catalog["run"] == LIVE].iloc[0]

    runs = make_runs(tmp_path / "runs")
    frames = InlineFrames(runs, 64)
    first = frames(live_run())
    assert frames(live_run()) is first and first["sprite"]["per"] == FRAMES - 1
    write_frame(runs / LIVE / f"{LIVE}_{FRAMES}.png", (250, 250, 250), SIZE)
    again = frames(live_run())
    assert again is not first and again["sprite"]["per"] == FRAMES


def test_an_output_holds_max_runs_and_says_so(tmp_path: Path, monkeypatch) -> None:
    import dashboard
    import dashboard.notebook
    import panel as pn

    monkeypatch.setattr(dashboard.notebook, "MAX_RUNS", 3)
    app = dashboard.show(make_runs(tmp_path / "runs"))
    assert len(_grid(app)["cells"]) == 3
    (summary,) = [m.object for m in app.select(pn.pane.Markdown) if "runs shown" in m.object]
    assert "**3** of 4 runs shown" in summary
    assert "4 runs are ticked, but an output holds the frames of 3 at most" in summary


@pytest.mark.parametrize("options, message", [
    ({"vqgans": "coco"}, "vqgans='coco' is not a name any run with frames has; choose from 'imagenet', 'wikiart'"),
    ({"rows": "seeds"}, "rows='seeds' is not an axis of these runs; choose from 'vqgan', 'perceptor_set'"),
    ({"width": 0}, "width=0: must be at least 1 px"),
])
def test_show_names_a_bad_option_and_what_is_allowed(tmp_path: Path, options, message) -> None:
    import dashboard

    runs = make_runs(tmp_path / "runs")
    with pytest.raises(ValueError) as error:
        dashboard.show(runs, **options)
    assert message in str(error.value)


def test_show_takes_the_old_name_of_the_perceptor_set_axis(tmp_path: Path) -> None:
    import dashboard

    with pytest.warns(FutureWarning, match="'generator' is now 'perceptor_set'"):
        grid = _grid(dashboard.show(make_runs(tmp_path / "runs"), rows="generator", cols="vqgan"))
    assert (grid["row_axis"], grid["row_label"], grid["rows"]) == ("perceptor_set", "perceptor set",
                                                                   ["RN50", "ViT-B32"])


def test_show_takes_any_factor_as_an_axis_and_its_levels_as_a_filter(tmp_path: Path) -> None:
    import dashboard

    runs = tmp_path / "runs"
    make_prompt_grid(runs, ["imagenet"], ["RN50", "ViT-B32"], 2, size=SIZE)
    grid = _grid(dashboard.show(runs, rows="scenes", levels={"scenes": ["city", "sea"]}, poll_ms=0))
    assert (grid["row_axis"], grid["rows"], len(grid["cells"])) == ("scenes", ["city", "sea"], 4)
    with pytest.raises(ValueError, match=r"levels\['scenes'\]='desert' is not a name any run with frames "
                                         r"has; choose from 'city', 'forest', 'sea'"):
        dashboard.show(runs, levels={"scenes": "desert"}, poll_ms=0)
    with pytest.raises(ValueError, match="levels: 'cutouts' is not a varied setting of these runs; "
                                         "choose from 'scenes'"):
        dashboard.show(runs, levels={"cutouts": "10"}, poll_ms=0)


def test_show_of_a_missing_folder_says_so(tmp_path: Path) -> None:
    import dashboard

    with pytest.raises(FileNotFoundError, match="no such folder: .*nowhere"):
        dashboard.show(tmp_path / "nowhere")


def test_importing_dashboard_loads_no_panel() -> None:
    code = "import sys, dashboard; print('panel' in sys.modules, 'pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         check=True).stdout
    assert out.split() == ["False", "False"]


@pytest.mark.browser
def test_show_plays_the_grid_inline_and_follows_new_frames(chromium_browser, jupyter) -> None:
    url, frontend, runs = jupyter
    page = chromium_browser.new_page(viewport={"width": 1400, "height": 1000})
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(f"{e}\n{e.stack}"))
    page.goto(url)
    page.wait_for_function("window.jupyterapp && jupyterapp.shell.currentWidget"
                           " && jupyterapp.shell.currentWidget.sessionContext", timeout=120_000)
    page.wait_for_function("jupyterapp.shell.currentWidget.sessionContext.session?.kernel",
                           timeout=120_000)
    page.evaluate("jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_function(PLAYER, timeout=120_000)
    page.wait_for_function("gridPlayer.state().pending === 0", timeout=60_000)
    tiles = page.evaluate(TILES)
    assert sorted(t["id"] for t in tiles) == sorted(cell_name(v, [p]) for v, p in CELLS)
    assert all(t["inline"] and t["frame"] == 0 for t in tiles), tiles
    page.locator(".dp-tile").first.scroll_into_view_if_needed()
    _assert_frames_shown(page, 1)

    page.locator(".dp-step").click()  # the focus in the output
    page.keyboard.press("ArrowRight")
    assert page.evaluate("gridPlayer.state().index") == 1
    assert {t["frame"] for t in page.evaluate(TILES)} == {1}
    _assert_frames_shown(page, 2)
    page.keyboard.press("ArrowLeft")
    assert page.evaluate("gridPlayer.state().index") == 0
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"notebook-{frontend}.png"
    page.screenshot(path=str(shot))
    print(f"screenshot: {shot}")

    # the focus outside the output: the notebook's own keys, the player stays
    page.evaluate("document.activeElement.blur(); document.body.focus()")
    page.keyboard.press("ArrowRight")
    assert page.evaluate("gridPlayer.state().index") == 0

    # the running cell's last frame appears without re-running anything
    assert page.evaluate(f"gridPlayer.cells.get({LIVE!r}).steps.length") == FRAMES - 1
    write_frame(runs / LIVE / f"{LIVE}_{FRAMES}.png", (250, 250, 250), SIZE)
    page.wait_for_function(f"gridPlayer.cells.get({LIVE!r}).steps.length === {FRAMES}",
                           timeout=30_000)
    page.locator(".dp-step").click()
    page.keyboard.press("End")
    shown = {t["id"]: t["frame"] for t in page.evaluate(TILES)}
    assert shown[LIVE] == FRAMES - 1, shown

    # the cell run again: the first output's poller stops, the new one polls
    assert page.evaluate(IN_KERNEL, POLLERS) == "1"
    page.evaluate("gridPlayer.replaced = true; jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_function(f"{PLAYER} && !gridPlayer.replaced", timeout=60_000)
    page.wait_for_timeout(2000)  # a few polls
    assert page.evaluate(IN_KERNEL, POLLERS) == "1"
    foreign = [u for u in requests if not u.startswith(("http://127.0.0.1", "data:", "blob:"))]
    assert not foreign, foreign[:5]
    # Notebook 7.6 itself throws on load, in its core bundle, with an empty settings folder
    assert not [e for e in errors if "/static/notebook/notebook_core." not in e], errors
    page.close()
