"""What drives the look (experiments/effects/): synthetic roots written through the run-folder
contract, each with a known structure the analysis of variance must find."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest

from dashboard_fixtures import REPO, make_our_run, make_pytti_run
from experiments.effects import SHARES, EffectsError, analyse, effects_of_runs, find_runs

SIZE = (32, 16)  # w, h
PERIODS = {"vq-fine": 4, "vq-mid": 8, "vq-coarse": 16}  # the VQGAN sets the stripes' period
HUES = {"p-red": (220, 40, 40), "p-green": (40, 200, 60)}  # the perceptor sets their colour
SEEDS = (1, 2, 3, 4)
Draw = Callable[[str, str, int], np.ndarray]


def stripes(vqgan: str, perceptor: str, seed: int) -> np.ndarray:
    """Vertical stripes: their period follows the VQGAN, their colour the perceptor, and the
    seed adds a little pixel noise (never enough to make or hide an edge)."""
    x = np.arange(SIZE[0])
    on = (x // (PERIODS[vqgan] // 2)) % 2 == 0
    img = np.where(on[None, :, None], np.array(HUES[perceptor], float), 10.0) * np.ones((SIZE[1], 1, 1))
    img += np.random.default_rng(seed).normal(0, 2, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def crossed(vqgan: str, perceptor: str, seed: int) -> np.ndarray:
    """Grey noise whose contrast is high exactly where the VQGAN and the perceptor are 'alike'
    (the first of each, or the second of each): a pure interaction, plus seed noise."""
    alike = (vqgan == "vq-fine") == (perceptor == "p-red")
    rng = np.random.default_rng(seed)
    amplitude = 30 + 50 * alike + rng.normal(0, 3)
    img = 128 + amplitude * rng.standard_normal((SIZE[1], SIZE[0], 1)).repeat(3, axis=2)
    return np.clip(img, 0, 255).astype(np.uint8)


def grid(root: Path, draw: Draw, vqgans=("vq-fine", "vq-coarse"), perceptors=tuple(HUES),
         seeds=SEEDS, swap: bool = False, skip: tuple[str, str] | None = None) -> Path:
    """One complete run per VQGAN × perceptor × seed under `root/exp`; `swap` writes the same
    frames with the two factors' labels exchanged; `skip` leaves one cell out."""
    for v in vqgans:
        for p in perceptors:
            if (v, p) == skip:
                continue
            for s in seeds:
                labels = (p, v) if swap else (v, p)
                make_our_run(root / "exp", f"exp__{labels[0]}_{labels[1]}__seed-{s}", labels[0], [labels[1]],
                             seed=s, n_frames=1, size=SIZE, draw=lambda n, v=v, p=p, s=s: draw(v, p, s))
    return root


def effects(root: Path, **kw) -> dict:
    return effects_of_runs(find_runs(root), "exp", **kw)


def assert_shares(result: dict, shares=SHARES) -> None:
    values = [result[k] for k in shares if result[k] is not None]
    assert all(0 <= v <= 1 for v in values) and sum(values) == pytest.approx(1, abs=1e-5)


def test_texture_that_follows_the_vqgan_is_the_vqgans(tmp_path: Path) -> None:
    got = effects(grid(tmp_path, stripes, vqgans=tuple(PERIODS)))
    assert (got["cells"], got["seeds"], got["runs"], got["balanced"]) == (6, 4, 24, True)
    edges, colour = got["measures"]["edge_density"], got["measures"]["colourfulness"]
    assert edges["vqgan"] > 0.99 and edges["low"]["vqgan"] > 0.98
    assert edges["reading"].startswith("edge density: ") and edges["reading"].endswith(" % VQGAN")
    assert colour["perceptor_set"] > 0.95 and colour["reading"].endswith("% perceptor set")
    assert edges["means"]["vqgan"]["vq-fine"] > edges["means"]["vqgan"]["vq-coarse"]
    for result in got["measures"].values():
        assert_shares(result)
        assert all(result["low"][k] <= result[k] + 1e-9 and result[k] <= result["high"][k] + 1e-9 for k in SHARES)


def test_swapping_the_factors_labels_swaps_the_shares(tmp_path: Path) -> None:
    plain = effects(grid(tmp_path / "a", stripes))["measures"]
    swapped = effects(grid(tmp_path / "b", stripes, swap=True))["measures"]
    for measure, result in plain.items():
        other = swapped[measure]
        assert other["vqgan"] == pytest.approx(result["perceptor_set"], abs=1e-9)
        assert other["perceptor_set"] == pytest.approx(result["vqgan"], abs=1e-9)
        assert other["interaction"] == pytest.approx(result["interaction"], abs=1e-9)
        assert other["residual"] == pytest.approx(result["residual"], abs=1e-9)
        assert other["low"]["vqgan"] == pytest.approx(result["low"]["perceptor_set"], abs=1e-9)
    assert plain["edge_density"]["vqgan"] > 0.99  # the swap is not of two equal things


