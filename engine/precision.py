"""Numeric precision of a run (`precision` setting): `fp32`, or `bf16` model weights and activations.

In bf16 the VQGAN's encoder, decoder and its two 1x1 convolutions and the perceptors' networks hold
bf16 weights; z, the codebook (quantisation), cutouts, losses and Adam's state stay fp32. The
models cast their inputs to their weights' dtype and return fp32 (`VQGAN.decode`, `VQGAN.encode`,
`Perceptor.encode_normalised`), so the step itself needs no autocast. Weights are cast once, not
per step, and the kernels are the same on every rerun: same seed, precision and machine → same bytes.

A CPU without bf16 matrix instructions (AVX512-BF16 or AMX) emulates bf16 at a small fraction of
its fp32 speed (measured on an AVX2 EPYC: a 512² matmul 27× slower), so `precision=bf16` is refused
there with a clear message. The environment variable ENGINE_CPU_BF16 changes the check:
`emulate` runs bf16 anyway (slow; used by the tests), `absent` treats the CPU as having no bf16
(to see the refusal on any machine); unset or `detect` asks the CPU.
"""
from __future__ import annotations

import os
from typing import Iterable

import torch
from torch import nn

from engine.settings import PRECISIONS, SettingsError

CPU_BF16_ENV = "ENGINE_CPU_BF16"
CPU_BF16_MODES = ("detect", "emulate", "absent")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _cpu_bf16_mode() -> str:
    mode = os.environ.get(CPU_BF16_ENV, "detect") or "detect"
    if mode not in CPU_BF16_MODES:
        raise SettingsError(f"environment variable {CPU_BF16_ENV}={mode!r}: allowed values are "
                            f"{', '.join(CPU_BF16_MODES)}")
    return mode


def cpu_has_bf16() -> bool:
    """Whether this CPU has bf16 matrix instructions (AVX512-BF16 or AMX), as ENGINE_CPU_BF16 lets it say."""
    if _cpu_bf16_mode() == "absent":
        return False
    cpu = torch.cpu
    return any(getattr(cpu, check, lambda: False)() for check in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse a precision this device cannot run well, naming what is allowed."""
    if precision not in PRECISIONS:
        raise SettingsError(f"setting precision={precision!r}: allowed values are {', '.join(PRECISIONS)}")
    if precision != "bf16":
        return
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise SettingsError(f"setting precision=bf16: {torch.cuda.get_device_name(device)} has no bf16 support; "
                            "use precision=fp32")
    if device.type == "cpu" and not cpu_has_bf16() and _cpu_bf16_mode() != "emulate":
        raise SettingsError(
            f"setting precision=bf16: this CPU ({torch.backends.cpu.get_cpu_capability()}) has no bf16 matrix "
            "instructions (AVX512-BF16 or AMX), so bf16 would be emulated and many times slower than fp32; "
            f"use precision=fp32 (or set {CPU_BF16_ENV}=emulate to run it slowly anyway)")


def prepare_models(precision: str, device: torch.device, vqgan: nn.Module, perceptors: Iterable[nn.Module]) -> None:
    """Cast the models' weights for `precision`, in place (after `check_precision`).

    The VQGAN's codebook stays fp32: z lives in codebook space and quantisation compares distances.
    The VQGAN's convolutions go channels_last on CPU (measured: its decoder fwd+bwd in fp32 7-15 %
    faster, interleaved pairs on a loaded 2-core EPYC) and for bf16 anywhere (tensor cores and
    AMX take NHWC without reorders; unmeasured here).
    """
    check_precision(precision, device)
    dtype = DTYPES[precision]
    convs = [vqgan.encoder, vqgan.decoder, vqgan.quant_conv, vqgan.post_quant_conv]
    for part in [*convs, *(p.model for p in perceptors)]:
        part.to(dtype)
    if device.type == "cpu" or precision == "bf16":
        for part in convs:  # their outputs follow the weights' layout
            part.to(memory_format=torch.channels_last)
