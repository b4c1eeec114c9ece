"""Grid pipeline without DVC runs: params validation, cell names, dvc.yaml agreement, image statistics."""
from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import yaml

from experiments import demo
from experiments.grid import GridError, build_grid, load_grid, read_params
from experiments.imagestats import colourfulness, contrast, edge_density, frame_stats, palette, saturation
from experiments.judge import windows

REPO = Path(__file__).resolve().parent.parent


def demo_params(**changes) -> dict:
    params = demo.demo_params(read_params(REPO / "params.yaml"))
    for dotted, value in changes.items():
        node = params
        *path, last = dotted.split(".")
        for key in path:
            node = node[key]
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return params


def grid_error(params: dict) -> str:
    with pytest.raises(GridError) as info:
        build_grid(params)
    return str(info.value)


@pytest.fixture
def user_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Write a user models file and point the registry at it."""
    def write(data: dict) -> Path:
        path = tmp_path / "models.yaml"
        path.write_text(yaml.safe_dump(data))
        monkeypatch.setenv("VQCLIP_MODELS", str(path))
        return path
    return write


# ---------------------------------------------------------------- the grid

def test_demo_grid_cells_and_names() -> None:
    grid = build_grid(demo_params())
    assert grid.untrained and grid.experiment == "demo_untrained"
    assert [(c.vqgan.slug, c.set_key) for c in grid.cells] == [
        ("tiny", "tiny-vit"), ("tiny", "tiny-rn"), ("tiny-gumbel", "tiny-vit"), ("tiny-gumbel", "tiny-rn")]
    cell = grid.cell("tiny-gumbel", "tiny-rn")
    assert cell.name == "demo_untrained__tiny-gumbel_tiny-rn"
    assert cell.stage == "cell@tiny-gumbel-tiny-rn"
    assert grid.cell_dir(cell) == Path("experiments/images_out/demo_untrained__tiny-gumbel_tiny-rn")
    assert [j.slug for j in grid.judges] == ["tiny-vit", "tiny-rn"]
    with pytest.raises(GridError, match="no cell"):
        grid.cell("tiny", "nope")


def test_joined_perceptor_entry_is_one_cell_guided_by_all() -> None:
    grid = build_grid(demo_params(**{"grid.perceptors": {"tiny-vit_tiny-rn": "tiny-vit+tiny-rn",
                                                         "tiny-rn": ["tiny-rn"]}}))
    cell = grid.cell("tiny", "tiny-vit_tiny-rn")
    assert [p.name for p in cell.perceptors] == ["tiny-vit", "tiny-rn"]
    assert cell.perceptor_set == "tiny-vit+tiny-rn"
    # The pytti widget splits folder names on '__' and then '_': experiment, vqgan, perceptors.
    head, tail = cell.name.split("__")
    assert head == "demo_untrained" and tail.split("_") == ["tiny", "tiny-vit", "tiny-rn"]
    assert grid.engine_settings(cell)["perceptors"] == ["tiny-vit", "tiny-rn"]
    assert [j.slug for j in grid.judges] == ["tiny-vit", "tiny-rn"]


STUDY_PERCEPTORS = {"ViT-B32": ["ViT-B-32:openai"], "ViT-B16": ["ViT-B-16:openai"], "RN50": ["RN50:openai"],
                    "RN101": ["RN101:openai"], "RN50x4": ["RN50x4:openai"],
                    "ViT-B32_ViT-B16": ["ViT-B-32:openai", "ViT-B-16:openai"],
                    "ViT-B32_RN50": ["ViT-B-32:openai", "RN50:openai"], "RN50_RN101": ["RN50:openai", "RN101:openai"]}


def test_study_params_are_the_studys_40_cells_in_pyttis_meaning() -> None:
    from engine.settings import resolve_settings

    grid = load_grid(REPO / "params.yaml")
    assert grid.experiment == "exp_vqgan_base_perceptors" and not grid.untrained
    assert [m.name for m in grid.vqgans.values()] == ["imagenet_16384", "openimages_8192", "wikiart_16384", "coco", "sflckr"]
    assert {k: [m.name for m in v] for k, v in grid.perceptor_sets.items()} == STUDY_PERCEPTORS
    assert grid.seeds == (12345,) and len(grid.cells) == 40 and not any(c.replicate for c in grid.cells)
    assert grid.cell("imagenet", "ViT-B32_RN50").name == "exp_vqgan_base_perceptors__imagenet_ViT-B32_RN50"
    assert grid.cell("sflckr", "ViT-B32").name == "exp_vqgan_base_perceptors__sflckr_ViT-B32"
    s = resolve_settings(grid.engine_settings(grid.cell("coco", "RN50x4")))
    assert s.seed == 12345 and s.perceptors == ["RN50x4:openai"] and s.init_image is None
    assert (s.width, s.height, s.cutouts, s.cut_pow, s.cutout_border, s.border_mode) == (256, 128, 60, 1, 0.25, "clamp")
    assert (s.steps_per_scene, s.steps_per_frame, s.save_every, s.interpolation_steps) == (1000, 50, 50, 500)
    assert (s.learning_rate, s.reset_lr_each_frame, s.animation_mode, s.pre_animation_steps) == (None, True, "2D", 50)
    assert (s.translate_x, s.zoom_x_2d, s.zoom_y_2d, s.sampling_mode, s.infill_mode) == (-1, 3, 3, "bicubic", "wrap")
    assert (s.smoothing_weight, s.direct_stabilization_weight) == (0.02, 0.3)
    assert s.steps_per_scene * s.scenes.count("||") + s.steps_per_scene == 40 * s.save_every


def test_grid_command_validates_and_lists_the_40_study_cells() -> None:
    result = subprocess.run([sys.executable, "-m", "experiments.grid"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("40 cells = 5 VQGANs × 8 perceptor sets × 1 seed (12345)")
    rows = [line.split() for line in lines if line.startswith("  exp_vqgan_base_perceptors__")]
    assert len(rows) == 40
    assert ["exp_vqgan_base_perceptors__wikiart_RN50_RN101", "wikiart_16384", "RN50:openai+RN101:openai", "12345",
            "cell@wikiart-RN50_RN101"] in rows


def test_grid_command_names_bad_entries(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from experiments.grid.cli import main

    params = read_params(REPO / "params.yaml")
    params["grid"]["perceptors"]["RN50x5"] = "RN50x5:openai"
    params["grid"]["seeds"] = [12345, "x"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert main(["--params", str(tmp_path / "params.yaml")]) == 2  # a bad params.yaml is input (engine.errors.InputError)
    out, err = capsys.readouterr()
    assert out == "" and "grid.perceptors.RN50x5: unknown perceptor 'RN50x5:openai'" in err
    assert "grid.seeds=[12345, 'x']: expected a list of non-negative integers" in err


def test_seeds_make_one_replicate_of_every_cell() -> None:
    grid = build_grid(demo_params(**{"grid.seeds": [7, 3]}))
    assert grid.seeds == (12345, 7, 3) and len(grid.cells) == 12
    first, seven = grid.cell("tiny", "tiny-rn"), grid.cell("tiny", "tiny-rn", 7)
    assert (first.seed, first.replicate, first.name, first.stage) == (
        12345, False, "demo_untrained__tiny_tiny-rn", "cell@tiny-tiny-rn")
    assert (seven.seed, seven.replicate, seven.name, seven.stage) == (
        7, True, "demo_untrained__tiny_tiny-rn__seed-7", "replicate@tiny-tiny-rn-7")
    assert grid.engine_settings(seven)["seed"] == 7 and grid.engine_settings(seven)["file_namespace"] == seven.name
    assert [c.seed for c in grid.cells[:3]] == [12345, 7, 3]  # by VQGAN, perceptor entry, seed
    assert len({c.name for c in grid.cells}) == len({c.stage for c in grid.cells}) == 12
    with pytest.raises(GridError, match="seeds: 12345, 7, 3"):
        grid.cell("tiny", "tiny-rn", 8)


def test_init_and_target_images_come_from_the_inputs_folder(tmp_path: Path) -> None:
    (tmp_path / "experiments/inputs").mkdir(parents=True)
    (tmp_path / "experiments/inputs/photo.png").write_bytes(b"png")
    params = demo_params(**{"settings.init_image": "experiments/inputs/photo.png",
                            "settings.target_images": "experiments/inputs/photo.png:0.5"})
    grid = build_grid(params, root=tmp_path)
    assert grid.engine_settings(grid.cells[0])["init_image"] == "experiments/inputs/photo.png"
    message = grid_error(demo_params(**{"settings.init_image": "experiments/inputs/GasWorksPark3.jpg"}))
    assert "settings.init_image='experiments/inputs/GasWorksPark3.jpg': no such file" in message
    message = grid_error(demo_params(**{"settings.target_images": "../photo.png | experiments/inputs/x.png"}))
    assert "settings.target_images='../photo.png': put the file in experiments/inputs/" in message
    assert "settings.target_images='experiments/inputs/x.png': no such file" in message


def test_unknown_model_names_the_closest_match() -> None:
    message = grid_error(demo_params(**{"grid.vqgan_models": {"tiny": "tiny", "tiny-gumbl": "tiny-gumbl"}}))
    assert "grid.vqgan_models.tiny-gumbl" in message and "unknown VQGAN model 'tiny-gumbl'" in message
    assert "tiny-gumbel" in message
    message = grid_error(demo_params(**{"grid.perceptors": {"tiny-vit_x": "tiny-vit+ViT-B-33:openai"}}))
    assert "unknown perceptor 'ViT-B-33:openai'" in message and "ViT-B-32:openai" in message


def test_keys_must_be_the_slugs() -> None:
    message = grid_error(demo_params(**{"grid.vqgan_models": {"small": "tiny"}}))
    assert "write `tiny: tiny`" in message
    message = grid_error(demo_params(**{"grid.perceptors": {"both": "tiny-vit+tiny-rn"}}))
    assert "write `tiny-vit_tiny-rn: 'tiny-vit+tiny-rn'`" in message
    # Aliases are fine as values; the key is the canonical slug.
    grid = build_grid(demo_params(**{"grid.vqgan_models": {"imagenet": "imagenet"}}))
    assert grid.vqgans["imagenet"].name == "imagenet_16384"


def test_lists_are_rejected_with_the_mapping_to_write() -> None:
    message = grid_error(demo_params(**{"grid.perceptors": ["tiny-vit", "tiny-vit+tiny-rn"]}))
    assert "must be a mapping" in message and "tiny-vit_tiny-rn: 'tiny-vit+tiny-rn'" in message


def test_duplicate_cells_are_rejected(tmp_path: Path) -> None:
    message = grid_error(demo_params(**{"grid.perceptors": {"tiny-vit_tiny-rn": "tiny-vit+tiny-rn",
                                                            "tiny-rn_tiny-vit": "tiny-rn+tiny-vit"}}))
    assert "duplicate cells" in message
    assert "same perceptor twice" in grid_error(demo_params(**{"grid.perceptors": {"tiny-vit_tiny-vit": "tiny-vit+tiny-vit"}}))
    path = tmp_path / "params.yaml"
    path.write_text("experiment: x\nout_dir: out\nsettings: {}\ngrid:\n  vqgan_models:\n    tiny: tiny\n"
                    "    tiny: tiny\n  perceptors: {tiny-vit: tiny-vit}\n")
    with pytest.raises(GridError, match="duplicate key 'tiny' at line 7"):
        load_grid(path)


def test_colliding_stage_names_and_unsafe_slugs(tmp_path: Path, user_models) -> None:
    weights = str(tmp_path / "w.pt")
    user_models({"perceptors": {"gumbel-tiny-vit": {"arch": "tiny-vit", "file": weights},
                                "dotted": {"arch": "tiny-vit", "file": weights, "slug": "my.model"}}})
    # tiny × gumbel-tiny-vit and tiny-gumbel × tiny-vit both make DVC stage cell@tiny-gumbel-tiny-vit.
    message = grid_error(demo_params(**{"grid.perceptors": {"tiny-vit": "tiny-vit", "gumbel-tiny-vit": "gumbel-tiny-vit"}}))
    assert "share the DVC stage name 'cell@tiny-gumbel-tiny-vit'" in message
    message = grid_error(demo_params(**{"grid.perceptors": {"my.model": "dotted"}}))
    assert "slug 'my.model'" in message and "user models file" in message


@pytest.mark.parametrize("change, expected", [
    ({"settings.seed": -1}, "compares checkpoints at fixed seeds"),
    ({"settings.cutout": 4}, "unknown setting 'cutout'; did you mean cutouts"),
    ({"settings.vqgan_model": "tiny"}, "settings.vqgan_model: set per cell by the grid"),
    ({"settings.init_image": "photo.jpg"}, "settings.init_image='photo.jpg': put the file in experiments/inputs/"),
    ({"grid.seeds": [7, 7]}, "grid.seeds lists 7 twice"),
    ({"grid.seeds": [12345, 7]}, "grid.seeds lists 12345, which is settings.seed"),
    ({"grid.seeds": 7}, "grid.seeds=7: expected a list of non-negative integers"),
    ({"grid.seeds": None}, "grid.seeds is missing (write `seeds: []` for settings.seed alone)"),
    ({"settings.width": "wide"}, "setting width='wide': expected int"),
    ({"experiment": "a__b"}, "experiment='a__b'"),
    ({"out_dir": "/abs/images"}, "must be a sub-folder of the repository"),
    ({"out_dir": "experiments/scores"}, "overlaps experiments/scores"),
    ({"grid.vqgan_models": None}, "grid.vqgan_models is missing"),
    ({"grid.vqgan": {}}, "grid.vqgan: unknown key"),
])
def test_bad_params_are_reported(change: dict, expected: str) -> None:
    assert expected in grid_error(demo_params(**change))


def test_every_problem_is_listed_at_once() -> None:
    message = grid_error(demo_params(**{"settings.seed": -1, "grid.vqgan_models": {"nope": "nope"}}))
    assert "compares checkpoints at fixed seeds" in message and "unknown VQGAN model 'nope'" in message


@pytest.mark.parametrize("group, replicate", [("cell", False), ("replicate", True)])
def test_dvc_yaml_agrees_with_grid_names(group: str, replicate: bool) -> None:
    """The stage names, outputs, metrics, params and deps in dvc.yaml are the ones grid.py computes."""
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    stage = dvc["stages"][group]
    grid = build_grid(demo_params(**{"grid.perceptors": {"tiny-vit_tiny-rn": "tiny-vit+tiny-rn"}, "grid.seeds": [7]}))
    cell = next(c for c in reversed(grid.cells) if c.replicate == replicate)
    values = {"experiment": grid.experiment, "out_dir": grid.out_dir, "item.vqgan": cell.vqgan.slug,
              "item.perceptors": cell.set_key, "item.seed": str(cell.seed)}

    def fill(text: str) -> str:
        return re.sub(r"\$\{([^}]+)\}", lambda m: values[m.group(1)], text)

    matrix = {"vqgan": "${grid.vqgan_models}", "perceptors": "${grid.perceptors}"}
    assert stage["matrix"] == ({**matrix, "seed": "${grid.seeds}"} if replicate else matrix)
    dvc_name = "-".join(fill(f"${{item.{k}}}") for k in stage["matrix"])  # DVC joins matrix keys with '-'
    assert f"{group}@{dvc_name}" == cell.stage
    assert fill(stage["cmd"]).split() == ["python", "-m", "experiments.run_cell", cell.vqgan.slug, cell.set_key,
                                          *(["--seed", str(cell.seed)] if replicate else [])]
    assert [fill(o if isinstance(o, str) else next(iter(o))) for o in stage["outs"]] == [
        str(grid.cell_dir(cell)), str(grid.metrics_file(cell))]
    assert "metrics" not in stage  # the summary stage's files are the grid's DVC metrics
    params = [fill(p) for p in stage["params"]]
    assert sorted(params) == sorted(["experiment", "out_dir", "settings", f"grid.vqgan_models.{cell.vqgan.slug}",
                                     f"grid.perceptors.{cell.set_key}"])
    assert "grid" not in params  # a cell must not depend on the whole grid
    deps = [fill(d) for d in stage["deps"]]
    assert f"experiments/model_stamps/vqgan-{cell.vqgan.slug}.json" in deps
    assert f"experiments/model_stamps/perceptors-{cell.set_key}.json" in deps
    assert "experiments/inputs" in deps  # init_image and target_images files
    assert dvc["stages"]["fetch_models"]["outs"] == ["experiments/model_stamps"]


def test_cell_names_round_trip_through_dvcs_own_stages(tmp_path: Path) -> None:
    """DVC's resolution of dvc.yaml (the study's grid plus a seed): every cell and replicate
    stage's folder parses back to the VQGAN, perceptor key and seed of its command, formats to
    the same text, and is the grid's name for that stage."""
    from dvc.repo import Repo

    from engine.runfolder import cell_name, parse_cell_name

    params = read_params(REPO / "params.yaml")
    params["grid"]["seeds"] = [7]
    shutil.copyfile(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    Repo.init(str(tmp_path), no_scm=True)
    with Repo(str(tmp_path)) as repo:
        stages = [s for s in repo.index.stages if s.name.startswith(("cell@", "replicate@"))]
    names = {c.stage: c.name for c in build_grid(params).cells}
    assert sorted(s.name for s in stages) == sorted(names) and len(stages) == 80
    for stage in stages:
        args = stage.cmd.split()  # python -m experiments.run_cell V P [--seed N]
        assert args[:3] == ["python", "-m", "experiments.run_cell"], stage.cmd
        vqgan, key = args[3:5]
        seed = int(args[6]) if args[5:6] == ["--seed"] else None
        folder = PurePosixPath(next(o.def_path for o in stage.outs if not o.metric))
        parsed = parse_cell_name(folder.name)
        assert parsed is not None, folder
        assert (parsed.experiment, parsed.vqgan, "_".join(parsed.perceptors), parsed.seed) == (
            params["experiment"], vqgan, key, seed), stage.name
        assert cell_name(parsed.experiment, parsed.vqgan, parsed.perceptors, parsed.seed) == folder.name
        assert folder.name == names[stage.name] and str(folder.parent) == params["out_dir"]


def test_partial_dir_is_read_when_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    """VQCLIP_PARTIAL_DIR set after experiments.grid was imported still moves the partial runs
    (here: an out_dir inside it is refused)."""
    from experiments.grid import partial_dir

    params = demo_params(out_dir="scratch/partial/out")
    build_grid(params)
    monkeypatch.setenv("VQCLIP_PARTIAL_DIR", "scratch/partial")
    assert partial_dir() == Path("scratch/partial")
    assert "out_dir='scratch/partial/out' overlaps scratch/partial" in grid_error(params)
    monkeypatch.delenv("VQCLIP_PARTIAL_DIR")
    assert partial_dir() == Path("experiments/.partial")


def test_demo_keeps_the_studys_settings_but_not_its_init_photo() -> None:
    study = read_params(REPO / "params.yaml")
    study["settings"]["init_image"] = "experiments/inputs/GasWorksPark3.jpg"  # absent from a demo repository
    grid = build_grid(demo.demo_params(study))
    assert grid.settings["init_image"] is None and grid.seeds == (12345,) and len(grid.cells) == 4
    assert (grid.settings["zoom_x_2d"], grid.settings["cutout_border"]) == (3.0, 0.25)  # the study's, unscaled
    assert grid.settings["pre_animation_steps"] < 20  # motion within the demo's 20 steps


def test_demo_params_are_labelled_untrained(tmp_path: Path) -> None:
    repo = demo.create_demo(tmp_path / "demo")
    text = (repo / "params.yaml").read_text()
    assert text.startswith("# OFFLINE DEMO GRID ON UNTRAINED MODELS")
    assert "UNTRAINED" in (repo / "README.md").read_text()
    grid = load_grid(repo / "params.yaml")
    assert grid.experiment == "demo_untrained" and all(m.untrained for m in grid.models)
    assert (repo / "dvc.yaml").read_text() == (REPO / "dvc.yaml").read_text()
    assert (repo / ".dvc").is_dir() and (repo / "experiments" / "run_cell.py").is_file()
    with pytest.raises(demo.DemoError, match="not empty"):
        demo.create_demo(repo)


def test_fetch_checks_sizes_against_each_vqgan_factor(tmp_path: Path) -> None:
    from experiments.fetch_models import fetch_all, write_stamps

    grid = build_grid(demo_params(**{"settings.width": 60}))
    with pytest.raises(GridError, match="settings.width=60 is not a multiple of 8, the downsampling factor of VQGAN 'tiny'"):
        fetch_all(grid, progress=False)
    grid = build_grid(demo_params(**{"grid.perceptors": {"tiny-vit_tiny-rn": "tiny-vit+tiny-rn"}}))
    records = fetch_all(grid, progress=False)
    stamps = write_stamps(grid, records, tmp_path / "stamps")
    assert sorted(p.name for p in stamps) == ["perceptors-tiny-vit_tiny-rn.json", "vqgan-tiny-gumbel.json", "vqgan-tiny.json"]
    joined = yaml.safe_load((tmp_path / "stamps" / "perceptors-tiny-vit_tiny-rn.json").read_text())
    assert [m["name"] for m in joined["models"]] == ["tiny-vit", "tiny-rn"] and all(m["sha256"] for m in joined["models"])
    assert write_stamps(grid, records, tmp_path / "again")[0].read_bytes() == stamps[0].read_bytes()


# ---------------------------------------------------------------- image statistics

def test_statistics_of_simple_images() -> None:
    grey = np.full((16, 32, 3), 128, np.uint8)
    assert colourfulness(grey) == 0 and saturation(grey) == 0 and contrast(grey) == 0
    assert edge_density(grey) == 0 and palette(grey) == "#808080"
    red = np.zeros((16, 32, 3), np.uint8)
    red[..., 0] = 255
    assert saturation(red) == 1 and colourfulness(red) == pytest.approx(0.3 * math.hypot(255, 127.5))
    split = np.zeros((16, 32, 3), np.uint8)
    split[:, 16:] = 255  # left half black, right half white: one vertical edge
    assert contrast(split) == pytest.approx(0.5)
    assert edge_density(split) == pytest.approx(2 / 30)  # the two interior columns beside the step
    three = np.zeros((10, 10, 3), np.uint8)
    three[:, :6] = (255, 0, 0)
    three[:, 6:9] = (0, 0, 255)
    three[:, 9:] = (0, 255, 0)
    assert palette(three) == "#ff0000;#0000ff;#00ff00"  # most frequent first


def test_statistics_are_deterministic_and_bounded() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 64, 3), dtype=np.uint8)
    a, b = frame_stats(image), frame_stats(image.copy())
    assert a == b
    assert 0 <= a["saturation"] <= 1 and 0 <= a["contrast"] <= 0.5 and 0 <= a["edge_density"] <= 1
    assert re.fullmatch(r"#[0-9a-f]{6}(;#[0-9a-f]{6}){4}", a["palette"])


