"""Grid pipeline without DVC runs: params validation, cell names, dvc.yaml agreement, image statistics."""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from experiments import demo
from experiments.grid import GridError, build_grid, load_grid, read_params
from experiments.imagestats import colourfulness, contrast, edge_density, frame_stats, palette, saturation
from experiments.score import windows

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
    assert [(c.vqgan.slug, c.perceptor_key) for c in grid.cells] == [
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
    assert cell.generator == "tiny-vit+tiny-rn"
    # The pytti widget splits folder names on '__' and then '_': experiment, vqgan, perceptors.
    head, tail = cell.name.split("__")
    assert head == "demo_untrained" and tail.split("_") == ["tiny", "tiny-vit", "tiny-rn"]
    assert grid.engine_settings(cell)["perceptors"] == ["tiny-vit", "tiny-rn"]
    assert [j.slug for j in grid.judges] == ["tiny-vit", "tiny-rn"]


def test_study_params_validate_without_downloads() -> None:
    grid = load_grid(REPO / "params.yaml")
    assert grid.experiment == "exp_vqgan_base_perceptors" and not grid.untrained
    assert len(grid.cells) == len(grid.vqgans) * len(grid.perceptors) >= 20
    assert {"imagenet", "openimages", "wikiart", "coco", "sflckr"} <= set(grid.vqgans)
    assert grid.cell("imagenet", "ViT-B32_RN50").name == "exp_vqgan_base_perceptors__imagenet_ViT-B32_RN50"
    s = grid.settings
    assert (s["width"], s["height"], s["cutouts"], s["seed"]) == (256, 128, 60, 12345)
    assert s["steps_per_scene"] * s["scenes"].count("||") + s["steps_per_scene"] == 40 * s["save_every"]
    assert "init_image" not in s


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
    ({"settings.seed": -1}, "one fixed seed"),
    ({"settings.cutout": 4}, "unknown setting 'cutout'; did you mean cutouts"),
    ({"settings.vqgan_model": "tiny"}, "settings.vqgan_model: set per cell by the grid"),
    ({"settings.init_image": "photo.jpg"}, "init_image and target_images are not supported"),
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
    assert "one fixed seed" in message and "unknown VQGAN model 'nope'" in message


def test_dvc_yaml_agrees_with_grid_names() -> None:
    """The stage names, outputs, metrics and params in dvc.yaml are the ones grid.py computes."""
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    stage = dvc["stages"]["cell"]
    grid = build_grid(demo_params(**{"grid.perceptors": {"tiny-vit_tiny-rn": "tiny-vit+tiny-rn"}}))
    cell = grid.cells[-1]
    values = {"experiment": grid.experiment, "out_dir": grid.out_dir, "item.vqgan": cell.vqgan.slug,
              "item.perceptors": cell.perceptor_key}

    def fill(text: str) -> str:
        return re.sub(r"\$\{([^}]+)\}", lambda m: values[m.group(1)], text)

    assert set(stage["matrix"]) == {"vqgan", "perceptors"}
    assert stage["matrix"]["vqgan"] == "${grid.vqgan_models}"
    assert stage["matrix"]["perceptors"] == "${grid.perceptors}"
    assert f"cell@{cell.vqgan.slug}-{cell.perceptor_key}" == cell.stage
    assert [fill(o) for o in stage["outs"]] == [str(grid.cell_dir(cell))]
    assert [fill(next(iter(m))) for m in stage["metrics"]] == [str(grid.metrics_file(cell))]
    params = [fill(p) for p in stage["params"]]
    assert sorted(params) == sorted(["experiment", "out_dir", "settings", f"grid.vqgan_models.{cell.vqgan.slug}",
                                     f"grid.perceptors.{cell.perceptor_key}"])
    assert "grid" not in params  # a cell must not depend on the whole grid
    deps = [fill(d) for d in stage["deps"]]
    assert f"experiments/model_stamps/vqgan-{cell.vqgan.slug}.json" in deps
    assert f"experiments/model_stamps/perceptors-{cell.perceptor_key}.json" in deps
    assert dvc["stages"]["fetch_models"]["outs"] == ["experiments/model_stamps"]


def test_demo_params_are_labelled_untrained(tmp_path: Path) -> None:
    repo = demo.create_demo(tmp_path / "demo")
    text = (repo / "params.yaml").read_text()
    assert text.startswith("# OFFLINE DEMO GRID ON UNTRAINED MODELS")
    assert "UNTRAINED" in (repo / "README.md").read_text()
    grid = load_grid(repo / "params.yaml")
    assert grid.experiment == "demo_untrained" and all(m.untrained for m in grid.models)
    assert (repo / "dvc.yaml").read_text() == (REPO / "dvc.yaml").read_text()
    assert (repo / ".dvc").is_dir() and (repo / "experiments" / "run_cell.py").is_file()
    with pytest.raises(FileExistsError):
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
