"""Hostile and huge inputs to the engine and the run-folder readers: nothing hangs, nothing blows up,
nothing of the user's is touched. Each case makes its own small fixture (FIFOs with os.mkfifo,
sparse files, symbolic links), runs bounded by a timeout, and for the memory cases reads the
child's peak resident set (os.wait4)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from checkpoint_fixtures import write_vqgan_replica
from engine.runfolder import read_run
from engine.runfolder.meta import read_json_object

REPO = Path(__file__).resolve().parent.parent
MB = 1 << 20
TINY_RUN = ["vqgan_model=tiny", "perceptors=tiny-vit", "width=32", "height=32", "cutouts=2", "steps_per_scene=8",
            "save_every=2", "steps_per_frame=2", "scenes=a red apple", "file_namespace=run", "seed=7"]


#: Runs `python -m MODULE ARGS` and writes its own peak resident set (KB) to a file at exit.
PEAK = ("import atexit, resource, runpy, sys; out = sys.argv.pop(1); atexit.register(lambda: open(out, 'w')"
        ".write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))); sys.argv = sys.argv[2:]; "
        "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)")


def bounded(args: list[str], timeout: float = 60, cwd: Path | None = None,
            env: dict | None = None) -> tuple[int, str, float, float]:
    """Run `python -m ...` (args[0] == "-m") with a timeout: (exit code, stderr, seconds, its peak
    resident MB). It runs as a grandchild through sh, so that its peak is its own and not this big
    process's, which a forked child starts out as."""
    assert args[0] == "-m"
    with tempfile.NamedTemporaryFile("r") as peak:
        t0 = time.monotonic()
        proc = subprocess.Popen(["sh", "-c", '"$@"; exit $?', "sh", sys.executable, "-c", PEAK, peak.name, *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
                                env={**os.environ, **(env or {})}, start_new_session=True)
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # sh and the command under it: nothing left running
            proc.communicate()
            raise AssertionError(f"{args} ran past {timeout} s") from None
        return proc.returncode, err, time.monotonic() - t0, int(peak.read() or 0) / 1024


def one_error(code: int, err: str) -> str:
    assert code in (1, 2) and "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def sparse(path: Path, size: int, head: bytes = b"") -> Path:
    """A file of `size` bytes that takes no disk: `head`, then a hole."""
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)
    return path