def test_judge_windows_cover_the_frame() -> None:
    assert windows(128, 256) == [(0, 0, 128), (0, 128, 128)]
    assert windows(64, 64) == [(0, 0, 64)]
    assert windows(100, 250) == [(0, 0, 100), (0, 75, 100), (0, 150, 100)]
    assert windows(256, 128) == [(0, 0, 128), (128, 0, 128)]


# ---------------------------------------------------------------- grid.vary

SCENES = {"apple": "a red apple", "sky": "a blue sky"}


def test_vary_adds_a_cell_per_level_named_in_pyttis_key_value_convention() -> None:
    from engine.runfolder import parse_cell_name

    grid = build_grid(demo_params(**{"grid.vary": {"scenes": SCENES}}))
    assert len(grid.cells) == 2 * 2 * 2 and list(grid.vary) == ["scenes"]
    cell = grid.cell("tiny-gumbel", "tiny-rn", varied={"scenes": "sky"})
    assert (cell.name, cell.stage) == ("demo_untrained__tiny-gumbel_tiny-rn__scenes-sky", "cell@tiny-gumbel-tiny-rn-sky")
    assert grid.engine_settings(cell)["scenes"] == "a blue sky"
    assert parse_cell_name(cell.name).varied == (("scenes", "sky"),)
    two = build_grid(demo_params(**{"grid.vary": {"scenes": SCENES, "direct_stabilization_weight": {"lo": 0.0, "hi": 1.0}},
                                    "grid.seeds": [7]}))
    cell = two.cell("tiny", "tiny-vit", 7, {"scenes": "apple", "direct_stabilization_weight": "hi"})
    assert cell.name == "demo_untrained__tiny_tiny-vit__scenes-apple_dsw-hi__seed-7"  # pytti's short key
    assert cell.stage == "replicate@tiny-tiny-vit-apple-hi-7" and len(two.cells) == 2 * 2 * 2 * 2 * 2
    assert parse_cell_name(cell.name).varied == (("scenes", "apple"), ("direct_stabilization_weight", "hi"))


