"""Issue 19's CUDA fixes, tested on CPU where their logic allows: bf16/TF32 capability, strict
determinism (attention, cuBLAS workspace, a deterministic grid_sample), peak memory per run, the
bench's parent holding no device, and `gpucheck`'s parts that need no GPU."""
from __future__ import annotations

import json
import mmap
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from engine import cublas
from engine.bench import bench, cells
from engine.device import peak_memory_mb, reset_peak_memory, set_determinism
from engine.gpucheck import compiled_steps, layouts, repeatability, section
from engine.gridsample import grid_sample
from engine.precision import CPU_BF16_ENV, fp32_math, tensor_cores_capable, use_tf32
from engine.settings import SettingsError, load_config

CPU, CUDA1 = torch.device("cpu"), torch.device("cuda:1")
REPO = Path(__file__).resolve().parent.parent
TINY_BENCH = ["vqgan_model=tiny", "perceptors=tiny-vit", "width=32", "height=16", "cutouts=2", "device=cpu",
              "compile=off"]  # the isolation is under test here, not the compiled step (tests/test_compiled.py)


@pytest.fixture
def restore_determinism():
    yield
    set_determinism(True, CPU)


@pytest.mark.parametrize("capability, native", [((7, 5), False), ((7, 0), False), ((8, 0), True),
                                                ((8, 6), True), ((9, 0), True), ((12, 0), True)])
def test_bf16_and_tf32_are_native_from_compute_capability_8(capability: tuple[int, int], native: bool) -> None:
    assert tensor_cores_capable(capability) is native


def test_fp32_is_true_fp32_unless_tf32_is_chosen() -> None:
    use_tf32(True)
    assert fp32_math() == "tf32" and torch.backends.cudnn.conv.fp32_precision == "tf32"
    use_tf32(False)
    assert fp32_math() == "ieee" and torch.backends.cudnn.conv.fp32_precision == "ieee"


def test_determinism_is_strict_and_turns_fused_attention_off_on_cuda(restore_determinism: None) -> None:
    set_determinism(True, CUDA1)
    assert torch.are_deterministic_algorithms_enabled() and not torch.is_deterministic_algorithms_warn_only_enabled()
    assert not any(f() for f in (torch.backends.cuda.flash_sdp_enabled, torch.backends.cuda.mem_efficient_sdp_enabled,
                                 torch.backends.cuda.cudnn_sdp_enabled))
    assert torch.backends.cuda.math_sdp_enabled() and torch.backends.cudnn.deterministic
    set_determinism(True, CPU)  # CPU attention keeps its kernels
    assert torch.backends.cuda.flash_sdp_enabled()
    set_determinism(False, CUDA1)
    assert not torch.are_deterministic_algorithms_enabled() and torch.backends.cuda.flash_sdp_enabled()


@pytest.mark.parametrize("value, by_user, initialised, in_time", [
    (":4096:8", False, False, True), (":16:8", True, True, True), (":4096:8", False, True, False),
    (":0:0", True, False, False), (None, False, False, False)])
def test_cublas_workspace_counts_only_when_in_place_before_cuda(value, by_user, initialised, in_time) -> None:
    assert cublas.workspace_in_time(value, by_user, initialised) is in_time


def test_a_deterministic_cuda_run_is_refused_when_cublas_read_its_setting_too_late(
        monkeypatch: pytest.MonkeyPatch, restore_determinism: None) -> None:
    monkeypatch.setattr(cublas, "IN_TIME", False)  # as after CUDA was initialised before `import engine`
    with pytest.raises(SettingsError, match="deterministic=true: CUDA was initialised .* restart the Python"):
        set_determinism(True, CUDA1)
    set_determinism(True, CPU)  # CPU runs do not use cuBLAS
    set_determinism(False, CUDA1)
    monkeypatch.setattr(cublas, "IN_TIME", True)
    monkeypatch.setenv(cublas.ENV, ":0:0")
    with pytest.raises(SettingsError, match="CUBLAS_WORKSPACE_CONFIG=':0:0' is not deterministic"):
        set_determinism(True, CUDA1)


@pytest.mark.parametrize("preset, expected", [(None, ":4096:8"), (":16:8", ":16:8")])
def test_importing_engine_sets_the_cublas_workspace_unless_the_user_did(preset, expected) -> None:
    env = {k: v for k, v in os.environ.items() if k != cublas.ENV} | ({cublas.ENV: preset} if preset else {})
    code = "import os, engine, sys; print(os.environ['CUBLAS_WORKSPACE_CONFIG'], 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == [expected, "False"]  # and `import engine` stays torch-free


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_deterministic_grid_sample_matches_torch_values_and_gradients(batch: int, padding: str,
                                                                     restore_determinism: None) -> None:
    torch.use_deterministic_algorithms(True)
    gen = torch.Generator().manual_seed(batch)
    image = torch.randn(batch, 3, 7, 9, generator=gen, dtype=torch.float64, requires_grad=True)
    grid = (torch.rand(4, 5, 6, 2, generator=gen, dtype=torch.float64) * 2.6 - 1.3).requires_grad_()
    expected = F.grid_sample(image.expand(4, -1, -1, -1), grid, mode="bilinear", padding_mode=padding,
                             align_corners=False)
    got = grid_sample(image, grid, padding)
    weights = torch.randn(expected.shape, generator=gen, dtype=torch.float64)
    want = torch.autograd.grad((expected * weights).sum(), [image, grid])
    have = torch.autograd.grad((got * weights).sum(), [image, grid])
    torch.testing.assert_close(got, expected)
    for a, b in zip(have, want):
        torch.testing.assert_close(a, b)


