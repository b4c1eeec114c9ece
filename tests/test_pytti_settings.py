"""pytti `_settings.txt` files: read as pytti writes them, run with tiny models, refused where unsupported."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.__main__ import main
from engine.pytti_settings import from_pytti, perceptors
from engine.settings import SettingsError, load_config

SCENES = "a photograph of a bright and beautiful spring day, by Trey Ratcliff||a painting of a cold wintery landscape, by Rembrandt"


def pytti_values(**changes) -> dict:
    """The keys pytti writes for a VQGAN 2D run, typed as pytti types them ("0", "", null)."""
    values = {
        "scenes": SCENES, "scene_prefix": "", "scene_suffix": " | text:-1:-.9 | watermark:-1:-.9",
        "direct_image_prompts": "", "init_image": "", "direct_init_weight": "", "semantic_init_weight": "",
        "image_model": "VQGAN", "vqgan_model": "sflckr", "animation_mode": "2D", "width": 256, "height": 128,
        "steps_per_scene": 1000, "steps_per_frame": 50, "interpolation_steps": 500, "learning_rate": None,
        "reset_lr_each_frame": True, "seed": 12345, "cutouts": 60, "cut_pow": 1, "cutout_border": 0.25,
        "border_mode": "clamp", "field_of_view": 60, "near_plane": 1, "far_plane": 10000, "translate_x": "-1",
        "translate_y": "0", "translate_z_3d": "0", "rotate_3d": "[1, 0, 0, 0]", "rotate_2d": "0", "zoom_x_2d": "3",
        "zoom_y_2d": "3", "sampling_mode": "bicubic", "infill_mode": "wrap", "pre_animation_steps": 50,
        "lock_camera": True, "pixel_size": 4, "smoothing_weight": 0.02, "random_initial_palette": False,
        "palette_size": 6, "palettes": 9, "gamma": 1, "hdr_weight": 0.01, "palette_normalization_weight": 0.2,
        "show_palette": False, "target_palette": "", "lock_palette": False, "frames_per_second": 12,
        "direct_stabilization_weight": 0.3, "semantic_stabilization_weight": "", "depth_stabilization_weight": "",
        "edge_stabilization_weight": "", "flow_stabilization_weight": "", "video_path": "", "frame_stride": 1,
        "reencode_each_frame": True, "flow_long_term_samples": 1, "ViTB32": True, "ViTB16": False,
        "ViTL14": False, "ViTL14_336px": False, "RN50": True, "RN101": False, "RN50x4": False, "RN50x16": False,
        "RN50x64": False, "file_namespace": "exp_vqgan_base_perceptors__sflckr_ViT-B32", "allow_overwrite": False,
        "display_every": 50, "clear_every": 0, "display_scale": 1, "save_every": 50, "backups": 0,
        "show_graphs": False, "approximate_vram_usage": False, "use_mmc": True,
        "mmc_models": [{"architecture": "clip", "publisher": "openai", "id": "ViT-B/32"}],
        "gradient_accumulation_steps": 1,
    }
    values.update(changes)
    return values


def write_pytti_file(path: Path, values: dict) -> Path:
    """As pytti's `write_settings`: json.dump, a blank line, then b'<frame>: <scene>' per scene."""
    with path.open("w") as f:
        json.dump(values, f)
        f.write("\n\n")
        for i, scene in enumerate(values["scenes"].split("||")):
            text = (values["scene_prefix"] + scene + values["scene_suffix"]).strip()
            f.write(str(f"{i * values['steps_per_scene'] / values['save_every']:.2f}: {text}".encode("utf-8")))
            f.write("\n")
    return path


def test_study_file_reads_as_pytti_means_it(tmp_path: Path):
    s = load_config(write_pytti_file(tmp_path / "x_settings.txt", pytti_values()))
    assert s.perceptors == ["ViT-B/32"]  # use_mmc: the switches (RN50 true) are ignored
    assert (s.translate_x, s.zoom_x_2d, s.zoom_y_2d, s.rotate_2d) == (-1, 3, 3, 0)  # "0"/"-1"/"3" are numbers
    assert s.learning_rate is None and s.direct_init_weight == 0 and s.init_image is None  # null and "" = default
    assert (s.pre_animation_steps, s.cutout_border, s.smoothing_weight, s.infill_mode) == (50, 0.25, 0.02, "wrap")
    assert s.pytti_unused["palette_size"] == 6 and s.pytti_unused["rotate_3d"] == "[1, 0, 0, 0]"
    assert s.pytti_unused["RN50"] is True and "translate_x" not in s.pytti_unused


def test_switches_decide_without_mmc():
    assert perceptors(pytti_values(use_mmc=False)) == ["ViTB32", "RN50"]
    with pytest.raises(ValueError, match="no perceptor"):
        perceptors(pytti_values(use_mmc=False, ViTB32=False, RN50=False))


def test_pytti_file_runs_with_tiny_models_and_the_sidecar_records_it(tmp_path: Path):
    path = write_pytti_file(tmp_path / "study_settings.txt", pytti_values(steps_per_scene=4, interpolation_steps=2))
    code = main(["run", "--config", str(path), "vqgan_model=tiny", "perceptors=tiny-vit", "width=32", "height=32",
                 "cutouts=2", "steps_per_frame=2", "save_every=2", "pre_animation_steps=2", f"out_dir={tmp_path}",
                 "file_namespace=study", "--quiet"])
    assert code == 0
    folder = tmp_path / "study"
    assert sorted(p.name for p in folder.glob("study_*.png")) == [f"study_{n}.png" for n in range(1, 5)]
    sidecar = json.loads((folder / "study_settings.json").read_text())
    settings = sidecar["settings"]
    assert settings["translate_x"] == -1 and settings["zoom_x_2d"] == 3 and settings["animation_mode"] == "2D"
    assert settings["learning_rate"] is None and settings["perceptors"] == ["tiny-vit"]  # the override won
    assert settings["pytti_unused"]["use_mmc"] is True and settings["pytti_unused"]["palette_size"] == 6
    assert settings["pytti_unused"]["mmc_models"][0]["id"] == "ViT-B/32"


@pytest.mark.parametrize("changes, message", [
    ({"image_model": "Limited Palette"}, "image_model='Limited Palette': allowed values are VQGAN"),
    ({"animation_mode": "3D"}, "animation_mode='3D': allowed values are off, 2D"),
    ({"animation_mode": "Video Source"}, "animation_mode='Video Source'"),
    ({"semantic_stabilization_weight": "0.5"}, "semantic_stabilization_weight='0.5': not implemented"),
    ({"direct_image_prompts": "a.png"}, "direct_image_prompts='a.png'"),
    ({"translate_x": "10*sin(t)"}, r"translate_x='10\*sin\(t\)': time-varying expressions"),
    ({"mmc_models": [{"architecture": "clip", "publisher": "mlfoundations", "id": "ViT-B-32"}]}, "only OpenAI"),
])
def test_unsupported_pytti_settings_are_refused(tmp_path: Path, changes: dict, message: str):
    with pytest.raises(SettingsError, match=message):
        load_config(write_pytti_file(tmp_path / "x_settings.txt", pytti_values(**changes)))


def test_negative_pytti_seed_seeds_as_torch_would():
    assert from_pytti(pytti_values(seed=-5))["seed"] == 2**64 - 5


def test_not_a_settings_file(tmp_path: Path):
    bad = tmp_path / "bad_settings.txt"
    bad.write_text('{"scenes": "a"}\n\nnot a scene line\n')
    with pytest.raises(SettingsError, match="unexpected line 'not a scene line'"):
        load_config(bad)
