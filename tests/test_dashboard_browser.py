"""The served app in headless Chromium on the study's shape (5 VQGANs x 8 perceptors): layout
at 1366x768 and 2560x1440, the enlarged view, keys after a sidebar click, live updates; and on a
root whose factors go beyond VQGAN and perceptor set (the prompt, pytti's stability family): the
factors as axes, filters, captions and A/B differences, and the page's labels and layout.
One server per root; one page load per test."""
from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qs, quote, urlsplit

import numpy as np
import pytest
from PIL import Image

from dashboard.filters import SIDEBAR_WIDTH
from dashboard_fixtures import (
    PROMPTS, REPO, cell_name, dashboard_server, make_our_run, make_prompt_grid, make_pytti_run, make_scores,
    write_frame,
)
from engine.runfolder import cell_name as engine_cell_name

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


# ---------------------------------------------------------------- factors beyond VQGAN and perceptor set

PROMPTED = "exp_prompts"
PROMPT_VQGANS, PROMPT_PERCEPTORS = ["imagenet", "wikiart"], ["ViT-B32", "RN50"]
STABILITY = "exp_video_basic_stability_modes"
STABILITY_FACTORS = ["reencode_each_frame", "direct_stabilization_weight", "semantic_stabilization_weight"]
# Every element, shadow roots included: the text of each <li> of each <ul> (the effects' readings).
BULLETS = """() => { const lists = [], walk = (root) => root.querySelectorAll('*').forEach(e => {
    if (e.tagName === 'UL') lists.push([...e.children].map(li => li.textContent.trim()));
    if (e.shadowRoot) walk(e.shadowRoot); });
    walk(document); return lists; }"""
# The effects bars' measures top to bottom (a Bokeh FactorRange lists them bottom first).
BARS = """() => [...Bokeh.documents[0].all_models].filter(m => m.constructor.__name__ === 'FactorRange'
    && m.factors.includes('contrast')).map(m => [...m.factors].reverse())"""
# The rendered size of the bias heatmap (the figure titled "similarity, ...").
BIAS_SIZE = """() => { let found = null; const walk = (view) => {
    if (found || !view) return;
    if (view.model.title?.text?.startsWith('similarity')) { found = view; return; }
    (view.child_views ?? []).forEach(walk); };
    Bokeh.index.roots.forEach(walk);
    const r = found.el.getBoundingClientRect(); return {width: r.width, height: r.height}; }"""
# The compare dropdown's width, and the width it takes unconstrained (a clone beside it).
COMPARE_WIDTHS = """() => { const s = gridPlayer.compareSelect, probe = s.cloneNode(true);
    probe.style.cssText = 'position: absolute; width: auto; visibility: hidden';
    s.parentNode.append(probe); const natural = probe.getBoundingClientRect().width; probe.remove();
    return {shown: s.getBoundingClientRect().width, natural, scroll: s.scrollWidth, client: s.clientWidth}; }"""


def _prompt_cell(vqgan: str, perceptor: str, prompt: str) -> str:
    return engine_cell_name(PROMPTED, vqgan, [perceptor], varied=[("scenes", prompt)])


def _query(**params: object) -> str:
    """A page URL's query string, lists as the page writes them (JSON)."""
    return "/?" + "&".join(f"{k}={quote(v if isinstance(v, str) else json.dumps(v))}" for k, v in params.items())


