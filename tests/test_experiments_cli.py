"""The experiments CLIs as real processes: bad input ends in one `error:` line naming the file or
folder and what to do, exit 2 for bad input, 1 otherwise, never a traceback."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import demo

REPO = Path(__file__).resolve().parent.parent


def one_error(cwd: Path, *args: str, code: int = 1) -> str:
    """Run `python -m ARGS` in `cwd`; assert it failed with exit `code` (2: bad input, 1: the rest)
    and exactly one `error:` line; return it."""
    result = subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("module, args", [("experiments.grid", ["--params", "missing.yaml"]),
                                          ("experiments.run_cell", ["tiny", "tiny-vit", "--params", "missing.yaml"]),
                                          ("experiments.fetch_models", ["missing.yaml"]),
                                          ("experiments.judge", ["missing.yaml"]),
                                          ("experiments.imagestats", ["missing.yaml"]),
                                          ("experiments.effects", ["--grid", "missing.yaml"])])
def test_a_missing_params_file_is_named(tmp_path: Path, module: str, args: list[str]) -> None:
    assert one_error(tmp_path, module, *args, code=2) == (
        "error: missing.yaml: no such file; run from the repository root (where dvc.yaml is) or name the params file")


@pytest.mark.parametrize("stage", ["experiments.judge", "experiments.imagestats"])
def test_scoring_names_a_missing_cell_and_the_stage_that_makes_it(tmp_path: Path, stage: str) -> None:
    demo.write_params(tmp_path / "params.yaml", demo.demo_params())
    line = one_error(tmp_path, stage)
    assert line == ("error: cell demo_untrained__tiny_tiny-vit: no folder experiments/images_out/"
                    "demo_untrained__tiny_tiny-vit; run `dvc repro cell@tiny-tiny-vit` (or `dvc pull "
                    "cell@tiny-tiny-vit` where it was pushed) to make it")


def test_demo_names_a_target_it_cannot_make(tmp_path: Path) -> None:
    target = tmp_path / "a-file"
    target.write_text("")
    line = one_error(tmp_path, "experiments.demo", str(target))
    assert line == f"error: {target} is a file, not a folder; pick a new folder"
    line = one_error(tmp_path, "experiments.demo", str(target / "demo"))
    assert line.startswith(f"error: cannot make the demo repository {target / 'demo'}: ") and "pick a folder" in line


def test_cluster_outside_a_checkout(tmp_path: Path) -> None:
    line = one_error(tmp_path, "experiments.cluster", "--remote", "x")
    assert line == (f"error: {tmp_path}: not inside a git checkout; run from your checkout of the project "
                    "(a git + DVC repository)")


def test_params_that_are_not_yaml_are_named_with_the_line(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("experiment: demo\ngrid: [1\n")
    line = one_error(tmp_path, "experiments.grid", code=2)
    assert line.startswith("error: params.yaml is not valid YAML: ") and "at line 3, column 1; fix it there" in line


def test_offline_fetch_says_once_what_is_missing_and_leaves_no_empty_folder(tmp_path: Path) -> None:
    """A VQGAN and a perceptor that cannot be downloaded: one table (model, file, where to put it),
    why, the two ways forward once each, and the model cache as it was (no empty folders)."""
    import yaml

    models = tmp_path / "models.yaml"
    models.write_text(yaml.safe_dump({"vqgans": {"offline-vq": {
        "config_urls": ["http://127.0.0.1:9/offline.yaml"], "checkpoint_urls": ["http://127.0.0.1:9/offline.ckpt"]}}}))
    params = demo.demo_params()
    params["grid"]["vqgan_models"] = {"tiny": "tiny", "offline-vq": "offline-vq"}
    params["grid"]["perceptors"] = {"tiny-vit": "tiny-vit", "RN50": "RN50:openai"}
    demo.write_params(tmp_path / "params.yaml", params)
    cache = tmp_path / "cache"
    result = subprocess.run([sys.executable, "-m", "experiments.fetch_models"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300, env={**os.environ, "VQCLIP_CACHE": str(cache),
                                                         "VQCLIP_MODELS": str(models)})
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == "error: 2 of 4 models could not be fetched, so no cell was started."
    assert lines[1].startswith("Not downloaded (") and "127.0.0.1" in lines[1]
    assert lines[2].split() == ["model", "file", "where", "to", "put", "it"]
    assert lines[3].split() == ["VQGAN", "offline-vq", "config.yaml", str(cache / "vqgan/offline-vq/config.yaml")]
    assert lines[4].split() == ["last.ckpt", str(cache / "vqgan/offline-vq/last.ckpt")]
    assert lines[5].split()[:3] == ["perceptor", "RN50:openai", "weights"]
    assert lines[6:9] == [f"  {models}:", "    perceptors:", "      'RN50:openai': {file: /path/to/weights}"]
    assert lines[9] == "Two ways forward:" and lines[12] == "       python -m engine fetch offline-vq RN50:openai"
    assert result.stderr.count("python -m experiments.demo /tmp/demo-grid") == 1 and len(lines) == 14
    assert sorted(p.name for p in cache.iterdir()) == ["models.lock.json", "tiny"]  # the tiny models only
    assert all(any(d.iterdir()) for d in cache.rglob("*") if d.is_dir())
