"""The run-folder contract (engine/runfolder): names, frame ↔ step, cell names, pytti's rules, read_run."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.runfolder import (
    FORMAT, CellName, Frame, HashCache, RunFolder, cell_name, frame_count, frame_step, is_save_point, parse_cell_name,
    parse_family, read_run, saved_frame, split_rerun,
)

PNG = b"\x89PNG\r\n\x1a\n" + b"frame"


def write_run(folder: Path, *, total: int = 25, save_every: int = 10, fmt: str = FORMAT,
              complete: bool = True) -> RunFolder:
    """A run of ours written through RunFolder: frames as the engine saves them, losses.csv with
    the loss of step s = s / 100 (s in steps done), and each frame's hash: in the frame table
    (format /3 on), or in metrics.json (older formats)."""
    run = RunFolder(folder.parent, folder.name)
    run.path.mkdir(parents=True)
    settings = {"scenes": "a", "steps_per_scene": total, "save_every": save_every, "width": 8, "height": 8,
                "vqgan_model": "tiny", "perceptors": ["tiny-vit"], "seed": 1}
    run.sidecar.write_text(json.dumps({"format": fmt, "settings": settings, "seed": 1, "models": {
        "vqgan": {"slug": "tiny", "untrained": True}, "perceptors": [{"slug": "tiny-vit", "untrained": True}]}}))
    first = 0 if fmt == "vqgan-clip-run/1" else 1
    run.write_losses(["s0p0"], [[s, 0, s / 100, s / 100] for s in range(first, total + first)])
    table = []
    for done in range(1, total + 1):
        if is_save_point(done, save_every, total):
            n = saved_frame(done, save_every)
            run.frame(n).write_bytes(PNG + bytes([n]))
            table.append(Frame(n, run.frame(n).name, done, done / 100, HashCache().sha256(run.frame(n)), (1.0,)))
    if fmt == FORMAT:
        run.write_frame_table(table)
    if complete:
        listed = {} if fmt == FORMAT else {"frame_sha256": [f.sha256 for f in table]}
        run.write_metrics({"steps": total, "frames": len(table), "final_loss": 0.25, **listed})
    return run


def test_frame_steps_follow_the_steps_done_when_saved():
    assert [frame_step(n, 10, 25) for n in (1, 2, 3)] == [10, 20, 25]
    assert frame_count(25, 10) == 3 and frame_count(20, 10) == 2
    assert [d for d in range(1, 26) if is_save_point(d, 10, 25)] == [10, 20, 25]
    assert saved_frame(25, 10) == 3


def test_a_run_not_a_multiple_of_save_every_reads_back_with_its_steps_and_losses(tmp_path):
    write_run(tmp_path / "r")
    record = read_run(tmp_path / "r")
    assert [(f.n, f.step, f.loss) for f in record.frames] == [(1, 10, 0.1), (2, 20, 0.2), (3, 25, 0.25)]
    assert record.status == "complete" and record.losses["step"][:2] == [1, 2]


def test_format_1_losses_are_read_in_steps_done(tmp_path):
    write_run(tmp_path / "r", fmt="vqgan-clip-run/1")  # rows 0..24, the loss of step index i is i/100
    record = read_run(tmp_path / "r")
    assert record.losses["step"][0] == 1
    assert [f.loss for f in record.frames] == [0.09, 0.19, 0.24]


def test_a_run_is_read_by_its_frame_table_even_where_a_re_derivation_says_otherwise(tmp_path):
    run = write_run(tmp_path / "r")
    table = run.frame_table.read_text().replace("\n2,20,0.2,", "\n2,17,0.5,")
    run.frame_table.write_text(table)
    record = read_run(run.path)
    assert [(f.n, f.step, f.loss) for f in record.frames] == [(1, 10, 0.1), (2, 17, 0.5), (3, 25, 0.25)]
    assert record.status == "complete" and [f.scenes for f in record.frames] == [(1.0,)] * 3


def test_a_format_2_run_has_its_frames_derived_from_its_settings(tmp_path):
    record = read_run(write_run(tmp_path / "r", fmt="vqgan-clip-run/2").path)
    assert [(f.n, f.step, f.loss, f.scenes) for f in record.frames] == [
        (1, 10, 0.1, (1.0,)), (2, 20, 0.2, (1.0,)), (3, 25, 0.25, (1.0,))]
    assert record.status == "complete" and all(f.sha256 for f in record.frames)


@pytest.mark.parametrize("fmt", [FORMAT, "vqgan-clip-run/2"])
@pytest.mark.parametrize("damage", ["truncate", "replace", "delete"])
def test_a_finished_run_whose_frame_changed_is_damaged_and_names_it(tmp_path, damage, fmt):
    run = write_run(tmp_path / "r", fmt=fmt)
    frame = run.frame(2)
    if damage == "truncate":
        frame.write_bytes(frame.read_bytes()[:4])
    elif damage == "replace":
        frame.write_bytes(PNG + b"other")
    else:
        frame.unlink()
    record = read_run(run.path)
    assert record.status == "damaged"
    assert "frame 2" in record.reason


def test_verification_hashes_only_what_changed(tmp_path):
    run = write_run(tmp_path / "r")
    cache = HashCache()
    read_run(run.path, hashes=cache)
    assert cache.hashed == 3
    read_run(run.path, hashes=cache)
    assert cache.hashed == 3
    run.frame(1).write_bytes(PNG + b"changed")
    assert read_run(run.path, hashes=cache).status == "damaged"
    assert cache.hashed == 4


def test_an_unfinished_run_is_incomplete_and_runs_without_hashes_are_read_as_they_are(tmp_path):
    assert read_run(write_run(tmp_path / "a", complete=False).path).status == "incomplete"
    pytti = tmp_path / "p"
    pytti.mkdir()
    (pytti / "p_settings.txt").write_text(json.dumps({"steps_per_scene": 20, "save_every": 10, "scenes": "x",
                                                      "ViTB32": True, "vqgan_model": "sflckr"}) + "\nb'0.00: x'\n")
    for n in (1, 2):
        (pytti / f"p_{n}.png").write_bytes(PNG)
    record = read_run(pytti)
    assert (record.status, record.meta.perceptors, [f.step for f in record.frames]) == ("complete", ["ViT-B32"], [10, 20])


@pytest.mark.parametrize("name,parts", [
    ("exp_vqgan_base_perceptors__sflckr_ViT-B32", ("exp_vqgan_base_perceptors", "sflckr", ("ViT-B32",), None)),
    ("exp__imagenet_ViT-B32_RN50__seed-7", ("exp", "imagenet", ("ViT-B32", "RN50"), 7)),
])
def test_cell_names_format_and_parse_back(name, parts):
    cell = parse_cell_name(name)
    assert (cell.experiment, cell.vqgan, cell.perceptors, cell.seed) == parts
    assert cell_name(*parts) == name == str(CellName(*parts))
    assert parse_cell_name(name + "(2)") == cell


@pytest.mark.parametrize("name", ["exp__", "__imagenet_ViT-B32", "exp__imagenet", "exp__a_b__other", "plain"])
def test_names_that_are_not_cells(name):
    assert parse_cell_name(name) is None


@pytest.mark.parametrize("bad", [("exp", "a_b", ["p"]), ("ex__p", "a", ["p"]), ("exp", "a", [])])
def test_cell_names_that_would_not_parse_back_are_refused(bad):
    with pytest.raises(ValueError):
        cell_name(*bad)


def test_pytti_families_whatever_the_keys():
    assert parse_family("exp_video_basic_stability_modes_ref-True_dsw-1.0_ssw-0.0") == (
        "exp_video_basic_stability_modes", {"ref": "True", "dsw": "1.0", "ssw": "0.0"})
    assert parse_family("exp_cut_pow-1.0_steps_per_frame-50(1)", ["cut_pow", "steps_per_frame"]) == (
        "exp", {"cut_pow": "1.0", "steps_per_frame": "50"})
    assert parse_family("run-2") is None and parse_family("exp__a_b") is None
    assert split_rerun("exp(12)") == ("exp", 12)


def test_the_family_gives_the_catalog_experiment(tmp_path):
    folder = tmp_path / "exp_video_basic_stability_modes_ref-True_dsw-1.0_ssw-0.0"
    folder.mkdir()
    (folder / f"{folder.name}_1.png").write_bytes(PNG)
    record = read_run(folder)
    assert record.experiment == "exp_video_basic_stability_modes"
    assert record.named == {"ref": "True", "dsw": "1.0", "ssw": "0.0"}


def test_the_contract_imports_no_torch():
    blocker = ("import sys\n"
               "class Block:\n"
               "    def find_spec(self, name, path=None, target=None):\n"
               "        if name.split('.')[0] == 'torch': raise ImportError('torch is blocked')\n"
               "sys.meta_path.insert(0, Block())\n"
               "import engine.runfolder, engine.settings\n"
               "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


@pytest.mark.parametrize("fmt", [FORMAT, "vqgan-clip-run/2"])
def test_a_finished_run_is_complete_for_its_writer_whatever_its_format(tmp_path, fmt):
    run = write_run(tmp_path / "r", fmt=fmt)
    assert run.completion_problems() == []
    run.frame(3).write_bytes(PNG + b"changed")
    assert run.completion_problems() == [f"frame 3 ({run.frame(3)}) is damaged (its SHA-256 differs from the recorded one)"]
