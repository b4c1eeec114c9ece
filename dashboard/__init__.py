"""Dashboard for VQGAN+CLIP run folders: catalog, synced-grid app, static export, notebook view.

`dashboard.show(root)` (dashboard/notebook.py) is the grid as a notebook cell's output; it is
imported on first use, so `import dashboard` loads neither Panel nor pandas.
"""
from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "show":
        from dashboard.notebook import show

        return show
    raise AttributeError(f"module 'dashboard' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), "show"])