def test_deterministic_grid_sample_refuses_what_it_does_not_do() -> None:
    with pytest.raises(ValueError, match="padding_mode='reflection': allowed values are zeros, border"):
        grid_sample(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 1, 2), "reflection")
    with pytest.raises(ValueError, match="image batch 2: must be 1 or the grid's batch 3"):
        grid_sample(torch.zeros(2, 1, 2, 2), torch.zeros(3, 1, 1, 2))


def test_peak_memory_restarts_from_what_is_in_use() -> None:
    # 256 MB, touched, in a mapping of its own: freed to the kernel however malloc is tuned
    # (`keep_freed_memory`, which an earlier run in this process may have set, keeps freed memory)
    big = mmap.mmap(-1, 256 * 2**20)
    big.write(b"\1" * len(big))
    assert peak_memory_mb(CPU) > 256
    before = peak_memory_mb(CPU)
    big.close()
    reset_peak_memory(CPU)
    assert peak_memory_mb(CPU) < before - 200


def test_isolated_bench_measures_in_a_child_and_never_touches_cuda_here() -> None:
    result = bench(load_config(None, TINY_BENCH), warmup=0, repeats=1, isolated=True)
    assert result["pid"] != os.getpid() and result["engine_s_per_step"]["fp32"] > 0
    assert not torch.cuda.is_initialized()


def test_a_refusal_in_the_bench_children_is_raised_in_the_parent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CPU_BF16_ENV, "absent")  # inherited by the spawned children
    settings = load_config(None, [*TINY_BENCH, "precision=bf16"])
    with pytest.raises(SettingsError, match="precision=bf16: this CPU"):
        bench(settings, warmup=0, repeats=1, isolated=True)
    with pytest.raises(SettingsError, match="precision=bf16: this CPU"):
        cells(settings, 2, steps=1, warmup=0)


def test_gpucheck_without_cuda_says_so_and_exits_2() -> None:
    done = subprocess.run([sys.executable, "-m", "engine", "gpucheck"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error: gpucheck: CUDA is not available") and len(done.stderr.splitlines()) == 1


IMPORTED = """import json, sys, engine, engine.gpucheck
stray = sorted(m for m in sys.modules if m.split(".")[0] in ("experiments", "dashboard", "tests"))
print(json.dumps([engine.__file__, stray]))"""


def test_gpucheck_from_a_non_editable_install_needs_nothing_but_the_engine(tmp_path: Path) -> None:
    """The wheel's engine (no clone: no tests/, run from elsewhere) imports nothing of experiments/,
    dashboard/ or tests/ for gpucheck, and without CUDA refuses in one line, exit 2."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", str(REPO)],
                   check=True, timeout=300, capture_output=True)
    where = subprocess.run([python, "-c", IMPORTED], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    path, stray = json.loads(where.stdout)
    assert path.startswith(str(venv)) and stray == [], where.stdout
    done = subprocess.run([python, "-m", "engine", "gpucheck"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("error: gpucheck: CUDA is not available")
    assert len(done.stderr.splitlines()) == 1


def test_gpucheck_repeatability_and_layout_parts_run_on_cpu(tmp_path: Path) -> None:
    assert repeatability(CPU, tmp_path, ("fp32",)) == ["fp32: same seed twice → same frame hashes (4 frames)"]
    [line] = layouts(CPU, tmp_path, vqgan_model="tiny", side=32, repeats=1)
    assert "contiguous" in line and "channels_last" in line


def test_gpucheck_compiled_part_runs_on_cpu(tmp_path: Path) -> None:
    tiny = ["vqgan_model=tiny", "perceptors=tiny-vit", "width=32", "height=16", "cutouts=4", "scenes=a red apple"]
    same, compiled, graphs, timings = compiled_steps(CPU, tmp_path, shape=tiny, repeats=1)
    assert same.startswith("compile=on, deterministic: same seed twice → same frame hashes; sidecar: {'step': True")
    assert compiled.startswith("compiled: compiled True in ") and "CUDA graphs False, fallback None" in compiled
    assert graphs.startswith("compiled + CUDA graphs: compiled True")  # on CPU: no CUDA graphs to use
    assert timings.startswith("eager ") and ", compiled + CUDA graphs " in timings and "32x16, 4 cutouts" in timings


def test_a_failing_gpucheck_part_reports_itself_under_its_title(tmp_path: Path) -> None:
    def broken(device: torch.device, work: Path) -> list[str]:
        raise RuntimeError("no such kernel")
    text = section("broken part", broken, CPU, tmp_path / "w")
    assert text.startswith("== broken part (") and text.endswith("  FAILED: RuntimeError: no such kernel")
