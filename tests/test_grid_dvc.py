"""The grid pipeline under real DVC, in temporary git repositories with the demo grid.

One module-scoped demo repository is run once (4 cells); the tests that edit params.yaml first
put back the demo grid, which DVC restores from its run cache without running a cell.
"""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from experiments import demo

pytestmark = pytest.mark.dvc

CELLS = ["cell@tiny-tiny-vit", "cell@tiny-tiny-rn", "cell@tiny-gumbel-tiny-vit", "cell@tiny-gumbel-tiny-rn"]
SCORING = ["judge", "imagestats", "effects", "summary"]  # the stages after the cells, by cost
OUT = Path("experiments/images_out")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"  # screenshots (README: Tests)


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_TERMINAL_PROMPT": "0", **extra}


def sh(cwd: Path, *args: str, check: bool = True, extra_env: dict | None = None) -> str:
    """Run a command; return stdout + stderr (raise with them on failure when `check`)."""
    result = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, env=env(**(extra_env or {})),
                            timeout=570)
    output = result.stdout + result.stderr
    if check and result.returncode:
        raise AssertionError(f"{' '.join(args)} exited {result.returncode}:\n{output}")
    return output


def dvc(cwd: Path, *args: str, **kwargs) -> str:
    return sh(cwd, "dvc", *args, **kwargs)


def ran(output: str) -> list[str]:
    """Stages DVC ran (executed their command)."""
    return re.findall(r"Running stage '([^']+)'", output)


def restored(output: str) -> list[str]:
    """Stages DVC restored from its run cache instead of running them."""
    return re.findall(r"Stage '([^']+)' is cached - skipping run", output)


def unchanged(output: str) -> list[str]:
    return re.findall(r"Stage '([^']+)' didn't change, skipping", output)


def baseline_params() -> dict:
    return demo.demo_params()


def write_params(repo: Path, params: dict) -> None:
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def cell_dirs(repo: Path) -> list[Path]:
    return sorted(p for p in (repo / OUT).iterdir() if p.is_dir())


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Each file's (inode, mtime): unchanged when nothing rewrote or re-checked-out the folder."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.iterdir()}


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def commit(repo: Path, message: str) -> None:
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-q", "--allow-empty", "-m", message)


def reset_to_baseline(repo: Path) -> None:
    """The demo grid again (dvc.yaml's cell stages too), with no folder of other cells left over;
    no cell may need running."""
    write_params(repo, baseline_params())
    sh(repo, sys.executable, "-m", "experiments.grid")
    keep = {f"demo_untrained__{v}_{p}" for v in ("tiny", "tiny-gumbel") for p in ("tiny-vit", "tiny-rn")}
    for folder in cell_dirs(repo):
        if folder.name not in keep:
            shutil.rmtree(folder)
    output = dvc(repo, "repro")
    assert not [s for s in ran(output) if s.startswith("cell@")], output


@pytest.fixture(scope="module")
def demo_repo(tmp_path_factory: pytest.TempPathFactory, model_cache: Path):
    """The demo grid repository after one `dvc repro`, committed; yields (repo, repro output)."""
    repo = demo.create_demo(tmp_path_factory.mktemp("grid") / "demo")
    output = dvc(repo, "repro")
    commit(repo, "demo grid results")
    return repo, output


