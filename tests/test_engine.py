"""Engine: settings validation, the loop, reproducibility, resume, outputs."""
from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import imageio.v3 as iio
import pytest
import torch

from engine.animation import apply_motion, motion_grid
from engine.factory import load_perceptor, load_vqgan
from engine import runfolder
from engine.registry import UnknownModelError
from engine.loop import execute
from engine.runfolder import RunFolderConflict
from engine.step import (build_guide, clamp_latent, encode_codes, initial_latent, is_move, quantise_8bit,
                         render, move, start_latent, step_loss)
from engine.settings import SettingsError, load_config

TINY = ["vqgan_model=tiny", "perceptors=tiny-vit", "width=64", "height=32", "cutouts=4",
        "steps_per_scene=10", "save_every=5", "steps_per_frame=5", "seed=7", "scenes=a red apple"]


def tiny_settings(out_dir: Path, *extra: str):
    return load_config(None, [*TINY, f"out_dir={out_dir}", "file_namespace=run", *extra])


def frame_bytes(folder: Path) -> list[bytes]:
    frames = sorted(folder.glob("run_*.png"), key=lambda p: int(p.stem.split("_")[-1]))
    return [p.read_bytes() for p in frames]


@pytest.mark.parametrize("vqgan,perceptor", [("tiny", "tiny-vit"), ("tiny", "tiny-rn"),
                                             ("tiny-gumbel", "tiny-vit"), ("tiny-gumbel", "tiny-rn")])
def test_thirty_steps_lower_the_loss(vqgan: str, perceptor: str) -> None:
    settings = load_config(None, [f"vqgan_model={vqgan}", f"perceptors={perceptor}", "width=64", "height=32",
                                  "cutouts=16", "augmentations=false", "scenes=a red apple"])
    guide = build_guide(settings, load_vqgan(vqgan), [load_perceptor(perceptor)])
    rng = torch.Generator().manual_seed(0)
    z = initial_latent(guide, rng).requires_grad_(True)

    def evaluate() -> float:  # the same cutouts before and after
        with torch.no_grad():
            return step_loss(guide, z, 0, torch.Generator().manual_seed(123), None)[0].item()

    before = evaluate()
    optimiser = torch.optim.Adam([z], lr=0.1)
    for step in range(30):
        total, _ = step_loss(guide, z, step, rng, None)
        optimiser.zero_grad()
        total.backward()
        optimiser.step()
        clamp_latent(guide, z)
    assert evaluate() < before


def test_run_writes_complete_outputs(tmp_path: Path) -> None:
    folder = execute(tiny_settings(tmp_path, "scenes=a red apple | a dog:-1:-.9 || a bird", "interpolation_steps=4"),
                 quiet=True)
    frames = frame_bytes(folder)
    assert len(frames) == 4  # 2 scenes × 10 steps, saved every 5
    sidecar = json.loads((folder / "run_settings.json").read_text())
    assert sidecar["format"] == runfolder.FORMAT == "vqgan-clip-run/3"
    assert sidecar["seed"] == 7 and sidecar["settings"]["vqgan_model"] == "tiny"
    assert sidecar["models"]["vqgan"]["untrained"] and len(sidecar["models"]["vqgan"]["sha256"]) == 64
    assert [p["label"] for p in sidecar["prompts"]] == ["s0p0", "s0p1", "s1p0"]
    assert sidecar["prompts"][1]["weight"] == -1 and sidecar["prompts"][1]["stop"] == -0.9
    assert {"torch", "open_clip", "engine"} <= set(sidecar["versions"]) and sidecar["device"] == "cpu"
    assert sidecar["fp32_math"] == "ieee"  # precision=fp32 is true fp32 (TF32 off), as recorded
    rows = (folder / "losses.csv").read_text().splitlines()
    assert rows[0] == "step,scene,total,s0p0,s0p1,s1p0" and len(rows) == 21
    assert [int(r.split(",")[0]) for r in rows[1:]] == list(range(1, 21))  # steps done
    first, blended, last = rows[1].split(","), rows[13].split(","), rows[-1].split(",")
    assert float(first[5]) == 0 and float(last[3]) == 0  # scene 1 inactive at first, scene 0 at the end
    assert blended[1] == "1" and float(blended[3]) != 0 and float(blended[5]) != 0  # step 12: both
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["complete"] and metrics["frames"] == 4 and metrics["steps"] == 20
    assert metrics["final_loss"] == pytest.approx(float(last[2]), rel=1e-4)
    assert not (folder / "resume.pt").exists()
    assert sum(1 for _ in iio.imiter(folder / "run.mp4")) == len(frames)