def engine_run(out_dir: Path, *extra: str, timeout: float = 120) -> tuple[int, str, float, float]:
    return bounded(["-m", "engine", "run", "-q", *TINY_RUN, f"out_dir={out_dir}", *extra], timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished tiny run, copied by the tests that damage it."""
    out = tmp_path_factory.mktemp("finished")
    code, err, _, _ = engine_run(out)
    assert code == 0, err
    return out / "run"


def copy_of(folder: Path, tmp_path: Path) -> Path:
    import shutil

    shutil.copytree(folder, tmp_path / "run")
    return tmp_path / "run"


# ---------------------------------------------------------------- the user's data

def test_a_symbolic_link_at_the_lock_path_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    victim = tmp_path / "thesis.tex"
    victim.write_text("years of work")
    (tmp_path / ".run.lock").symlink_to(victim)
    code, err, seconds, _ = engine_run(tmp_path)
    assert "is a symbolic link, not a lock file" in one_error(code, err) and code == 1
    assert victim.read_text() == "years of work" and not (tmp_path / "run").exists()


# ---------------------------------------------------------------- what is not a regular file

def test_a_fifo_where_a_finished_run_has_its_sidecar_or_a_frame_never_hangs_the_engine(finished: Path,
                                                                                       tmp_path: Path) -> None:
    for name in ("run_settings.json", "run_2.png"):
        folder = copy_of(finished, tmp_path / name)
        (folder / name).unlink()
        os.mkfifo(folder / name)
        code, err, seconds, _ = engine_run(folder.parent, timeout=90)
        if name.endswith(".json"):  # no readable sidecar beside frames: the folder is not taken over
            assert "holds frames but no readable settings sidecar" in one_error(code, err) and code == 1
        else:  # a frame that is no file: the finished run is re-rendered, the frame written in its place
            assert code == 0 and "frame 2" in err and "FIFO" in err and "re-rendering" in err, err
            assert (folder / name).is_file() and read_run(folder).status == "complete"


def test_a_device_or_fifo_as_a_checkpoint_or_config_is_refused_at_once(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "settings.yaml")
    code, err, seconds, _ = bounded(["-m", "engine", "run", "--config", str(tmp_path / "settings.yaml")], cwd=REPO)
    assert "settings.yaml is a FIFO (named pipe), not a regular file" in one_error(code, err) and code == 2
    config, _, _ = write_vqgan_replica(tmp_path / "vqgan", "lightning-dictconfig")
    models = tmp_path / "models.yaml"
    models.write_text(yaml.safe_dump({"vqgans": {"zero": {"config": str(config), "checkpoint": "/dev/zero"}}}))
    code, err, seconds, _ = bounded(["-m", "engine", "run", "vqgan_model=zero", "perceptors=tiny-vit",
                                     f"out_dir={tmp_path}"], env={"VQCLIP_MODELS": str(models),
                                                                 "VQCLIP_CACHE": str(tmp_path / "cache")})
    assert "/dev/zero is a character device, not a regular file" in one_error(code, err) and seconds < 60


# ---------------------------------------------------------------- budgets

@pytest.mark.parametrize("name, head, what", [
    ("big.yaml", b"scenes: a\n", "settings file"),
    ("big_settings.txt", b'{"scenes": "a"}\n', "pytti settings file"),
])
def test_a_huge_settings_file_is_refused_before_it_is_read(tmp_path: Path, name: str, head: bytes, what: str) -> None:
    path = sparse(tmp_path / name, 300 * MB, head)
    code, err, seconds, peak = bounded(["-m", "engine", "run", "--config", str(path)], cwd=REPO)
    line = one_error(code, err)
    assert f"{300 * MB} bytes, more than the 1000000 bytes a {what} may have" in line and code == 2
    assert peak < 150 and seconds < 20, f"{peak:.0f} MB, {seconds:.1f} s"  # refused before torch loads or the file is read


def test_a_huge_sidecar_or_losses_table_marks_the_run_and_costs_no_memory(finished: Path, tmp_path: Path) -> None:
    folder = copy_of(finished, tmp_path)
    sparse(folder / "losses.csv", 55 * MB, b"step,scene,total\n")
    record = read_run(folder)
    assert "losses.csv" in record.reason and "more than the" in record.reason and record.frames
    sparse(folder / "run_settings.json", 500 * MB, b"{")
    record = read_run(folder)
    assert record.status == "incomplete" and f"{500 * MB} bytes, more than" in record.reason
    assert record.meta.source == "folder name"


@pytest.mark.parametrize("text", ["[" * 5000 + "]" * 5000, "a: " + "{b: " * 3000 + "1" + "}" * 3000],
                         ids=["flow-list", "flow-mapping"])
def test_deeply_nested_configs_are_one_error_line(tmp_path: Path, text: str) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text(text)
    code, err, _, _ = bounded(["-m", "engine", "run", "--config", str(path)], cwd=REPO)
    assert "nested too deeply" in one_error(code, err) and code == 2
    pytti = tmp_path / "deep_settings.txt"
    pytti.write_text('{"a": ' + "[" * 5000 + "]" * 5000 + "}\n")
    code, err, _, _ = bounded(["-m", "engine", "run", "--config", str(pytti)], cwd=REPO)
    assert "nested too deeply" in one_error(code, err)


@pytest.mark.parametrize("sidecar", ["[1, 2]", '{"settings": "scenes=a"}', '{"settings": {}, "models": 3}',
                                     '{"format": "vqgan-clip-run/3", "settings": {"scenes": "a"}}'])
def test_a_sidecar_of_the_wrong_shape_is_a_named_problem(finished: Path, tmp_path: Path, sidecar: str) -> None:
    """Not an object, settings of the wrong type, models of the wrong type, no seed or models: the
    reader names the file (or reads what there is); the engine refuses the folder in one line."""
    folder = copy_of(finished, tmp_path)
    (folder / "run_settings.json").write_text(sidecar)
    record = read_run(folder)
    assert "run_settings.json" in record.reason or (record.meta.source == "ours" and record.meta.vqgan == "?")
    code, err, _, _ = engine_run(tmp_path)
    assert str(folder) in one_error(code, err) and code == 1


def test_read_json_object_names_depth_size_and_kind(tmp_path: Path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text('{"a": ' + "[" * 5000 + "]" * 5000 + "}")
    with pytest.raises(ValueError, match="nested too deeply"):
        read_json_object(deep)
    os.mkfifo(tmp_path / "fifo.json")
    with pytest.raises(ValueError, match="FIFO"):
        read_json_object(tmp_path / "fifo.json")
    (tmp_path / "list.json").write_text(json.dumps([1]))
    with pytest.raises(ValueError, match="not a JSON object"):
        read_json_object(tmp_path / "list.json")


# ---------------------------------------------------------------- pixels

def test_a_bomb_frame_is_refused_from_its_header_and_the_analysis_carries_on(tmp_path: Path) -> None:
    from dashboard_fixtures import huge_png, make_our_run, make_pytti_run
    from engine.fsutil import BadFile
    from engine.runfolder import read_frame

    bomb = huge_png(tmp_path / "bomb.png", 30_000)
    assert bomb.stat().st_size < 4 * MB  # 2.7 G pixels in a few MB
    with pytest.raises(BadFile, match="a frame of 30000×30000 pixels; the run's frames are 32×16"):
        read_frame(bomb, (32, 16))
    with pytest.raises(BadFile, match="a frame of 30000×30000 pixels; a reader decodes at most 16777216"):
        read_frame(bomb)
    root = tmp_path / "root"
    for v in ("vq-a", "vq-b"):
        for p in ("p-a", "p-b"):
            make_our_run(root / "exp", f"exp__{v}_{p}", v, [p], n_frames=2)
    victim = root / "exp" / "exp__vq-a_p-b"
    huge_png(victim / "exp__vq-a_p-b_2.png", 30_000)  # after the run finished: its hash no longer matches either
    pytti = make_pytti_run(root / "exp", "pytti_run", "vq-b", ["RN50"], n_frames=2, size=(32, 16))
    huge_png(pytti / "pytti_run_2.png", 30_000)  # pytti records no hashes: only the frame's header tells
    code, err, seconds, peak = bounded(["-m", "experiments.effects", "--root", str(root)], cwd=REPO, timeout=120)
    assert code == 0, err
    for module in ("experiments.effects", "experiments.fingerprints"):
        done = subprocess.run([sys.executable, "-m", module, "--root", str(root)], cwd=REPO, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0 and "left out: exp/exp__vq-a_p-b (damaged" in done.stdout, done.stdout
        assert "left out: exp/pytti_run (a frame cannot be read" in done.stdout and "30000×30000" in done.stdout
    assert peak < 400 and seconds < 60, f"{peak:.0f} MB, {seconds:.0f} s"  # not 30000² pixels decoded


def test_a_folder_of_too_many_entries_is_named_not_listed(tmp_path: Path) -> None:
    from engine.runfolder import walk

    crowded = tmp_path / "root" / "crowded"
    crowded.mkdir(parents=True)
    for i in range(50):
        (crowded / f"x_{i}.png").touch()
    old, walk.MAX_ENTRIES = walk.MAX_ENTRIES, 20
    try:
        listings = list(walk.run_folders(tmp_path / "root"))
    finally:
        walk.MAX_ENTRIES = old
    assert [(x.folder.name, x.problem) for x in listings] == [("crowded", "cannot list the folder: more than 20 entries: "
                                                                           "not read")]


# ---------------------------------------------------------------- sizes the machine cannot hold

@pytest.mark.parametrize("override, message", [
    ("steps_per_scene=1e12", "= 1000000000000 steps: at most 1000000"),
    ("learning_rate=1e308", "setting learning_rate=1e+308: at most 1000.0"),
    ("cutouts=100000", "setting cutouts=100000: at most 4096"),
    ("width=100000", "settings width=100000 × height=32000 = 3200000000 pixels: at most 16777216"),
])
def test_absurd_sizes_are_refused_before_anything_is_allocated(tmp_path: Path, override: str, message: str) -> None:
    if override.startswith("width"):
        override += " height=32000"
    code, err, seconds, peak = engine_run(tmp_path, *override.split(), timeout=60)
    assert message in one_error(code, err) and code == 2
    assert seconds < 20 and peak < 150, f"{seconds:.1f} s, {peak:.0f} MB"  # before torch, let alone a schedule


def test_a_step_the_machine_cannot_hold_is_refused_with_the_estimate_and_the_limit() -> None:
    import torch

    from engine.budget import check_memory, free_bytes, step_bytes
    from engine.factory import load_perceptor, load_vqgan
    from engine.settings import SettingsError, load_config

    cpu = torch.device("cpu")
    vqgan = load_vqgan("imagenet_16384", cpu, random_weights=True, progress=False)
    perceptors = [load_perceptor("ViT-B-32:openai", cpu, random_weights=True, progress=False)]
    study = load_config(None, ["width=256", "height=128", "cutouts=60"])
    check_memory(study, vqgan, perceptors, cpu)  # the study's shape fits
    assert 1 < step_bytes(study, vqgan, perceptors) / 2**30 < 4
    huge = load_config(None, ["width=4096", "height=4096", "cutouts=4096"])
    assert step_bytes(huge, vqgan, perceptors) > free_bytes(cpu)
    with pytest.raises(SettingsError, match=r"width=4096 × height=4096 with cutouts=4096 and 1 perceptor\(s\): a step "
                                            r"needs at least [\d.]+ GiB of memory, and cpu has [\d.]+ GiB free"):
        check_memory(huge, vqgan, perceptors, cpu)


def test_a_checkpoint_refused_as_not_a_checkpoint_records_nothing(tmp_path: Path, monkeypatch) -> None:
    """The real file put in its place later is taken, without `fetch --relock`."""
    import torch

    from engine import cache
    from engine.checkpoint import CheckpointError
    from engine.factory import load_vqgan

    config, real, _ = write_vqgan_replica(tmp_path / "real", "lightning-dictconfig")
    ckpt = tmp_path / "mine.ckpt"
    ckpt.write_text("<html>not found</html>")
    models = tmp_path / "models.yaml"
    models.write_text(yaml.safe_dump({"vqgans": {"mine": {"config": str(config), "checkpoint": str(ckpt)}}}))
    monkeypatch.setenv("VQCLIP_MODELS", str(models))
    monkeypatch.setenv("VQCLIP_CACHE", str(tmp_path / "cache"))
    with pytest.raises(CheckpointError):
        load_vqgan("mine", torch.device("cpu"), progress=False)
    assert "vqgan/mine/checkpoint" not in (cache.lock_file().read_text() if cache.lock_file().exists() else "")
    ckpt.write_bytes(real.read_bytes())
    assert load_vqgan("mine", torch.device("cpu"), progress=False).info.sha256 in cache.lock_file().read_text()