@pytest.mark.parametrize("vary, message", [
    ({"sceens": {"a": "x"}}, "grid.vary.sceens: unknown setting; did you mean scenes"),
    ({"cut_pow": {"neg": -1.0}}, "grid.vary.cut_pow.neg: the engine refuses it: setting cut_pow=-1.0: must be > 0"),
    ({"cut_pow": {"one_two": 1.0}}, "grid.vary.cut_pow.one_two: a level slug names DVC stages and folders"),
    ({"cut_pow": {"a@b": 1.0}}, "grid.vary.cut_pow.a@b: a level slug names DVC stages and folders"),
    ({"seed": {"a": 1}}, "grid.vary.seed: seed cannot vary between cells: the grid's seeds are settings.seed and "
                         "grid.seeds"),
    ({"vqgan_model": {"a": "tiny"}}, "grid.vary.vqgan_model: vqgan_model cannot vary between cells: the grid sets it"),
    ({"device": {"a": "cpu"}}, "grid.vary.device: device cannot vary between cells: it changes how or where a run "
                               "is computed, not what"),
    ({"compile": {"a": "on"}}, "grid.vary.compile: compile cannot vary between cells: it changes how or where"),
    ({"cutouts": {str(i): i + 1 for i in range(300)}}, "the grid has 1200 cells (2 VQGANs × 2 perceptor sets × "
                                                        "300 cutouts × 1 seeds), more than 2000"),
    ({"cutouts": []}, "grid.vary.cutouts=[]: expected a mapping of level slug: value"),
])
def test_vary_refuses_what_cannot_make_cells_in_one_line_each(vary: dict, message: str) -> None:
    params = demo_params(**{"grid.vary": vary})
    if "300 cutouts" in message:  # 1200 cells pass; twice as many seeds do not
        assert len(build_grid(params).cells) == 1200
        params["grid"]["seeds"] = [1]
        message = message.replace("1200", "2400").replace("× 1 seeds", "× 2 seeds")
    assert message in grid_error(params)