def test_a_planted_interaction_is_found_with_seeds_and_is_residual_with_one(tmp_path: Path) -> None:
    several = effects(grid(tmp_path / "seeds", crossed))
    contrast = several["measures"]["contrast"]
    assert contrast["interaction"] > 0.8 and contrast["low"]["interaction"] > 0.5
    assert contrast["vqgan"] < 0.1 and contrast["perceptor_set"] < 0.1
    assert not any("cannot be told" in n for n in several["notes"])

    one = effects(grid(tmp_path / "one", crossed, seeds=(1,)))
    contrast = one["measures"]["contrast"]
    assert contrast["interaction"] is None and contrast["residual"] > 0.8
    assert contrast["low"] is None and contrast["high"] is None
    assert one["seeds"] == 1 and any("cannot be told from seed-to-seed noise" in n for n in one["notes"])
    assert_shares(contrast)


def test_a_constant_measure_gets_a_reason_not_shares(tmp_path: Path) -> None:
    flat = np.full((SIZE[1], SIZE[0], 3), 90, np.uint8)
    got = effects(grid(tmp_path, lambda v, p, s: flat, seeds=(1, 2)))
    for measure, result in got["measures"].items():
        assert all(result[k] is None for k in SHARES), measure
        assert result["reason"].startswith("does not vary") and "no shares" in result["reading"]


def test_a_missing_cell_and_a_cut_short_run_are_named(tmp_path: Path) -> None:
    grid(tmp_path, stripes, vqgans=tuple(PERIODS), seeds=(1, 2), skip=("vq-mid", "p-green"))
    make_our_run(tmp_path / "exp", "exp__vq-mid_p-red__seed-3", "vq-mid", ["p-red"], seed=3, n_frames=2,
                 size=SIZE, complete=False)
    got = effects(tmp_path)
    assert got["missing"] == ["vq-mid · p-green"] and not got["balanced"] and got["cells"] == 5
    assert any("missing cells (vq-mid · p-green)" in n for n in got["notes"])
    assert [e["run"] for e in got["excluded"]] == ["exp/exp__vq-mid_p-red__seed-3"]
    assert "incomplete" in got["excluded"][0]["reason"]
    edges = got["measures"]["edge_density"]
    assert_shares(edges)
    assert edges["vqgan"] > 0.99


def test_pytti_folders_are_read(tmp_path: Path) -> None:
    """pytti's own folders (settings.txt, mmc_models), a cut-short `(1)` re-run among them."""
    study = tmp_path / "pytti_study"
    for i, v in enumerate(["vqgan_imagenet_f16_16384", "wikiart_16384"]):
        for j, p in enumerate(["ViT-B32", "RN50"]):
            make_pytti_run(study, f"cell{i}{j}", v, [p], cell=3 * i + 7 * j, n_frames=2)
    make_pytti_run(study, "cell11", "wikiart_16384", ["RN50"], rerun=1, n_frames=1,
                   settings={"steps_per_scene": 100})
    got = effects_of_runs(find_runs(tmp_path), "pytti_study")
    assert (got["cells"], got["runs"]) == (4, 4)
    assert [e["run"] for e in got["excluded"]] == ["pytti_study/cell11/cell11(1)"]
    assert got["measures"]["saturation"]["means"]["perceptor_set"].keys() == {"ViT-B32", "RN50"}
    assert any("cannot be told" in n for n in got["notes"])


