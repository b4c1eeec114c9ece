"""Speed benchmark: the engine's step, eager and compiled (`compile`), beside the bare model compute,
the canonical notebook-style fp32 step and the hardware's limit, all measured in one run; and K
cells sharing one device.

Real architectures with random weights (no download): speed does not depend on the weights.
Timings are interleaved (each round in a rotated order) so load from elsewhere hits all alike;
figures are medians.
"""
from __future__ import annotations

import copy
import multiprocessing
import os
import queue
import time
from dataclasses import replace
from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from engine.compiled import compile_guide
from engine.device import keep_freed_memory, peak_memory_mb, pick_device, reset_peak_memory, set_determinism
from engine.errors import InputError
from engine.factory import load_perceptor, load_vqgan
from engine.losses import clamp_with_grad
from engine.perceptor import Perceptor
from engine.precision import DTYPES, check_precision, prepare_models
from engine.settings import Settings, SettingsError, check_size_for_factor
from engine.step import Guide, build_guide, learning_rate, start_latent, take_step
from engine.vqgan import VQGAN

MATMUL_SIZE = 2048  # the square matmul that measures a dtype's peak rate


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _seconds(fn: Callable[[], None], device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def load_models(settings: Settings, device: torch.device, precision: str) -> tuple[VQGAN, list[Perceptor]]:
    """The settings' VQGAN and perceptors with random weights, prepared for `precision`."""
    vqgan = load_vqgan(settings.vqgan_model, device, random_weights=True, progress=False)
    check_size_for_factor(settings, vqgan.factor)
    perceptors = [load_perceptor(n, device, random_weights=True, progress=False) for n in settings.perceptors]
    prepare_models(precision, device, vqgan, perceptors)
    return vqgan, perceptors


def engine_step(settings: Settings, vqgan: VQGAN, perceptors: list[Perceptor]) -> Callable[[], None]:
    """One eager step of the engine's loop (`engine.loop.optimise`) as a function of nothing."""
    return guided_step(build_guide(settings, vqgan, perceptors))


def guided_step(guide: Guide) -> Callable[[], None]:
    """One step of the engine's loop with `guide` (compiled if its `compilation` says so)."""
    settings, vqgan = guide.settings, guide.vqgan
    rng = torch.Generator(vqgan.codebook.device).manual_seed(max(settings.seed, 0))
    latent = start_latent(guide, rng)
    optimiser = torch.optim.Adam([latent.z], lr=learning_rate(settings, vqgan))

    def step() -> None:
        take_step(guide, latent, optimiser, 0, rng)
    return step


def bare_compute(settings: Settings, vqgan: VQGAN, perceptors: list[Perceptor]) -> Callable[[], None]:
    """The model compute a step cannot avoid: VQGAN decode fwd+bwd, each perceptor fwd+bwd on a cutout batch."""
    device = vqgan.codebook.device
    h, w = settings.height // vqgan.factor, settings.width // vqgan.factor
    z = torch.randn(1, vqgan.embed_dim, h, w, device=device, requires_grad=True)
    batches = [torch.rand(settings.cutouts, 3, *p.input_size, device=device, requires_grad=True) for p in perceptors]

    def step() -> None:
        vqgan.decode(z, clamp=False).sum().backward()
        for perceptor, batch in zip(perceptors, batches):
            perceptor.encode_normalised(batch).sum().backward()
    return step


def canonical_step(settings: Settings, vqgan: VQGAN, perceptors: list[Perceptor]) -> Callable[[], None]:
    """The step as the Crowson VQGAN+CLIP notebook writes it, in fp32: straight-through quantise,
    decode, `cutouts` crops cut one by one and pooled to the perceptor's size (`MakeCutouts`), random
    flips and noise, embed, squared great-circle distance to a text, Adam, clamp z to the codebook."""
    device = vqgan.codebook.device
    host = torch.Generator().manual_seed(max(settings.seed, 0))  # the notebook draws crops on the host
    h, w = settings.height // vqgan.factor, settings.width // vqgan.factor
    codes = torch.randint(vqgan.n_embed, (h * w,), generator=host).to(device)
    z = vqgan.codebook.detach()[codes].view(1, h, w, -1).permute(0, 3, 1, 2).contiguous().requires_grad_(True)
    optimiser = torch.optim.Adam([z], lr=0.1)
    z_min, z_max = vqgan.codebook_bounds()
    targets = [p.encode_text([settings.scenes]) for p in perceptors]

    def cutouts(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        side_y, side_x = image.shape[2:]
        max_size = min(side_x, side_y)
        min_size = min(side_x, side_y, size[0])
        pieces = []
        for _ in range(settings.cutouts):
            cut = int(torch.rand([], generator=host) ** settings.cut_pow * (max_size - min_size) + min_size)
            ox = int(torch.randint(0, side_x - cut + 1, (), generator=host))
            oy = int(torch.randint(0, side_y - cut + 1, (), generator=host))
            pieces.append(F.adaptive_avg_pool2d(image[:, :, oy:oy + cut, ox:ox + cut], size))
        batch = torch.cat(pieces)
        flip = (torch.rand(len(batch), 1, 1, 1, generator=host) < 0.5).to(device)
        batch = torch.where(flip, batch.flip(3), batch)
        return batch + 0.1 * torch.rand(len(batch), 1, 1, 1, generator=host).to(device) * torch.randn_like(batch)

    def step() -> None:
        image = clamp_with_grad(vqgan.decode(vqgan.quantize_st(z), clamp=False))
        loss = 0
        for perceptor, target in zip(perceptors, targets):
            batch = (cutouts(image, perceptor.input_size) - perceptor.mean) / perceptor.std
            embeds = F.normalize(perceptor.model.encode_image(batch).float(), dim=-1)
            loss = loss + embeds[:, None].sub(target[None]).norm(dim=2).div(2).arcsin().pow(2).mul(2).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        with torch.no_grad():
            z.copy_(z.maximum(z_min).minimum(z_max))
    return step


def matmul(dtype: torch.dtype, device: torch.device, n: int = MATMUL_SIZE) -> Callable[[], None]:
    """An n×n matmul in `dtype` (2n³ FLOP): the device's peak rate for that dtype."""
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    return lambda: torch.mm(a, b)


def count_flops(fn: Callable[[], None]) -> int:
    """FLOPs of one call (matmuls, convolutions, attention; forward and backward), by torch's counter."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def bench(settings: Settings, *, warmup: int = 1, repeats: int = 3, both_precisions: bool = False,
          isolated: bool | None = None) -> dict:
    """Seconds per step of the engine (in `settings.precision`, or fp32 and bf16; eager, and compiled
    unless `compile=off`), the bare compute, the canonical fp32 notebook step, peak matmul rates,
    FLOPs per step and the limit they set.

    `isolated` (default: on CUDA) measures in a child process, so that this one never initialises
    CUDA and holds no GPU memory while `cells` runs its cells after it."""
    if isolated is None:
        isolated = pick_device(settings.device).type == "cuda"
    args = (settings, warmup, repeats, both_precisions)
    return in_child(_measure, args) if isolated else _measure(*args)


def in_child(fn: Callable, args: tuple):
    """`fn(*args)` in a spawned process; a refused setting there is raised here as the same SettingsError."""
    context = multiprocessing.get_context("spawn")  # CUDA cannot be forked
    results = context.Queue()
    worker = context.Process(target=_report_to, args=(results, fn, args))
    worker.start()
    kind, value = _wait_for(results, [worker])
    worker.join()
    if kind == "refused":
        raise SettingsError(value)
    return value


def _report_to(results, fn: Callable, args: tuple) -> None:
    try:
        value = fn(*args)
    except SettingsError as err:
        results.put(("refused", str(err)))
        return
    results.put(("ok", value))


def _wait_for(results, workers: list) -> tuple:
    """The next item a worker puts in `results`; RuntimeError if a worker died first."""
    while True:
        try:
            return results.get(timeout=5)
        except queue.Empty:
            if any(w.exitcode not in (None, 0) for w in workers):
                for w in workers:
                    w.kill()
                raise RuntimeError("a benchmark process failed (see its traceback above)") from None


def _measure(settings: Settings, warmup: int, repeats: int, both_precisions: bool) -> dict:
    device = pick_device(settings.device)
    set_determinism(settings.deterministic, device)
    if device.type == "cpu":
        keep_freed_memory()  # as `run` does
    precisions = ["fp32", "bf16"] if both_precisions else [settings.precision]
    for precision in precisions:
        check_precision(precision, device)
    reset_peak_memory(device)
    fp32_models = load_models(settings, device, "fp32")
    models = {"fp32": fp32_models}
    for precision in precisions:
        if precision not in models:
            vqgan, perceptors = copy.deepcopy(fp32_models)
            prepare_models(precision, device, vqgan, perceptors)
            models[precision] = vqgan, perceptors
    fns: dict[str, Callable[[], None]] = {}
    compiled: dict[str, dict] = {}
    for precision in precisions:
        run_settings = replace(settings, precision=precision)
        fns[f"engine_{precision}"] = engine_step(run_settings, *models[precision])
        fns[f"bare_{precision}"] = bare_compute(run_settings, *models[precision])
        if settings.compile != "off":  # the bench compiles under auto too: the comparison is its point
            guide = build_guide(replace(run_settings, compile="on"), *models[precision])
            compiled[precision] = compile_guide(guide, device).record()
            fns[f"compiled_{precision}"] = guided_step(guide)
    fns["canonical_fp32"] = canonical_step(settings, *fp32_models)
    for precision in precisions:  # under the TF32 mode `prepare_models` set for the run's precision
        fns[f"matmul_{precision}"] = matmul(DTYPES[precision], device)
    flops = {p: count_flops(fns[f"engine_{p}"]) for p in precisions}
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for i in range(repeats):  # rotated order each round
        for name in names[i % len(names):] + names[:i % len(names)]:
            times[name].append(_seconds(fns[name], device))
    s = {name: _median(t) for name, t in times.items()}
    peak = {p: 2 * MATMUL_SIZE ** 3 / s[f"matmul_{p}"] for p in precisions}
    return {
        "precisions": precisions, "repeats": repeats, "seconds": s, "all_seconds": times,
        "canonical_s_per_step": s["canonical_fp32"],
        "engine_s_per_step": {p: s[f"engine_{p}"] for p in precisions},
        "compiled_s_per_step": {p: s[f"compiled_{p}"] for p in compiled}, "compiled": compiled,
        "bare_s_per_step": {p: s[f"bare_{p}"] for p in precisions},
        "flops_per_step": flops, "peak_matmul_flops": peak,
        "limit_s_per_step": {p: flops[p] / peak[p] for p in precisions},
        "peak_memory_mb": peak_memory_mb(device), "device": _device_name(device),
        "threads": torch.get_num_threads(), "vqgan": settings.vqgan_model, "perceptors": settings.perceptors,
        "size": f"{settings.width}x{settings.height}", "cutouts": settings.cutouts, "pid": os.getpid()}


def _device_name(device: torch.device) -> str:
    return f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else str(device)


def report(result: dict) -> str:
    """`bench`'s result as lines of text."""
    def line(label: str, seconds: float, note: str) -> str:
        return f"  {label:<26} {seconds:8.3f} s/step   {note}"

    lines = [f"{result['vqgan']} + {'+'.join(result['perceptors'])}, {result['size']}, {result['cutouts']} cutouts, "
             f"{result['device']} ({result['threads']} threads), random weights, medians of {result['repeats']}"]
    canonical = result["canonical_s_per_step"]
    for p in result["precisions"]:
        engine, limit = result["engine_s_per_step"][p], result["limit_s_per_step"][p]
        lines.append(line(f"engine step {p}", engine, f"({engine / canonical:.2f} × the canonical fp32 step)"))
        shares = f"the engine step runs at {limit / engine:.0%} of it"
        if p in result["compiled"]:
            compiled, record = result["compiled_s_per_step"][p], result["compiled"][p]
            how = (f"compiled in {record['seconds']:.1f} s" + (", CUDA graphs" if record["cuda_graphs"] else "")
                   if record["step"] else f"NOT compiled: {record['fallback']}")
            lines.append(line(f"engine step {p} compiled", compiled,
                              f"({compiled / canonical:.2f} × the canonical fp32 step, "
                              f"{canonical / compiled:.2f}× faster; {how})"))
            shares += f", compiled at {limit / compiled:.0%}"
        lines += [
            line(f"bare compute {p}", result["bare_s_per_step"][p], "(VQGAN decode fwd+bwd + perceptor fwd+bwd)"),
            line(f"hardware limit {p}", limit,
                 f"({result['flops_per_step'][p] / 1e12:.3f} TFLOP/step ÷ {result['peak_matmul_flops'][p] / 1e12:.3f} "
                 f"TFLOP/s of a {MATMUL_SIZE}² {p} matmul; {shares})")]
    lines += [line("canonical step fp32", canonical, "(Crowson notebook style, measured in this run)"),
              f"  {'peak memory':<26} {result['peak_memory_mb']:8.0f} MB"]
    return "\n".join(lines)


def _cell(settings: Settings, steps: int, warmup: int, barrier) -> tuple:
    """One cell of `cells`: load, warm up, wait for the others, time `steps` steps."""
    device = pick_device(settings.device)
    set_determinism(settings.deterministic, device)
    if device.type == "cpu":
        keep_freed_memory()
    step = engine_step(settings, *load_models(settings, device, settings.precision))
    for _ in range(warmup):
        step()
    _sync(device)
    reset_peak_memory(device)
    barrier.wait()
    t0 = time.monotonic()
    for _ in range(steps):
        step()
    _sync(device)
    return (t0, time.monotonic(), peak_memory_mb(device),
            torch.cuda.max_memory_reserved(device) / 2**20 if device.type == "cuda" else None)


def cells(settings: Settings, k: int, *, steps: int = 10, warmup: int = 2) -> dict:
    """Throughput of k cells (k processes) sharing one device: cell-steps/s over the time from the
    common start to the last cell's end, with each cell's peak memory. This process touches no
    device (the cells check the settings; a refusal is raised here)."""
    if k < 1:
        raise InputError(f"--cells {k}: must be >= 1")
    context = multiprocessing.get_context("spawn")  # CUDA cannot be forked
    barrier, results = context.Barrier(k), context.Queue()
    workers = [context.Process(target=_report_to, args=(results, _cell, (settings, steps, warmup, barrier)))
               for _ in range(k)]
    for worker in workers:
        worker.start()
    replies = [_wait_for(results, workers) for _ in workers]
    if refused := next((value for kind, value in replies if kind == "refused"), None):
        for w in workers:
            w.kill()
        raise SettingsError(refused)
    for worker in workers:
        worker.join()
    rows = [value for _, value in replies]
    wall = max(r[1] for r in rows) - min(r[0] for r in rows)
    reserved = [r[3] for r in rows if r[3] is not None]
    return {"cells": k, "steps_per_cell": steps, "precision": settings.precision, "wall_s": wall,
            "cell_steps_per_s": k * steps / wall, "peak_memory_mb_per_cell": [r[2] for r in rows],
            "peak_reserved_mb_total": sum(reserved) if reserved else None}


def cells_report(result: dict) -> str:
    """`cells`' result as lines of text."""
    memory = result["peak_memory_mb_per_cell"]
    total = result["peak_reserved_mb_total"]
    return (f"  {result['cells']} cells × {result['steps_per_cell']} steps ({result['precision']}): "
            f"{result['cell_steps_per_s']:.2f} cell-steps/s ({result['wall_s']:.1f} s), peak memory per cell "
            f"{max(memory):.0f} MB" + (f", reserved by all cells {total:.0f} MB" if total is not None else ""))
