"""The served app in headless Chromium on the study's shape (5 VQGANs x 8 perceptors): layout
at 1366x768 and 2560x1440, the enlarged view, keys after a sidebar click, live updates.
One server for the module; one page load per test."""
from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from PIL import Image

from dashboard_fixtures import REPO, cell_name, dashboard_server, make_our_run, write_frame

pytestmark = pytest.mark.browser

VQGANS = ["imagenet", "openimages", "wikiart", "coco", "sflckr"]
PERCEPTORS = ["ViT-B32", "ViT-B16", "RN50", "RN101", "RN50x4", "ViT-B32_ViT-B16", "ViT-B32_RN50",
              "RN50_RN101"]
FRAMES, SIZE = 5, (64, 32)
DAMAGED = cell_name("sflckr", ["RN50"])  # its frame 3 replaced after the run finished
ARTIFACTS = REPO / "test-artifacts"
READY = "window.gridPlayer && window.gridPlayer.tiles.length > 0"
# Every tile's <img>: its cell, whether it loaded and the frame number in its src (one JS task).
SHOWN = """() => window.gridPlayer.tiles.map(t => ({
    id: t.cell.id, row: t.cell.row, loaded: t.pic.el.complete && t.pic.el.naturalWidth > 0,
    n: +t.pic.el.getAttribute('src').match(/_(\\d+)\\.png$/)[1]}))"""
# Bounding boxes in viewport coordinates, read inside the component's shadow root.
RECTS = """(sel) => [...window.gridPlayer.el.getRootNode().querySelectorAll(sel)].map(e => {
    const r = e.getBoundingClientRect();
    return {left: r.left, top: r.top, right: r.right, bottom: r.bottom}; })"""
# The sidebar's widgets (inside Bokeh's shadow roots): right edges of those that start left of
# the player, and the player's left edge.
SIDEBAR = """() => {
    const found = [], walk = (root) => root.querySelectorAll('*').forEach(e => {
        found.push(e); if (e.shadowRoot) walk(e.shadowRoot); });
    walk(document);
    const player = gridPlayer.el.getBoundingClientRect().left;
    const widgets = found.filter(e => e.matches('select, button, input, label, .bk-input'))
        .map(e => e.getBoundingClientRect()).filter(r => r.width && r.left < player);
    return {player, rights: widgets.map(r => r.right)}; }"""
# The tile drawn lowest, then rightmost.
LAST_TILE = """() => gridPlayer.tiles.map(t => [t.el.getBoundingClientRect(), t.cell.id])
    .sort((a, b) => a[0].bottom - b[0].bottom || a[0].right - b[0].right).at(-1)[1]"""
FITS = """() => ({scroll: document.documentElement.scrollWidth, width: innerWidth,
                  height: innerHeight})"""


