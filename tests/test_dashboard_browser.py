"""The served app in headless Chromium: grid, synced player, filters, detail view."""
from __future__ import annotations

import re
from typing import Iterator

import pytest

from dashboard_fixtures import REPO, cell_name, dashboard_server, make_grid, make_scores

pytestmark = pytest.mark.browser

VQGANS, PERCEPTORS, FRAMES = ["sflckr", "imagenet"], ["ViT-B32", "RN50", "RN101"], 5
ARTIFACTS = REPO / "test-artifacts"
# Every tile's <img> and the frame number in its src, read in one go (one JS task).
SHOWN = """() => window.gridPlayer.tiles.map(t => ({
    id: t.cell.id, row: t.cell.row, loaded: t.pic.el.complete && t.pic.el.naturalWidth > 0,
    n: +t.pic.el.getAttribute('src').match(/_(\\d+)\\.png$/)[1]}))"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    base = tmp_path_factory.mktemp("app")
    make_grid(base / "runs", VQGANS, PERCEPTORS, FRAMES, size=(64, 32), noise=4)
    make_scores(base / "scores", VQGANS, PERCEPTORS, FRAMES)
    with dashboard_server(base / "runs") as url:
        yield url


@pytest.fixture
def page(chromium_browser, server: str):
    page = chromium_browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server)
    page.wait_for_function("window.gridPlayer && window.gridPlayer.tiles.length > 0",
                           timeout=30_000)
    page.wait_for_function("window.gridPlayer.state().pending === 0", timeout=30_000)
    yield page
    page.close()
    assert not errors


def test_grid_shows_one_image_per_cell(page) -> None:
    images = page.locator(".dp-tile img.dp-frame")
    assert images.count() == len(VQGANS) * len(PERCEPTORS)
    shown = page.evaluate(SHOWN)
    assert {s["id"] for s in shown} == {cell_name(v, [p]) for v in VQGANS for p in PERCEPTORS}
    assert all(s["loaded"] and s["n"] == 1 for s in shown)
    for r in VQGANS:
        assert page.locator(".dp-rowhead", has_text=re.compile(f"^{r}$")).count() == 1
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard_grid.png"), full_page=True)


def test_play_advances_every_cell_together(page) -> None:
    page.select_option(".dp-speed", "25")
    page.locator(".dp-play").click()
    seen = set()
    for _ in range(40):
        shown = page.evaluate(SHOWN)
        assert len({s["n"] for s in shown}) == 1, shown  # all cells on the same frame
        assert all(s["loaded"] for s in shown)
        seen.add(shown[0]["n"])
        page.wait_for_timeout(25)
    page.locator(".dp-play").click()
    assert len(seen) >= 3


def test_keys_step_and_reflect_turns_back(page) -> None:
    page.locator("body").press("ArrowRight")
    page.locator("body").press("ArrowRight")
    assert page.evaluate("window.gridPlayer.state().index") == 2
    page.locator("body").press("ArrowLeft")
    assert {s["n"] for s in page.evaluate(SHOWN)} == {2}
    page.select_option(".dp-mode", "reflect")
    page.evaluate(f"window.gridPlayer.show({FRAMES - 1})")
    assert page.evaluate("window.gridPlayer.following()") == [FRAMES - 2, -1]


def test_filter_hides_a_row(page) -> None:
    page.locator("label", has_text=re.compile("^imagenet$")).click()
    page.wait_for_function(f"window.gridPlayer.tiles.length === {len(PERCEPTORS)}")
    assert {s["row"] for s in page.evaluate(SHOWN)} == {"sflckr"}
    assert page.locator(".dp-rowhead", has_text="imagenet").count() == 0
    assert page.locator(".dp-rowhead", has_text="sflckr").count() == 1


def test_click_shows_a_cell_large_beside_the_pinned_baseline(page) -> None:
    base, other = cell_name("sflckr", ["RN50"]), cell_name("imagenet", ["RN101"])
    page.locator(f'.dp-tile[data-id="{base}"]').hover()
    page.locator(f'.dp-tile[data-id="{base}"] .dp-pin').click()
    page.locator(f'.dp-tile[data-id="{other}"] img').click()
    bigs = page.locator(".dp-detail .dp-big")
    assert bigs.count() == 2
    assert bigs.nth(0).get_attribute("data-id") == base
    assert "dp-baseline" in bigs.nth(0).get_attribute("class")
    assert bigs.nth(1).get_attribute("data-id") == other
    page.locator("body").press("ArrowRight")
    assert all(b.endswith("_2.png") for b in page.locator(".dp-detail img").evaluate_all(
        "els => els.map(e => e.getAttribute('src'))"))
    # the server hears of the pinned baseline: the sidebar's Select shows it
    values = "els => els.map(e => e.value)"
    for _ in range(100):
        if base in page.locator("select").evaluate_all(values):
            break
        page.wait_for_timeout(100)
    assert base in page.locator("select").evaluate_all(values)


def test_swap_axes_and_score_panels(page) -> None:
    page.get_by_role("button", name=re.compile("swap rows and columns")).click()
    page.wait_for_function("window.gridPlayer.grid.row_axis === 'perceptors'")
    assert page.locator(".dp-rowhead").count() == len(PERCEPTORS)
    for heading in ("Loss", "Bias matrix", "Image statistics"):
        assert page.get_by_role("heading", name=heading).count() == 1