def test_balanced_shares_are_the_textbook_sums_of_squares() -> None:
    """On a balanced table the shares come from the classical two-way sums of squares: each
    effect's variance (SS − df · MS_error) / N, the residual MS_error."""
    rng = np.random.default_rng(5)
    a, b, n = 3, 4, 3
    y = rng.normal(size=(a, b, n)) + np.arange(a)[:, None, None] + 0.5 * np.arange(b)[None, :, None]
    table = pd.DataFrame([{"run": f"r{i}{j}{k}", "vqgan": f"v{i}", "perceptor_set": f"p{j}", "seed": k,
                           "contrast": y[i, j, k]} for i in range(a) for j in range(b) for k in range(n)])
    got = analyse(table, "exp", resamples=0)["measures"]["contrast"]
    mean, cells = y.mean(), y.mean(axis=2)
    ss_a = b * n * ((y.mean(axis=(1, 2)) - mean) ** 2).sum()
    ss_b = a * n * ((y.mean(axis=(0, 2)) - mean) ** 2).sum()
    ss_cells = n * ((cells - mean) ** 2).sum()
    noise = (((y - mean) ** 2).sum() - ss_cells) / (a * b * (n - 1))
    parts = [(ss - df * noise) / (a * b * n) for ss, df in
             [(ss_a, a - 1), (ss_b, b - 1), (ss_cells - ss_a - ss_b, (a - 1) * (b - 1))]]
    expected = np.clip([*parts, noise], 0, None)
    assert [got[k] for k in SHARES] == pytest.approx(list(expected / expected.sum()), abs=1e-6)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "experiments.effects", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_cli_table_json_and_errors(tmp_path: Path) -> None:
    root = grid(tmp_path / "images_out", stripes, seeds=(1, 2))
    rows = ["vqgan,generator,judge,similarity,seed"] + [
        f"{v},{p},judge-a,{0.2 + 0.1 * (v == 'vq-fine') + 0.001 * s},{s}"
        for v in ("vq-fine", "vq-coarse") for p in HUES for s in (1, 2)]
    (tmp_path / "scores").mkdir()
    (tmp_path / "scores" / "bias_matrix.csv").write_text("\n".join(rows) + "\n")
    out = cli("--root", str(root), "--json", "--frames", "all")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert (doc["experiment"], doc["cells"], doc["seeds"], doc["frames"]) == ("exp", 4, 2, "all")
    assert doc["measures"]["similarity:judge-a"]["vqgan"] > 0.99
    table = cli("--root", str(root)).stdout.splitlines()
    assert table[0].startswith("experiment exp: 4 cells, 2 seed(s), 8 runs")
    body = [line.split()[0] for line in table[2:] if not line.startswith(("note", "left"))]
    vqgan_share = [doc["measures"][m]["vqgan"] for m in body]
    assert vqgan_share == sorted(vqgan_share, reverse=True) and body[0] in {"edge_density", "similarity:judge-a"}
    for args, message in [(["--root", str(tmp_path / "nope")], "no such folder"),
                          (["--root", str(root), "--experiment", "other"], "--experiment other: not under"),
                          (["--root", str(root), "--frames", "some"], "invalid choice: 'some'"),
                          (["--root", str(tmp_path / "scores")], "no runs found")]:
        bad = cli(*args)
        assert bad.returncode == 2 and message in bad.stderr and bad.stderr.count("error:") == 1, bad.stderr


def test_no_complete_run_is_an_error_naming_the_left_out(tmp_path: Path) -> None:
    make_our_run(tmp_path / "exp", "exp__vq-fine_p-red", "vq-fine", ["p-red"], complete=False)
    with pytest.raises(EffectsError, match=r"experiment exp: no complete run to analyse \(1 left out"):
        effects(tmp_path)


def test_effects_stage_writes_effects_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The judge (tiny judges), imagestats and effects stages: effects.json with the judges' similarities."""
    from experiments.effects.stage import write_grid_effects
    from experiments.imagestats import measure_grid
    from experiments.judge import judge
    from test_score import SETTINGS, _grid_of_cells, grid_params

    monkeypatch.chdir(tmp_path)
    grid = _grid_of_cells(tmp_path, SETTINGS, [7], frames=2)
    (tmp_path / "params.yaml").write_text(json.dumps(grid_params(SETTINGS, [7])))
    judge(grid, tmp_path / "experiments" / "scores", device="cpu")
    measure_grid("params.yaml")
    write_grid_effects("params.yaml")
    doc = json.loads((tmp_path / "experiments" / "scores" / "effects.json").read_text())
    assert (doc["experiment"], doc["cells"], doc["seeds"], doc["frames"]) == ("t", 2, 2, "final")
    assert {"edge_density", "similarity:tiny-vit", "similarity:tiny-rn"} <= set(doc["measures"])
    assert any("one VQGAN (tiny)" in n for n in doc["notes"])
    for result in doc["measures"].values():
        if result["vqgan"] is not None:
            assert result["vqgan"] == 0 and result["low"] is not None


def test_dashboard_bars_pick_a_measure_and_colour_its_heads(tmp_path: Path) -> None:
    """A tap on a bar picks its measure; the heads take that measure's mean per model."""
    from dashboard.effects import bars, head_colours

    doc = effects(grid(tmp_path, stripes, vqgans=tuple(PERIODS)))
    picked: list[str] = []
    fig = bars(doc, picked.append)
    source = fig.renderers[0].data_source
    row = source.data["measure"].index("edge_density")
    source.selected.indices = [row]
    assert picked == ["edge_density"]
    heads = head_colours([doc], "edge_density")
    alpha = {v: float(h["colour"].rsplit(",", 1)[1].rstrip(")")) for v, h in heads["vqgan"].items()}
    assert alpha["vq-fine"] > alpha["vq-mid"] > alpha["vq-coarse"]  # finer stripes: more edges, darker
    assert set(heads["perceptor_set"]) == set(HUES)