def _perceptors(slug: str) -> list[str]:
    return slug.split("_")


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The served 5 x 8 study grid (pair cells included) and its run folder."""
    base = tmp_path_factory.mktemp("app")
    runs = base / "runs"
    for i, v in enumerate(VQGANS):
        for j, p in enumerate(PERCEPTORS):
            make_our_run(runs, cell_name(v, _perceptors(p)), v, _perceptors(p),
                         cell=i * len(PERCEPTORS) + j, n_frames=FRAMES, size=SIZE, save_every=50)
    write_frame(runs / DAMAGED / f"{DAMAGED}_3.png", (0, 0, 0), SIZE)  # decodes, but not as recorded
    with dashboard_server(runs) as url:
        yield url, runs


def _open(browser, url: str, width: int, height: int):
    page = browser.new_page(viewport={"width": width, "height": height})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_function(READY, timeout=60_000)
    page.wait_for_function("window.gridPlayer.state().pending === 0", timeout=60_000)
    page.wait_for_timeout(300)  # the fit after the last layout change
    return page, errors


def _inside(rect: dict, view: dict) -> bool:
    return (rect["left"] >= 0 and rect["top"] >= 0 and rect["right"] <= view["width"]
            and rect["bottom"] <= view["height"])


def _assert_fits(page, n_tiles: int) -> None:
    view = page.evaluate(FITS)
    assert view["scroll"] <= view["width"], view  # no horizontal scroll
    tiles = page.evaluate(RECTS, ".dp-tile")
    assert len(tiles) == n_tiles
    outside = [r for r in tiles if not _inside(r, view)]
    assert not outside, f"{len(outside)} tiles outside the {view} viewport: {outside[:3]}"


def test_study_grid_fits_and_compares_in_place(chromium_browser, study) -> None:
    url, _ = study
    # the step (steps done) from the URL, and the perceptor set's axis by its old name
    page, errors = _open(chromium_browser, url + "/?step=100&cols=generator", 1366, 768)
    _assert_fits(page, len(VQGANS) * len(PERCEPTORS))
    shown = page.evaluate(SHOWN)
    assert all(s["loaded"] and s["n"] == 2 for s in shown)  # frames at steps 50, 100, ...
    assert page.evaluate("gridPlayer.state()")["index"] == 1
    assert page.evaluate("[gridPlayer.grid.col_axis, gridPlayer.grid.cols.length]") == [
        "perceptor_set", len(PERCEPTORS)]
    assert page.locator(".dp-tile .dp-badge").count() == 1  # the damaged run, and only it
    assert page.locator(f'.dp-tile[data-id="{DAMAGED}"] .dp-badge').inner_text() == "damaged"
    assert page.get_by_text("0 incomplete · 1 damaged").count() == 1  # the summary
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard_1366x768.png"))

    # pin the first cell, click the last (bottom right): both open large, inside the window
    first, last = cell_name(VQGANS[0], ["ViT-B32"]), page.evaluate(LAST_TILE)
    page.locator(f'.dp-tile[data-id="{first}"]').hover()
    page.locator(f'.dp-tile[data-id="{first}"] .dp-pin').click()
    page.locator(f'.dp-tile[data-id="{last}"]').click()
    bigs = page.locator(".dp-panel .dp-big")
    assert bigs.count() == 2 and bigs.nth(1).get_attribute("data-id") == last
    view = page.evaluate(FITS)
    for rect in page.evaluate(RECTS, ".dp-panel, .dp-big .dp-frame"):
        assert _inside(rect, view), rect
    # nothing (such as the sticky controls) covers the enlarged frames
    covered = page.evaluate("""() => [...gridPlayer.panel.querySelectorAll('.dp-frame')].map(f => {
        const r = f.getBoundingClientRect();
        const hit = gridPlayer.el.getRootNode().elementFromPoint(r.left + 2, r.top + 2);
        return gridPlayer.panel.contains(hit); })""")
    assert covered == [True, True]
    page.locator("body").press("ArrowRight")
    assert all(src.endswith("_3.png") for src in page.locator(".dp-panel img").evaluate_all(
        "els => els.map(e => e.getAttribute('src'))"))
    # a cell's full settings on demand, differences from the baseline marked
    page.locator(".dp-panel .dp-selected summary").click()
    assert "perceptors" in page.locator(".dp-panel .dp-selected .dp-settings").inner_text()
    assert page.locator(".dp-panel .dp-selected tr.dp-differs").count() >= 1
    # A/B flicker alternates the two frames in one place; the slider wipes between them
    page.select_option(".dp-compare", "flicker")
    fronts = set()
    for _ in range(8):
        fronts.add(page.evaluate("gridPlayer.bigs.findIndex(b => b.el.classList.contains('dp-front'))"))
        page.wait_for_timeout(200)
    assert fronts == {0, 1}
    page.select_option(".dp-compare", "slider")
    page.locator(".dp-wipe").fill("30")
    assert "30%" in page.evaluate("gridPlayer.bigs[1].pic.el.style.clipPath")
    page.screenshot(path=str(ARTIFACTS / "dashboard_1366x768_compare.png"))
    page.keyboard.press("Escape")
    assert page.locator(".dp-panel").is_hidden()

    # the same page at 2560x1440: still fits, larger tiles, sidebar widgets inside the sidebar
    small = page.evaluate(RECTS, ".dp-tile")[0]
    page.set_viewport_size({"width": 2560, "height": 1440})
    page.wait_for_timeout(500)
    _assert_fits(page, len(VQGANS) * len(PERCEPTORS))
    large = page.evaluate(RECTS, ".dp-tile")[0]
    assert large["right"] - large["left"] > 1.5 * (small["right"] - small["left"])
    page.screenshot(path=str(ARTIFACTS / "dashboard_2560x1440.png"))
    sidebar = page.evaluate(SIDEBAR)
    assert len(sidebar["rights"]) > 10 and max(sidebar["rights"]) <= sidebar["player"], sidebar
    # collapsing the sidebar gives the tiles its width; actual pixels shows frames 1:1
    page.set_viewport_size({"width": 1366, "height": 768})
    page.wait_for_timeout(500)
    before = page.evaluate(RECTS, ".dp-tile")[0]
    page.get_by_role("button", name=re.compile("sidebar")).click()
    page.wait_for_function(f"gridPlayer.el.getBoundingClientRect().left < {before['left'] - 100}")
    page.wait_for_timeout(300)
    _assert_fits(page, len(VQGANS) * len(PERCEPTORS))
    page.select_option(".dp-size", "actual")
    assert page.evaluate(RECTS, ".dp-tile img")[0]["right"] - page.evaluate(
        RECTS, ".dp-tile img")[0]["left"] == SIZE[0]
    assert page.evaluate(FITS)["scroll"] <= page.evaluate(FITS)["width"]
    page.close()
    assert not errors


def test_keys_after_a_sidebar_click_context_url_and_live_updates(chromium_browser,
                                                                  study) -> None:
    url, runs = study
    page, errors = _open(chromium_browser, url, 1366, 768)
    # the scene and prompts at the current step: scene 1 first, scene 2 at the end
    assert "scene 1 of 2" in page.locator(".dp-context").inner_text()
    assert "a photograph" in page.locator(".dp-context").inner_text()
    assert page.get_by_role("heading", name="Loss").count() == 1

    box = page.get_by_role("checkbox", name="imagenet")
    box.click()  # the filter now has focus
    page.wait_for_function(f"gridPlayer.tiles.length === {(len(VQGANS) - 1) * len(PERCEPTORS)}")
    assert "imagenet" not in {s["row"] for s in page.evaluate(SHOWN)}
    page.keyboard.press("ArrowRight")
    assert page.evaluate("gridPlayer.state().index") == 1
    page.keyboard.press("End")
    assert page.evaluate("gridPlayer.state().index") == FRAMES - 1
    assert "scene 2 of 2" in page.locator(".dp-context").inner_text()
    assert "a painting" in page.locator(".dp-context").inner_text()
    page.keyboard.press("Home")
    assert page.evaluate("gridPlayer.state().index") == 0
    page.select_option(".dp-speed", "25")  # a select has focus now: Space still plays
    page.keyboard.press(" ")
    assert page.evaluate("gridPlayer.state().playing")
    assert not box.is_checked()  # Space did not toggle the filter
    seen = set()
    for _ in range(30):  # every cell on the same frame, always loaded
        shown = page.evaluate(SHOWN)
        assert len({s["n"] for s in shown}) == 1 and all(s["loaded"] for s in shown)
        seen.add(shown[0]["n"])
        page.wait_for_timeout(25)
    assert len(seen) >= 3
    # the pause icon is a drawn shape, not a missing glyph: the button shows dark pixels
    icon = np.asarray(Image.open(io.BytesIO(page.locator(".dp-play").screenshot())).convert("L"))
    assert page.locator(".dp-play svg.dp-icon-pause").count() == 1 and (icon < 80).sum() > 20
    page.keyboard.press(" ")
    assert not page.evaluate("gridPlayer.state().playing")
    page.keyboard.press("End")  # the URL carries the step shown, in steps done
    page.wait_for_function(f"location.search.includes('step={FRAMES * 50}')", timeout=20_000)
    shown_vqgans = parse_qs(urlsplit(page.url).query)["vqgan"][0]
    assert "imagenet" not in shown_vqgans.replace("openimages", "") and "sflckr" in shown_vqgans

    # a new run, then its next frame, appear without a reload
    new = make_our_run(runs, cell_name("coco", ["RN50"], "exp_seed2"), "coco", ["RN50"],
                       n_frames=FRAMES + 1, size=SIZE, save_every=50, seed=7, complete=False)
    last = new / f"{new.name}_{FRAMES + 1}.png"
    last.unlink()  # still running: frames 1-5 of 6
    page.wait_for_function(f"gridPlayer.cells.has({new.name!r})", timeout=30_000)
    write_frame(last, (250, 250, 250), SIZE)
    page.wait_for_function(f"gridPlayer.grid.steps.length === {FRAMES + 1}", timeout=30_000)
    page.keyboard.press("End")
    shown = {s["id"]: s["n"] for s in page.evaluate(SHOWN)}
    assert shown[new.name] == FRAMES + 1 and shown[cell_name("coco", ["RN50"])] == FRAMES
    page.close()
    assert not errors