def test_dvc_yaml_holds_the_studys_cell_stages_until_vary_varies_something(tmp_path: Path) -> None:
    from experiments.grid.dvcyaml import cell_stages, cell_stages_lag, write_cell_stages

    study = REPO / "dvc.yaml"
    assert not cell_stages_lag(study, [])  # without vary: the study's stages, names and folders
    stages = yaml.safe_load(study.read_text())["stages"]
    cell = "${experiment}__${item.vqgan}_${item.perceptors}"
    assert stages["cell"]["outs"] == [f"${{out_dir}}/{cell}", f"experiments/metrics/{cell}.json"]  # both cached
    assert list(stages["cell"]["matrix"]) == ["vqgan", "perceptors"]
    copy = tmp_path / "dvc.yaml"
    shutil.copyfile(study, copy)
    assert write_cell_stages(copy, ["scenes", "direct_stabilization_weight"]) and not write_cell_stages(
        copy, ["scenes", "direct_stabilization_weight"])
    varied = yaml.safe_load(copy.read_text())["stages"]
    assert list(varied["replicate"]["matrix"]) == ["vqgan", "perceptors", "scenes", "direct_stabilization_weight", "seed"]
    assert varied["cell"]["outs"][0] == (
        "${out_dir}/${experiment}__${item.vqgan}_${item.perceptors}__scenes-${item.scenes}_dsw-"
        "${item.direct_stabilization_weight}")
    assert "grid.vary.scenes.${item.scenes}" in varied["cell"]["params"]
    assert varied["judge"] == stages["judge"] and copy.read_text().count("cell stages") == 2
    assert cell_stages([]) in study.read_text()


