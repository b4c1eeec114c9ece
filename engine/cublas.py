"""cuBLAS's deterministic workspace (`CUBLAS_WORKSPACE_CONFIG`), set when `engine` is imported.

cuBLAS reads the variable once per process, when CUDA first creates a cuBLAS handle, so it must be
in the environment before any CUDA use. `import engine` sets it unless the user did (a value the
user set is trusted to have been there from the start); if the engine sets it while CUDA is
already initialised (a notebook that used the GPU before importing the engine), it came too late
and a deterministic CUDA run is refused (`engine.device.set_determinism`). Torch-free.
"""
from __future__ import annotations

import os
import sys

ENV = "CUBLAS_WORKSPACE_CONFIG"
DETERMINISTIC_VALUES = (":4096:8", ":16:8")  # the two configurations cuBLAS documents as deterministic


def workspace_in_time(value: str | None, set_by_user: bool, cuda_initialised: bool) -> bool:
    """Whether cuBLAS will run deterministically: a deterministic value that the user set, or that
    the engine set before CUDA started."""
    return value in DETERMINISTIC_VALUES and (set_by_user or not cuda_initialised)


def _cuda_initialised() -> bool:
    torch = sys.modules.get("torch")  # never imports torch: only asks one that is already loaded
    return bool(torch is not None and hasattr(torch, "cuda") and torch.cuda.is_initialized())


def prepare() -> bool:
    """Set the variable unless the user did; whether it was in time (see `workspace_in_time`)."""
    set_by_user = ENV in os.environ
    os.environ.setdefault(ENV, DETERMINISTIC_VALUES[0])
    return workspace_in_time(os.environ[ENV], set_by_user, _cuda_initialised())


IN_TIME = prepare()


def problem() -> str | None:
    """Why a deterministic CUDA run in this process would not be, or None."""
    value = os.environ.get(ENV)
    if value not in DETERMINISTIC_VALUES:
        return (f"environment variable {ENV}={value!r} is not deterministic; set it to "
                f"{' or '.join(DETERMINISTIC_VALUES)} before starting Python, or use deterministic=false")
    if not IN_TIME:
        return (f"CUDA was initialised in this process before `engine` was imported, so cuBLAS never read "
                f"{ENV}={value}; restart the Python process (kernel) and import engine before using CUDA, "
                "or use deterministic=false")
    return None
