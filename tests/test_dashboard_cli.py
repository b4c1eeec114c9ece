"""The dashboard's command line as real processes: without torch, and refusing bad folders with
one `error:` line."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dashboard_fixtures import (
    REPO, damage_frame, free_port, http_get, make_grid, make_our_run, running,
)

# Installed as sitecustomize: torch cannot be imported, whether installed or not.
BLOCK_TORCH = """
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision"):
            raise ImportError(f"{name} is blocked in this test")
sys.meta_path.insert(0, _NoTorch())
"""


@pytest.fixture(scope="module")
def no_torch(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of a subprocess whose Python cannot import torch."""
    site = tmp_path_factory.mktemp("site")
    (site / "sitecustomize.py").write_text(BLOCK_TORCH)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli") / "runs"
    make_grid(root, ["sflckr"], ["RN50", "RN101"], 2)
    damage_frame(make_our_run(root, "hurt", "coco", ["RN50"], cell=3, n_frames=2), 2)
    return root


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=env)


def test_the_blocker_blocks_torch(no_torch: dict[str, str]) -> None:
    result = _run("-c", "import torch", env=no_torch)
    assert result.returncode != 0 and "torch is blocked in this test" in result.stderr


def test_catalog_and_app_without_torch(root: Path, no_torch: dict[str, str]) -> None:
    table = _run("-m", "dashboard", "catalog", "--root", str(root), env=no_torch)
    assert table.returncode == 0, table.stderr
    hurt = next(line for line in table.stdout.splitlines() if line.split()[0] == "hurt")
    assert "damaged" in hurt
    app = _run("-c", "import sys, dashboard.app, dashboard.server\n"
               "assert 'torch' not in sys.modules", env=no_torch)
    assert app.returncode == 0, app.stderr


def test_export_without_torch_shows_the_damaged_run(root: Path, no_torch: dict[str, str]) -> None:
    out = root.parent / "site"
    result = _run("-m", "dashboard", "export", "--root", str(root), "--out", str(out),
                  env=no_torch)
    assert result.returncode == 0, result.stderr
    page = (out / "index.html").read_text()
    data = re.search(r'<script type="application/json" id="dp-data">(.*?)</script>', page, re.S)
    cells = {c["id"]: c for c in json.loads(data[1])["cells"]}
    assert cells["hurt"]["status"] == "damaged" and "frame 2" in cells["hurt"]["note"]
    assert '"dp-badge" }, "damaged"' in page  # the player marks the tile


def test_serve_without_torch_and_without_warnings(root: Path, no_torch: dict[str, str]) -> None:
    port = free_port()
    command = [sys.executable, "-m", "dashboard", "serve", "--root", str(root), "--port", str(port)]
    with running(command, port, env=no_torch) as proc:
        status, body = http_get(port, "/")
        assert status == 200 and b"<html" in body.lower()
    output = proc.stdout.read()
    assert "dashboard: serving" in output
    assert "Warning" not in output and "Traceback" not in output, output


@pytest.mark.parametrize("command", ["catalog", "export --out {tmp}/site", "serve"])
def test_a_missing_root_is_one_error_line(tmp_path: Path, command: str) -> None:
    missing = tmp_path / "missing"
    result = _run("-m", "dashboard", *command.format(tmp=tmp_path).split(), "--root", str(missing))
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and str(missing) in lines[0]
    assert "no such folder" in lines[0]


def test_an_out_folder_that_cannot_be_made_is_one_error_line(root: Path, tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("not a folder")
    out = tmp_path / "a_file" / "site"
    result = _run("-m", "dashboard", "export", "--root", str(root), "--out", str(out))
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: --out ") and str(tmp_path / "a_file") in lines[0]
    assert "choose a folder you can write" in lines[0]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_out_folder_is_one_error_line(root: Path, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    result = _run("-m", "dashboard", "export", "--root", str(root), "--out", str(locked / "site"))
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1 and str(locked) in lines[0], result.stderr


def test_export_takes_the_old_name_of_the_perceptor_set_axis_with_a_warning(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "site"
    result = _run("-m", "dashboard", "export", "--root", str(root), "--out", str(out),
                  "--rows", "generator", "--cols", "vqgan")
    assert result.returncode == 0, result.stderr
    assert "FutureWarning: the axis 'generator' is now 'perceptor_set'" in result.stderr
    data = re.search(r'<script type="application/json" id="dp-data">(.*?)</script>',
                     (out / "index.html").read_text(), re.S)
    spec = json.loads(data[1])
    assert (spec["row_axis"], spec["row_label"], spec["rows"]) == ("perceptor_set", "perceptor set",
                                                                   ["RN50", "RN101"])
