"""A big root: the catalog re-reads only what changed and reads loss tables only when asked;
the page opens on one experiment and follows new runs; export takes the page's selection."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dashboard.catalog import load_catalog, to_json
from dashboard.index import Index
from dashboard.losstables import LossTables, losses
from dashboard.export import ExportError, export
from dashboard_fixtures import (
    REPO, add_frame, cell_name, copy_run, dashboard_server, make_grid, make_our_run,
)

EXPERIMENTS = [f"exp{k}" for k in range(5)]


def _grid(root: Path, n_frames: int = 3) -> list[Path]:
    return make_grid(root, ["vq0", "vq1"], ["RN50", "RN101"], n_frames, save_every=10)


def _experiments(template: list[Path], root: Path, names: list[str]) -> None:
    for experiment in names:
        for cell in template:
            copy_run(cell, root, experiment)


def test_after_one_run_changes_only_that_run_is_read_again(tmp_path: Path) -> None:
    runs = _grid(tmp_path)
    index = Index()
    assert len(load_catalog(tmp_path, index=index)) == 4 and index.reads == 4
    load_catalog(tmp_path, index=index)
    assert index.reads == 4  # nothing changed: nothing read
    add_frame(runs[1], 4, (1, 2, 3), (32, 16))
    cat = load_catalog(tmp_path, index=index).set_index("run")
    assert index.reads == 5 and cat.loc[runs[1].name, "n_frames"] == 4
    (runs[2] / "losses.csv").write_text("step,scene,total\n1,0,0.5\n")  # rewritten in place
    load_catalog(tmp_path, index=index, quick=True)
    assert index.reads == 5  # quick: the folder's own time did not change
    load_catalog(tmp_path, index=index)
    assert index.reads == 6


def test_the_index_on_disk_is_reused_and_rebuilt_when_damaged(tmp_path: Path,
                                                              monkeypatch) -> None:
    monkeypatch.setenv("DASHBOARD_CACHE", str(tmp_path / "cache"))
    _grid(tmp_path / "runs")
    first = Index.for_root(tmp_path / "runs")
    expected = to_json(load_catalog(tmp_path / "runs", index=first))
    again = Index.for_root(tmp_path / "runs")  # a fresh process's index
    assert to_json(load_catalog(tmp_path / "runs", index=again)) == expected
    assert again.reads == 0
    again.path.write_text('{"version": 2, "folders": {"x": [1]}')  # truncated
    rebuilt = Index.for_root(tmp_path / "runs")
    assert to_json(load_catalog(tmp_path / "runs", index=rebuilt)) == expected
    assert rebuilt.reads == 4
    assert not list((tmp_path / "runs").rglob("catalog-*"))  # nothing in the run folders


def test_runs_whose_loss_files_are_unreadable_are_still_listed(tmp_path: Path) -> None:
    runs = _grid(tmp_path)
    for run in runs:
        (run / "losses.csv").write_text("step,total\n1," + "9" * 200_000)  # csv: too long
    cat = load_catalog(tmp_path)
    assert sorted(cat["run"]) == sorted(r.name for r in runs)
    assert set(cat["status"]) == {"complete"} and cat["losses"].isna().all()
    assert "losses" not in json.loads(to_json(cat))[0]
    full = losses(cat, tmp_path)
    assert all("unreadable losses.csv" in reason for reason in full["reason"])
    good = make_our_run(tmp_path / "other", "good", "coco", ["RN50"], n_frames=2, cell=1)
    row = losses(load_catalog(good.parent), good.parent).iloc[0]
    assert row.losses["step"][:2] == [1, 2] and row.frame_losses[0] is not None


def test_loss_tables_are_read_again_only_when_the_file_changes(tmp_path: Path) -> None:
    (run,) = make_grid(tmp_path, ["vq0"], ["RN50"], 2, save_every=10)
    tables, cat = LossTables(size=1), load_catalog(tmp_path)
    first = losses(cat, tmp_path, tables).iloc[0].losses
    assert losses(cat, tmp_path, tables).iloc[0].losses is first  # kept
    (run / "losses.csv").write_text("step,scene,total\n1,0,0.5\n")
    assert losses(cat, tmp_path, tables).iloc[0].losses == {"step": [1], "scene": [0], "total": [0.5]}
    make_our_run(tmp_path, "other", "coco", ["RN50"], n_frames=2)
    both = losses(load_catalog(tmp_path), tmp_path, tables)  # two runs, room for one
    assert len(tables._tables) == 1 and all(both["losses"].notna())


def test_catalog_json_is_lean_unless_losses_are_asked_for(tmp_path: Path) -> None:
    _grid(tmp_path)
    def catalog(*extra: str) -> list[dict]:
        out = subprocess.run([sys.executable, "-m", "dashboard", "catalog", "--root",
                              str(tmp_path), "--json", *extra], cwd=REPO, check=True,
                             capture_output=True, text=True).stdout
        return json.loads(out)
    lean, full = catalog(), catalog("--losses")
    assert "losses" not in lean[0] and lean[0]["frame_steps"] == [10, 20, 30]
    assert lean[0]["frame_losses"] == full[0]["frame_losses"] != [None] * 3  # from the frame table
    assert full[0]["losses"]["step"][:3] == [1, 2, 3] and len(full[0]["frame_losses"]) == 3


def test_export_of_one_experiment_from_a_root_of_many(tmp_path: Path) -> None:
    template = _grid(tmp_path / "template")
    _experiments(template, tmp_path / "runs", EXPERIMENTS[:3])
    page = export(tmp_path / "runs", tmp_path / "site", experiments=["exp1"], vqgans=["vq0"])
    spec = json.loads(re.search(r'id="dp-data">(.*?)</script>', page.read_text()).group(1))
    assert sorted(c["id"] for c in spec["cells"]) == sorted(
        cell_name("vq0", [p], "exp1") for p in ("RN50", "RN101"))
    assert spec["cells"][0]["losses"][0] is not None  # the frames' losses were read
    with pytest.raises(ExportError, match=r"--experiment exp9: .*choose from exp0, exp1, exp2"):
        export(tmp_path / "runs", tmp_path / "nowhere", experiments=["exp9"])
    assert not (tmp_path / "nowhere").exists()
    cli = subprocess.run([sys.executable, "-m", "dashboard", "export", "--root",
                          str(tmp_path / "runs"), "--out", str(tmp_path / "bad"),
                          "--perceptor", "ViT-H"], cwd=REPO, capture_output=True, text=True)
    assert cli.returncode == 2 and cli.stderr.startswith("error: --perceptor ViT-H: ")
    assert not (tmp_path / "bad").exists()


@pytest.mark.browser
def test_a_big_root_opens_on_one_experiment_switches_and_shows_new_runs(
        chromium_browser, tmp_path: Path) -> None:
    template = make_grid(tmp_path / "template", [f"vq{i}" for i in range(5)],
                         [f"P{j}" for j in range(8)], 3, save_every=10)
    runs = tmp_path / "runs"
    _experiments(template, runs, EXPERIMENTS)  # 200 runs; exp4 written last
    page = chromium_browser.new_page(viewport={"width": 1366, "height": 768})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    ids = "[...gridPlayer.cells.keys()]"
    with dashboard_server(runs) as url:
        page.goto(url)
        page.wait_for_function("window.gridPlayer && gridPlayer.tiles.length > 0", timeout=60_000)
        assert {i.split("__")[0] for i in page.evaluate(ids)} == {"exp4"}
        assert page.evaluate("gridPlayer.tiles.length") == 40
        page.get_by_role("checkbox", name="exp4").click()
        page.get_by_role("checkbox", name="exp1").click()
        page.wait_for_function(f"{ids}.length > 0 && {ids}.every(i => i.startsWith('exp1__'))",
                               timeout=30_000)  # not the empty grid between the two clicks
        assert page.evaluate("gridPlayer.tiles.length") == 40
        page.keyboard.press("ArrowRight")
        assert page.evaluate("gridPlayer.state().index") == 1
        new = copy_run(template[0], runs, "exp1", vqgan="vq9")
        page.wait_for_function(f"gridPlayer.cells.has({new.name!r})", timeout=30_000)
        assert page.evaluate("gridPlayer.tiles.length") == 41
        page.get_by_role("checkbox", name="exp0").click()  # 81 cells: preloaded as seen
        page.wait_for_function("gridPlayer.tiles.length === 81 && gridPlayer.lazy",
                               timeout=30_000)
        page.wait_for_function("gridPlayer.seen.size > 0 && gridPlayer.tiles.some((t) => "
                               "t.pic.el.complete && t.pic.el.naturalWidth > 0)", timeout=30_000)
        page.keyboard.press("ArrowRight")
        assert page.evaluate("gridPlayer.state().index") == 2
    page.close()
    assert not errors
