"""`python -m engine gpucheck [--device cuda:N]`: what only a CUDA GPU can show of the engine, in one report.

Each part prints a few lines; a part that fails prints why and the others still run. Fits in about
10 minutes on one GPU. Without CUDA it says so and exits 2 at once (`NoCuda`). It needs the engine
alone (an installed `.[engine]` works); from a clone of the project, `python -m experiments.gpucheck`
adds the CUDA tests and a grid through the cluster runner.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import torch

from engine.errors import InputError

TINY = ["vqgan_model=tiny", "perceptors=tiny-vit", "width=32", "height=16", "cutouts=4", "seed=3",
        "scenes=a red apple", "save_every=5", "deterministic=true"]
STUDY = ["vqgan_model=imagenet_16384", "perceptors=ViT-B-32:openai", "width=256", "height=128", "cutouts=60"]
BENCH_CELLS = (1, 4, 8)
Part = Callable[[torch.device, Path], list[str]]


class NoCuda(InputError):
    """gpucheck on a machine without CUDA."""


def cuda_device(name: str) -> torch.device:
    """The CUDA device to check; NoCuda where there is none."""
    if not torch.cuda.is_available():
        raise NoCuda("gpucheck: CUDA is not available on this machine (torch "
                     f"{torch.__version__}); run it on a machine with an NVIDIA GPU and a CUDA build of torch")
    from engine.device import pick_device
    return pick_device(name)


def tiny_run(out_dir: Path, name: str, device: torch.device, *extra: str) -> Path:
    """A tiny UNTRAINED run on `device` (no download); its folder."""
    from engine.loop import execute
    from engine.settings import load_config
    return execute(load_config(None, [*TINY, f"out_dir={out_dir}", f"file_namespace={name}", f"device={device}",
                                  *extra]), quiet=True)


def frame_hashes(folder: Path) -> list[str]:
    """sha256 of each saved frame, in frame order."""
    frames = sorted(folder.glob("*.png"), key=lambda p: int(p.stem.rsplit("_", 1)[-1]))
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in frames]


def repeatability(device: torch.device, work: Path, precisions: tuple[str, ...] = ("fp32", "bf16")) -> list[str]:
    """Same seed twice → same frame hashes, per precision."""
    lines = []
    for precision in precisions:
        runs = [frame_hashes(tiny_run(work / f"same-{precision}", f"run{i}", device, f"precision={precision}",
                                      "steps_per_scene=20")) for i in (1, 2)]
        verdict = "same frame hashes" if runs[0] == runs[1] else "DIFFERENT frame hashes"
        lines.append(f"{precision}: same seed twice → {verdict} ({len(runs[0])} frames)")
    return lines


def interrupted_run(out_dir: Path, device: torch.device) -> Path:
    """A tiny CLI run on `device`, killed once it saved its resume state and two frames; its folder."""
    folder = out_dir / "run"
    proc = subprocess.Popen([sys.executable, "-m", "engine", "run", "-q", *TINY, f"out_dir={out_dir}",
                             "file_namespace=run", "steps_per_scene=400", f"device={device}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while not (folder / "resume.pt").exists() or len(list(folder.glob("run_*.png"))) < 2:
        if proc.poll() is not None:
            raise RuntimeError(f"the run to interrupt ended first: {proc.stderr.read()[-500:]}")
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    return folder


def count_syncs(fn: Callable[[], object]) -> int:
    """Host–device synchronisations during `fn()`, as torch's sync debug mode warns of them."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def syncs(device: torch.device, work: Path) -> list[str]:
    """Syncs per step of a fresh run and of a resumed one (save points sync by design)."""
    fresh = count_syncs(lambda: tiny_run(work / "sync-fresh", "run", device, "steps_per_scene=100"))
    folder = interrupted_run(work / "sync-resumed", device)
    done = len(list(folder.glob("run_*.png"))) * 5
    resumed = count_syncs(lambda: tiny_run(work / "sync-resumed", "run", device, "steps_per_scene=400"))
    return [f"fresh run: {fresh} syncs in 100 steps ({fresh / 100:.2f}/step, 20 save points)",
            f"resumed run: {resumed} syncs in about {400 - done} steps ({resumed / (400 - done):.2f}/step, "
            f"about {(400 - done) // 5} save points)"]


def cross_device(device: torch.device, work: Path) -> list[str]:
    """A run interrupted on one device and resumed on the other: refused clearly, or resumed."""
    lines = []
    for first, then in ((torch.device("cpu"), device), (device, torch.device("cpu"))):
        out = work / f"cross-{first.type}"
        interrupted_run(out, first)
        try:
            tiny_run(out, "run", then, "steps_per_scene=400")
            outcome = "resumed and finished"
        except Exception as err:  # noqa: BLE001 (the report shows whatever the engine said)
            outcome = f"refused: {type(err).__name__}: {err}"
        lines.append(f"interrupted on {first}, rerun on {then}: {outcome}")
    return lines


def bf16_verdict(device: torch.device, work: Path) -> list[str]:
    """Whether `precision=bf16` (and tf32) is accepted on this GPU, with its compute capability."""
    from engine.precision import check_precision
    from engine.settings import SettingsError
    major, minor = torch.cuda.get_device_capability(device)
    lines = [f"{device}: {torch.cuda.get_device_name(device)}, compute capability {major}.{minor}, "
             f"torch.cuda.is_bf16_supported(including_emulation=False)="
             f"{torch.cuda.is_bf16_supported(including_emulation=False)}"]
    for precision in ("bf16", "tf32"):
        try:
            check_precision(precision, device)
            lines.append(f"precision={precision}: accepted")
        except SettingsError as err:
            lines.append(f"precision={precision}: refused ({err})")
    return lines


