"""What a run's step needs in memory, estimated before it allocates anything of the run's size, so
that a size the machine cannot hold (`width=100000`, `cutouts=100000`) is refused with the estimate
and the limit instead of growing until the kernel kills the process.

The estimate is measured on the models themselves: one small forward pass of the VQGAN's decoder
(a latent of `PROBE_CELLS` × `PROBE_CELLS` cells) and of each perceptor (one cutout), summing the
bytes of every leaf module's outputs (what autograd keeps for the backward pass), scaled to the run's
latent cells and cutouts. That is a floor of what the step needs (measured on this machine at the
study's shape: 0.6× the step's peak for ViT-B/32, 1.0× for RN50 and RN50x4, whose in-place
activations it skips): a run refused needs more than the machine has, while a run let through may
still need up to about twice the estimate. Attention over the latent grows faster than the pixels
at huge sizes, so there too the estimate stays a floor.
"""
from __future__ import annotations

import torch

from engine.perceptor import Perceptor
from engine.settings import Settings, SettingsError
from engine.vqgan import VQGAN

PROBE_CELLS = 2  # the probe latent's side, in cells


def output_bytes(module: torch.nn.Module, run: object) -> int:
    """The bytes of every tensor each leaf module of `module` outputs while `run()` runs (no gradients;
    modules that work in place add none)."""
    total = 0

    def count(_: torch.nn.Module, __: object, output: object) -> None:
        nonlocal total
        tensors = output if isinstance(output, (tuple, list)) else (output,)
        total += sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))

    hooks = [m.register_forward_hook(count) for m in module.modules()
             if not any(m.children()) and not getattr(m, "inplace", False)]  # in place: no new memory
    try:
        with torch.no_grad():
            run()
    finally:
        for hook in hooks:
            hook.remove()
    return total


def step_bytes(settings: Settings, vqgan: VQGAN, perceptors: list[Perceptor]) -> int:
    """At least what one step of `settings` keeps in memory besides the weights (see the module)."""
    device = vqgan.codebook.device
    z = torch.zeros(1, vqgan.embed_dim, PROBE_CELLS, PROBE_CELLS, device=device, dtype=vqgan.codebook.dtype)
    cells = (settings.height // vqgan.factor) * (settings.width // vqgan.factor)
    decode = output_bytes(vqgan, lambda: vqgan.decode(z, clamp=False)) * cells / PROBE_CELLS ** 2
    cutouts = 0.0
    for perceptor in perceptors:
        probe = torch.zeros(1, 3, *perceptor.input_size, device=device)
        cutouts += output_bytes(perceptor, lambda p=perceptor, x=probe: p.encode_normalised(x)) * settings.cutouts
    return int(decode + cutouts)


def free_bytes(device: torch.device) -> int:
    """Memory the run may still take: free device memory on CUDA, available system memory otherwise."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    import psutil

    return psutil.virtual_memory().available


def check_memory(settings: Settings, vqgan: VQGAN, perceptors: list[Perceptor], device: torch.device) -> None:
    """Refuse, before the run allocates anything of its size, a step that needs more memory than
    `device` has free; the message gives the estimate, the limit and what to lower."""
    need, free = step_bytes(settings, vqgan, perceptors), free_bytes(device)
    if need > free:
        raise SettingsError(
            f"settings width={settings.width} × height={settings.height} with cutouts={settings.cutouts} and "
            f"{len(perceptors)} perceptor(s): a step needs at least {need / 2**30:.1f} GiB of memory, and {device} has "
            f"{free / 2**30:.1f} GiB free; lower width, height or cutouts")
