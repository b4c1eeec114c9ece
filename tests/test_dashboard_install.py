"""`pip install .[dashboard]` alone: a fresh virtual environment holding only the package and its
`dashboard` extra (no torch, nothing of this process's site-packages) lists, exports
and serves a grid of several seeds with every score file. Builds the environment from pip's cache
(about 20 s here) and runs every command outside the checkout, so only the installed package is
imported."""
from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dashboard_fixtures import (
    REPO, STUDY, cell_name, free_port, http_get, make_grid, make_our_run, make_scores, running,
)
from experiments.effects import effects_of_runs, find_runs
from experiments.scorefiles import EFFECTS, write_json

VQGANS, PERCEPTORS, SEEDS = ["imagenet", "wikiart"], ["ViT-B32", "RN50"], (12345, 7)
#: In the environment: the page's texts over its websocket, as a browser would get them.
PAGE_TEXT = """import sys
import dashboard.app  # registers the page's model types with Bokeh's client
from bokeh.client import pull_session
with pull_session(url=sys.argv[1]) as session:
    print(" ".join(str(m.text) for m in session.document.models if hasattr(m, "text")))
"""


def _source(dest: Path) -> Path:
    """The checkout's package files (tracked, or new and not ignored) copied to `dest`: what
    `pip install .` of a clone of it builds from, without writing into the checkout."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "pyproject.toml",
                             "engine", "experiments", "dashboard"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout.splitlines()
    for name in listed:
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    return dest


@pytest.fixture(scope="module")
def viewer(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """(python of a venv with `.[dashboard]` installed from a copy of the checkout, its
    environment)."""
    base = tmp_path_factory.mktemp("viewer")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    source = _source(base / "src")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["DASHBOARD_CACHE"] = str(base / "cache")
    pip = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                          f"{source}[dashboard]"], cwd=base, env=env, capture_output=True, text=True,
                         timeout=600)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    return python, env


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2 x 2 grid of two seeds, with the judge and imagestats stages' score files beside it."""
    base = tmp_path_factory.mktemp("scored")
    runs = base / "runs"
    make_grid(runs, VQGANS, PERCEPTORS, 3)
    for i, v in enumerate(VQGANS):
        for j, p in enumerate(PERCEPTORS):
            make_our_run(runs, f"{cell_name(v, [p])}__seed-{SEEDS[1]}", v, [p], cell=10 + 2 * i + j,
                         n_frames=3, save_every=50, seed=SEEDS[1])
    make_scores(base / "scores", VQGANS, PERCEPTORS, 3, seeds=SEEDS)
    return runs


def _run(viewer: tuple[Path, dict[str, str]], *args: str) -> subprocess.CompletedProcess:
    python, env = viewer
    return subprocess.run([str(python), *args], cwd=python.parents[2], env=env, capture_output=True,
                          text=True, timeout=300)


def test_the_extra_alone_holds_no_torch(viewer) -> None:
    found = _run(viewer, "-c", "import importlib.util as u, dashboard\n"
                               "print(u.find_spec('torch'), u.find_spec('scipy') is not None, dashboard.__file__)")
    torch, scipy, where = found.stdout.split()
    assert (torch, scipy) == ("None", "True") and "site-packages" in where, found.stdout  # scipy: fingerprints


def test_catalog_export_and_serve_a_scored_grid_of_two_seeds(viewer, root: Path) -> None:
    listed = _run(viewer, "-m", "dashboard", "catalog", "--root", str(root), "--json")
    assert listed.returncode == 0, listed.stderr
    runs = json.loads(listed.stdout)
    assert len(runs) == 8 and {r["seed"] for r in runs} == set(SEEDS)
    assert {r["status"] for r in runs} == {"complete"} and {r["perceptor_set"] for r in runs} == set(PERCEPTORS)

    # no effects.json: the export analyses the runs itself (numpy and pandas, bootstrap over seeds)
    site = root.parent / "site"
    exported = _run(viewer, "-m", "dashboard", "export", "--root", str(root), "--out", str(site))
    assert exported.returncode == 0, exported.stderr
    page = (site / "index.html").read_text()
    spec = json.loads(re.search(r'id="dp-data">(.*?)</script>', page).group(1))
    assert len(spec["cells"]) == 8 and "What drives the look" in page and "2 seed(s)" in page

    write_json(root.parent / "scores" / EFFECTS, effects_of_runs(find_runs(root), STUDY))
    port = free_port()
    python, env = viewer
    command = [str(python), "-m", "dashboard", "serve", "--root", str(root), "--port", str(port)]
    with running(command, port, env=env, cwd=python.parents[2]) as server:
        status, body = http_get(port, "/")
        assert status == 200 and b"<html" in body.lower()
        texts = _run(viewer, "-c", PAGE_TEXT, f"http://127.0.0.1:{port}/")
        assert texts.returncode == 0, texts.stderr
    text = html.unescape(texts.stdout)
    for shown in ("Bias matrix", "Mean over 2 seeds with a 95 % t-interval", "Image statistics",
                  "What drives the look", "8</strong> of 8 runs shown"):
        assert shown in text, shown
    output = server.stdout.read()
    assert "Traceback" not in output and "Warning" not in output, output
