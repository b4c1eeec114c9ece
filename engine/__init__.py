"""VQGAN+CLIP engine: models by name, the optimiser, and run folders."""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from engine import cublas as _cublas  # noqa: F401  (sets CUBLAS_WORKSPACE_CONFIG before any CUDA use)

if TYPE_CHECKING:
    from pathlib import Path

    from engine.settings import Config

__version__ = "0.1.0"


def run(config: Config = None, /, **settings: object) -> Path:
    """Run (or resume) one optimisation; return its folder (a `pathlib.Path`).

    `config`: a YAML/JSON or pytti `_settings.txt` path, a mapping or `engine.settings.Settings`;
    `settings`: settings by name on top (`engine.run(vqgan_model="tiny", display_every=10)`). In a
    notebook `display_every`/`clear_every`/`display_scale` show pytti's inline previews. An
    interrupt (KeyboardInterrupt) stops at once and says how to resume.
    """
    from engine.loop import execute  # torch loads here, not on `import engine`
    from engine.runfolder import RunFolder
    from engine.settings import settings_from

    resolved = settings_from(config, settings)
    try:
        return execute(resolved)
    except KeyboardInterrupt:
        folder = RunFolder(resolved.out_dir, resolved.file_namespace).path
        print(f"interrupted: {folder} keeps its frames up to the last save point (every "
              f"{resolved.save_every} steps); run the same engine.run(...) call again to resume "
              "from there", file=sys.stderr, flush=True)
        raise