def test_repro_runs_fetch_then_every_cell_then_scoring(demo_repo) -> None:
    repo, output = demo_repo
    assert ran(output) == ["fetch_models", *CELLS, *SCORING]
    names = [p.name for p in cell_dirs(repo)]
    assert names == sorted(f"demo_untrained__{v}_{p}" for v in ("tiny", "tiny-gumbel") for p in ("tiny-vit", "tiny-rn"))
    for name in names:
        folder = repo / OUT / name
        assert sorted(p.name for p in folder.glob("*.png")) == [f"{name}_{n}.png" for n in (1, 2, 3, 4)]
        sidecar = json.loads((folder / f"{name}_settings.json").read_text())
        assert sidecar["settings"]["file_namespace"] == name and sidecar["settings"]["seed"] == 12345
        assert sidecar["settings"]["out_dir"] == str(OUT) and sidecar["models"]["vqgan"]["untrained"]
        assert (folder / "losses.csv").read_text().startswith("step,scene,total,")
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["complete"] and metrics["frames"] == 4 and metrics["steps"] == 20
        assert json.loads((repo / "experiments/metrics" / f"{name}.json").read_text()) == metrics
        assert (folder / f"{name}.mp4").stat().st_size > 0
    assert not any((repo / "experiments/.partial").glob("*")), "finished cells leave no partial run"
    stamps = sorted(p.name for p in (repo / "experiments/model_stamps").iterdir())
    assert stamps == ["perceptors-tiny-rn.json", "perceptors-tiny-vit.json", "vqgan-tiny-gumbel.json", "vqgan-tiny.json"]
    assert sh(repo, "git", "status", "--porcelain") == "", "everything the grid writes is tracked or ignored"


def test_second_repro_runs_nothing(demo_repo) -> None:
    repo, _ = demo_repo
    output = dvc(repo, "repro")
    assert ran(output) == [] and restored(output) == [], output
    assert set(unchanged(output)) == {"fetch_models", *CELLS, *SCORING}
    assert "up to date" in dvc(repo, "status")


@pytest.mark.parametrize("code, stages", [
    ("experiments/grid/checks.py", {"fetch_models", *SCORING}),  # validation: no cell
    ("engine/runfolder/names.py", {"judge", "imagestats"}),  # how the scoring reads a run folder
    ("experiments/grid/model.py", {"fetch_models", *CELLS, *SCORING}),  # what a cell runs
    ("experiments/judge.py", {"judge"}),  # the CLIP judges: nothing else
    ("experiments/imagestats.py", {"imagestats"}),  # the pixels: nothing else
    ("experiments/effects/anova.py", {"effects"}),  # the analysis: no judge, no pixels
    ("experiments/scorefiles.py", set(SCORING)),  # the files they share
])
def test_an_edit_to_the_code_a_stage_imports_makes_it_pending(demo_repo, code: str, stages: set[str]) -> None:
    repo, _ = demo_repo
    path = repo / code
    text = path.read_text()
    path.write_text(text + "# an edit\n")
    try:
        assert set(json.loads(dvc(repo, "status", "--json"))) == stages
    finally:
        path.write_text(text)
    assert "up to date" in dvc(repo, "status")


def test_bias_matrix_and_image_statistics(demo_repo) -> None:
    repo, _ = demo_repo
    scores = repo / "experiments/scores"
    rows = read_csv(scores / "bias_matrix.csv")
    assert list(rows[0]) == ["cell", "vqgan", "perceptor_set", "seed", "judge", "similarity", "z", "generator"]
    pairs = [(r["vqgan"], r["perceptor_set"], r["judge"]) for r in rows]
    expected = {(v, g, j) for v in ("tiny", "tiny-gumbel") for g in ("tiny-vit", "tiny-rn") for j in ("tiny-vit", "tiny-rn")}
    assert len(pairs) == len(set(pairs)) == 8 and set(pairs) == expected  # one value per (perceptor set, judge) per VQGAN
    assert all(-1 <= float(r["similarity"]) <= 1 for r in rows)
    bias = json.loads((scores / "bias.json").read_text())
    assert {(v, g, j) for v in bias for g in bias[v] for j in bias[v][g]} == expected
    assert all(bias[r["vqgan"]][r["perceptor_set"]][r["judge"]] == pytest.approx(float(r["similarity"]), abs=1e-5) for r in rows)

    stats = read_csv(scores / "image_stats.csv")
    assert list(stats[0]) == ["cell", "vqgan", "perceptor_set", "seed", "frame", "step", "colourfulness", "saturation",
                              "contrast", "edge_density", "spectral_slope", "grid_artifact", "cielab_a", "cielab_b",
                              "palette", "generator"]
    assert len(stats) == 4 * 4
    assert sorted({int(r["step"]) for r in stats}) == [5, 10, 15, 20]
    assert all(re.fullmatch(r"#[0-9a-f]{6}(;#[0-9a-f]{6}){0,4}", r["palette"]) for r in stats)

    plots = json.loads(dvc(repo, "plots", "show", "--json"))["data"]
    assert set(plots) == {"bias_matrix", "image_stats"}
    heatmap = plots["bias_matrix"][0]["content"]
    assert len(heatmap["data"]["values"]) == 8 and heatmap["spec"]["layer"][0]["mark"] == "rect"
    assert len(plots["image_stats"][0]["content"]["data"]["values"]) == 16 * 4  # frames × statistics


