"""Numeric precision of a run (`precision` setting): `fp32`, `tf32`, or `bf16` model weights and activations.

`fp32` is true fp32 everywhere: on CUDA the TF32 tensor-core modes of matmuls and cuDNN convolutions
(cuDNN's default on Ampere and later) are switched off. `tf32` keeps fp32 weights and activations
but lets CUDA matmuls and convolutions round their inputs to TF32 (faster on A100/H100; a CUDA
choice, refused elsewhere and below compute capability 8.0, where TF32 does not exist).

On CUDA, bf16 and TF32 need compute capability 8.0 (Ampere) or later: below it cuDNN has no bf16
convolutions and torch only emulates bf16 (`torch.cuda.is_bf16_supported()` counts emulation), so
`precision=bf16` is refused there, judged on the run's own device (`cuda:1`), not the current one.

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
DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16}
TENSOR_CORE_CAPABILITY = (8, 0)  # Ampere: native bf16 (cuDNN convolutions included) and TF32


def tensor_cores_capable(capability: tuple[int, int]) -> bool:
    """Whether a CUDA device of this compute capability runs bf16 and TF32 natively (not emulated)."""
    return tuple(capability) >= TENSOR_CORE_CAPABILITY


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
    if precision == "fp32":
        return
    if device.type == "cuda":
        _check_cuda_capability(precision, device)
    elif precision == "tf32":
        raise SettingsError(f"setting precision=tf32: TF32 is a mode of CUDA GPUs, not of {device.type}; "
                            "use precision=fp32")
    elif device.type == "cpu" and not cpu_has_bf16() and _cpu_bf16_mode() != "emulate":
        raise SettingsError(
            f"setting precision=bf16: this CPU ({torch.backends.cpu.get_cpu_capability()}) has no bf16 matrix "
            "instructions (AVX512-BF16 or AMX), so bf16 would be emulated and many times slower than fp32; "
            f"use precision=fp32 (or set {CPU_BF16_ENV}=emulate to run it slowly anyway)")


def _check_cuda_capability(precision: str, device: torch.device) -> None:
    capability = torch.cuda.get_device_capability(device)
    if not tensor_cores_capable(capability):
        major, minor = TENSOR_CORE_CAPABILITY
        raise SettingsError(
            f"setting precision={precision}: {device} ({torch.cuda.get_device_name(device)}) has compute "
            f"capability {capability[0]}.{capability[1]}; {precision} runs natively only from {major}.{minor} "
            "(Ampere) on, below it is emulated or without cuDNN kernels and slower than fp32; use precision=fp32")


def use_tf32(enabled: bool) -> None:
    """CUDA matmuls and cuDNN convolutions in fp32: TF32 tensor cores (`enabled`) or true fp32 (IEEE)."""
    mode = "tf32" if enabled else "ieee"
    torch.backends.cuda.matmul.fp32_precision = mode
    torch.backends.cudnn.conv.fp32_precision = mode


def fp32_math() -> str:
    """How CUDA computes fp32 matmuls now, for the sidecar: "tf32" or "ieee"."""
    return "tf32" if torch.backends.cuda.matmul.fp32_precision == "tf32" else "ieee"


def prepare_models(precision: str, device: torch.device, vqgan: nn.Module, perceptors: Iterable[nn.Module]) -> None:
    """Cast the models' weights for `precision`, in place, and set the process's TF32 mode for it.

    The VQGAN's codebook stays fp32: z lives in codebook space and quantisation compares distances.
    The VQGAN's convolutions go channels_last on CPU (measured: its decoder fwd+bwd in fp32 7-15 %
    faster, interleaved pairs on a loaded 2-core EPYC) and for bf16 anywhere (tensor cores and
    AMX take NHWC without reorders; on CUDA `python -m engine gpucheck` times both layouts).
    """
    check_precision(precision, device)
    use_tf32(precision == "tf32")
    dtype = DTYPES[precision]
    convs = [vqgan.encoder, vqgan.decoder, vqgan.quant_conv, vqgan.post_quant_conv]
    for part in [*convs, *(p.model for p in perceptors)]:
        part.to(dtype)
    if device.type == "cpu" or precision == "bf16":
        for part in convs:  # their outputs follow the weights' layout
            part.to(memory_format=torch.channels_last)
