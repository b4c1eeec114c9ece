"""The synced grid player as a Panel component; its JS and CSS also drive the static export."""
from __future__ import annotations

from bisect import bisect_right
from pathlib import Path

import param
from panel.custom import JSComponent

STATIC = Path(__file__).parent / "static"


class GridPlayer(JSComponent):
    """Every cell of `grid` (see `grid.grid_spec`) at one shared step, with play/pause, speed,
    loop or reflect, a step slider and ←/→ keys, all client-side; a clicked cell is shown
    large beside the pinned baseline, or as their per-pixel difference; fingerprint cards on
    the headers (`prints`)."""

    grid = param.Dict(default={"rows": [], "cols": [], "steps": [], "cells": []})
    step = param.Integer(default=0, doc=(
        "The step shown, in steps done (a value of grid['steps']; another value shows the last "
        "step before it, or the first), synced when the player stops."))
    selected = param.String(default="", doc="Run shown large.")
    baseline = param.String(default="", doc="Run pinned beside the selected one.")
    heads = param.Dict(default={}, doc="Header colours: {axis: {header: {colour, title}}}.")
    prints = param.Dict(default={}, doc=(
        "Fingerprints (dashboard.fingerprints.prints_spec): header cards, each run's own palette "
        "and spectrum, the distances between levels."))
    scoped = param.Boolean(default=False, constant=True, doc=(
        "On a page shared with other things (a notebook): keys act only with the focus inside "
        "the player, and 'fit' fits the width only."))

    def shown_step(self) -> int | None:
        """The step of `grid['steps']` that `step` shows; None where there is none."""
        steps = self.grid["steps"]
        return steps[max(bisect_right(steps, self.step) - 1, 0)] if steps else None

    _esm = STATIC / "player.js"
    # The CSS itself, not its path: a path would be fetched from Panel's `/components/` route,
    # which the server closes (dashboard/frames.py: it imports the module a URL names).
    _stylesheets = [(STATIC / "player.css").read_text(encoding="utf-8")]