def test_dvc_metrics_and_exp_show_the_summary_and_the_rest_one_file_away(demo_repo) -> None:
    """The summary stage's files are the only DVC metrics: `dvc metrics show` is a row per measure
    that fits 120 columns; every other score file and each cell's metrics show by name."""
    repo, _ = demo_repo
    files = next(iter(json.loads(dvc(repo, "metrics", "show", "--json")).values()))["data"]  # by revision
    effects = json.loads((repo / "experiments/scores/effects.json").read_text())
    assert set(files) == {f"experiments/summary/{m.replace(':', '-')}.json" for m in effects["measures"]}
    preference = json.loads((repo / "experiments/scores/self_preference.json").read_text())["judges"]
    for judge in ("tiny-vit", "tiny-rn"):
        row = files[f"experiments/summary/similarity-{judge}.json"]["data"]
        assert row["self_preference"] == pytest.approx(preference[judge]["mean"], abs=1e-3)
        assert row["vqgan"] == pytest.approx(effects["measures"][f"similarity:{judge}"]["vqgan"], abs=1e-3)
    table = dvc(repo, "metrics", "show").splitlines()
    assert table[0].split() == ["Path", "cmmd", "perceptor_set", "residual", "self_preference", "vqgan"]
    assert len(table) == 1 + len(files) and max(map(len, table)) <= 120, table
    header = dvc(repo, "exp", "show", "--csv").splitlines()[0].split(",")  # metrics, then params, then deps
    assert "experiments/summary/similarity-tiny-vit.json:self_preference" in header
    assert not [c for c in header if ".json:" in c and not c.startswith("experiments/summary/")]
    assert not [c for c in header if c.startswith(("experiments/metrics", "judges.", "measures."))]
    for name in ("experiments/scores/self_preference.json", "experiments/metrics/demo_untrained__tiny_tiny-vit.json"):
        assert next(iter(json.loads(dvc(repo, "metrics", "show", "--json", name)).values()))["data"][name]["data"]


@pytest.mark.browser
def test_plots_show_renders_offline_in_chromium(demo_repo, chromium_browser) -> None:
    """`dvc plots show` writes a page that carries its Vega libraries: with every request that is
    not a local file refused, both plots draw (no CDN, no `vegaEmbed is not defined`)."""
    repo, _ = demo_repo
    dvc(repo, "plots", "show")
    page = chromium_browser.new_page(viewport={"width": 1400, "height": 1000})
    refused, errors = [], []
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:")
               else (refused.append(route.request.url), route.abort()))
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type in ("error", "warning") else None)
    page.goto((repo / "dvc_plots/index.html").as_uri())
    page.locator(".vega-embed svg.marks").nth(1).wait_for(timeout=30_000)  # vega-embed draws SVG
    assert page.locator(".vega-embed svg.marks").count() == 2
    assert page.locator("#bias_matrix .mark-rect path").count() >= 8  # the heatmap's 8 cells
    assert page.locator("#image_stats .mark-line path").count() == 4 * 4  # a line per cell and statistic
    assert refused == [] and errors == []
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dvc-plots-show-offline.png"), full_page=True)
    page.close()


