"""Nothing lost, nothing stuck (issue 10 items 1, 2, 6): one writer per run folder and per grid
cell, verified frames, resume states that survive damage, one-line errors for OSErrors, no litter."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from engine.__main__ import main as engine_main
from engine.loop import execute
from engine.runfolder import RunFolderConflict
from engine.runfolder.frames import read_table
from engine.settings import load_config

REPO = Path(__file__).resolve().parent.parent
# 8 steps, a frame every 2: 4 frames. The tiny models have random weights.
TINY = ["vqgan_model=tiny", "perceptors=tiny-vit", "width=32", "height=32", "cutouts=2",
        "steps_per_scene=8", "save_every=2", "steps_per_frame=2", "scenes=a red apple", "file_namespace=run"]
FRAMES = 4


def settings(out_dir: Path, *extra: str):
    return load_config(None, [*TINY, "seed=7", f"out_dir={out_dir}", *extra])


def frame_bytes(folder: Path) -> list[bytes]:
    return [(folder / f"run_{n}.png").read_bytes() for n in range(1, FRAMES + 1)]


def cli(*args: str, cwd: Path = REPO) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO)})


def wait_for(proc: subprocess.Popen, ready, what: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"ended before {what}: {proc.stderr.read()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def assert_complete_and_clean(folder: Path, reference: list[bytes]) -> None:
    """Complete, every frame identical to the reference, no resume state and no temp files left."""
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["complete"] and metrics["frames"] == FRAMES and len(recorded_hashes(folder)) == FRAMES
    assert frame_bytes(folder) == reference
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["frames.csv", "losses.csv", "metrics.json", "run.mp4", "run_settings.json",
         *(f"run_{n}.png" for n in range(1, FRAMES + 1))])


def recorded_hashes(folder: Path) -> list[str]:
    """The frames' SHA-256s as the run's frame table records them."""
    return [f.sha256 for f in read_table(folder / "frames.csv", folder.name)]


# ---------------------------------------------------------------- one writer

def refused_while_stopped(first: subprocess.Popen, *args: str, cwd: Path = REPO) -> str:
    """Run a second process while `first` is stopped (holding its lock); return its stderr."""
    first.send_signal(signal.SIGSTOP)
    try:
        second = cli(*args, cwd=cwd)
        _, err = second.communicate(timeout=240)
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode != 0 and f"pid {first.pid}" in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_two_engine_runs_on_one_folder_with_a_random_seed(tmp_path: Path) -> None:
    args = ["-m", "engine", "run", "-q", *TINY, "seed=-1", f"out_dir={tmp_path}"]
    first = cli(*args)
    folder = tmp_path / "run"
    wait_for(first, (folder / "run_settings.json").exists, "the first run wrote its sidecar")
    sidecar = (folder / "run_settings.json").read_bytes()
    err = refused_while_stopped(first, *args)
    assert f"run folder {folder} is in use" in err
    assert first.wait(timeout=300) == 0, first.stderr.read()
    # Only the first wrote: its sidecar (and seed) as it wrote it, its frames as it recorded them.
    assert (folder / "run_settings.json").read_bytes() == sidecar
    assert recorded_hashes(folder) == [hashlib.sha256(f).hexdigest() for f in frame_bytes(folder)]


def test_second_run_cell_of_one_cell_is_refused_while_the_first_lives(tmp_path: Path) -> None:
    from experiments import demo
    from experiments.grid import load_grid, read_params

    params = demo.demo_params(read_params(REPO / "params.yaml"))
    params["grid"] = {**params["grid"], "vqgan_models": {"tiny": "tiny"}, "perceptors": {"tiny-vit": "tiny-vit"}}
    params["settings"] = {**params["settings"], "width": 32, "height": 32, "cutouts": 2, "steps_per_scene": 4,
                          "scenes": "a red apple", "save_every": 2, "steps_per_frame": 2, "interpolation_steps": 2, "pre_animation_steps": 2}
    demo.write_params(tmp_path / "params.yaml", params)
    cell = load_grid(tmp_path / "params.yaml").cells[0]
    partial = tmp_path / "experiments" / ".partial" / cell.name
    first = cli("-m", "experiments.run_cell", "tiny", "tiny-vit", cwd=tmp_path)
    wait_for(first, lambda: any(partial.glob("*.png")), "the first cell saved a frame")
    err = refused_while_stopped(first, "-m", "experiments.run_cell", "tiny", "tiny-vit", cwd=tmp_path)
    assert f"grid cell {cell.name} is in use" in err
    assert first.wait(timeout=300) == 0, first.stderr.read()
    final = tmp_path / params["out_dir"] / cell.name
    metrics = json.loads((final / "metrics.json").read_text())
    assert metrics["frames"] == len(recorded_hashes(final)) == len(list(final.glob("*.png"))) > 0
    assert not partial.exists()
    assert not list(final.glob(".*")), "lock or temp files ended up in the cell's DVC output"


# ---------------------------------------------------------------- verified frames

@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A complete reference run, and the same run killed after its second saved resume state."""
    root = tmp_path_factory.mktemp("runs")
    reference = execute(settings(root / "reference"), quiet=True)
    proc = cli("-m", "engine", "run", "-q", *TINY, "seed=7", f"out_dir={root / 'killed'}")
    killed = root / "killed" / "run"
    wait_for(proc, lambda: (killed / "resume.prev.pt").exists() and (killed / "resume.pt").exists(),
             "two resume states were saved")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not (killed / "metrics.json").exists(), "the run finished before it was killed"
    yield {"reference": reference, "killed": killed, "frames": frame_bytes(reference)}


