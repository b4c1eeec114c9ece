"""Static export: size of a 25 x 40 grid, a self-contained page, and offline playback."""
from __future__ import annotations

import io
import re
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dashboard.export import export, export_size, output_paths
from dashboard_fixtures import REPO, cell_name, frame_colour, make_grid

VQGANS = ["imagenet", "openimages", "wikiart", "coco", "sflckr"]
PERCEPTORS = ["ViT-B32", "ViT-B16", "ViT-L14", "RN50", "RN101"]
FRAMES, SIZE, BUDGET = 40, (256, 128), 15_000_000
ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """25 cells x 40 frames of 256x128: smooth gradients plus noise, like real frames, so that
    compression has work to do."""
    root = tmp_path_factory.mktemp("grid25") / "runs"
    make_grid(root, VQGANS, PERCEPTORS, FRAMES, size=SIZE, noise=8)
    return root


@pytest.fixture(scope="module")
def exported(grid: Path) -> Path:
    out = grid.parent / "site"
    result = subprocess.run([sys.executable, "-m", "dashboard", "export", "--root", str(grid),
                             "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                            timeout=300, check=True)
    assert "packing" in result.stderr and "25/25" in result.stderr  # tqdm progress
    return out


def test_25x40_export_stays_within_15_mb(grid: Path, exported: Path) -> None:
    frames = sum(p.stat().st_size for p in grid.rglob("*.png"))
    size = export_size(exported)
    print(f"export of 25 x 40 frames: {size / 1e6:.2f} MB (PNG frames: {frames / 1e6:.1f} MB)")
    assert frames > 40_000_000  # the fixture is not trivially compressible
    assert size < BUDGET


def test_export_is_self_contained(exported: Path) -> None:
    html_path, assets = output_paths(exported)
    text = html_path.read_text()
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", text)  # no CDN, no network
    sheets = sorted(re.findall(r'"url":"(assets/[^"]+)"', text))
    assert len(sheets) == 25 and all((exported / s).is_file() for s in sheets)
    assert sorted(p.name for p in assets.iterdir()) == sorted(Path(s).name for s in sheets)
    assert not list(exported.rglob("*.tmp"))
    assert all(p.stat().st_mode & stat.S_IROTH for p in [html_path, *assets.iterdir()])


def test_export_to_an_html_file_drops_stale_sheets(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    make_grid(root, ["sflckr", "coco"], ["RN50"], 3, size=(64, 32))
    page = export(root, tmp_path / "grid.html")
    assets = tmp_path / "grid_files"
    assert page == tmp_path / "grid.html" and len(list(assets.iterdir())) == 2
    with Image.open(next(assets.iterdir())) as sheet:
        assert sheet.format == "WEBP" and sheet.size == (2 * 64, 2 * 32)  # 3 frames in 2 x 2
    for frame in (root / cell_name("coco", ["RN50"])).iterdir():
        frame.unlink()
    export(root, tmp_path / "grid.html", width=32)
    assert [p.name for p in assets.iterdir()] == [f"000-{cell_name('sflckr', ['RN50'])}.webp"]
    with Image.open(next(assets.iterdir())) as sheet:
        assert sheet.size == (2 * 32, 2 * 16)


def _centre_colour(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as im:
        a = np.asarray(im.convert("RGB"), np.float32)
    h, w = a.shape[:2]
    return a[h * 2 // 5: h * 3 // 5, w * 2 // 5: w * 3 // 5].reshape(-1, 3).mean(axis=0)


def _expected(cell: int, n: int) -> np.ndarray:
    shade = 0.75 + 0.25 * np.sin(0.5 * 3.1 + 0.5 * 1.7)  # write_frame's gradient at the centre
    return np.asarray(frame_colour(cell, n, FRAMES), np.float32) * shade


@pytest.mark.browser
def test_export_plays_offline_from_a_file_url(exported: Path, chromium_browser) -> None:
    context = chromium_browser.new_context(offline=True, viewport={"width": 1500, "height": 1000})
    requests: list[str] = []
    context.on("request", lambda r: requests.append(r.url))
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto((exported / "index.html").as_uri())
    page.wait_for_function("window.gridPlayer && window.gridPlayer.state().pending === 0",
                           timeout=30_000)

    tiles = page.locator(".dp-tile .dp-frame")
    assert tiles.count() == 25
    probe = [(cell_name("imagenet", ["ViT-B32"]), 0), (cell_name("sflckr", ["RN101"]), 24)]
    for name, cell in probe:  # frame 1 of the right cell: the sheet is loaded and aligned
        png = page.locator(f'.dp-tile[data-id="{name}"] .dp-frame').screenshot()
        assert np.abs(_centre_colour(png) - _expected(cell, 1)).max() < 20

    page.select_option(".dp-speed", "40")
    page.locator(".dp-play").click()
    page.wait_for_function("window.gridPlayer.state().index >= 5")
    page.locator(".dp-play").click()
    state = page.evaluate("window.gridPlayer.state()")
    assert len({t["frame"] for t in state["tiles"]}) == 1 and state["tiles"][0]["frame"] >= 5
    page.evaluate(f"window.gridPlayer.show({FRAMES - 1})")
    for name, cell in probe:  # the last frame, from the same sheet
        png = page.locator(f'.dp-tile[data-id="{name}"] .dp-frame').screenshot()
        assert np.abs(_centre_colour(png) - _expected(cell, FRAMES)).max() < 20
    assert all(u.startswith("file://") for u in requests) and not errors
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard_export.png"))
    context.close()