def test_push_then_pull_into_a_fresh_clone_recomputes_nothing(demo_repo, tmp_path: Path) -> None:
    repo, _ = demo_repo
    remote = tmp_path / "remote"
    dvc(repo, "remote", "add", "-f", "-d", "local", str(remote))
    commit(repo, "local remote")
    output = dvc(repo, "push", "--run-cache")
    assert "pushed" in output or "up to date" in output
    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(repo), str(clone))
    assert not any(p.is_dir() for p in (clone / OUT).iterdir()), "git alone holds no cell"
    # A machine without the models: any stage that ran would have to make them again.
    empty_cache = {"VQCLIP_CACHE": str(tmp_path / "empty-cache")}
    dvc(clone, "pull", "--run-cache", extra_env=empty_cache)
    for folder in cell_dirs(repo):
        copy = clone / OUT / folder.name
        assert sorted(p.name for p in copy.iterdir()) == sorted(p.name for p in folder.iterdir())
        assert all((copy / p.name).read_bytes() == p.read_bytes() for p in folder.iterdir())
    assert "up to date" in dvc(clone, "status", extra_env=empty_cache)
    output = dvc(clone, "repro", extra_env=empty_cache)
    assert ran(output) == [] and restored(output) == [], output
    assert not (tmp_path / "empty-cache").exists(), "no model was needed"


def test_removing_a_vqgan_and_replacing_a_perceptor_entry_runs_exactly_the_new_cells(demo_repo) -> None:
    """One edit drops the VQGAN tiny-gumbel and replaces the entry tiny-rn with tiny-vit_tiny-rn: only
    the new entry's cell for the remaining VQGAN runs; the kept cell is untouched, its lock entry
    unchanged; the dropped cells' folders are pointed out."""
    repo, _ = demo_repo
    reset_to_baseline(repo)
    kept = snapshot(repo / OUT / "demo_untrained__tiny_tiny-vit")
    lock_before = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    params = baseline_params()
    del params["grid"]["vqgan_models"]["tiny-gumbel"]
    params["grid"]["perceptors"] = {"tiny-vit": "tiny-vit", "tiny-vit_tiny-rn": "tiny-vit+tiny-rn"}
    write_params(repo, params)
    output = dvc(repo, "repro")
    assert ran(output) == ["fetch_models", "cell@tiny-tiny-vit_tiny-rn", *SCORING], output
    assert restored(output) == [] and unchanged(output) == ["cell@tiny-tiny-vit"], output
    assert snapshot(repo / OUT / "demo_untrained__tiny_tiny-vit") == kept, "the kept cell was touched"
    stages = dvc(repo, "stage", "list", "--name-only").split()
    assert [s for s in stages if s.startswith("cell@")] == ["cell@tiny-tiny-vit", "cell@tiny-tiny-vit_tiny-rn"]
    assert yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["cell@tiny-tiny-vit"] == lock_before[
        "cell@tiny-tiny-vit"]
    sidecar = json.loads((repo / OUT / "demo_untrained__tiny_tiny-vit_tiny-rn" /
                          "demo_untrained__tiny_tiny-vit_tiny-rn_settings.json").read_text())
    assert sidecar["settings"]["perceptors"] == ["tiny-vit", "tiny-rn"]
    rows = read_csv(repo / "experiments/scores/bias_matrix.csv")
    assert {(r["vqgan"], r["perceptor_set"], r["judge"]) for r in rows} == {
        ("tiny", g, j) for g in ("tiny-vit", "tiny-vit+tiny-rn") for j in ("tiny-vit", "tiny-rn")}
    assert "not in the grid any more" in output  # the left-over folders are pointed out


def _bad_repo(tmp_path: Path, params: dict) -> Path:
    return demo.create_demo(tmp_path / "bad", params=params)


def test_unknown_model_fails_before_any_cell_runs(tmp_path: Path) -> None:
    params = baseline_params()
    params["grid"]["vqgan_models"] = {"tiny": "tiny", "tiny-gumbl": "tiny-gumbl"}
    repo = _bad_repo(tmp_path, params)
    output = dvc(repo, "repro", check=False)
    assert ran(output) == ["fetch_models"], output
    assert "failed to reproduce 'fetch_models'" in output
    assert "grid.vqgan_models.tiny-gumbl: unknown VQGAN model 'tiny-gumbl'. Closest: tiny-gumbel" in output
    assert not (repo / OUT).exists() and not (repo / "experiments/.partial").exists()