def _copy(folder: Path, tmp_path: Path) -> Path:
    shutil.copytree(folder, tmp_path / "run")
    return tmp_path / "run"


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damage", ["truncate frame 1, delete frame 2", "truncate resume.pt",
                                    "truncate resume.pt and resume.prev.pt"])
def test_interrupted_run_with_damage_resumes_to_identical_frames(
        folders: dict, tmp_path: Path, damage: str, capsys: pytest.CaptureFixture) -> None:
    folder = _copy(folders["killed"], tmp_path)
    if "frame" in damage:
        _truncate(folder / "run_1.png")
        (folder / "run_2.png").unlink()
    else:
        _truncate(folder / "resume.pt")
        if "prev" in damage:
            _truncate(folder / "resume.prev.pt")
    # the litter of a killed writer: fsutil.atomic_path's names, each begun as its file begins (or empty)
    for name, head in ((".run_2.png.vqclip-k2j3h.tmp", b"\x89PNG\r\n"), (".resume.pt.vqclip-x8d7.tmp", b"PK\x03\x04"),
                       (".run.mp4.vqclip-abc123.mp4", b"\0\0\0\x18ftypisom"), (".run.mp4.vqclip-abc123.tmp", b"")):
        (folder / name).write_bytes(head + b"partial" * bool(head))
    execute(settings(tmp_path), quiet=True)
    err = capsys.readouterr().err
    assert_complete_and_clean(folder, folders["frames"])
    metrics = json.loads((folder / "metrics.json").read_text())
    if "frame" in damage:  # both saved states claim frames 1 and 2
        assert "frame 1" in err and "damaged" in err and "frame 2" in err and "missing" in err
        assert "restarting from step 0" in err and not metrics["resumed_from_step"]
    elif "prev" in damage:
        assert "resume.prev.pt is damaged" in err and "restarting from step 0" in err
    else:
        assert "resume.pt is damaged" in err and "resuming from step" in err and metrics["resumed_from_step"]


def test_finished_run_with_a_damaged_frame_is_re_rendered(folders: dict, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    folder = _copy(folders["reference"], tmp_path)
    _truncate(folder / "run_2.png")
    (folder / "run_3.png").unlink()
    execute(settings(tmp_path), quiet=False)
    out, err = capsys.readouterr()
    assert "nothing to do" not in out
    assert "frame 2" in err and "damaged" in err and "frame 3" in err and "re-rendering" in err
    assert_complete_and_clean(folder, folders["frames"])
    execute(settings(tmp_path), quiet=False)
    assert "nothing to do" in capsys.readouterr().out


# ---------------------------------------------------------------- OSErrors: one line, no traceback

def _cli_error(capsys: pytest.CaptureFixture, *overrides: str) -> str:
    code = engine_main(["run", "-q", *TINY, "seed=7", *overrides])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    return err


@pytest.fixture
def mount(tmp_path: Path) -> Iterator:
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small or read-only tmpfs needs root")
    mounted = []

    def do(options: str) -> Path:
        point = tmp_path / f"mnt{len(mounted)}"
        point.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
                                capture_output=True, text=True)
        if result.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
        mounted.append(point)
        return point
    yield do
    for point in mounted:
        subprocess.run(["umount", str(point)], check=False)


def test_read_only_out_dir_is_one_line(mount, capsys: pytest.CaptureFixture) -> None:
    point = mount("size=64k,ro")
    err = _cli_error(capsys, f"out_dir={point}")
    assert str(point) in err and "Read-only file system (EROFS)" in err


def test_full_out_dir_is_one_line_and_leaves_no_temp_files(mount, capsys: pytest.CaptureFixture) -> None:
    point = mount("size=8k")  # room for the lock file and the sidecar, not for a frame
    err = _cli_error(capsys, f"out_dir={point}")
    assert str(point) in err and "No space left on device (ENOSPC)" in err
    assert not [p for p in point.rglob("*") if p.name.startswith(".")], "temp files left behind"


