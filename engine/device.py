"""Device choices of a run: which device, deterministic kernels, CPU memory reuse, peak memory."""
from __future__ import annotations

import ctypes
import resource
from pathlib import Path

import torch

from engine import cublas
from engine.settings import SettingsError

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc mallopt parameters
_CLEAR_REFS, _STATUS = "/proc/self/clear_refs", "/proc/self/status"


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


def set_determinism(enabled: bool, device: torch.device | None = None) -> None:
    """Deterministic kernels, or not, for the run on `device` (None: every device this process uses).

    Strict (`use_deterministic_algorithms(True)`, no warn-only): an op without a deterministic kernel
    raises instead of silently varying. On CUDA also: cuDNN deterministic without benchmark, the fused
    attention backends (flash, memory-efficient, cuDNN) off so attention's backward runs the
    deterministic math kernel, and cuBLAS's workspace checked (`engine.cublas`); CPU attention
    keeps its kernels (deterministic there). New tensors are not filled with NaN first (torch's
    `fill_uninitialized_memory`, on with deterministic algorithms: a debugging aid that writes every
    new tensor once more; no kernel of the step reads memory it did not write, so frames stay the same).
    """
    cuda = device.type == "cuda" if device is not None else torch.cuda.is_initialized()
    if enabled and cuda and (problem := cublas.problem()):
        raise SettingsError(f"setting deterministic=true: {problem}")
    torch.use_deterministic_algorithms(enabled)
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled
    fused = not (enabled and cuda)
    torch.backends.cuda.enable_flash_sdp(fused)
    torch.backends.cuda.enable_mem_efficient_sdp(fused)
    torch.backends.cuda.enable_cudnn_sdp(fused)


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


def reset_peak_memory(device: torch.device) -> None:
    """Start `peak_memory_mb` afresh from what is in use now: CUDA's allocator statistics, or on
    Linux this process's peak resident set (writing 5 to /proc/self/clear_refs)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        Path(_CLEAR_REFS).write_text("5")
    except OSError:
        pass  # not Linux, or not allowed: the peak is then the process's lifetime peak


def peak_memory_mb(device: torch.device) -> float:
    """Peak CUDA memory allocated, or this process's peak resident memory on CPU, since the last
    `reset_peak_memory` (lifetime peak where the platform cannot reset it)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        status = Path(_STATUS).read_text()
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    kb = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(kb) / 2**10