def test_offline_fetch_fails_before_any_cell_with_the_demo_pointer(tmp_path: Path, model_cache: Path) -> None:
    models = tmp_path / "models.yaml"
    models.write_text(yaml.safe_dump({"vqgans": {"offline-vq": {
        "config_urls": ["http://127.0.0.1:9/offline.yaml"], "checkpoint_urls": ["http://127.0.0.1:9/offline.ckpt"]}}}))
    params = baseline_params()
    params["grid"]["vqgan_models"] = {"tiny": "tiny", "offline-vq": "offline-vq"}
    repo = _bad_repo(tmp_path, params)
    output = dvc(repo, "repro", check=False, extra_env={"VQCLIP_MODELS": str(models)})
    assert ran(output) == ["fetch_models"], output
    assert "1 of 4 models could not be fetched, so no cell was started" in output
    assert re.search(r"VQGAN offline-vq +config.yaml +\S+/vqgan/offline-vq/config.yaml", output), output
    assert output.count("python -m experiments.demo") == 1  # said once
    assert not (repo / OUT).exists()


def test_study_grid_resolves_in_dvc(tmp_path: Path) -> None:
    """The real study's params: DVC resolves its 40 cells between fetch_models and scoring, and a
    further seed adds a replicate stage of each (nothing runs)."""
    from experiments.grid import read_params

    params = read_params(Path(__file__).resolve().parent.parent / "params.yaml")
    repo = demo.create_demo(tmp_path / "study", params=params)
    stages = dvc(repo, "stage", "list", "--name-only").split()
    cells = [s for s in stages if s.startswith("cell@")]
    assert stages == ["fetch_models", *cells, *SCORING] and len(cells) == 40
    assert "cell@imagenet-ViT-B32_RN50" in cells and "cell@sflckr-RN50_RN101" in cells
    edges = set(re.findall(r'"([^"]+)" -> "([^"]+)"', dvc(repo, "dag", "--dot")))
    assert edges == ({("fetch_models", c) for c in cells} | {(c, s) for c in cells for s in SCORING[:2]}
                     | {(s, "effects") for s in SCORING[:2]} | {("judge", "summary"), ("effects", "summary")})
    status = json.loads(dvc(repo, "status", "--json"))  # every cell's params resolve
    assert set(status) == set(stages)
    params["grid"]["seeds"] = [7]
    write_params(repo, params)
    replicates = [s for s in dvc(repo, "stage", "list", "--name-only").split() if s.startswith("replicate@")]
    assert replicates == [f"replicate@{c.removeprefix('cell@')}-7" for c in cells]


