"""The `compile` setting (issue 29): compiled runs of the tiny models are reproducible and
resumable and say so in the sidecar; a compiler failure falls back to eager; `auto` leaves short
runs eager; bench prints compiled beside eager.

Every compiled run here has the same shapes, so they share one compilation: inductor's cache lives
in the session's model cache (`<VQCLIP_CACHE>/inductor`, conftest.py), subprocesses included; the
first compile of the session takes about a minute on 2 cores, the others seconds.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from engine.bench import bench, count_flops, report
from engine.cache import cache_dir
from engine import runfolder
from engine.compiled import (AUTO_MIN_PFLOP, CACHE_ENV, bmm_of_one_matrix, cache_folder, compile_options,
                             convolution_backward_of_patches, convolution_of_patches, decide, inductor, step_flops)
from engine.factory import load_perceptor, load_vqgan
from engine.loop import execute
from engine.settings import SettingsError, load_config
from engine.step import build_guide, start_latent, step_loss

REPO = Path(__file__).resolve().parent.parent
TINY = ["vqgan_model=tiny", "perceptors=tiny-vit", "width=32", "height=16", "cutouts=4", "seed=3",
        "scenes=a red apple", "save_every=5", "steps_per_frame=100", "file_namespace=run"]


def tiny_run(out_dir: Path, *extra: str) -> Path:
    return execute(load_config(None, [*TINY, f"out_dir={out_dir}", *extra]), quiet=True)


def cli_run(out_dir: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "engine", "run", "-q", *TINY, f"out_dir={out_dir}", *extra],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


def frames(folder: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(folder.glob("run_*.png"), key=lambda p: int(p.stem.split("_")[-1]))]


def read_json(folder: Path, name: str) -> dict:
    return json.loads((folder / name).read_text())


def test_a_compiled_run_is_byte_identical_on_rerun_in_another_process_and_recorded(tmp_path: Path) -> None:
    first = tiny_run(tmp_path / "a", "compile=on", "steps_per_scene=10")
    rerun = cli_run(tmp_path / "b", "compile=on", "steps_per_scene=10")
    _, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0 and "warning" not in err, err
    assert len(frames(first)) == 2 and frames(first) == frames(tmp_path / "b" / "run")
    record = read_json(first, "run_settings.json")["compiled"]
    assert record["step"] is True and record["why"] == "compile=on" and record["fallback"] is None
    assert record["seconds"] > 0 and not record["cuda_graphs"]  # CPU: no CUDA graphs
    assert read_json(tmp_path / "b" / "run", "run_settings.json")["compiled"]["from_cache"]  # compiled once
    assert read_json(first, "metrics.json")["compiled"]["step"] is True
    eager = tiny_run(tmp_path / "c", "compile=off", "steps_per_scene=10")
    assert read_json(eager, "run_settings.json")["compiled"] == {
        "step": False, "why": "compile=off", "cuda_graphs": False, "fallback": None, "seconds": None,
        "from_cache": False}
    # the same step, up to the last bits: every loss of the 10 steps within 1e-5
    compiled_rows, eager_rows = (runfolder.read_run(f).losses for f in (first, eager))
    assert compiled_rows.keys() == eager_rows.keys() and compiled_rows["step"] == list(range(1, 11))
    for key in compiled_rows:
        assert compiled_rows[key] == pytest.approx(eager_rows[key], rel=1e-5, abs=1e-6), key


def test_the_backends_decompositions_equal_the_ops_they_replace() -> None:
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randn(7, 5, 16, generator=gen).transpose(0, 1)  # (L, N, E) view of (N, L, E), as in attention
    weight = torch.randn(16, 12, generator=gen)
    torch.testing.assert_close(bmm_of_one_matrix(tokens, weight.expand(5, 16, 12)),
                               torch.bmm(tokens, weight.expand(5, 16, 12)))
    assert bmm_of_one_matrix(tokens, torch.randn(5, 16, 12)) is NotImplemented  # not one matrix
    images = torch.randn(3, 3, 64, 96, generator=gen)
    kernel, bias, grad = torch.randn(8, 3, 32, 32), torch.randn(8), torch.randn(3, 8, 2, 3, generator=gen)
    patch = ([32, 32], [0, 0], [1, 1], False, [0, 0], 1)
    close = {"rtol": 1e-5, "atol": 1e-3}  # sums of 3072 products of about 100: fp32's last bits differ
    torch.testing.assert_close(convolution_of_patches(images, kernel, bias, *patch),
                               torch.nn.functional.conv2d(images, kernel, bias, stride=32), **close)
    expected = torch.autograd.grad(torch.nn.functional.conv2d(images.requires_grad_(), kernel, stride=32), images, grad)[0]
    got, no_weight, no_bias = convolution_backward_of_patches(grad, images, kernel, [8], *patch, [True, False, False])
    torch.testing.assert_close(got, expected, **close)
    assert no_weight is None and no_bias is None
    three = torch.randn(8, 3, 3, 3)
    assert convolution_of_patches(images, three, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1) is NotImplemented
    assert convolution_backward_of_patches(grad, images, kernel, [8], *patch, [True, True, False]) is NotImplemented


def test_a_killed_compiled_run_resumes_identical_and_may_resume_eager(tmp_path: Path) -> None:
    steps = ["compile=on", "steps_per_scene=60"]
    reference = tiny_run(tmp_path / "ref", *steps)
    proc = cli_run(tmp_path / "cut", *steps)
    folder = tmp_path / "cut" / "run"
    deadline = time.monotonic() + 300
    while not (folder / "resume.pt").exists() or len(list(folder.glob("run_*.png"))) < 3:
        assert proc.poll() is None and time.monotonic() < deadline, f"ended first: {proc.stderr.read()}"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not (folder / "metrics.json").exists(), "the run finished before it was killed"
    shutil.copytree(folder, tmp_path / "eager" / "run")

    tiny_run(tmp_path / "cut", *steps)
    metrics = read_json(folder, "metrics.json")
    assert metrics["resumed_from_step"] and metrics["compiled"]["step"] is True
    assert frames(folder) == frames(reference)
    assert (folder / "losses.csv").read_text() == (reference / "losses.csv").read_text()

    # compile is not a result setting (docs/engine.md): the same folder may go on eager
    resumed = tiny_run(tmp_path / "eager", "compile=off", "steps_per_scene=60")
    assert read_json(resumed, "metrics.json")["resumed_from_step"]
    assert read_json(resumed, "metrics.json")["compiled"]["step"] is False
    assert read_json(resumed, "run_settings.json")["compiled"]["step"] is True  # how its first process ran


def test_a_compiler_failure_falls_back_to_eager_with_one_warning_and_completes(tmp_path: Path) -> None:
    # A machine without a working C++ compiler: inductor's CPU kernels cannot be built. A fresh
    # inductor cache, so that nothing compiled earlier is loaded instead.
    broken = {"CXX": "/bin/false", CACHE_ENV: str(tmp_path / "fresh-inductor-cache")}
    proc = cli_run(tmp_path, "compile=on", "steps_per_scene=10", env=broken)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    warnings = [line for line in err.splitlines() if "warning" in line.lower()]
    assert len(warnings) == 1 and warnings[0].startswith("warning: torch.compile failed ("), err
    assert warnings[0].endswith("); the step runs eager")
    record = read_json(tmp_path / "run", "run_settings.json")["compiled"]
    assert record["step"] is False and record["fallback"] and record["fallback"] in warnings[0]
    assert read_json(tmp_path / "run", "metrics.json")["frames"] == 2
    assert frames(tmp_path / "run") == frames(tiny_run(tmp_path / "eager", "compile=off", "steps_per_scene=10"))


def test_auto_does_not_compile_a_20_step_run(tmp_path: Path) -> None:
    folder = tiny_run(tmp_path, "steps_per_scene=20")
    assert load_config(None, TINY).compile == "auto"  # the default
    assert read_json(folder, "run_settings.json")["compiled"] == {
        "step": False, "why": "auto: 20 steps < 100", "cuda_graphs": False, "fallback": None, "seconds": None,
        "from_cache": False}


def test_auto_weighs_the_runs_flops_counted_without_computing() -> None:
    guide = build_guide(load_config(None, [*TINY, "steps_per_scene=200"]), load_vqgan("tiny"), [load_perceptor("tiny-vit")])
    counted = step_flops(guide)

    def step() -> None:
        total, _ = step_loss(guide, start_latent(guide, torch.Generator().manual_seed(0)).z, 0, torch.Generator(), None)
        total.backward()
    assert counted == count_flops(step) > 0  # the fake-tensor count is torch's counter on a real step
    wanted, why = decide(guide, torch.device("cpu"))
    assert not wanted and why == f"auto: 200 steps, {200 * counted / 1e15:.3g} PFLOP < {AUTO_MIN_PFLOP:g} PFLOP"
    assert decide(guide, torch.device("cuda")) == (False, "auto: not on cuda (measured on CPU only; compile=on compiles)")


def test_auto_compiles_the_studys_cells_and_not_a_short_run_of_their_shape() -> None:
    """The rule measured at the study's shape (docs/engine.md, Compile), on its real architectures
    with random weights: 2000 steps compile; 100 steps (0.13 PFLOP) do not repay the compilation."""
    from engine.bench import load_models

    study = ["vqgan_model=imagenet_16384", "perceptors=ViT-B-32:openai", "width=256", "height=128", "cutouts=60"]
    models = load_models(load_config(None, study), torch.device("cpu"), "fp32")
    cells = build_guide(load_config(None, [*study, "scenes=spring || winter", "steps_per_scene=1000"]), *models)
    assert decide(cells, torch.device("cpu")) == (True, "auto: 2000 steps, 2.64 PFLOP >= 0.2 PFLOP")
    short = build_guide(load_config(None, [*study, "steps_per_scene=100"]), *models)
    assert decide(short, torch.device("cpu")) == (False, "auto: 100 steps, 0.132 PFLOP < 0.2 PFLOP")


def test_bench_prints_the_compiled_step_beside_the_eager_one() -> None:
    lines = report(bench(load_config(None, [*TINY, "device=cpu"]), warmup=0, repeats=1)).splitlines()
    eager = next(line for line in lines if line.startswith("  engine step fp32 "))
    compiled = next(line for line in lines if line.startswith("  engine step fp32 compiled"))
    assert lines.index(eager) + 1 == lines.index(compiled)
    assert "× the canonical fp32 step" in eager and "compiled" not in eager
    assert "× the canonical fp32 step" in compiled and "× faster; compiled in " in compiled
    limit = next(line for line in lines if line.startswith("  hardware limit fp32"))
    assert "the engine step runs at " in limit and ", compiled at " in limit
    off = report(bench(load_config(None, [*TINY, "device=cpu", "compile=off"]), warmup=0, repeats=1))
    assert "engine step fp32 " in off and "compiled" not in off


@pytest.mark.parametrize("value", ["yes", "fast", "ON"])
def test_other_compile_values_are_refused_naming_the_allowed_ones(value: str) -> None:
    with pytest.raises(SettingsError, match=f"compile='{value}': allowed values are off, on, auto"):
        load_config(None, [*TINY, f"compile={value}"])


def test_cuda_compiles_with_cuda_graphs_and_deterministic_inductor_only_when_asked() -> None:
    assert compile_options(torch.device("cpu"), True) == {}
    assert compile_options(torch.device("cuda:1"), True) == {"triton.cudagraphs": True, "deterministic": True}
    assert compile_options(torch.device("cuda"), False) == {"triton.cudagraphs": True, "deterministic": False}
    assert compile_options(torch.device("cuda"), True, cuda_graphs=False)["triton.cudagraphs"] is False
    # the backend takes such options as inductor's config (here one that applies on CPU too)
    double = torch.compile(lambda x: x.sin() * 2, backend=inductor, options={"deterministic": True})
    torch.testing.assert_close(double(torch.arange(4.0)), torch.arange(4.0).sin() * 2)


def test_the_compiler_cache_is_in_the_project_cache_unless_the_user_chose_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    monkeypatch.setenv(CACHE_ENV, default_cache_dir())  # what importing torch._dynamo sets
    assert cache_folder() == cache_dir() / "inductor" and os.environ[CACHE_ENV] == str(cache_dir() / "inductor")
    monkeypatch.delenv(CACHE_ENV)
    assert cache_folder() == cache_dir() / "inductor"
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine"))
    assert cache_folder() == tmp_path / "mine"
