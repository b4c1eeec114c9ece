"""VQGAN+CLIP engine: models by name, the optimiser, and run folders."""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from engine import cublas as _cublas  # noqa: F401  (sets CUBLAS_WORKSPACE_CONFIG before any CUDA use)

if TYPE_CHECKING:
    from pathlib import Path

    from engine.settings import Settings

__version__ = "0.1.0"


def run(config: str | Path | Mapping | Settings | None = None, /, **settings: object) -> Path:
    """Run (or resume) one optimisation; return its folder (a `pathlib.Path`).

    `config`: a YAML/JSON or pytti `_settings.txt` path, a mapping or `engine.settings.Settings`;
    `settings`: settings by name on top (`engine.run(vqgan_model="tiny", display_every=10)`). In a
    notebook `display_every`/`clear_every`/`display_scale` show pytti's inline previews.
    """
    from engine.notebook import run as notebook_run  # torch loads here, not on `import engine`

    return notebook_run(config, **settings)
