"""The "What drives the look" panel in headless Chromium: served (pick a measure, the grid's
VQGAN and perceptor headers take its colours) and in the static export (click a bar)."""
from __future__ import annotations

from pathlib import Path

import pytest

from dashboard_fixtures import REPO, dashboard_server, open_offline
from test_effects import grid, stripes

pytestmark = pytest.mark.browser
ARTIFACTS = REPO / "test-artifacts"
READY = "window.gridPlayer && window.gridPlayer.tiles.length > 0"
# Each header's value, background and title, read inside the player's (shadow) root.
HEADS = """() => [...gridPlayer.gridEl.querySelectorAll('.dp-rowhead, .dp-colhead')].map(e =>
    [e.dataset.value, e.style.background, e.title])"""


def _painted(page) -> dict[str, tuple[str, str]]:
    return {text: (colour, title) for text, colour, title in page.evaluate(HEADS) if colour}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return grid(tmp_path_factory.mktemp("look") / "images_out", stripes, seeds=(1, 2)) / "exp"


def test_served_panel_colours_the_headers_by_the_picked_measure(chromium_browser, root: Path) -> None:
    with dashboard_server(root.parent) as url:
        page = chromium_browser.new_page(viewport={"width": 1366, "height": 1400})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        page.wait_for_function(READY, timeout=60_000)
        page.get_by_text("edge density: 100 % VQGAN").wait_for(timeout=60_000)  # measured in the background
        assert page.get_by_text("edge density: 100 % VQGAN").count() == 1
        assert _painted(page) == {}
        page.get_by_label("Colour the grid's headers by").select_option(label="edge density")
        page.wait_for_function("() => gridPlayer.gridEl.querySelector('.dp-rowhead').style.background",
                               timeout=20_000)
        painted = _painted(page)
        assert set(painted) == {"vq-fine", "vq-coarse", "p-red", "p-green"}
        assert painted["vq-fine"][1].startswith("edge density: ")
        assert painted["vq-fine"][0] != painted["vq-coarse"][0]  # the finer stripes, more edges
        ARTIFACTS.mkdir(exist_ok=True)
        page.get_by_text("What drives the look").scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "effects_panel.png"), full_page=True)
        assert not errors
        page.close()


def test_export_panel_colours_the_headers_on_a_click(chromium_browser, root: Path, tmp_path: Path) -> None:
    from dashboard.export import export

    html = export(root.parent, tmp_path / "out")
    page, requests, errors = open_offline(chromium_browser, html.as_uri(), 1200, 900)
    page.wait_for_function(READY, timeout=30_000)
    names = page.locator(".dp-effect-name").all_inner_texts()  # each bar's measure, as its reading spells it
    assert "edge density" in names and all(r.startswith(f"{n}: ") for n, r in
                                           zip(names, page.locator(".dp-effect-reading").all_inner_texts()))
    bar = page.locator(".dp-effect", has_text="edge density: 100 % VQGAN")
    bar.click()
    painted = _painted(page)
    assert set(painted) == {"vq-fine", "vq-coarse", "p-red", "p-green"}
    bar.click()  # a second click clears them
    assert _painted(page) == {}
    page.locator(".dp-effect", has_text="colourfulness").click()
    assert _painted(page)["p-red"][1].startswith("colourfulness: ")
    assert not errors and all(r.startswith("file:") for r in requests)
    page.context.close()
