"""Fingerprints in the dashboard (issue 27): the cards on the grid's headers, the distance heatmaps
and the A/B difference view, in the served app and in the static export from file://, in
headless Chromium; and what they are computed from (experiments.fingerprints)."""
from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dashboard.fingerprints import experiment_prints, heatmaps_html, prints_spec
from dashboard.state import RootState
from dashboard_fixtures import REPO, cell_name, dashboard_server, make_grid, open_offline
from experiments.fingerprints import palette_distance
from experiments.scorefiles import CMMD, write_json

ARTIFACTS = REPO / "test-artifacts"
VQGANS, PERCEPTORS, SIZE = ["vq-a", "vq-b"], ["P0", "P1"], (64, 32)
A, B = cell_name("vq-a", ["P0"]), cell_name("vq-b", ["P0"])  # they differ in their VQGAN alone
CMMD_AB = 0.3
HEAT = ["#000004", "#1f0c48", "#550f6d", "#88226a", "#ba3655", "#e35933", "#f98e09", "#f8c931", "#fcffa4"]
DIFF_SCALE = 128  # player.js: the |A − B| at the top of the colour scale
READY = "window.gridPlayer && gridPlayer.tiles.length === 4 && gridPlayer.state().pending === 0"
CARDS = "gridPlayer.gridEl.querySelectorAll('.dp-card').length === 4"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2 x 2 grid (3 frames of 64x32 each, one colour per cell) and a judge's cmmd.json."""
    base = tmp_path_factory.mktemp("prints")
    make_grid(base / "runs", VQGANS, PERCEPTORS, 3, size=SIZE)
    write_json(base / "scores" / CMMD, {"cmmd": {"RN50": {"vqgan": {"vq-a": {"vq-b": CMMD_AB},
                                                                    "vq-b": {"vq-a": CMMD_AB}}}},
                                        "vendi": {}})
    return base / "runs"


@pytest.fixture(scope="module")
def prints(root: Path) -> list[dict]:
    state = RootState(root)
    return [experiment_prints(state.catalog(), state.root, state.scores)]


def heat_colour(a: Path, b: Path) -> np.ndarray:
    """The colour the difference view gives the centre of frames `a` and `b`: the mean over R, G
    and B of |a − b|, through player.js's scale (HEAT, DIFF_SCALE)."""
    pixels = [np.asarray(Image.open(p).convert("RGB"), np.float64) for p in (a, b)]
    h, w = pixels[0].shape[:2]
    t = min(np.abs(pixels[0] - pixels[1])[h // 2, w // 2].mean() / DIFF_SCALE, 1.0)
    stops = np.array([[int(c[i:i + 2], 16) for i in (1, 3, 5)] for c in HEAT], np.float64)
    return np.array([np.interp(t, np.linspace(0, 1, len(HEAT)), stops[:, k]) for k in range(3)])


def centre(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as shot:
        a = np.asarray(shot.convert("RGB"), np.float64)
    h, w = a.shape[:2]
    return a[h // 2 - 2:h // 2 + 3, w // 2 - 2:w // 2 + 3].reshape(-1, 3).mean(axis=0)


def test_fingerprints_of_the_catalog_and_their_heatmaps(prints: list[dict]) -> None:
    spec = prints_spec(prints)
    assert set(spec["cards"]) == {"vqgan", "perceptor_set"} and set(spec["cards"]["vqgan"]) == set(VQGANS)
    card = spec["cards"]["vqgan"]["vq-a"][0]
    assert card["runs"] == 2 and card["seconds_per_step"] == pytest.approx(1 / 3.5, abs=1e-4)
    assert len(card["palette"]) >= 1 and len(card["spectrum"]) == 16 and card["grid"] is not None
    assert set(spec["runs"]) == {cell_name(v, [p]) for v in VQGANS for p in PERCEPTORS}
    assert spec["distances"][prints[0]["experiment"]]["vqgan"]["cmmd"]["RN50"]["vq-a"]["vq-b"] == CMMD_AB
    page = heatmaps_html(prints)
    assert page.count("<table class=\"dp-heat\">") == 5  # palette, spectrum per factor; CMMD of the VQGANs
    assert "CMMD · RN50" in page and f">{CMMD_AB:.3g}<" in page


def _difference_view(page, root: Path, expected_palette: float, shot: str) -> None:
    """Pin A, open B, pick |A − B|: the heat map at the step shown and the distances."""
    page.evaluate(f"gridPlayer.setBaseline({A!r}, true); gridPlayer.setSelected({B!r}, true)")
    page.locator(".dp-compare").select_option("diff")
    page.keyboard.press("End")
    canvas = page.locator(".dp-heatmap")
    canvas.wait_for(timeout=10_000)
    page.wait_for_timeout(300)  # the frames loaded, painted
    frame = 3
    expected = heat_colour(root / A / f"{A}_{frame}.png", root / B / f"{B}_{frame}.png")
    got = centre(canvas.screenshot())
    assert np.abs(got - expected).max() < 25, (got, expected)
    same = heat_colour(root / A / f"{A}_{frame}.png", root / A / f"{A}_{frame}.png")
    assert np.abs(got - same).max() > 40  # not the colour of no difference
    text = page.locator(".dp-distances").inner_text()
    palette = float(re.search(r"final frames: palette ([\d.]+) ΔE\*ab", text)[1])
    assert palette == pytest.approx(expected_palette, abs=0.06), text
    assert "VQGAN vq-a ↔ vq-b, all their runs: palette " in text and f"CMMD RN50 {CMMD_AB:.3f}" in text, text
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / shot))


def _expected_palette(prints: list[dict]) -> float:
    runs = prints[0]["runs"]
    return palette_distance(runs[A]["palette"], runs[B]["palette"])


@pytest.mark.browser
def test_served_app_shows_cards_heatmaps_and_the_difference(chromium_browser, root: Path, prints: list[dict]) -> None:
    with dashboard_server(root) as url:
        page = chromium_browser.new_page(viewport={"width": 1366, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        page.wait_for_function(READY, timeout=60_000)
        page.wait_for_function(CARDS, timeout=60_000)  # computed in the background, shown when ready
        assert "0.29 s/step" in page.locator(".dp-tile .dp-cap").first.inner_text()  # runtime beside the loss
        assert page.locator(".dp-heat").count() == 5
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "fingerprints-app.png"), full_page=True)
        _difference_view(page, root, _expected_palette(prints), "fingerprints-app-difference.png")
        assert not errors
        page.close()


@pytest.mark.browser
def test_export_carries_cards_heatmaps_and_the_difference_offline(chromium_browser, root: Path, prints: list[dict],
                                                                  tmp_path: Path) -> None:
    from dashboard.export import export

    html = export(root, tmp_path / "site")
    spec = json.loads(re.search(r'id="dp-data">(.*?)</script>', html.read_text())[1])
    assert set(spec["prints"]["runs"]) == {c["id"] for c in spec["cells"]}
    page, requests, errors = open_offline(chromium_browser, html.as_uri(), 1366, 900)
    page.wait_for_function(READY, timeout=60_000)
    assert page.evaluate(CARDS)
    assert page.locator(".dp-heat").count() == 5
    page.screenshot(path=str(ARTIFACTS / "fingerprints-export.png"), full_page=True)
    _difference_view(page, root, _expected_palette(prints), "fingerprints-export-difference.png")  # file://: drawn, never read back
    assert not errors and all(r.startswith("file:") for r in requests)
    page.context.close()
