"""What the player shows beside a cell's frames: its scenes' prompts and each frame's scene
weights (from the run's frame table), its settings, and a tag telling apart runs that would
otherwise share a caption (two seeds of one cell)."""
from __future__ import annotations

from typing import Any

import pandas as pd

from .grid import levels_text, title


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def slot_tags(df: pd.DataFrame) -> dict[str, str]:
    """run -> a short tag for runs that share experiment, VQGAN, perceptor set and the levels of
    their varied settings: the seed where each has its own, else up to two settings that differ
    (seed first), else the re-run number. Runs alone in their group get no tag."""
    tags: dict[str, str] = {}
    levels = df["factors"].map(levels_text).rename("levels")
    for _, group in df.groupby(["experiment", "vqgan", "perceptor_set", levels], sort=False, dropna=False):
        if len(group) < 2:
            continue
        table = pd.DataFrame([{**{k: str(v) for k, v in s.items() if _scalar(v)}, "seed": str(seed)}
                              for s, seed in zip(group["settings"], group["seed"])],
                             index=group.index)
        differ = sorted((k for k in table.columns if table[k].nunique(dropna=False) > 1),
                        key=lambda k: k != "seed")
        keys = ["seed"] if table["seed"].is_unique else differ[:2]
        for idx, run in group.iterrows():
            named = ", ".join(f"{k} {table.at[idx, k]}" for k in keys)
            tags[run.run] = named or (f"re-run {run.rerun}" if run.rerun else "first run")
    return tags


def labels(df: pd.DataFrame) -> dict[str, str]:
    """run -> the name a legend or hover gives it: caption, levels of its varied settings and tag
    (`slot_tags`)."""
    with_experiment = df["experiment"].nunique() > 1
    tags = slot_tags(df)
    return {run.run: " · ".join(filter(None, [title(run, with_experiment), levels_text(run.factors),
                                              tags.get(run.run)]))
            for run in df.itertuples()}


def cell_context(run: pd.Series, tag: str | None) -> dict[str, Any]:
    """The context fields of a cell in the player's grid spec: `scenes` (per scene its prompts,
    `{text, weight}`) and `weights` (per frame each scene's weight at its step), as the run's
    frame table and sidecar record them."""
    settings = run.settings if isinstance(run.settings, dict) else {}
    return {"tag": tag, "seed": None if pd.isna(run.seed) else int(run.seed),
            "settings": {k: v for k, v in settings.items() if _scalar(v) or isinstance(v, list)},
            "scenes": run.scenes, "weights": run.frame_scenes}
