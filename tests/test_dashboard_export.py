"""Static export: size of a 25 x 40 grid, a self-contained page, and offline playback."""
from __future__ import annotations

import io
import json
import re
import stat
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dashboard import export as export_module
from dashboard.export import (GUTTER, ExportError, check_budget, export, export_size,
                              output_paths)
from dashboard_fixtures import (PROMPTS, REPO, STUDY, cell_name, frame_colour, make_grid, make_our_run,
                                make_prompt_grid, open_offline)
from engine.runfolder import RunFolder
from engine.runfolder.frames import read_table

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
        pad = 2 * GUTTER
        assert sheet.format == "WEBP" and sheet.size == (2 * (64 + pad), 2 * (32 + pad))  # 3 in 2x2
    for frame in (root / cell_name("coco", ["RN50"])).iterdir():
        frame.unlink()
    export(root, tmp_path / "grid.html", width=32)
    assert [p.name for p in assets.iterdir()] == [f"000-{cell_name('sflckr', ['RN50'])}.webp"]
    with Image.open(next(assets.iterdir())) as sheet:
        assert sheet.size == (2 * (32 + pad), 2 * (16 + pad))


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
    page, requests, errors = open_offline(chromium_browser, (exported / "index.html").as_uri(), 1500, 1000)
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
    page.context.close()


