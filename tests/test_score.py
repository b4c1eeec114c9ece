"""Scores: self-preference from a bias table (per-judge normalisation, the diagonal, intervals over
seeds), and the score stage on hand-made cell folders read through engine.runfolder."""
from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from experiments.bias import self_preference, standardise, summary

VQGANS = {"imagenet": 0.0, "wikiart": 0.3, "coco": -0.2}  # how good each VQGAN's images look
JUDGES = {"ViT-B32": (0.30, 1.0), "RN50": (0.18, 0.1), "ViT-B16": (0.25, 10.0)}  # offset, scale
GENERATORS = [*JUDGES, "ViT-B32+RN50"]
BONUS = 0.5  # what a judge adds to its own perceptor's images, before its scale


def table(seeds: dict[int, float]) -> pd.DataFrame:
    """Judge j scores cell (v, g) offset_j + scale_j * (quality_v + bonus_s * [g == j]), where
    seed s's bonus is BONUS + seeds[s]: the judges' scales differ a hundredfold."""
    return pd.DataFrame([
        {"vqgan": v, "perceptor_set": g, "judge": j, "seed": s,
         "similarity": offset + scale * (q + (BONUS + e) * (g == j))}
        for s, e in seeds.items() for v, q in VQGANS.items() for g in GENERATORS
        for j, (offset, scale) in JUDGES.items()
    ])


def _spread(bonus: float) -> float:
    """The standard deviation of one judge's unscaled scores: each VQGAN's quality over the four
    generators, one of which (its own) gets the bonus."""
    return float(np.std([q + bonus * (i == 0) for q in VQGANS.values() for i in range(len(GENERATORS))]))


def test_z_scores_are_per_judge() -> None:
    z = standardise(table({1: 0.0}))
    for _, scores in z.groupby("judge"):
        assert scores["z"].mean() == pytest.approx(0, abs=1e-12)
        assert scores["z"].std(ddof=0) == pytest.approx(1)
    assert z["diagonal"].sum() == len(VQGANS) * len(JUDGES)
    pair = z[z["perceptor_set"] == "ViT-B32+RN50"]
    assert set(pair[pair["involved"]]["judge"]) == {"ViT-B32", "RN50"}


def test_self_preference_recovers_the_diagonal_bonus() -> None:
    prefs = self_preference(table({1: 0.0}))
    assert len(prefs) == len(VQGANS) * len(JUDGES)
    for judge, (_, scale) in JUDGES.items():
        mine = prefs[prefs["judge"] == judge]
        assert mine["raw"].to_numpy() == pytest.approx(BONUS * scale)  # on the judge's own scale
        assert mine["preference"].to_numpy() == pytest.approx(BONUS / _spread(BONUS))  # same for all
    per_judge, per_vqgan = summary(prefs, "judge"), summary(prefs, "vqgan")
    assert list(per_judge["judge"]) == sorted(JUDGES) and list(per_vqgan["vqgan"]) == sorted(VQGANS)
    assert per_judge["mean"].to_numpy() == pytest.approx(BONUS / _spread(BONUS))
    assert per_vqgan["mean"].to_numpy() == pytest.approx(BONUS / _spread(BONUS))
    assert (per_judge["seeds"] == 1).all() and per_judge["low"].isna().all()  # one seed: no interval


def test_no_bonus_means_no_preference() -> None:
    prefs = self_preference(table({1: -BONUS}))
    assert prefs["preference"].to_numpy() == pytest.approx(0, abs=1e-9)


def test_interval_over_seeds() -> None:
    noise = {1: -0.2, 2: -0.1, 3: 0.0, 4: 0.1, 5: 0.2}
    prefs = self_preference(table(noise))
    per_seed = [(BONUS + e) / _spread(BONUS + e) for e in noise.values()]
    for summary_by in ("judge", "vqgan"):
        got = summary(prefs, summary_by)
        low, high = stats.t.interval(0.95, len(per_seed) - 1, loc=np.mean(per_seed),
                                     scale=stats.sem(per_seed))
        assert got["mean"].to_numpy() == pytest.approx(np.mean(per_seed))
        assert got["low"].to_numpy() == pytest.approx(low) and got["high"].to_numpy() == pytest.approx(high)
        assert (got["seeds"] == 5).all()
    raw = summary(prefs, "judge", value="raw").set_index("judge")
    for judge, (_, scale) in JUDGES.items():  # the raw difference averages back to the bonus
        assert raw.at[judge, "mean"] == pytest.approx(BONUS * scale)
        assert raw.at[judge, "low"] < BONUS * scale < raw.at[judge, "high"]


def test_judges_without_their_own_cell_are_left_out() -> None:
    df = table({1: 0.0})
    df = df[df["perceptor_set"] != "RN50"]  # nobody generated with RN50 alone
    prefs = self_preference(df.drop(columns="seed"))  # an older score file: no seed column
    assert set(prefs["judge"]) == {"ViT-B32", "ViT-B16"} and set(prefs["seed"]) == {0}
    assert not math.isnan(summary(prefs, ["vqgan", "judge"])["mean"].iat[0])


