"""Device choices of a run: which device, deterministic kernels, CPU memory reuse, peak memory."""
from __future__ import annotations

import ctypes
import os
import resource

import torch

from engine.settings import SettingsError

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc mallopt parameters


def pick_device(name: str) -> torch.device:
    """`auto` → CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SettingsError(f"setting device={name!r}: CUDA is not available here; use device=cpu or auto")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise SettingsError(f"setting device={name!r}: this machine has {torch.cuda.device_count()} CUDA "
                            "device(s), numbered from 0; use device=cuda:0 or auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise SettingsError(f"setting device={name!r}: MPS (Apple GPU) is not available here; use device=cpu or auto")
    return device


def set_determinism(enabled: bool) -> None:
    """Deterministic kernels. CPU runs are byte-identical; on CUDA cuBLAS and cuDNN are made
    deterministic, but grid_sample's backward has no deterministic CUDA kernel (warned, not fixed)."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled


def keep_freed_memory() -> None:
    """On glibc, keep freed memory in the process instead of handing it back to the kernel.

    A step allocates and frees gigabytes of activations; by default glibc serves big blocks with
    fresh mmaps, and re-faulting those pages costs about 10% of a CPU step. Process-wide; no-op
    where glibc is not the allocator.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_MAX, 0)
        libc.mallopt(_M_TRIM_THRESHOLD, 2**30)
    except (OSError, AttributeError):
        pass


def peak_memory_mb(device: torch.device) -> float:
    """Peak CUDA memory allocated, or this process's peak resident memory on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