def test_the_frame_table_records_each_frames_step_scene_weights_loss_and_hash(tmp_path: Path) -> None:
    """25 steps saved every 10, five scenes of 5 steps blending over 5: frames at steps 10, 20 and 25,
    each inside a transition; the table holds what the loop used (losses.csv's rows, pytti's blend)."""
    folder = execute(tiny_settings(tmp_path, "scenes=a red apple || a bird || a cat || a dog || a tree",
                                   "steps_per_scene=5", "interpolation_steps=5", "save_every=10"), quiet=True)
    record = runfolder.read_run(folder)
    losses = {int(r.split(",")[0]): float(r.split(",")[2]) for r in (folder / "losses.csv").read_text().splitlines()[1:]}
    assert [f.step for f in record.frames] == [10, 20, 25]
    assert [f.scenes for f in record.frames] == [(0.2, 0.8, 0, 0, 0), (0, 0, 0.2, 0.8, 0), (0, 0, 0, 0.2, 0.8)]
    assert [f.loss for f in record.frames] == pytest.approx([losses[10], losses[20], losses[25]], rel=1e-5)
    assert [f.sha256 for f in record.frames] == [hashlib.sha256((folder / f.name).read_bytes()).hexdigest()
                                                 for f in record.frames]
    assert record.status == "complete" and "frame_sha256" not in record.metrics


def test_same_seed_gives_identical_frames(tmp_path: Path) -> None:
    a = frame_bytes(execute(tiny_settings(tmp_path / "a"), quiet=True))
    b = frame_bytes(execute(tiny_settings(tmp_path / "b"), quiet=True))
    c = frame_bytes(execute(tiny_settings(tmp_path / "c", "seed=8"), quiet=True))
    assert a == b and len(a) == 2
    assert a != c


def test_random_seed_is_recorded(tmp_path: Path) -> None:
    folder = execute(tiny_settings(tmp_path, "seed=-1", "steps_per_scene=5"), quiet=True)
    sidecar = json.loads((folder / "run_settings.json").read_text())
    assert sidecar["seed"] >= 0 and sidecar["settings"]["seed"] == sidecar["seed"]


def _cli_run(out_dir: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "engine", "run", "-q", *TINY, f"out_dir={out_dir}",
                             "file_namespace=run", "steps_per_scene=60", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT])
def test_resume_after_interrupt_matches_uninterrupted(tmp_path: Path, how: signal.Signals) -> None:
    reference = _cli_run(tmp_path / "ref")
    assert reference.wait(timeout=300) == 0, reference.stderr.read()
    proc = _cli_run(tmp_path / "cut")
    folder = tmp_path / "cut" / "run"
    deadline = time.monotonic() + 240
    while not (folder / "resume.pt").exists() or len(list(folder.glob("run_*.png"))) < 3:
        assert proc.poll() is None and time.monotonic() < deadline, "run ended before it could be interrupted"
        time.sleep(0.02)
    proc.send_signal(how)
    proc.wait(timeout=60)
    assert not (folder / "metrics.json").exists(), "run finished before the interrupt"
    saved = len(list(folder.glob("run_*.png")))
    resumed = _cli_run(tmp_path / "cut")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["resumed_from_step"] and metrics["resumed_from_step"] >= 5 * (saved - 1)
    assert frame_bytes(folder) == frame_bytes(tmp_path / "ref" / "run")
    assert (folder / "losses.csv").read_text() == (tmp_path / "ref" / "run" / "losses.csv").read_text()


def test_two_d_animation_moves_the_averaged_image_and_re_encodes_it() -> None:
    settings = load_config(None, [*TINY, "animation_mode=2D", "translate_x=3", "translate_y=-2",
                                  "sampling_mode=bilinear", "direct_stabilization_weight=0.3"])
    guide = build_guide(settings, load_vqgan("tiny"), [load_perceptor("tiny-vit")])
    latent = start_latent(guide, torch.Generator().manual_seed(0))
    with torch.no_grad():
        latent.z.add_(0.5)  # the average (still the start z) and z now differ
        before = quantise_8bit(render(guide, latent.ema.average))
    z_before = latent.z.clone()
    move(guide, latent)
    moved = quantise_8bit(apply_motion(before, motion_grid(32, 64, translate_x=3, translate_y=-2),
                                       sampling_mode="bilinear"))
    assert torch.equal(latent.z, encode_codes(guide.vqgan, moved))  # quantised codes of the moved average
    assert not torch.equal(latent.z, z_before)
    torch.testing.assert_close(latent.ema.average, latent.z.detach())  # the average restarts at the new z
    image, codes = latent.target  # stabilisation aims at the re-encoded image and its codes
    assert torch.equal(image, quantise_8bit(render(guide, latent.z))) and torch.equal(codes, encode_codes(guide.vqgan, image))