def test_two_seeds_make_one_folder_each_and_the_init_image_is_a_dependency(tmp_path: Path) -> None:
    """settings.seed and one seed of grid.seeds, started from an init image in experiments/inputs:
    one folder per seed; replacing the image re-runs the cells."""
    from PIL import Image

    params = baseline_params()
    params["grid"] = {"vqgan_models": {"tiny": "tiny"}, "perceptors": {"tiny-vit": "tiny-vit"}, "seeds": [7]}
    params["settings"].update(steps_per_scene=3, steps_per_frame=3, save_every=3, interpolation_steps=0,
                              init_image="experiments/inputs/start.png")
    repo = demo.create_demo(tmp_path / "seeds", params=params)
    image = repo / "experiments/inputs/start.png"
    Image.new("RGB", (64, 32), (200, 40, 40)).save(image)
    commit(repo, "init image")
    cells = ["cell@tiny-tiny-vit", "replicate@tiny-tiny-vit-7"]
    output = dvc(repo, "repro", *cells)
    assert ran(output)[0] == "fetch_models" and sorted(ran(output)[1:]) == cells, output  # the cells in any order
    names = ["demo_untrained__tiny_tiny-vit", "demo_untrained__tiny_tiny-vit__seed-7"]
    assert [p.name for p in cell_dirs(repo)] == names
    frames, losses = {}, {}
    for name, seed in zip(names, (12345, 7)):
        sidecar = json.loads((repo / OUT / name / f"{name}_settings.json").read_text())
        assert sidecar["settings"]["seed"] == seed and sidecar["settings"]["file_namespace"] == name
        assert sidecar["settings"]["init_image"] == "experiments/inputs/start.png"
        assert json.loads((repo / "experiments/metrics" / f"{name}.json").read_text())["frames"] == 2
        frames[name] = (repo / OUT / name / f"{name}_2.png").read_bytes()
        losses[name] = (repo / OUT / name / "losses.csv").read_text()
    assert losses[names[0]] != losses[names[1]], "the seeds drew the same cutouts"

    Image.new("RGB", (64, 32), (40, 40, 200)).save(image)
    status = json.loads(dvc(repo, "status", "--json"))
    assert {s for s in cells if {"changed deps": {"experiments/inputs": "modified"}} in status.get(s, [])} == set(cells)
    output = dvc(repo, "repro", cells[0])
    assert ran(output) == [cells[0]], output
    assert (repo / OUT / names[0] / f"{names[0]}_2.png").read_bytes() != frames[names[0]]


def test_vary_runs_a_cell_per_level_and_then_only_what_a_level_changes(demo_repo) -> None:
    """grid.vary with two prompts over the demo's 2 VQGANs and one perceptor set: 4 cells; adding
    a third prompt and dropping one runs the new prompt's 2 cells and no other; a second repro
    runs nothing. dvc.yaml's cell stages follow: the first repro after vary appears rewrites them
    and stops, the next runs."""
    repo, _ = demo_repo
    params = baseline_params()
    params["grid"]["perceptors"] = {"tiny-vit": "tiny-vit"}  # one judge and half the cells: the axis is under test
    params["grid"]["vary"] = {"scenes": {"apple": "a red apple", "sky": "a blue sky"}}
    stages = [f"cell@{v}-tiny-vit-{level}" for v in ("tiny", "tiny-gumbel") for level in ("apple", "sky", "tree")]
    try:
        write_params(repo, params)
        output = dvc(repo, "repro", check=False)
        assert "cell stages did not vary what grid.vary varies (scenes); they are rewritten now" in output
        assert ran(output) == ["fetch_models"], output
        output = dvc(repo, "repro")
        assert sorted(s for s in ran(output) if s.startswith("cell@")) == sorted(s for s in stages if "tree" not in s)
        assert ran(output)[-4:] == SCORING
        sidecar = json.loads((repo / OUT / "demo_untrained__tiny_tiny-vit__scenes-sky" /
                              "demo_untrained__tiny_tiny-vit__scenes-sky_settings.json").read_text())
        assert sidecar["settings"]["scenes"] == "a blue sky"
        effects = json.loads((repo / "experiments/scores/effects.json").read_text())
        assert effects["factors"] == ["vqgan", "perceptor_set", "scenes"] and effects["cells"] == 4

        params["grid"]["vary"]["scenes"]["tree"] = "a green tree"  # one level in, one out, in one edit:
        del params["grid"]["vary"]["scenes"]["sky"]  # only the new level's cells run, no other cell
        write_params(repo, params)
        output = dvc(repo, "repro")
        assert sorted(s for s in ran(output) if s.startswith("cell@")) == sorted(s for s in stages if "tree" in s)
        judged = {r["cell"] for r in read_csv(repo / "experiments/scores/bias_matrix.csv")}
        assert len(judged) == 4 and not [c for c in judged if "sky" in c]
        assert ran(dvc(repo, "repro")) == []
    finally:
        reset_to_baseline(repo)
    assert "cell stages" in (repo / "dvc.yaml").read_text() and "grid.vary.scenes" not in (repo / "dvc.yaml").read_text()