def test_grid_command_lists_the_varied_settings_and_rewrites_dvc_yaml(tmp_path: Path, capsys) -> None:
    from experiments.grid.cli import main

    shutil.copyfile(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(demo_params(**{"grid.vary": {"scenes": SCENES}})))
    assert main(["--params", str(tmp_path / "params.yaml")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("dvc.yaml: cell stages rewritten to vary scenes (grid.vary)")
    assert out[1].startswith("8 cells = 2 VQGANs × 2 perceptor sets × 2 scenes × 1 seed (12345)")
    assert out[3].split() == ["cell", "vqgan", "perceptors", "scenes", "seed", "DVC", "stage"]
    row = next(line.split() for line in out[4:] if "tiny_tiny-rn__scenes-sky" in line)
    assert row == ["demo_untrained__tiny_tiny-rn__scenes-sky", "tiny", "tiny-rn", "sky", "12345", "cell@tiny-tiny-rn-sky"]
    assert len(out) == 4 + 8


def test_the_commented_prompt_axis_of_params_yaml_is_a_valid_grid_of_160_cells() -> None:
    """The `vary:` block params.yaml documents, uncommented, validates: 5 VQGANs × 8 perceptor sets × 4 prompts."""
    lines = (REPO / "params.yaml").read_text().splitlines()
    start = lines.index("  # vary:")
    block = [line.replace("  # ", "  ", 1) for line in lines[start:] if line.startswith("  #   ") or line == "  # vary:"]
    params = yaml.safe_load("\n".join([*lines[:start], *block, *lines[start + len(block):]]))
    grid = build_grid(params)
    assert len(grid.cells) == 160 and list(grid.vary["scenes"]) == ["landscape", "portrait", "street", "still-life"]
    assert all(s.count("||") == 1 for s in grid.vary["scenes"].values())  # two seasons each, as the study's prompt
