"""Catalog: our folders, pytti folders, re-runs, broken folders, score files, the CLI."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from dashboard.catalog import Index, levels_of, load_catalog, select, to_json
from dashboard.grid import SETTING, axis_options, check_axis, grid_spec, varied_settings
from dashboard_fixtures import (
    MALFORMED, NOT_UTF8, PROMPTS, REPO, STUDY, cell_name, damage_frame, fixture_loss, frame_colour,
    make_corrupt_run, make_empty_run, make_grid, make_malformed_runs, make_our_run,
    make_prompt_grid, make_pytti_run, with_losses,
)
from engine.errors import InputError
from engine.runfolder.names import setting_of

PYTTI = cell_name("wikiart", ["ViT-B32", "RN50"])  # a pair cell
PYTTI_RN50 = cell_name("wikiart", ["RN50"])


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    make_grid(root, ["sflckr", "imagenet"], ["ViT-B32", "RN50"], 3)
    make_our_run(root, "long_run", "coco", ["RN101"], cell=7, n_frames=12, save_every=5)
    make_our_run(root, "running", "coco", ["RN50"], complete=False)
    # pytti's real format: every switch true, use_mmc true, the perceptors in mmc_models
    make_pytti_run(root, PYTTI, "wikiart", ["ViT-B32", "RN50"], cell=4, n_frames=4)
    make_pytti_run(root, PYTTI, "wikiart", ["ViT-B32", "RN50"], cell=5, n_frames=2, rerun=1)
    make_pytti_run(root, PYTTI, "wikiart", ["ViT-B32", "RN50"], cell=6, n_frames=4, rerun=2,
                   settings_file=False)
    make_pytti_run(root, PYTTI_RN50, "wikiart", ["RN50"], cell=8, n_frames=4)
    make_pytti_run(root, "switches_only", "faceshq", ["RN101", "ViT-B16"], cell=9, use_mmc=False)
    make_empty_run(root, "exp__faceshq_RN50")
    make_corrupt_run(root, "exp__ffhq_RN101")
    return root


@pytest.fixture(scope="module")
def cat(root: Path) -> pd.DataFrame:
    return with_losses(root).set_index("run", drop=False)


def test_one_row_per_run(cat: pd.DataFrame) -> None:
    assert sorted(cat.index) == sorted([
        *(cell_name(v, [p]) for v in ("sflckr", "imagenet") for p in ("ViT-B32", "RN50")),
        "long_run", "running", PYTTI, f"{PYTTI}/{PYTTI}(1)", f"{PYTTI}/{PYTTI}(2)", PYTTI_RN50,
        "switches_only", "exp__faceshq_RN50", "exp__ffhq_RN101",
    ])


def test_our_sidecar_gives_the_metadata(cat: pd.DataFrame) -> None:
    run = cat.loc[cell_name("sflckr", ["RN50"])]
    assert (run.source, run.experiment, run.vqgan, run.perceptors, run.perceptor_set) == (
        "ours", STUDY, "sflckr", ["RN50"], "RN50")
    assert (run.seed, run["size"], run.n_frames, run.status, run.reason) == (
        12345, "32x16", 3, "complete", "")
    assert run.frame_steps == [50, 100, 150]
    assert run.frame_losses == pytest.approx([fixture_loss(s, 1) for s in (50, 100, 150)])
    assert run.losses["step"] == list(range(1, 151))  # steps done
    assert run.final_loss == pytest.approx(fixture_loss(150, 1))  # metrics.json of cell 1


def test_frame_steps_and_losses_when_steps_are_not_a_multiple_of_save_every(
        tmp_path: Path) -> None:
    make_our_run(tmp_path, "short", "coco", ["RN50"], cell=3, save_every=10, steps=25)
    run = with_losses(tmp_path).iloc[0]
    assert (run.status, run.n_frames, run.frame_steps) == ("complete", 3, [10, 20, 25])
    by_step = dict(zip(run.losses["step"], run.losses["total"]))  # losses.csv rows, steps done
    assert run.frame_losses == pytest.approx([by_step[10], by_step[20], by_step[25]])
    assert run.frame_losses == pytest.approx([fixture_loss(s, 3) for s in (10, 20, 25)])
    spec = grid_spec(with_losses(tmp_path), "vqgan", "perceptor_set", lambda run: {})
    assert spec["steps"] == [10, 20, 25] and spec["cells"][0]["losses"] == run.frame_losses


def test_a_frame_damaged_after_completion_makes_the_run_damaged(tmp_path: Path) -> None:
    make_our_run(tmp_path, "good", "coco", ["RN50"], n_frames=2)
    damage_frame(make_our_run(tmp_path, "hurt", "coco", ["RN101"], cell=1, n_frames=3), 2)
    cat = load_catalog(tmp_path).set_index("run", drop=False)
    assert cat.loc["good", "status"] == "complete"
    hurt = cat.loc["hurt"]
    assert hurt.status == "damaged" and "frame 2 (hurt_2.png) is damaged" in hurt.reason
    assert str(tmp_path) not in hurt.reason  # the frame is named relative to its run folder
    spec = grid_spec(cat.loc[["hurt"]], "vqgan", "perceptor_set", lambda run: {})
    assert spec["cells"][0]["status"] == "damaged"
    table = _cli("catalog", "--root", str(tmp_path))
    assert "damaged" in next(line for line in table.splitlines() if line.split()[0] == "hurt")


def test_the_frames_of_a_served_catalog_are_hashed_again_only_when_changed(tmp_path: Path) -> None:
    make_our_run(tmp_path, "a", "coco", ["RN50"], n_frames=3)
    make_our_run(tmp_path, "b", "coco", ["RN101"], n_frames=2)
    index = Index()
    load_catalog(tmp_path, index=index)
    assert index.hashes.hashed == 5
    damage_frame(tmp_path / "b", 1)
    assert load_catalog(tmp_path, index=index).set_index("run").loc["b", "status"] == "damaged"
    assert index.hashes.hashed == 6


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
    assert (run.source, run.vqgan, run.seed, run["size"]) == ("pytti", "wikiart", 12345, "32x16")
    assert run.frame_steps == [50, 100, 150, 200]
    assert run.losses is None and run.status == "complete"


def test_use_mmc_means_mmc_models_only(root: Path, cat: pd.DataFrame) -> None:
    settings = json.JSONDecoder().raw_decode((root / PYTTI_RN50 / f"{PYTTI_RN50}_settings.txt").read_text())[0]
    assert settings["use_mmc"] is True and settings["ViTB32"] is True and settings["RN101"] is True
    assert (cat.loc[PYTTI_RN50].perceptors, cat.loc[PYTTI_RN50].perceptor_set) == (["RN50"], "RN50")
    assert (cat.loc[PYTTI].perceptors, cat.loc[PYTTI].perceptor_set) == (["ViT-B32", "RN50"], "ViT-B32+RN50")
    # without use_mmc, the true switches decide
    assert cat.loc["switches_only"].perceptors == ["ViT-B16", "RN101"]
    # the single-perceptor cell and the pair get grid slots of their own
    spec = grid_spec(cat.loc[[PYTTI, PYTTI_RN50]], "vqgan", "perceptor_set", lambda run: {})
    assert spec["cols"] == ["RN50", "ViT-B32+RN50"]


def test_rerun_frames_belong_to_the_rerun(cat: pd.DataFrame) -> None:
    original, rerun = cat.loc[PYTTI], cat.loc[f"{PYTTI}/{PYTTI}(1)"]
    assert original.n_frames == 4 and original.rerun == 0
    assert all("(1)" not in f for f in original.frames)
    assert rerun.n_frames == 2 and rerun.rerun == 1 and rerun.cell == PYTTI
    assert all(f"{PYTTI}(1)_" in f for f in rerun.frames)
    # its own settings file: its own seed, and the same label as the original in its folder
    assert rerun.settings_file == f"{PYTTI}(1)_settings.txt" and rerun.seed == 12346
    assert (rerun.vqgan, rerun.perceptor_set) == (original.vqgan, original.perceptor_set)


def test_rerun_without_settings_reads_the_folders(cat: pd.DataFrame) -> None:
    rerun = cat.loc[f"{PYTTI}/{PYTTI}(2)"]
    assert (rerun.status, rerun.reason, rerun.source) == ("complete", "", "pytti")
    assert rerun.settings_file == f"{PYTTI}_settings.txt" and rerun.seed == 12345
    assert (rerun.vqgan, rerun.perceptor_set, rerun.n_frames) == ("wikiart", "ViT-B32+RN50", 4)


def test_broken_folders_are_listed_with_a_reason(cat: pd.DataFrame) -> None:
    empty, corrupt = cat.loc["exp__faceshq_RN50"], cat.loc["exp__ffhq_RN101"]
    assert empty.status == "incomplete" and empty.n_frames == 0 and "no frames" in empty.reason
    assert corrupt.status == "incomplete" and "unreadable" in corrupt.reason
    assert corrupt.n_frames == 2 and corrupt.source == "folder name"
    assert (corrupt.experiment, corrupt.vqgan, corrupt.perceptors) == ("exp", "ffhq", ["RN101"])


def test_replicates_join_their_cells_experiment(tmp_path: Path) -> None:
    make_our_run(tmp_path, cell_name("coco", ["RN50"]), "coco", ["RN50"])
    make_our_run(tmp_path, cell_name("coco", ["RN50"]) + "__seed-7", "coco", ["RN50"], seed=7)
    bare = tmp_path / (cell_name("coco", ["RN50"]) + "__seed-8")
    bare.mkdir()
    (bare / "metrics.json").write_text("{}")
    cat = load_catalog(tmp_path)
    assert set(cat["experiment"]) == {STUDY} and set(cat["perceptor_set"]) == {"RN50"}
    assert sorted(cat["seed"]) == [7, 8, 12345]


def test_perceptor_filter_matches_exactly(cat: pd.DataFrame) -> None:
    only_vit = select(cat, perceptors=["ViT-B32"])
    assert set(only_vit["perceptor_set"]) == {"ViT-B32"}  # not the ViT-B32+RN50 pytti cells
    assert set(select(cat, vqgans=["sflckr"])["vqgan"]) == {"sflckr"}
    assert "exp__faceshq_RN50" not in set(select(cat)["run"])  # nothing to play


def test_grid_spec_places_cells_on_the_union_of_steps(cat: pd.DataFrame) -> None:
    runs = select(cat, vqgans=["sflckr", "coco"])
    spec = grid_spec(runs, "vqgan", "perceptor_set", lambda run: {"frames": run.frames})
    assert spec["rows"] == ["coco", "sflckr"] and spec["cols"] == ["RN50", "RN101", "ViT-B32"]
    assert spec["steps"][:4] == [5, 10, 15, 20] and spec["steps"][-1] == 150
    cell = next(c for c in spec["cells"] if c["id"] == cell_name("sflckr", ["RN50"]))
    at = dict(zip(spec["steps"], cell["at"]))
    assert (at[5], at[50], at[60], at[100], at[150]) == (0, 0, 0, 1, 2)
    assert "setting:save_every" in axis_options(runs).values()


def _cli(*args: str) -> str:
    return subprocess.run([sys.executable, "-m", "dashboard", *args], cwd=REPO, check=True,
                          capture_output=True, text=True, timeout=120).stdout


def test_cli_prints_a_table_or_json(root: Path) -> None:
    table = _cli("catalog", "--root", str(root))
    assert "exp__ffhq_RN101" in table and "incomplete" in table and "wikiart" in table
    runs = {r["run"]: r for r in json.loads(_cli("catalog", "--root", str(root), "--json"))}
    assert runs["long_run"]["n_frames"] == 12 and runs["exp__faceshq_RN50"]["seed"] is None
    pair = runs[PYTTI]  # `generator`: the perceptor set's old name, kept for one release
    assert pair["perceptor_set"] == pair["generator"] == "ViT-B32+RN50"


def test_a_run_folder_as_the_root(tmp_path: Path) -> None:
    folder = make_our_run(tmp_path, "solo", "coco", ["RN50"], n_frames=2)
    run = load_catalog(folder).iloc[0]
    assert (run.run, run.folder, run.frames) == ("solo", ".", ["solo_1.png", "solo_2.png"])
    assert (folder / run.frames[0]).is_file()


def test_untrained_models_are_labelled(cat: pd.DataFrame) -> None:
    ours, pytti = cat.loc[cell_name("sflckr", ["RN50"])], cat.loc[PYTTI]
    assert ours.untrained and not pytti.untrained
    spec = grid_spec(cat.loc[[ours.run, pytti.run]], "vqgan", "perceptor_set", lambda run: {"frames": []})
    titles = {c["id"]: c["title"] for c in spec["cells"]}
    assert titles[ours.run].endswith("UNTRAINED") and "UNTRAINED" not in titles[pytti.run]


# ---------------------------------------------------------------- pytti's experiment families

FAMILY = "matrix_cutouts-{}_steps_per_frame-{}"


@pytest.fixture(scope="module")
def families(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """The study's grid beside a `<experiment>_<key>-<value>` family, both in pytti's format."""
    root = tmp_path_factory.mktemp("families")
    for i, (cutouts, spf) in enumerate([(10, 20), (10, 80), (40, 20), (40, 80)]):
        make_pytti_run(root, FAMILY.format(cutouts, spf), "imagenet", ["ViT-B32"], cell=i,
                       settings={"cutouts": cutouts, "steps_per_frame": spf,
                                 "scenes": "portrait of a man, oil on canvas"})
    make_pytti_run(root, FAMILY.format(160, 160), "imagenet", ["ViT-B32"], settings_file=False)
    for v in ("sflckr", "coco"):
        for p in ("ViT-B32", "RN50"):
            make_pytti_run(root, cell_name(v, [p]), v, [p])
    return with_losses(root).set_index("run", drop=False)


def test_key_value_names_give_experiment_and_settings(families: pd.DataFrame) -> None:
    family = families[families["run"].str.startswith("matrix_")]
    assert len(family) == 5 and set(family["experiment"]) == {"matrix"}
    run = families.loc[FAMILY.format(40, 20)]
    assert (run.settings["cutouts"], run.settings["steps_per_frame"]) == (40, 20)
    no_file = families.loc[FAMILY.format(160, 160)]  # only the name tells
    assert no_file.settings == {"cutouts": "160", "steps_per_frame": "160"}
    assert set(families.loc[cell_name("coco", ["RN50"]), ["experiment"]]) == {STUDY}


def test_axes_vary_within_an_experiment(families: pd.DataFrame) -> None:
    both = axis_options(families)
    assert {"cutouts", "steps_per_frame", "experiment"} <= set(both.values())  # factors, by setting name
    assert not {"setting:cutouts", "setting:steps_per_frame"} & set(both.values())  # no second axis of them
    assert "setting:scenes" not in both.values()  # it only tells the two experiments apart
    study = axis_options(families[families["experiment"] == STUDY])
    assert set(study.values()) == {"vqgan", "perceptor_set"}


def test_the_pytti_video_family_takes_its_experiment_and_settings(tmp_path: Path) -> None:
    names = [f"exp_video_basic_stability_modes_ref-{ref}_dsw-{dsw}_ssw-0.0"
             for ref in ("True", "False") for dsw in ("1.0", "5.0")]
    for i, name in enumerate(names):
        make_pytti_run(tmp_path, name, "imagenet", ["ViT-B32"], cell=i, n_frames=2,
                       settings={"animation_mode": "Video Source"})
    cat = load_catalog(tmp_path).set_index("run", drop=False)
    assert set(cat["experiment"]) == {"exp_video_basic_stability_modes"}
    assert cat.loc[names[1], "settings"]["dsw"] == "5.0"
    assert {k: cat.loc[names[2], "settings"][k] for k in ("ref", "dsw", "ssw")} == {
        "ref": "False", "dsw": "1.0", "ssw": "0.0"}
    assert cat.loc[names[2], "factors"] == {
        "vqgan": "imagenet", "perceptor_set": "ViT-B32", "seed": 12345, "reencode_each_frame": "False",
        "direct_stabilization_weight": "1.0", "semantic_stabilization_weight": "0.0"}


def test_the_stability_familys_three_factors_are_axes_filters_and_captions(tmp_path: Path) -> None:
    names = [f"exp_video_basic_stability_modes_ref-{ref}_dsw-{dsw}_ssw-{ssw}"
             for ref in ("True", "False") for dsw in ("0.0", "1.0") for ssw in ("0.0", "1.0")]
    for i, name in enumerate(names):
        make_pytti_run(tmp_path, name, "sflckr", ["ViT-B32"], cell=i, n_frames=2)
    cat = load_catalog(tmp_path)
    factors = ["reencode_each_frame", "direct_stabilization_weight", "semantic_stabilization_weight"]
    assert varied_settings(cat) == factors
    axes = axis_options(cat)
    assert {axes[f] for f in factors} == set(factors)  # labelled and named by the setting
    settings = [a.removeprefix(SETTING) for a in axes.values() if a.startswith(SETTING)]
    assert not [s for s in settings if setting_of(s) in factors]  # `setting:dsw` is no second axis of it
    assert levels_of(cat, "direct_stabilization_weight") == ["0.0", "1.0"]
    spec = grid_spec(cat, "direct_stabilization_weight", "semantic_stabilization_weight",
                     lambda run: {"frames": []})
    assert (spec["rows"], spec["cols"], spec["row_label"]) == (["0.0", "1.0"], ["0.0", "1.0"],
                                                               "direct_stabilization_weight")
    assert {c["levels"] for c in spec["cells"]} == {"ref=True", "ref=False"}  # the factor not on an axis
    kept = select(cat, levels={"reencode_each_frame": ["False"], "direct_stabilization_weight": ["1.0"]})
    assert sorted(kept["run"]) == sorted(n for n in names if "ref-False_dsw-1.0" in n)


# ---------------------------------------------------------------- the prompt as a factor (grid.vary)

@pytest.fixture(scope="module")
def prompts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2 VQGAN x 1 perceptor x 3 prompt grid beside the plain study grid of another experiment."""
    root = tmp_path_factory.mktemp("prompts")
    make_prompt_grid(root, ["vq-a", "vq-b"], ["RN50"], 2, experiment="exp_prompts")
    make_grid(root, ["vq-a"], ["RN50"], 2)
    return root


