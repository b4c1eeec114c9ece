"""Fingerprints (experiments/fingerprints.py) on synthetic roots written through the run-folder
contract, each with a planted structure: a code grid, a spectrum, a palette."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from dashboard_fixtures import REPO, make_our_run
from PIL import Image, ImageFilter

from experiments.effects import find_runs
from experiments.fingerprints import fingerprints, palette, palette_distance
from experiments.imagestats import grid_artifact, spectral_slope

W, H = 128, 64


def rng_for(*key: object) -> np.random.Generator:
    return np.random.default_rng(abs(hash(key)) % 2**32)


def tiles(seed: int) -> np.ndarray:
    """16-px flat tiles of random colours, a little noise on top: a VQGAN whose code grid shows."""
    rng = rng_for("tiles", seed)
    image = np.repeat(np.repeat(rng.integers(0, 256, (H // 16, W // 16, 3)), 16, 0), 16, 1)
    return np.clip(image + rng.normal(0, 2, image.shape), 0, 255).astype(np.uint8)


def grain(seed: int) -> np.ndarray:
    """White grain: no grid, a flat spectrum."""
    return rng_for("grain", seed).integers(0, 256, (H, W, 3)).astype(np.uint8)


def blurred(seed: int) -> np.ndarray:
    """The same grain blurred: a steep spectrum, no grid."""
    return np.asarray(Image.fromarray(grain(seed)).filter(ImageFilter.GaussianBlur(3)))


def tinted(colour: tuple[int, int, int]):
    def draw(seed: int) -> np.ndarray:
        noise = rng_for("tint", colour, seed).normal(0, 6, (H, W, 3))
        return np.clip(np.array(colour, float) + noise, 0, 255).astype(np.uint8)
    return draw


def root_of(tmp_path: Path, looks: dict[str, object], perceptors=("p-a", "p-b"), seeds=(1, 2),
            swap: bool = False) -> Path:
    """A complete run per VQGAN × perceptor × seed under tmp_path/exp, each VQGAN drawing its look;
    `swap` exchanges the VQGAN and perceptor labels (same frames)."""
    for v, draw in looks.items():
        for p in perceptors:
            for s in seeds:
                first, second = (p, v) if swap else (v, p)
                make_our_run(tmp_path / "exp", f"exp__{first}_{second}__seed-{s}", first, [second], seed=s, n_frames=1,
                             size=(W, H), draw=lambda n, d=draw, s=s, p=p: d(s * 7 + len(p)))
    return tmp_path


def test_a_code_grid_reads_far_above_one_and_smooth_or_noisy_frames_about_one() -> None:
    assert grid_artifact(tiles(1), 16) > 5
    assert 0.8 < grid_artifact(grain(1), 16) < 1.2 and 0.8 < grid_artifact(blurred(1), 16) < 1.2


def test_a_blurred_field_falls_steeper_than_white_grain() -> None:
    assert spectral_slope(blurred(1)) < -3 < -0.5 < spectral_slope(grain(1)) < 0.5


def test_fingerprints_tell_the_vqgans_apart_by_grid_spectrum_and_palette(tmp_path: Path) -> None:
    brown, blue, bluer = (140, 90, 40), (40, 70, 170), (50, 80, 190)
    root = root_of(tmp_path, {"vq-tiles": tiles, "vq-grain": grain, "vq-blur": blurred})
    doc = fingerprints(find_runs(root), "exp")
    vq = doc["levels"]["vqgan"]
    assert doc["factors"] == ["vqgan", "perceptor_set"] and doc["runs"] == 12
    assert vq["vq-tiles"]["grid_artifact"] > 5 and 0.8 < vq["vq-grain"]["grid_artifact"] < 1.2
    assert vq["vq-blur"]["spectral_slope"] < vq["vq-grain"]["spectral_slope"] - 2
    assert len(vq["vq-grain"]["spectrum"]) == len(doc["frequencies"]) == 16
    assert vq["vq-tiles"]["seconds_per_step"] == pytest.approx(1 / 3.5, rel=1e-4)  # the fixture's metrics
    spectrum = doc["distances"]["vqgan"]["spectrum"]
    assert spectrum["vq-blur"]["vq-grain"] == spectrum["vq-grain"]["vq-blur"] > 1

    colours = fingerprints(find_runs(root_of(tmp_path / "c", {"vq-brown": tinted(brown), "vq-blue": tinted(blue),
                                                             "vq-bluer": tinted(bluer)})), "exp")
    emd = colours["distances"]["vqgan"]["palette"]
    assert emd["vq-brown"]["vq-blue"] > 5 * emd["vq-blue"]["vq-bluer"] and emd["vq-blue"]["vq-bluer"] < 15
    top = colours["levels"]["vqgan"]["vq-brown"]["palette"][0]
    assert top["weight"] > 0.5 and top["colour"].startswith("#")
    assert np.allclose(np.array([int(top["colour"][i:i + 2], 16) for i in (1, 3, 5)]), brown, atol=12)


def test_swapping_two_factors_labels_swaps_their_fingerprints(tmp_path: Path) -> None:
    looks = {"vq-tiles": tiles, "vq-grain": grain}
    straight = fingerprints(find_runs(root_of(tmp_path / "a", looks)), "exp")
    swapped = fingerprints(find_runs(root_of(tmp_path / "b", looks, swap=True)), "exp")
    assert swapped["levels"]["perceptor_set"] == straight["levels"]["vqgan"]
    assert swapped["levels"]["vqgan"] == straight["levels"]["perceptor_set"]
    assert swapped["distances"]["perceptor_set"] == straight["distances"]["vqgan"]


def test_palette_distance_is_zero_to_itself_and_symmetric() -> None:
    a, b = palette([tinted((200, 30, 30))(1)]), palette([tinted((30, 200, 30))(1), tinted((30, 30, 200))(2)])
    assert palette_distance(a, a) == pytest.approx(0, abs=1e-9)
    assert palette_distance(a, b) == pytest.approx(palette_distance(b, a), rel=1e-9)
    assert palette_distance(a, b) > 50
    assert len(b) == 2 and sum(c["weight"] for c in b) == pytest.approx(1, abs=1e-3)  # near colours merged


def test_the_command_prints_a_table_per_factor_and_the_json_the_issue_names(tmp_path: Path) -> None:
    root = root_of(tmp_path, {"vq-tiles": tiles, "vq-grain": grain})
    (tmp_path / "scores").mkdir()
    (tmp_path / "scores" / "cmmd.json").write_text(json.dumps(
        {"cmmd": {"judge-a": {"vqgan": {"vq-tiles": {"vq-grain": 12.5}, "vq-grain": {"vq-tiles": 12.5}}}}}))
    run = [sys.executable, "-m", "experiments.fingerprints", "--root", str(root / "exp"), "--scores",
           str(tmp_path / "scores")]
    doc = json.loads(subprocess.run([*run, "--json"], cwd=REPO, capture_output=True, text=True, timeout=120).stdout)
    assert {"experiment", "runs", "levels", "distances"} <= set(doc)
    assert set(doc["distances"]["vqgan"]) == {"palette", "spectrum", "cmmd"}
    assert doc["distances"]["vqgan"]["cmmd"]["judge-a"]["vq-tiles"]["vq-grain"] == 12.5
    assert {"palette", "spectrum", "spectral_slope", "grid_artifact", "seconds_per_step", "wall_time_s"} <= set(
        doc["levels"]["vqgan"]["vq-tiles"])
    text = subprocess.run(run, cwd=REPO, capture_output=True, text=True, timeout=120).stdout.splitlines()
    assert text[0] == "experiment exp: 8 runs, frames: final" and "VQGAN:" in text and "perceptor set:" in text
    row = next(line.split() for line in text if line.strip().startswith("vq-tiles"))
    assert row[1] == "4" and f"{doc['levels']['vqgan']['vq-tiles']['grid_artifact']:.2f}" in row
    bad = subprocess.run([*run[:4], str(tmp_path / "nope")], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --root") and "Traceback" not in bad.stderr