def test_oversize_exports_are_refused_with_the_size_and_the_option(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    make_our_run(root, cell_name("coco", ["RN50"]), "coco", ["RN50"], n_frames=2, size=(5000, 40))
    with pytest.raises(ExportError, match=r"5000x40 px frame .* use --width \d+ or less"):  # too wide for a sheet
        export(root, tmp_path / "site", width=5000)
    assert not (tmp_path / "site").exists()

    sizes = {f"run{i}": (40, 4000, 2000) for i in range(40)}  # 40 cells of 40 large frames
    with pytest.raises(ExportError, match=r"\d+ Mpx .* use --width \d+ or less") as e:
        check_budget(sizes, 4000)
    fits = int(re.search(r"--width (\d+)", str(e.value))[1])
    check_budget({k: (n, fits, fits // 2) for k, (n, _, _) in sizes.items()}, fits)


RED, BLUE = (220, 60, 60), (60, 60, 220)


@pytest.mark.browser
def test_split_padded_sheets_never_bleed_into_the_enlarged_view(
        tmp_path: Path, chromium_browser, monkeypatch: pytest.MonkeyPatch) -> None:
    """Frames alternate red and blue: without the gutter, the enlarged (10x) view of one frame
    shows its neighbours along its edges; with a small MAX_SIDE, the frames span two sheets."""
    root = tmp_path / "runs"
    run = make_our_run(root, cell_name("coco", ["RN50"]), "coco", ["RN50"], n_frames=12,
                       size=(64, 32))
    for n in range(1, 13):  # solid colours
        Image.new("RGB", (64, 32), RED if n % 2 else BLUE).save(run / f"{run.name}_{n}.png")
    monkeypatch.setattr(export_module, "MAX_SIDE", 150)  # 2 x 4 frames of 68 x 36 per sheet
    page_path = export(root, tmp_path / "site", title="Two sheets")
    sheets = sorted(p.name for p in (tmp_path / "site" / "assets").iterdir())
    assert [re.sub(r"^.*-(\d)\.webp$", r"\1", n) for n in sheets] == ["1", "2"]
    with Image.open(tmp_path / "site" / "assets" / sheets[0]) as sheet:
        assert max(sheet.size) <= 150
        a = np.asarray(sheet.convert("RGB")).astype(int)
    # frame 2's first column, next to frame 1's gutter, is frame 2's colour, as inside it
    edge, mid = 64 + 3 * GUTTER, GUTTER + 16
    assert np.abs(a[mid, edge] - a[mid, edge + 10]).max() < 30
    assert np.abs(a[mid, edge] - BLUE).max() < 40

    page = chromium_browser.new_page(viewport={"width": 1366, "height": 768})
    page.goto(page_path.as_uri())
    page.wait_for_function("window.gridPlayer && window.gridPlayer.state().pending === 0")
    assert page.title() == "Two sheets"
    page.locator(".dp-tile").click()
    big = page.locator(".dp-panel .dp-frame")
    assert big.bounding_box()["width"] >= 8 * 64
    for k in (0, 7, 8, 11):  # first and last of each sheet
        page.evaluate(f"gridPlayer.show({k})")
        with Image.open(io.BytesIO(big.screenshot())) as shot:
            a = np.asarray(shot.convert("RGB")).astype(int)
        a = a[1:-1, 1:-1]  # the element's box may round by a pixel
        ring = np.concatenate([a[:3].reshape(-1, 3), a[-3:].reshape(-1, 3),
                               a[:, :3].reshape(-1, 3), a[:, -3:].reshape(-1, 3)])
        centre = a[a.shape[0] // 2, a.shape[1] // 2]
        assert np.abs(centre - (RED if k % 2 == 0 else BLUE)).max() < 40, (k, centre)
        assert np.abs(ring - centre).max() < 40, (k, ring.min(axis=0), ring.max(axis=0))
    page.close()


@pytest.mark.browser
def test_captions_and_context_come_from_the_frame_table(tmp_path: Path, chromium_browser) -> None:
    """A frame table whose steps and scene weights are not the settings' schedule (which puts
    frame 1 at step 10, all scene 1): the page shows the table's."""
    root = tmp_path / "runs"
    make_our_run(root, "told", "coco", ["RN50"], save_every=10, steps=30, size=(64, 32))
    run = RunFolder(root, "told")
    run.write_frame_table([replace(f, step=7 * f.n, scenes=(0.25, 0.75)) for f in read_table(run.frame_table, "told")])
    page, _, errors = open_offline(chromium_browser, export(root, tmp_path / "site").as_uri(), 1000, 700)
    page.wait_for_function("window.gridPlayer && gridPlayer.state().pending === 0")
    assert page.locator(".dp-tile .dp-cap").inner_text().startswith("step 7 ")
    assert page.locator(".dp-step").inner_text() == "step 7 · 1/3"
    context = page.locator(".dp-context").inner_text()
    assert "scene 1 (25 %) → 2 (75 %) of 2" in context
    assert "a painting of a cold wintery landscape 0.75" in " ".join(context.split())
    page.keyboard.press("End")
    assert page.locator(".dp-tile .dp-cap").inner_text().startswith("step 21 ")
    assert not errors
    page.context.close()


def _spec(page: Path) -> dict:
    """The grid spec an exported page plays."""
    return json.loads(re.search(r'id="dp-data">(.*?)</script>', page.read_text()).group(1))


@pytest.mark.browser
def test_export_lays_the_prompts_out_as_rows(tmp_path: Path, chromium_browser) -> None:
    root = tmp_path / "images_out"
    make_prompt_grid(root, ["vq-a", "vq-b"], ["RN50", "ViT-B32"], 2, size=(64, 32))
    cli = [sys.executable, "-m", "dashboard", "export", "--root", str(root)]
    subprocess.run([*cli, "--out", str(tmp_path / "site"), "--rows", "scenes", "--cols", "perceptor_set"],
                   cwd=REPO, check=True, capture_output=True, timeout=300)
    spec = _spec(tmp_path / "site" / "index.html")
    assert (spec["row_axis"], spec["rows"], spec["cols"]) == ("scenes", sorted(PROMPTS), ["RN50", "ViT-B32"])
    assert {c["id"]: c["row"] for c in spec["cells"]}[f"{STUDY}__vq-b_RN50__scenes-sea"] == "sea"
    page, requests, errors = open_offline(chromium_browser, (tmp_path / "site" / "index.html").as_uri(), 1200, 800)
    page.wait_for_function("window.gridPlayer && gridPlayer.state().pending === 0")
    assert page.locator(".dp-rowhead .dp-headname").all_inner_texts() == sorted(PROMPTS)
    assert page.locator(".dp-title").inner_text() == f"VQGAN+CLIP grid: {STUDY}"
    assert page.locator(".dp-levels").count() == 0 and not errors
    assert all(r.startswith("file:") for r in requests)
    page.context.close()

    # one prompt only, VQGANs as rows: the captions name the prompt
    city = _spec(export(root, tmp_path / "city", levels={"scenes": ["city"]}))
    assert {c["levels"] for c in city["cells"]} == {"scenes=city"} and len(city["cells"]) == 4
    refusals = {
        "--rows=prompt": ("error: --rows prompt: not an axis of these runs; choose from vqgan, perceptor_set, "
                          "scenes or setting:<key>"),
        "--level=scenes=desert": ("error: --level scenes=desert: no run with frames has it; choose from city, "
                                  "forest, sea"),
        "--level=cutouts=10": "error: --level cutouts: no run with frames has it; choose from scenes",
    }
    for option, error in refusals.items():
        refused = subprocess.run([*cli, "--out", str(tmp_path / "refused"), option], cwd=REPO,
                                 capture_output=True, text=True, timeout=120, check=False)
        assert (refused.returncode, refused.stderr.strip()) == (2, error)
    assert not (tmp_path / "refused").exists()
