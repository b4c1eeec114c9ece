"""Catalog: our folders, pytti folders, re-runs, broken folders, score files, the CLI."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from dashboard.catalog import load_catalog, parse_cell_name, select
from dashboard.grid import axis_options, grid_spec
from dashboard.scores import load_scores, scores_dir
from dashboard_fixtures import (
    REPO, STUDY, cell_name, frame_colour, make_corrupt_run, make_empty_run, make_grid,
    make_our_run, make_pytti_run, make_scores,
)

PYTTI = cell_name("wikiart", ["ViT-B32", "RN50"])


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    make_grid(root, ["sflckr", "imagenet"], ["ViT-B32", "RN50"], 3)
    make_our_run(root, "long_run", "coco", ["RN101"], cell=7, n_frames=12, save_every=5)
    make_our_run(root, "running", "coco", ["RN50"], complete=False)
    make_pytti_run(root, PYTTI, "wikiart", ["ViT-B32", "RN50"], cell=4, n_frames=4)
    make_pytti_run(root, PYTTI, "wikiart", ["ViT-B32", "RN50"], cell=5, n_frames=2, rerun=1,
                   mmc_ids=["ViT-B/16", "ViT-B/32"])
    make_empty_run(root, "exp__faceshq_RN50")
    make_corrupt_run(root, "exp__ffhq_RN101")
    return root


@pytest.fixture(scope="module")
def cat(root: Path) -> pd.DataFrame:
    return load_catalog(root).set_index("run", drop=False)


def test_one_row_per_run(cat: pd.DataFrame) -> None:
    assert sorted(cat.index) == sorted([
        *(cell_name(v, [p]) for v in ("sflckr", "imagenet") for p in ("ViT-B32", "RN50")),
        "long_run", "running", PYTTI, f"{PYTTI}/{PYTTI}(1)", "exp__faceshq_RN50", "exp__ffhq_RN101",
    ])


def test_our_sidecar_gives_the_metadata(cat: pd.DataFrame) -> None:
    run = cat.loc[cell_name("sflckr", ["RN50"])]
    assert (run.source, run.experiment, run.vqgan, run.perceptors, run.generator) == (
        "ours", STUDY, "sflckr", ["RN50"], "RN50")
    assert (run.seed, run["size"], run.n_frames, run.status, run.reason) == (
        12345, "32x16", 3, "complete", "")
    assert run.frame_steps == [50, 100, 150]
    assert run.losses["total"] == pytest.approx(run.frame_losses)
    assert run.final_loss == pytest.approx(0.97 - 0.1 * 1)  # metrics.json of cell 1


def test_frames_sorted_numerically_and_counted_from_disk(root: Path, cat: pd.DataFrame) -> None:
    run = cat.loc["long_run"]
    assert run.n_frames == 12
    assert [Path(f).name for f in run.frames] == [f"long_run_{n}.png" for n in range(1, 13)]
    assert run.frame_steps == [5 * n for n in range(1, 13)]
    with Image.open(root / run.frames[9]) as frame:  # frame 10, not its lexicographic neighbour
        corner = frame.getpixel((0, 0))  # write_frame shades the corner by 0.75
    assert max(abs(a - 0.75 * b) for a, b in zip(corner, frame_colour(7, 10, 12))) <= 1


def test_missing_metrics_means_incomplete(cat: pd.DataFrame) -> None:
    run = cat.loc["running"]
    assert run.status == "incomplete" and "metrics.json" in run.reason and run.n_frames == 3


def test_pytti_settings_txt_with_trailing_scene_lines(root: Path, cat: pd.DataFrame) -> None:
    assert "b'20.00:" in (root / PYTTI / f"{PYTTI}_settings.txt").read_text()
    run = cat.loc[PYTTI]
    assert (run.source, run.vqgan, run.perceptors, run.seed, run["size"]) == (
        "pytti", "wikiart", ["ViT-B32", "RN50"], 12345, "32x16")
    assert run.frame_steps == [50, 100, 150, 200]
    assert run.losses is None and run.status == "complete"


def test_rerun_frames_belong_to_the_rerun(cat: pd.DataFrame) -> None:
    original, rerun = cat.loc[PYTTI], cat.loc[f"{PYTTI}/{PYTTI}(1)"]
    assert original.n_frames == 4 and original.rerun == 0
    assert all("(1)" not in f for f in original.frames)
    assert rerun.n_frames == 2 and rerun.rerun == 1 and rerun.cell == PYTTI
    assert all(f"{PYTTI}(1)_" in f for f in rerun.frames)
    # the re-run's own settings: mmc models add perceptors, ids without '/', no duplicates
    assert rerun.perceptors == ["ViT-B32", "RN50", "ViT-B16"] and rerun.seed == 12346


def test_broken_folders_are_listed_with_a_reason(cat: pd.DataFrame) -> None:
    empty, corrupt = cat.loc["exp__faceshq_RN50"], cat.loc["exp__ffhq_RN101"]
    assert empty.status == "incomplete" and empty.n_frames == 0 and "no frames" in empty.reason
    assert corrupt.status == "incomplete" and "unreadable" in corrupt.reason
    assert corrupt.n_frames == 2 and corrupt.source == "folder name"
    assert (corrupt.experiment, corrupt.vqgan, corrupt.perceptors) == ("exp", "ffhq", ["RN101"])


def test_folder_names_split_on_the_last_double_underscore() -> None:
    assert parse_cell_name("exp_vqgan_base_perceptors__sflckr_ViT-B32_RN50") == (
        "exp_vqgan_base_perceptors", "sflckr", ["ViT-B32", "RN50"])
    assert parse_cell_name("a__b__imagenet_RN50(2)") == ("a__b", "imagenet", ["RN50"])
    assert parse_cell_name("plain_name") == ("", None, [])


def test_perceptor_filter_matches_exactly(cat: pd.DataFrame) -> None:
    only_vit = select(cat, perceptors=["ViT-B32"])
    assert set(only_vit["generator"]) == {"ViT-B32"}  # not the ViT-B32+RN50 pytti cells
    assert set(select(cat, vqgans=["sflckr"])["vqgan"]) == {"sflckr"}
    assert "exp__faceshq_RN50" not in set(select(cat)["run"])  # nothing to play


def test_grid_spec_places_cells_on_the_union_of_steps(cat: pd.DataFrame) -> None:
    runs = select(cat, vqgans=["sflckr", "coco"])
    spec = grid_spec(runs, "vqgan", "generator", lambda run: {"frames": run.frames})
    assert spec["rows"] == ["coco", "sflckr"] and spec["cols"] == ["RN50", "RN101", "ViT-B32"]
    assert spec["steps"][:4] == [5, 10, 15, 20] and spec["steps"][-1] == 150
    cell = next(c for c in spec["cells"] if c["id"] == cell_name("sflckr", ["RN50"]))
    at = dict(zip(spec["steps"], cell["at"]))
    assert (at[5], at[50], at[60], at[100], at[150]) == (0, 0, 0, 1, 2)
    assert "setting:save_every" in axis_options(runs).values()


def test_scores_default_beside_the_root(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    make_grid(runs, ["sflckr"], ["RN50"], 2)
    assert scores_dir(runs) is None and load_scores(None) == (None, None)
    make_scores(tmp_path / "scores", ["sflckr"], ["RN50"], 2)
    bias, stats = load_scores(scores_dir(runs))
    assert list(bias.columns) == ["vqgan", "generator", "judge", "similarity"]
    assert len(stats) == 2 and stats["cell"].iat[0] == cell_name("sflckr", ["RN50"])
    (tmp_path / "scores" / "bias_matrix.csv").write_text("nonsense\n1\n")
    assert load_scores(tmp_path / "scores").bias is None


def _cli(*args: str) -> str:
    return subprocess.run([sys.executable, "-m", "dashboard", *args], cwd=REPO, check=True,
                          capture_output=True, text=True, timeout=120).stdout


def test_cli_prints_a_table_or_json(root: Path) -> None:
    table = _cli("catalog", "--root", str(root))
    assert "exp__ffhq_RN101" in table and "incomplete" in table and "wikiart" in table
    runs = {r["run"]: r for r in json.loads(_cli("catalog", "--root", str(root), "--json"))}
    assert runs["long_run"]["n_frames"] == 12 and runs["exp__faceshq_RN50"]["seed"] is None


def test_a_run_folder_as_the_root(tmp_path: Path) -> None:
    folder = make_our_run(tmp_path, "solo", "coco", ["RN50"], n_frames=2)
    run = load_catalog(folder).iloc[0]
    assert (run.run, run.folder, run.frames) == ("solo", ".", ["solo_1.png", "solo_2.png"])
    assert (folder / run.frames[0]).is_file()


def test_untrained_models_are_labelled(cat: pd.DataFrame) -> None:
    ours, pytti = cat.loc[cell_name("sflckr", ["RN50"])], cat.loc[PYTTI]
    assert ours.untrained and not pytti.untrained
    spec = grid_spec(cat.loc[[ours.run, pytti.run]], "vqgan", "generator", lambda run: {"frames": []})
    titles = {c["id"]: c["title"] for c in spec["cells"]}
    assert titles[ours.run].endswith("UNTRAINED") and "UNTRAINED" not in titles[pytti.run]