def layouts(device: torch.device, work: Path, vqgan_model: str = "imagenet_16384", side: int = 256,
            repeats: int = 5) -> list[str]:
    """The VQGAN's decode fwd+bwd in bf16, contiguous vs channels_last (medians, interleaved)."""
    from engine.bench import _median, _seconds
    from engine.factory import load_vqgan
    vqgan = load_vqgan(vqgan_model, device, random_weights=True, progress=False)
    parts = [vqgan.encoder, vqgan.decoder, vqgan.quant_conv, vqgan.post_quant_conv]
    for part in parts:
        part.to(torch.bfloat16)
    z = torch.randn(1, vqgan.embed_dim, side // vqgan.factor, side // vqgan.factor, device=device, requires_grad=True)
    formats = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
    times: dict[str, list[float]] = {layout: [] for layout in formats}
    for i in range(repeats + 1):
        for layout, memory_format in formats.items():
            for part in parts:
                part.to(memory_format=memory_format)
            seconds = _seconds(lambda: vqgan.decode(z).sum().backward(), device)
            if i:  # the first round warms up
                times[layout].append(seconds)
    s = {layout: _median(t) for layout, t in times.items()}
    return [f"{vqgan_model} decode fwd+bwd bf16 {side}²: contiguous {s['contiguous'] * 1e3:.1f} ms, "
            f"channels_last {s['channels_last'] * 1e3:.1f} ms (medians of {repeats})"]


def compiled_steps(device: torch.device, work: Path, shape: list[str] = STUDY, repeats: int = 5) -> list[str]:
    """A deterministic compiled tiny run twice (same frame hashes?); then the step at `shape`
    (random weights) eager, compiled, and compiled with CUDA graphs: medians, interleaved."""
    from engine.bench import _median, _seconds, guided_step, load_models
    from engine.compiled import compile_guide
    from engine.settings import load_config
    from engine.step import build_guide

    runs = [tiny_run(work / "compiled", f"run{i}", device, "compile=on", "steps_per_scene=20") for i in (1, 2)]
    same = "same" if frame_hashes(runs[0]) == frame_hashes(runs[1]) else "DIFFERENT"
    record = json.loads((runs[0] / "run1_settings.json").read_text())["compiled"]
    lines = [f"compile=on, deterministic: same seed twice → {same} frame hashes; sidecar: {record}"]
    settings = load_config(None, [*shape, f"device={device}", "compile=on"])
    models = load_models(settings, device, settings.precision)
    steps = {}
    for name, graphs in (("eager", None), ("compiled", False), ("compiled + CUDA graphs", True)):
        guide = build_guide(settings, *models)
        if graphs is not None:
            record = compile_guide(guide, device, cuda_graphs=graphs).record()
            lines.append(f"{name}: compiled {record['step']} in {record['seconds']} s, CUDA graphs "
                         f"{record['cuda_graphs']}, fallback {record['fallback']}")
        steps[name] = guided_step(guide)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(repeats + 1):
        for name, step in steps.items():
            seconds = _seconds(step, device)
            if i:  # the first round warms up (and records the CUDA graphs)
                times[name].append(seconds)
    s = {name: _median(t) for name, t in times.items()}
    lines.append(", ".join(f"{name} {seconds * 1e3:.1f} ms" for name, seconds in s.items())
                 + f" per step at {settings.width}x{settings.height}, {settings.cutouts} cutouts (medians of {repeats})")
    return lines


def _python(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout)


def bench_lines(device: torch.device, work: Path) -> list[str]:
    """`engine bench --device cuda:N --cells K` (fp32 and bf16, eager and compiled) for each K: the bench and the cells."""
    lines = []
    for k in BENCH_CELLS:
        done = _python(["-m", "engine", "bench", "--device", str(device), "--repeats", "3", "--cells", str(k)])
        lines += done.stdout.strip().splitlines() if k == BENCH_CELLS[0] else done.stdout.strip().splitlines()[-2:]
        if done.returncode:
            lines.append(f"--cells {k}: exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return lines


PARTS: list[tuple[str, Part]] = [
    ("bf16 for this GPU (item 2)", bf16_verdict),
    ("same seed twice (item 3)", repeatability),
    ("syncs before and after a resume (item 4)", syncs),
    ("resume across CPU and GPU (item 1)", cross_device),
    ("VQGAN layouts in bf16 (item 7)", layouts),
    ("eager, compiled, compiled with CUDA graphs (issue 29)", compiled_steps),
    ("engine bench --cells 1, 4, 8 (items 5, 8, 9)", bench_lines),
]


def section(title: str, part: Part, device: torch.device, work: Path) -> str:
    """One part's lines under its title, with its time; a failure becomes its line."""
    t0 = time.monotonic()
    work.mkdir(parents=True, exist_ok=True)
    try:
        lines = part(device, work)
    except Exception as err:  # noqa: BLE001 (one part failing must not hide the others)
        lines = [f"FAILED: {type(err).__name__}: {err}"]
    return "\n".join([f"== {title} ({time.monotonic() - t0:.0f} s)", *(f"  {line}" for line in lines)])


def report(device: torch.device, parts: list[tuple[str, Part]] = PARTS) -> str:
    """Every part's section, run in a scratch folder."""
    with tempfile.TemporaryDirectory(prefix="gpucheck-") as scratch:
        return "\n".join(section(title, part, device, Path(scratch) / str(i)) for i, (title, part) in enumerate(parts))