@pytest.fixture(scope="module")
def factors(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Served `images_out`: the prompt as a factor (2 VQGANs x 2 perceptors x 3 prompts, with the
    judge stage's score files) beside pytti's stability family (ref x dsw x ssw)."""
    base = tmp_path_factory.mktemp("factors")
    runs = base / "images_out"
    make_prompt_grid(runs, PROMPT_VQGANS, PROMPT_PERCEPTORS, FRAMES, size=SIZE, save_every=50, noise=6,
                     experiment=PROMPTED)
    for i, (ref, dsw, ssw) in enumerate((r, d, s) for r in ("True", "False") for d in ("0.0", "1.0")
                                        for s in ("0.0", "1.0")):
        make_pytti_run(runs, f"{STABILITY}_ref-{ref}_dsw-{dsw}_ssw-{ssw}", "sflckr", ["ViT-B32"], cell=i,
                       n_frames=2, noise=6)
    make_scores(base / "scores", PROMPT_VQGANS, PROMPT_PERCEPTORS, FRAMES, experiment=PROMPTED)
    with dashboard_server(runs) as url:
        yield url


def test_prompts_as_rows_factor_filters_captions_and_ab_differences(chromium_browser, factors: str) -> None:
    page, errors = _open(chromium_browser, factors + _query(experiments=[PROMPTED], rows="scenes"), 1366, 768)
    assert page.evaluate("[gridPlayer.grid.row_axis, gridPlayer.grid.row_label, gridPlayer.grid.rows]") == [
        "scenes", "scenes", sorted(PROMPTS)]
    assert page.locator(".dp-rowhead .dp-headname").all_inner_texts() == sorted(PROMPTS)
    assert {s["row"] for s in page.evaluate(SHOWN) if "scenes-sea" in s["id"]} == {"sea"}
    assert page.locator(".dp-levels").count() == 0  # the prompt is the rows: no caption repeats it
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "prompts-as-rows.png"))
    axes = page.get_by_label("Rows").locator("option").all_inner_texts()
    assert {"VQGAN", "perceptor set", "scenes", *STABILITY_FACTORS} <= set(axes)

    # a filter per varied setting: untick a prompt, its row goes, the URL keeps it
    page.get_by_role("checkbox", name="sea").click()
    page.wait_for_function(f"gridPlayer.tiles.length === {len(PROMPT_VQGANS) * len(PROMPT_PERCEPTORS) * 2}")
    assert page.evaluate("gridPlayer.grid.rows") == ["city", "forest"]
    page.wait_for_function("new URLSearchParams(location.search).has('scenes')", timeout=20_000)
    assert json.loads(parse_qs(urlsplit(page.url).query)["scenes"][0]) == ["city", "forest"]

    # VQGANs as rows: each caption names its prompt
    page.get_by_label("Rows").select_option(label="VQGAN")
    page.wait_for_function("gridPlayer.grid.row_axis === 'vqgan'")
    city = _prompt_cell("imagenet", "RN50", "city")
    assert page.locator(f'.dp-tile[data-id="{city}"] .dp-levels').inner_text() == "scenes=city"
    assert set(page.locator(".dp-levels").all_inner_texts()) == {"scenes=city", "scenes=forest"}

    # A/B across the prompt: the enlarged view says what differs
    forest = _prompt_cell("imagenet", "RN50", "forest")
    page.locator(f'.dp-tile[data-id="{city}"]').hover()
    page.locator(f'.dp-tile[data-id="{city}"] .dp-pin').click()
    page.locator(f'.dp-tile[data-id="{forest}"]').click()
    assert page.locator(".dp-panel .dp-diff").inner_text() == "B differs from A in scenes: city → forest"
    assert page.locator(".dp-panel .dp-big .dp-levels").all_inner_texts() == ["scenes=city", "scenes=forest"]
    page.keyboard.press("Escape")

    # pytti's stability family: its three factors lay out the grid by their setting names
    page.goto(factors + _query(experiments=[STABILITY], rows=STABILITY_FACTORS[1], cols=STABILITY_FACTORS[2]))
    page.wait_for_function(f"window.gridPlayer && gridPlayer.grid.row_axis === {STABILITY_FACTORS[1]!r} "
                           "&& gridPlayer.tiles.length === 8", timeout=60_000)
    grid = page.evaluate("gridPlayer.grid")
    assert (grid["rows"], grid["cols"]) == (["0.0", "1.0"], ["0.0", "1.0"])
    assert grid["col_label"] == STABILITY_FACTORS[2]
    assert {c["levels"] for c in grid["cells"]} == {"ref=True", "ref=False"}
    # header colours keyed by factor: the family's own axes take a measure's means
    page.get_by_label("Colour the grid's headers by").select_option(label="contrast")
    page.wait_for_function("gridPlayer.gridEl.querySelector('.dp-rowhead').style.background", timeout=20_000)
    assert all(t.startswith("contrast: ") for t in page.locator(".dp-rowhead, .dp-colhead").evaluate_all(
        "els => els.map(e => e.title)"))
    page.close()
    assert not errors


def test_headings_labels_and_layout_of_the_page(chromium_browser, factors: str) -> None:
    page, errors = _open(chromium_browser, factors + _query(experiments=[PROMPTED]), 1366, 768)
    # the page says what it is; each group of filters has its heading
    assert page.get_by_role("heading", name=f"VQGAN+CLIP grid: {PROMPTED}").count() == 1
    assert page.get_by_role("heading", name="images_out", exact=True).count() == 0
    for heading in ("VQGAN models", "Perceptors", "Experiments", "scenes", *STABILITY_FACTORS):
        assert page.get_by_role("heading", name=heading, exact=True).count() == 1, heading
    # the player's dropdowns are labelled
    for label, cls in (("speed", "dp-speed"), ("at the end", "dp-mode"), ("tile size", "dp-size")):
        assert page.get_by_label(label, exact=True).evaluate("e => e.className") == cls
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "after-sidebar.png"),
                    clip={"x": 0, "y": 0, "width": SIDEBAR_WIDTH + 30, "height": 768})
    page.locator(".dp-controls").screenshot(path=str(ARTIFACTS / "after-player-bar.png"))

    # the enlarged view's compare dropdown: labelled, as wide as its longest choice
    first, last = _prompt_cell("imagenet", "ViT-B32", "city"), _prompt_cell("wikiart", "RN50", "sea")
    page.locator(f'.dp-tile[data-id="{first}"]').hover()
    page.locator(f'.dp-tile[data-id="{first}"] .dp-pin').click()
    page.locator(f'.dp-tile[data-id="{last}"]').click()
    assert page.get_by_label("compare", exact=True).evaluate("e => e.className") == "dp-compare"
    for viewport in ({"width": 1366, "height": 768}, {"width": 640, "height": 600}):
        page.set_viewport_size(viewport)
        page.wait_for_timeout(200)
        widths = page.evaluate(COMPARE_WIDTHS)
        assert widths["shown"] >= widths["natural"] - 0.5 and widths["scroll"] <= widths["client"], widths
    page.locator(".dp-panel-head").screenshot(path=str(ARTIFACTS / "after-compare-head.png"))
    page.screenshot(path=str(ARTIFACTS / "after-compare.png"))
    page.keyboard.press("Escape")
    page.set_viewport_size({"width": 1366, "height": 768})

    # the bias matrix takes the width its judges need, not the window's
    page.get_by_role("heading", name="Bias matrix").scroll_into_view_if_needed()
    size = page.evaluate(BIAS_SIZE)
    assert size["width"] <= 520 and size["height"] <= 4 * 24 + 100, size  # 2 judges, 4 cells
    # the effects' bars and readings: one order, one spelling
    bars, lists = page.evaluate(BARS), page.evaluate(BULLETS)
    assert len(bars) == 2  # one per experiment
    for names in bars:
        assert "edge density" in names and not any("_" in n for n in names)
        assert any(len(items) >= len(names) and all(item.startswith(f"{n}: ") for n, item in zip(names, items))
                   for items in lists), (names, lists)
    page.set_viewport_size({"width": 1366, "height": 3400})  # the whole page in view
    page.wait_for_timeout(500)
    for heading, name, height in (("Bias matrix", "after-bias-matrix.png", size["height"] + 60),
                                  ("What drives the look", "after-effects.png", 900)):
        box = page.get_by_role("heading", name=heading).bounding_box()
        page.screenshot(path=str(ARTIFACTS / name),
                        clip={"x": box["x"], "y": box["y"], "width": 1366 - box["x"], "height": height})
    page.close()
    assert not errors
