"""VQGAN+CLIP engine: models by name, the optimiser, and run folders."""
from engine import cublas as _cublas  # noqa: F401  (sets CUBLAS_WORKSPACE_CONFIG before any CUDA use)

__version__ = "0.1.0"