def test_the_catalog_lists_each_runs_factors(prompts: Path) -> None:
    cat = load_catalog(prompts).set_index("run")
    cell = "exp_prompts__vq-b_RN50__scenes-forest"
    assert cat.loc[cell, "factors"] == {"vqgan": "vq-b", "perceptor_set": "RN50", "seed": 12345,
                                        "scenes": "forest"}
    assert cat.loc[cell, "settings"]["scenes"] == PROMPTS["forest"]  # the level names the real prompt
    assert cat.loc[cell_name("vq-a", ["RN50"]), "factors"] == {"vqgan": "vq-a", "perceptor_set": "RN50",
                                                               "seed": 12345}
    runs = {r["run"]: r for r in json.loads(_cli("catalog", "--root", str(prompts), "--json"))}
    assert runs[cell]["factors"]["scenes"] == "forest"
    table = _cli("catalog", "--root", str(prompts))
    assert "scenes=forest" in table.splitlines()[[cell in line for line in table.splitlines()].index(True)]


def test_the_prompt_is_an_axis_a_filter_and_a_caption(prompts: Path) -> None:
    cat = load_catalog(prompts)
    axes = axis_options(cat)
    assert axes["scenes"] == "scenes" and "setting:scenes" not in axes.values()
    assert levels_of(cat, "scenes") == sorted(PROMPTS)
    spec = grid_spec(cat, "scenes", "vqgan", lambda run: {"frames": []})
    assert spec["rows"] == ["-", *sorted(PROMPTS)]  # the other experiment's cell has no prompt level
    assert spec["factor_labels"]["perceptor_set"] == "perceptor set"
    by_id = {c["id"]: c for c in spec["cells"]}
    assert by_id["exp_prompts__vq-a_RN50__scenes-sea"]["row"] == "sea"
    assert by_id["exp_prompts__vq-a_RN50__scenes-sea"]["levels"] == ""  # shown by its row
    beside = grid_spec(cat, "vqgan", "perceptor_set", lambda run: {"frames": []})
    assert {c["levels"] for c in beside["cells"]} == {"", *(f"scenes={p}" for p in PROMPTS)}
    city = select(cat, levels={"scenes": ["city"]})
    assert sorted(city["run"]) == sorted(["exp_prompts__vq-a_RN50__scenes-city",
                                          "exp_prompts__vq-b_RN50__scenes-city", cell_name("vq-a", ["RN50"])])
    with pytest.raises(InputError, match=r"--rows prompt: not an axis of these runs; choose from .*scenes"):
        check_axis(cat, "prompt", "--rows")