def test_a_video_cut_short_by_a_full_disk_is_an_error(mount, tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from engine.video import write_video

    frames = [tmp_path / f"{n}.png" for n in range(8)]
    noise = np.random.default_rng(0).integers(0, 256, (8, 128, 128, 3), dtype=np.uint8)
    for path, pixels in zip(frames, noise):
        Image.fromarray(pixels).save(path)
    point = mount("size=4k")
    with pytest.raises(OSError, match="ffmpeg wrote 0 of 8 frames") as info:
        write_video(frames, point / "run.mp4", 10)
    assert info.value.filename == str(point / "run.mp4") and not list(point.iterdir())


def test_too_long_name_and_unavailable_device_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    err = _cli_error(capsys, f"out_dir={tmp_path / ('x' * 300)}")
    assert "x" * 300 in err and "File name too long (ENAMETOOLONG)" in err
    err = _cli_error(capsys, f"out_dir={tmp_path}", "device=mps")
    assert "device='mps'" in err and "not available" in err


# ---------------------------------------------------------------- resume across devices (issue 19 items 1, 4)

def _resumable(tmp_path: Path) -> tuple:
    """A guide on the tiny models, and a folder whose resume state was written after 2 steps."""
    import torch

    from engine.factory import load_perceptor, load_vqgan
    from engine.resume import host_copy, save_state_job
    from engine.loop import Progress, restore_or_start, resume_state
    from engine.runfolder import RunFolder
    from engine.step import build_guide, new_optimiser, start_latent, take_step

    s = settings(tmp_path)
    guide = build_guide(s, load_vqgan("tiny"), [load_perceptor("tiny-vit")])
    folder = RunFolder(tmp_path, "run")
    folder.path.mkdir()
    rng = torch.Generator().manual_seed(7)
    latent = start_latent(guide, rng)
    optimiser = new_optimiser(guide, latent)
    for step in range(2):
        take_step(guide, latent, optimiser, step, rng)
    state = resume_state(torch.device("cpu"), latent, optimiser, rng, Progress(), 2)
    assert host_copy(optimiser.state_dict())["state"][0]["step"].item() == 2

    def restore(changes: dict, drop: tuple[str, ...] = ()):
        save_state_job(folder, {k: v for k, v in {**state, **changes}.items() if k not in drop}, [])()
        fresh = start_latent(guide, torch.Generator().manual_seed(7))
        fresh_optimiser = new_optimiser(guide, fresh)
        progress = restore_or_start(folder, torch.device("cpu"), fresh, fresh_optimiser, torch.Generator())
        return progress, fresh, fresh_optimiser
    return latent, restore


def test_resume_state_loads_on_the_host_and_adam_steps_stay_there(tmp_path: Path) -> None:
    import torch

    latent, restore = _resumable(tmp_path)
    progress, fresh, optimiser = restore({})
    assert progress.start == 2 and torch.equal(fresh.z, latent.z)
    steps = [s["step"] for s in optimiser.state.values()]
    assert steps and all(t.device.type == "cpu" and t.item() == 2 for t in steps)


def test_resume_state_of_another_device_type_is_refused_saying_what_to_do(tmp_path: Path, capsys) -> None:
    from engine.resume import ResumeDeviceMismatch

    _, restore = _resumable(tmp_path)
    with pytest.raises(ResumeDeviceMismatch) as info:
        restore({"device_type": "cuda"})
    message = str(info.value)
    assert "resume.pt was written by this run on cuda" in message and "now runs on cpu" in message
    assert "Resume with device=cuda" in message and "delete resume.pt and resume.prev.pt" in message
    err = _cli_error(capsys, f"out_dir={tmp_path}")  # the CLI: one line, exit 2 (the grid does not retry it)
    assert err.startswith("error: ") and "device=cuda" in err



def test_resume_state_of_an_older_version_restarts_from_step_0(tmp_path: Path, capsys) -> None:
    _, restore = _resumable(tmp_path)
    progress, _, _ = restore({}, drop=("rng_state", "device_type", "stabilisation_target"))
    err = capsys.readouterr().err
    assert progress.start == 0 and "restarting from step 0" in err
    assert "lacks rng_state, device_type, stabilisation_target (written by another version)" in err


def test_temporary_looking_files_of_the_user_are_never_deleted(folders: dict, tmp_path: Path) -> None:
    """Only this run's own temporary files go, and only once the folder is known to hold the run:
    a folder the engine refuses keeps everything; a run's folder keeps what its writer did not make."""
    refused = tmp_path / "refused" / "run"
    refused.mkdir(parents=True)
    (refused / "run_1.png").write_bytes(b"\x89PNG not ours")
    (refused / ".draft.tmp").write_text("my draft")
    (refused / ".run_1.png.vqclip-abc.tmp").write_bytes(b"\x89PNG")
    with pytest.raises(RunFolderConflict, match="holds frames but no readable settings sidecar"):
        execute(settings(tmp_path / "refused"), quiet=True)
    assert sorted(p.name for p in refused.iterdir()) == [".draft.tmp", ".run_1.png.vqclip-abc.tmp", "run_1.png"]

    folder = _copy(folders["killed"], tmp_path)
    keep = {".notes.tmp": b"notes", ".run_2.png.vqclip-k2j3h.tmp": b"not a PNG", ".other_1.png.vqclip-a.tmp": b"\x89PNG"}
    for name, data in keep.items():
        (folder / name).write_bytes(data)
    execute(settings(tmp_path), quiet=True)
    assert {p.name for p in folder.iterdir() if p.name.startswith(".")} == set(keep)
