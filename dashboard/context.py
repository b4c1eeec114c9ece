"""What the player shows beside a cell's frames: its prompt schedule, its settings, and a tag
telling apart runs that would otherwise share a caption (two seeds of one cell)."""
from __future__ import annotations

from typing import Any

import pandas as pd

from engine.prompts import PromptSyntaxError, parse_scenes

from .grid import title


def _int(value: Any, default: int) -> int:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return default


def schedule(settings: dict[str, Any]) -> dict[str, Any] | None:
    """The scenes (prompt text and weight) and the scene timing of a run's settings, ours or
    pytti's (`scenes`, `scene_prefix`, `scene_suffix`, `steps_per_scene`,
    `interpolation_steps`); None where the settings name no scene or do not parse."""
    scenes = settings.get("scenes")
    if not isinstance(scenes, str) or not scenes.strip():
        return None
    try:
        parsed = parse_scenes(scenes, str(settings.get("scene_prefix") or ""),
                              str(settings.get("scene_suffix") or ""))
    except (PromptSyntaxError, ValueError):
        return None
    return {
        "scenes": [[{"text": p.text, "weight": p.weight} for p in scene] for scene in parsed],
        "steps_per_scene": max(1, _int(settings.get("steps_per_scene"), 100)),
        "interpolation_steps": max(0, _int(settings.get("interpolation_steps"), 0)),
    }


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def slot_tags(df: pd.DataFrame) -> dict[str, str]:
    """run -> a short tag for runs that share experiment, VQGAN and perceptors: the seed where
    each has its own, else up to two settings that differ (seed first), else the re-run
    number. Runs alone in their group get no tag."""
    tags: dict[str, str] = {}
    for _, group in df.groupby(["experiment", "vqgan", "generator"], sort=False, dropna=False):
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
    """run -> the name a legend or hover gives it: caption plus tag (`slot_tags`)."""
    with_experiment = df["experiment"].nunique() > 1
    tags = slot_tags(df)
    return {run.run: title(run, with_experiment) + (f" · {tags[run.run]}" if run.run in tags else "")
            for run in df.itertuples()}


def cell_context(run: pd.Series, tag: str | None) -> dict[str, Any]:
    """The context fields of a cell in the player's grid spec."""
    settings = run.settings if isinstance(run.settings, dict) else {}
    return {"tag": tag, "seed": None if pd.isna(run.seed) else int(run.seed),
            "settings": {k: v for k, v in settings.items() if _scalar(v) or isinstance(v, list)},
            "schedule": schedule(settings)}