# ---------------------------------------------------------------- more factors than VQGAN and perceptor set

PROMPTS = {"city": 0.0, "forest": 40.0, "sea": 80.0}  # what each prompt adds to the brightness
VQ_LIFT = {"vq-a": 0.0, "vq-b": 3.0}  # and each VQGAN, a little


def prompt_table(swap: bool = False) -> pd.DataFrame:
    """Brightness set mostly by the prompt (a little by the VQGAN, plus seed noise) over 2 VQGANs ×
    2 perceptor sets × 3 prompts × 3 seeds; `swap` exchanges the VQGAN and perceptor set labels."""
    rng = np.random.default_rng(11)
    rows = []
    for v in VQ_LIFT:
        for p in ("p-a", "p-b"):
            for prompt, lift in PROMPTS.items():
                for seed in (1, 2, 3):
                    first, second = (p, v) if swap else (v, p)
                    rows.append({"run": f"{v}-{p}-{prompt}-{seed}", "cell": f"{v}-{p}-{prompt}", "vqgan": first,
                                 "perceptor_set": second, "scenes": prompt, "seed": seed,
                                 "contrast": 100 + lift + VQ_LIFT[v] + rng.normal(0, 1)})
    return pd.DataFrame(rows)


def test_a_planted_prompt_effect_is_the_prompts_and_swaps_with_its_label() -> None:
    factors = ["vqgan", "perceptor_set", "scenes"]
    got = analyse(prompt_table(), "exp", resamples=200, factors=factors)
    result = got["measures"]["contrast"]
    assert got["factors"] == factors
    assert got["shares"] == [*factors, "interaction", "other_interactions", "residual"]
    assert result["scenes"] > 0.97 and 0 < result["vqgan"] < 0.03 and result["reading"].endswith("% scenes")
    assert_shares(result, got["shares"])
    assert set(result["means"]["scenes"]) == set(PROMPTS) and result["low"]["scenes"] > 0.9
    swapped = analyse(prompt_table(swap=True), "exp", resamples=200, factors=factors)["measures"]["contrast"]
    assert swapped["vqgan"] == pytest.approx(result["perceptor_set"], abs=1e-9)
    assert swapped["perceptor_set"] == pytest.approx(result["vqgan"], abs=1e-9)
    assert swapped["scenes"] == pytest.approx(result["scenes"], abs=1e-9)


def test_a_factor_with_one_level_has_no_share_and_says_so() -> None:
    table = prompt_table()
    table = table[table["scenes"] == "forest"]
    got = analyse(table, "exp", resamples=0, factors=["vqgan", "perceptor_set", "scenes"])
    assert got["measures"]["contrast"]["scenes"] == 0
    assert "one scenes (forest): its share is 0 by construction" in got["notes"]


def test_without_replicates_every_interaction_is_pooled_into_the_residual() -> None:
    table = prompt_table()
    table = table[table["seed"] == 1]
    result = analyse(table, "exp", resamples=0, factors=["vqgan", "perceptor_set", "scenes"])["measures"]["contrast"]
    assert result["interaction"] is None and result["other_interactions"] is None
    assert result["scenes"] > 0.98


def test_the_pytti_stability_family_is_read_with_its_three_factors(tmp_path: Path) -> None:
    """pytti's second family, `exp_video_basic_stability_modes_ref-<bool>_dsw-<w>_ssw-<w>`: its
    varied settings become factors by their setting names."""
    names = [f"exp_video_basic_stability_modes_ref-{ref}_dsw-{dsw}_ssw-{ssw}"
             for ref in ("True", "False") for dsw in ("0.0", "1.0") for ssw in ("0.0", "1.0")]
    for i, name in enumerate(names):
        make_pytti_run(tmp_path / "study", name, "sflckr", ["ViT-B32"], cell=i, n_frames=2)
    runs = find_runs(tmp_path)
    assert dict(runs[0].varied).keys() == {"reencode_each_frame", "direct_stabilization_weight",
                                           "semantic_stabilization_weight"}
    got = effects_of_runs(runs, "exp_video_basic_stability_modes", resamples=0)
    assert got["factors"] == ["vqgan", "perceptor_set", "reencode_each_frame", "direct_stabilization_weight",
                              "semantic_stabilization_weight"]
    assert (got["cells"], got["runs"], got["excluded"]) == (8, 8, [])
    assert set(got["measures"]["contrast"]["means"]["direct_stabilization_weight"]) == {"0.0", "1.0"}