SETTINGS = {"scenes": "a red square || a blue sky", "width": 32, "height": 16, "save_every": 5,
            "steps_per_scene": 5, "interpolation_steps": 0, "seed": 3}


def grid_params(settings: dict, seeds: list[int]) -> dict:
    """The params of a grid of tiny × (tiny-vit, tiny-rn) with `settings` and `seeds`."""
    return {"experiment": "t", "out_dir": "out", "settings": settings,
            "grid": {"vqgan_models": {"tiny": "tiny"}, "seeds": seeds,
                     "perceptors": {"tiny-vit": "tiny-vit", "tiny-rn": "tiny-rn"}}}


def _grid_of_cells(root: Path, settings: dict, seeds: list[int], frames: int, *, hashes: bool = False):
    """A grid of tiny × (tiny-vit, tiny-rn) and hand-made complete cell folders under root/out
    (frames 1..`frames`; `hashes`: metrics.json records their SHA-256, as older engines did)."""
    from dashboard_fixtures import write_frame
    from experiments.grid import build_grid

    grid = build_grid(grid_params(settings, seeds), root=root)
    for i, cell in enumerate(grid.cells):
        folder = root / "out" / cell.name
        folder.mkdir(parents=True)
        (folder / f"{cell.name}_settings.json").write_text(json.dumps({"settings": settings}))
        paths = [folder / f"{cell.name}_{n}.png" for n in range(1, frames + 1)]
        for n, path in enumerate(paths, 1):
            write_frame(path, (40 * i, 200 - 50 * n, 90), (32, 16))
        metrics = {"complete": True}
        if hashes:
            metrics["frame_sha256"] = [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
        (folder / "metrics.json").write_text(json.dumps(metrics))
    return grid


def test_score_stage_writes_seeds_z_and_self_preference(tmp_path, monkeypatch) -> None:
    """The judge stage on hand-made cell folders (two seeds) judged by the tiny perceptors."""
    from experiments.judge import judge

    monkeypatch.chdir(tmp_path)
    grid = _grid_of_cells(tmp_path, SETTINGS, [7], frames=2)
    judge(grid, tmp_path / "scores", device="cpu")

    bias = pd.read_csv(tmp_path / "scores" / "bias_matrix.csv")
    assert list(bias.columns) == ["cell", "vqgan", "perceptor_set", "seed", "judge", "similarity", "z", "generator"]
    assert (bias["generator"] == bias["perceptor_set"]).all()  # the old name, kept for one release
    assert len(bias) == 2 * 2 * 2 and set(bias["seed"]) == {3, 7}
    for _, scores in bias.groupby(["judge", "seed"]):
        assert scores["z"].mean() == pytest.approx(0, abs=1e-5)
    prefs = json.loads((tmp_path / "scores" / "self_preference.json").read_text())
    assert set(prefs["judges"]) == {"tiny-vit", "tiny-rn"} and set(prefs["vqgans"]) == {"tiny"}
    assert all(v["seeds"] == 2 and v["low"] <= v["mean"] <= v["high"] for v in prefs["judges"].values())
    distances = json.loads((tmp_path / "scores" / "cmmd.json").read_text())
    assert set(distances["cmmd"]) == {"tiny-vit", "tiny-rn"} and distances["cmmd"]["tiny-vit"]["vqgan"] == {"tiny": {}}
    pairs = distances["cmmd"]["tiny-rn"]["perceptor_set"]
    assert pairs["tiny-vit"]["tiny-rn"] == pairs["tiny-rn"]["tiny-vit"] is not None
    vendi = distances["vendi"]["tiny-vit"]  # per cell over its two seeds: between 1 and 2 distinct images
    assert set(vendi) == {c.name for c in grid.cells if not c.replicate} and all(1 <= v <= 2 for v in vendi.values())
    means = json.loads((tmp_path / "scores" / "bias.json").read_text())["tiny"]["tiny-rn"]
    assert means["tiny-vit"] == pytest.approx(
        bias.query("perceptor_set == 'tiny-rn' and judge == 'tiny-vit'")["similarity"].mean(), abs=1e-5)


def test_frame_steps_are_the_steps_done_when_saved(tmp_path, monkeypatch) -> None:
    """2 scenes × 6 steps saved every 5: frames at steps 5, 10 and 12 (the last one after the
    final step), read through engine.runfolder; the last frame is judged in the second scene."""
    from experiments.cells import read_cell

    monkeypatch.chdir(tmp_path)
    grid = _grid_of_cells(tmp_path, {**SETTINGS, "steps_per_scene": 6}, [], frames=3, hashes=True)
    record = read_cell(grid, grid.cells[0])
    assert [(f.n, f.step) for f in record.frames] == [(1, 5), (2, 10), (3, 12)]
    assert [f.scenes for f in record.frames] == [(1.0, 0.0), (0.0, 1.0), (0.0, 1.0)]


def test_damaged_incomplete_and_missing_cells_are_named(tmp_path, monkeypatch) -> None:
    from experiments.grid import CellNotReady
    from experiments.judge import judge

    monkeypatch.chdir(tmp_path)
    grid = _grid_of_cells(tmp_path, SETTINGS, [], frames=2, hashes=True)
    vit, rn = grid.cells
    frame = tmp_path / "out" / vit.name / f"{vit.name}_2.png"
    frame.write_bytes(frame.read_bytes()[:100])  # truncated after the run finished
    with pytest.raises(CellNotReady, match=rf"cell {vit.name}: out/{vit.name} is damaged \(.*{vit.name}_2.png.*"
                                        rf"`dvc checkout cell@tiny-tiny-vit`"):
        judge(grid, tmp_path / "scores", device="cpu")
    (tmp_path / "out" / vit.name / "metrics.json").unlink()
    with pytest.raises(CellNotReady, match=rf"cell {vit.name}: .* no complete run .*`dvc repro cell@tiny-tiny-vit`"):
        judge(grid, tmp_path / "scores", device="cpu")
    shutil.rmtree(tmp_path / "out" / vit.name)
    with pytest.raises(CellNotReady, match=rf"cell {vit.name}: no folder out/{vit.name}; "
                                        r"run `dvc repro cell@tiny-tiny-vit`"):
        judge(grid, tmp_path / "scores", device="cpu")
    assert not (tmp_path / "scores").exists(), "nothing is written before every cell reads"


def test_self_preference_is_taken_within_each_level_of_a_varied_setting() -> None:
    """Two prompts, one of which every judge scores far higher: within each prompt the bonus is
    found as with one prompt; pooled across prompts, the prompt's offset would swamp it."""
    one = table({1: 0.0})
    both = pd.concat([one.assign(scenes="city"), one.assign(scenes="sea", similarity=one["similarity"] + 5.0)])
    prefs = self_preference(both, ["scenes"])
    assert len(prefs) == 2 * len(VQGANS) * len(JUDGES)
    assert prefs["preference"].to_numpy() == pytest.approx(BONUS / _spread(BONUS))
    assert standardise(both, ["scenes"]).groupby(["judge", "scenes"])["z"].mean().to_numpy() == pytest.approx(0, abs=1e-9)
    assert not np.allclose(self_preference(both.drop(columns="scenes").assign(seed=1))["preference"], BONUS / _spread(BONUS))


def test_cmmd_is_about_0_between_samples_of_one_set_and_grows_with_a_planted_shift() -> None:
    from experiments.setdistances import cmmd

    rng = np.random.default_rng(0)

    def unit(a: np.ndarray) -> np.ndarray:
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    x, y = unit(rng.normal(size=(30, 64))), unit(rng.normal(size=(30, 64)))
    away = np.zeros(64)
    away[0] = 3.0
    shifted = [cmmd(x, unit(y + s * away)) for s in (0.1, 0.3, 1.0)]
    assert abs(cmmd(x, y)) < 0.2 * shifted[0] and shifted == sorted(shifted) and shifted[-1] > 5
    assert cmmd(x, y) == pytest.approx(cmmd(y, x)) and cmmd(x[:1], y) is None


def test_vendi_counts_distinct_images() -> None:
    from experiments.setdistances import vendi

    assert vendi(np.ones((6, 8))) == pytest.approx(1)  # identical frames: one image
    assert vendi(np.eye(5)) == pytest.approx(5)  # orthogonal ones: five
    assert 1 < vendi(np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]])) < 3 and vendi(np.ones((1, 8))) is None


def test_the_summary_gives_each_judge_its_self_preference_and_its_mean_cmmd_between_vqgans() -> None:
    from experiments.summary import summarise

    effects = {"shares": ["vqgan", "perceptor_set", "interaction", "residual"],
               "measures": {"similarity:rn": {"vqgan": 0.5, "perceptor_set": 0.25, "interaction": None, "residual": 0.25},
                            "contrast": {"vqgan": 0.9, "perceptor_set": 0.0, "interaction": None, "residual": 0.1}}}
    preference = {"judges": {"rn": {"mean": 1.23456, "low": None, "high": None, "seeds": 1}}}
    distances = {"cmmd": {"rn": {"vqgan": {"a": {"b": 2.0, "c": 4.0}, "b": {"a": 2.0, "c": None},
                                           "c": {"a": 4.0, "b": None}}}}}
    rows = summarise(effects, preference, distances)
    assert rows["similarity-rn"] == {"vqgan": 0.5, "perceptor_set": 0.25, "residual": 0.25, "self_preference": 1.235,
                                     "cmmd": 3.0}
    assert rows["contrast"] == {"vqgan": 0.9, "perceptor_set": 0.0, "residual": 0.1}