def test_still_mode_never_moves() -> None:
    settings = load_config(None, [*TINY, "pre_animation_steps=0"])
    assert build_guide(settings, load_vqgan("tiny"), [load_perceptor("tiny-vit")]).motion is None
    assert [is_move(settings, step) for step in (0, 4, 5, 10)] == [True, False, True, True]


@pytest.mark.parametrize("override,error,message", [
    ("widht=64", SettingsError, "unknown setting 'widht'; did you mean width"),
    ("width=60", SettingsError, "width=60: must be a multiple of 8 .* use 64"),
    ("height=0", SettingsError, "height=0: must be a positive integer"),
    ("steps_per_scene=-3", SettingsError, "steps_per_scene=-3: must be a positive integer"),
    ("scenes=a cat:2:1:0", ValueError, "a cat:2:1:0"),
    ("scenes=a cat || || a dog", ValueError, "scene"),
    ("animation_mode=3D", SettingsError, "animation_mode='3D': allowed values are off, 2D"),
    ("perceptors=tiny-vitt", UnknownModelError, "Closest: tiny-vit"),
    ("vqgan_model=imagenet_16385", UnknownModelError, "Closest: imagenet_16384"),
    ("init_image=/no/such/image.png", SettingsError, "/no/such/image.png"),
])
def test_bad_input_gives_a_clear_error_and_no_complete_looking_output(
        tmp_path: Path, override: str, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        execute(load_config(None, [*TINY, f"out_dir={tmp_path}", "file_namespace=run", override]), quiet=True)
    assert not (tmp_path / "run" / "metrics.json").exists()
    assert not list((tmp_path / "run").glob("*.png")) if (tmp_path / "run").exists() else True


def test_cli_reports_bad_input_with_exit_code_2(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "engine", "run", *TINY, f"out_dir={tmp_path}", "width=60"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "use 64" in result.stderr and "Traceback" not in result.stderr


def test_folder_with_other_settings_is_never_overwritten_silently(tmp_path: Path) -> None:
    folder = execute(tiny_settings(tmp_path), quiet=True)
    frames = frame_bytes(folder)
    with pytest.raises(RunFolderConflict, match="cutouts: 4 there, 6 now"):
        execute(tiny_settings(tmp_path, "cutouts=6"), quiet=True)
    assert frame_bytes(folder) == frames
    # same settings again: recognised as done, nothing rewritten
    mtime = (folder / "metrics.json").stat().st_mtime_ns
    execute(tiny_settings(tmp_path), quiet=True)
    assert (folder / "metrics.json").stat().st_mtime_ns == mtime
    # another seed too: 10 steps barely move pytti's averaged z, so the frames may not change otherwise
    execute(tiny_settings(tmp_path, "cutouts=6", "seed=8", "allow_overwrite=true"), quiet=True)
    assert json.loads((folder / "run_settings.json").read_text())["settings"]["cutouts"] == 6
    assert frame_bytes(folder) != frames


def test_config_file_and_overrides(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("vqgan_model: tiny\nperceptors: [tiny-vit, tiny-rn]\nwidth: 64\nheight: 32\ncutouts: 3\n")
    settings = load_config(config, ["cutouts=5", "perceptors=tiny-rn+tiny-vit"])
    assert settings.cutouts == 5 and settings.perceptors == ["tiny-rn", "tiny-vit"] and settings.width == 64


def test_image_prompts_and_init_image(tmp_path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (40, 20), (200, 30, 30)).save(tmp_path / "red.png")
    folder = execute(tiny_settings(tmp_path / "out", f"target_images={tmp_path / 'red.png'}:0.5",
                               f"init_image={tmp_path / 'red.png'}", "direct_init_weight=1",
                               "perceptors=tiny-vit+tiny-rn", "steps_per_scene=5"), quiet=True)
    sidecar = json.loads((folder / "run_settings.json").read_text())
    assert sidecar["prompts"][-1] == {"scene": -1, "text": str(tmp_path / "red.png"), "weight": 0.5,
                                      "stop": None, "label": "s-1p0"}
    assert len(sidecar["models"]["perceptors"]) == 2
    assert "s-1p0" in (folder / "losses.csv").read_text().splitlines()[0]


def test_frames_and_losses_agree_when_steps_are_not_a_multiple_of_save_every(tmp_path: Path) -> None:
    folder = execute(tiny_settings(tmp_path, "steps_per_scene=7", "save_every=3", "steps_per_frame=3"), quiet=True)
    record = runfolder.read_run(folder)
    assert record.status == "complete", record.problems
    assert [(f.n, f.step) for f in record.frames] == [(1, 3), (2, 6), (3, 7)]  # saved after steps 3, 6 and 7
    assert record.losses["step"] == [1, 2, 3, 4, 5, 6, 7]
    totals = dict(zip(record.losses["step"], record.losses["total"]))
    assert [f.loss for f in record.frames] == [totals[3], totals[6], totals[7]]
    assert json.loads((folder / "metrics.json").read_text())["final_loss"] == pytest.approx(totals[7], rel=1e-5)


def test_final_out_dir_is_recorded_and_does_not_change_the_run(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    folder = execute(tiny_settings(tmp_path / "partial", "steps_per_scene=5"), quiet=True,
                 final_out_dir=str(tmp_path / "final"))
    assert folder == tmp_path / "partial" / "run"
    assert json.loads((folder / "run_settings.json").read_text())["settings"]["out_dir"] == str(tmp_path / "final")
    execute(tiny_settings(tmp_path / "partial", "steps_per_scene=5"), quiet=False)
    assert "nothing to do" in capsys.readouterr().out  # out_dir is not a result setting


def test_animation_mode_off_from_the_command_line_and_a_yaml_file(tmp_path: Path) -> None:
    # YAML 1.1 reads off/no as false; pytti means the text "off" (and "no" for a true/false setting)
    config = tmp_path / "still.yaml"
    config.write_text("animation_mode: off\nreset_lr_each_frame: no\n")
    assert (load_config(config).animation_mode, load_config(config).reset_lr_each_frame) == ("off", False)
    result = subprocess.run([sys.executable, "-m", "engine", "run", "-q", "--config", str(config), *TINY,
                             "steps_per_scene=2", "save_every=2", "animation_mode=off", f"out_dir={tmp_path}",
                             "file_namespace=run"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    settings = json.loads((tmp_path / "run" / "run_settings.json").read_text())["settings"]
    assert (settings["animation_mode"], settings["reset_lr_each_frame"]) == ("off", False)


@pytest.mark.parametrize("args,names", [
    (["run", "--config", "{tmp}/missing.yaml"], "{tmp}/missing.yaml"),
    (["run", "vqgan_model=tiny", "perceptors=tiny-vit", "width=60", "out_dir={tmp}"], "use 64"),
    (["fetch", "no-such-model"], "python -m engine models"),
    (["models", "--bogus"], "unrecognized arguments: --bogus"),
    (["run", "vqgan_model=tiny", "perceptors=tiny-vit", "out_dir=/proc/no-folder"], "/proc/no-folder: "),
    (["bench", "--cells", "-1", "vqgan_model=tiny", "perceptors=tiny-vit"], "--cells -1: must be >= 0"),
])
def test_cli_errors_are_one_line_naming_what_to_fix(tmp_path: Path, args: list[str], names: str) -> None:
    result = subprocess.run([sys.executable, "-m", "engine", *(a.format(tmp=tmp_path) for a in args)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert names.format(tmp=tmp_path) in result.stderr


def test_the_init_image_prompt_is_weighted_until_the_first_move_only_in_an_animation() -> None:
    from dataclasses import replace
    from types import SimpleNamespace

    from engine.settings import Settings
    from engine.step import weight_schedule

    settings = Settings(scenes="a", steps_per_scene=8, pre_animation_steps=3)
    prompts = [SimpleNamespace(scene=0, weight=1.0), SimpleNamespace(scene=-1, weight=2.0)]  # text, init image
    still = weight_schedule(replace(settings, animation_mode="off"), prompts, 1, init_prompt=1)
    moving = weight_schedule(replace(settings, animation_mode="2D"), prompts, 1, init_prompt=1)
    assert still[:, 1].tolist() == [2.0] * 8 and still[:, 0].tolist() == [1.0] * 8
    assert moving[:, 1].tolist() == [2.0] * 3 + [0.0] * 5 and moving[:, 0].tolist() == [1.0] * 8
