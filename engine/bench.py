"""Speed benchmark: the engine's step against the bare model compute it cannot avoid.

Real architectures with random weights (no download): speed does not depend on the weights.
"""
from __future__ import annotations

import time
from typing import Callable

import torch

from engine.factory import load_perceptor, load_vqgan
from engine.device import keep_freed_memory, peak_memory_mb, pick_device
from engine.run import build_guide, clamp_latent, initial_latent, learning_rate, step_loss
from engine.settings import Settings, check_size_for_factor


def _seconds(fn: Callable[[], None], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def bench(settings: Settings, *, warmup: int = 1, repeats: int = 3) -> dict:
    """Seconds per step of the engine and of the bare compute (VQGAN decode fwd+bwd plus each
    perceptor's fwd+bwd on the cutout batch), their ratio, and peak memory."""
    device = pick_device(settings.device)
    if device.type == "cpu":
        keep_freed_memory()  # as `run` does
    vqgan = load_vqgan(settings.vqgan_model, device, random_weights=True, progress=False)
    check_size_for_factor(settings, vqgan.factor)
    perceptors = [load_perceptor(n, device, random_weights=True, progress=False) for n in settings.perceptors]
    guide = build_guide(settings, vqgan, perceptors)
    generator = torch.Generator(device).manual_seed(max(settings.seed, 0))
    z = initial_latent(guide, generator).requires_grad_(True)
    optimiser = torch.optim.Adam([z], lr=learning_rate(settings, vqgan))

    def engine_step() -> None:
        total, _ = step_loss(guide, z, 0, generator, None)
        optimiser.zero_grad(set_to_none=True)
        total.backward()
        optimiser.step()
        clamp_latent(guide, z)

    batches = [torch.rand(settings.cutouts, 3, *p.input_size, device=device) for p in perceptors]

    def bare_compute() -> None:
        image = vqgan.decode(z)
        image.backward(torch.ones_like(image))
        for perceptor, batch in zip(perceptors, batches):
            batch.requires_grad_(True)
            perceptor.model.encode_image(batch).sum().backward()

    for _ in range(warmup):
        engine_step()
        bare_compute()
    # Interleaved in alternating order, so that load from elsewhere and cache effects hit both alike.
    engine_times, bare_times = [], []
    for i in range(repeats):
        for fn, times in ((engine_step, engine_times), (bare_compute, bare_times))[::1 if i % 2 else -1]:
            times.append(_seconds(fn, device))
    engine_s, bare_s = _median(engine_times), _median(bare_times)
    return {"engine_s_per_step": engine_s, "bare_s_per_step": bare_s, "ratio": engine_s / bare_s,
            "ratio_of_fastest": min(engine_times) / min(bare_times), "repeats": repeats,
            "peak_memory_mb": peak_memory_mb(device), "device": str(device),
            "threads": torch.get_num_threads(), "vqgan": settings.vqgan_model, "perceptors": settings.perceptors,
            "size": f"{settings.width}x{settings.height}", "cutouts": settings.cutouts}