# ---------------------------------------------------------------- folders that once crashed it

@pytest.fixture(scope="module")
def malformed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    root = tmp_path_factory.mktemp("malformed")
    make_grid(root, ["sflckr"], ["RN50"], 2)
    make_malformed_runs(root)
    return root, with_losses(root).set_index("run", drop=False)


def test_bad_folders_do_not_hide_the_rest(malformed: tuple[Path, pd.DataFrame]) -> None:
    _, cat = malformed
    good = cat.loc[cell_name("sflckr", ["RN50"])]
    assert (good.status, good.n_frames) == ("complete", 2)
    assert set(MALFORMED) <= set(cat.index)


@pytest.mark.parametrize("name, says", [
    ("settings_is_a_list", "'settings' is list"), ("models_is_a_string", "'models' is str"),
    ("deep_json", "nested too deeply"), ("deep_metrics", "nested deeper than 32"),
    ("loop", "links to folders are not followed"), ("surrogate", "not Unicode text"),
])
def test_each_bad_folder_says_why(malformed: tuple[Path, pd.DataFrame], name: str,
                                  says: str) -> None:
    run = malformed[1].loc[name]
    assert run.status == "incomplete" and "unreadable" in run.reason and says in run.reason


def test_non_numeric_step_drops_only_that_row(malformed: tuple[Path, pd.DataFrame]) -> None:
    run = malformed[1].loc["text_step"]
    assert "1 row(s) without a numeric step ignored" in run.reason
    assert run.losses["step"] == list(range(1, 21))
    cell = 20 + list(MALFORMED).index("text_step")  # as make_malformed_runs numbers it
    assert run.frame_losses == pytest.approx([fixture_loss(s, cell) for s in (10, 20)])


def test_a_name_that_is_not_utf8(malformed: tuple[Path, pd.DataFrame]) -> None:
    root, cat = malformed
    name = NOT_UTF8.decode("utf-8", "backslashreplace")
    assert "not UTF-8" in cat.loc[name].reason and cat.loc[name].n_frames == 0
    to_json(cat).encode("utf-8")  # every text in the catalog can be sent to a browser
    assert "latin1_caf" in _cli("catalog", "--root", str(root))
