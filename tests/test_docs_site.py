"""docs/dashboard.md's recipe, followed for real: a compact export of the study's 5 x 8 grid,
copied into a Sphinx site by `html_extra_path`, embedded by an iframe in a 760 px column, and
played from file:// in Chromium with no network."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dashboard_fixtures import REPO, make_grid, open_offline

pytestmark = pytest.mark.browser

COLUMN = 760
TITLE = "Study grid: 5 VQGANs x 8 perceptors"
CONF = 'project = "Study"\nhtml_extra_path = ["_extra"]\n'
INDEX = f"""Study
=====

.. raw:: html

   <iframe src="grid/index.html" title="VQGAN+CLIP grid" width="{COLUMN}" height="560"
           style="border: 0" loading="lazy"></iframe>
"""
# In the embedded page: horizontal overflow, and tiles poking out of the frame's width.
FITS = """() => ({scroll: document.documentElement.scrollWidth, width: innerWidth,
    tiles: gridPlayer.tiles.length, outside: gridPlayer.tiles.filter(t => {
        const r = t.el.getBoundingClientRect(); return r.left < 0 || r.right > innerWidth; }).length})"""


def _run(*command: str, cwd: Path = REPO) -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_sphinx_site_embeds_the_export_and_plays_it_offline(tmp_path: Path,
                                                            chromium_browser) -> None:
    runs, src, out = tmp_path / "runs", tmp_path / "docs", tmp_path / "site"
    make_grid(runs, ["imagenet", "openimages", "wikiart", "coco", "sflckr"],
              ["ViT-B32", "ViT-B16", "RN50", "RN101", "RN50x4", "P6", "P7", "P8"], 4,
              size=(64, 32))
    _run(sys.executable, "-m", "dashboard", "export", "--root", str(runs),
         "--out", str(src / "_extra" / "grid"), "--compact", "--title", TITLE)
    (src / "conf.py").write_text(CONF)
    (src / "index.rst").write_text(INDEX)
    _run(sys.executable, "-m", "sphinx", "-b", "html", "-q", str(src), str(out))
    assert (out / "grid" / "index.html").is_file() and len(list((out / "grid" / "assets").iterdir())) == 40

    page, requests, errors = open_offline(chromium_browser, (out / "index.html").as_uri(), 1100, 900)
    page.locator("iframe").scroll_into_view_if_needed()
    frame = page.locator("iframe").element_handle().content_frame()
    frame.wait_for_function("window.gridPlayer && window.gridPlayer.state().pending === 0",
                            timeout=30_000)
    assert frame.title() == TITLE
    frame.wait_for_timeout(300)
    fits = frame.evaluate(FITS)
    assert fits["width"] == COLUMN and fits["tiles"] == 40
    assert fits["scroll"] <= fits["width"] and fits["outside"] == 0, fits

    frame.locator(".dp-play").click()
    frame.wait_for_function("window.gridPlayer.state().index >= 2", timeout=15_000)
    frame.locator(".dp-play").click()
    state = frame.evaluate("window.gridPlayer.state()")
    assert len({t["frame"] for t in state["tiles"]}) == 1 and state["tiles"][0]["frame"] >= 2
    assert requests and all(u.startswith("file://") for u in requests) and not errors
    (REPO / "test-artifacts").mkdir(exist_ok=True)
    page.screenshot(path=str(REPO / "test-artifacts" / "dashboard_docs_760.png"), full_page=True)
    page.context.close()
