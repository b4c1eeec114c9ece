"""docs/notebook.ipynb, executed top to bottom in a real python3 kernel as a new user would."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")

from engine.runfolder import cell_name, read_run  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "docs" / "notebook.ipynb"
CELLS = [cell_name("notebook_tiny", v, [p]) for v in ("tiny", "tiny-gumbel") for p in ("tiny-vit", "tiny-rn")]
PANEL_MIME = "application/vnd.holoviews_exec.v0+json"  # Panel's output in a notebook


def outputs_of(nb: nbformat.NotebookNode, text: str) -> list[dict]:
    """The outputs of the one code cell whose source holds `text`."""
    found = [c for c in nb.cells if c.cell_type == "code" and text in c.source]
    assert len(found) == 1, f"{len(found)} code cells hold {text!r}"
    return found[0].outputs


def data_of(outputs: list[dict]) -> list[dict]:
    return [o["data"] for o in outputs if o["output_type"] in ("display_data", "execute_result")]


@pytest.fixture(scope="module")
def executed(tmp_path_factory) -> tuple[nbformat.NotebookNode, Path]:
    """The notebook after running every cell in a kernel started in `tmp`, with $NOTEBOOK_ROOT
    there (the repository on PYTHONPATH stands for `pip install -e .`)."""
    tmp = tmp_path_factory.mktemp("nb")
    root = tmp / "runs"
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True,
                                     resources={"metadata": {"path": str(tmp)}})
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    client.execute(env={**os.environ, "PYTHONPATH": path, "NOTEBOOK_ROOT": str(root)})
    return nb, root


def test_stored_without_outputs_and_valid() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    assert not any("pip install" in c.source for c in code), "the notebook must install nothing"


def test_no_errors(executed) -> None:
    nb, _ = executed
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o["output_type"] == "error"]
    assert not errors, json.dumps(errors)[:2000]


def test_run_cell_shows_inline_previews(executed) -> None:
    nb, root = executed
    data = data_of(outputs_of(nb, "display_every="))
    assert sum("image/png" in d for d in data) >= 3, [sorted(d) for d in data]
    assert any("step 20" in d.get("text/html", "") for d in data)
    assert read_run(root / "single" / "apple").status == "complete"


def test_grid_cells_are_complete_runs(executed) -> None:
    _, root = executed
    grid = root / "images_out"
    assert sorted(p.name for p in grid.iterdir() if p.is_dir()) == sorted(CELLS)
    for name in CELLS:
        record = read_run(grid / name)
        assert record.status == "complete", (name, record.status, record.reason)
        assert record.experiment == "notebook_tiny" and len(record.frames) == 4  # 20 steps, every 5


def test_show_cell_outputs_the_grid(executed) -> None:
    """The show cell's result is Panel's notebook bundle, holding every cell and its frames inline."""
    nb, _ = executed
    shown = [d for d in data_of(outputs_of(nb, "dashboard.show(")) if PANEL_MIME in d]
    assert len(shown) >= 1, [sorted(d) for d in data_of(outputs_of(nb, "dashboard.show("))]
    html = shown[-1].get("text/html", "")
    missing = [name for name in CELLS if name not in html]
    assert not missing, missing
    assert html.count("data:image/webp;base64,") >= len(CELLS)  # each cell's sheet as a data URL


def test_export_page_written(executed) -> None:
    nb, root = executed
    page = root / "page" / "index.html"
    html = page.read_text(encoding="utf-8")
    assert all(name in html for name in CELLS)
    assert len(list((root / "page" / "assets").glob("*.webp"))) == len(CELLS)
    printed = "".join(o.get("text", "") for o in outputs_of(nb, "dashboard.export.export("))
    assert str(page.resolve()) in printed
