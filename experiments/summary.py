"""Stage `summary`: the study's answer in a few numbers, the grid's only DVC metrics.

One file per measure in experiments/summary/ (`<measure>.json`, `similarity:<judge>` as
`similarity-<judge>.json`): the measure's shares of the variance between runs (VQGAN, perceptor
set, any varied setting, interaction, residual; experiments/scores/effects.json) and, for a
judge's similarity, that judge's self-preference (experiments/scores/self_preference.json) and
`cmmd`, the mean CMMD between two VQGANs' final frames in that judge's eyes (cmmd.json). So
`dvc metrics show` prints one short row per measure, and `dvc exp show` compares them; every other
number stays one `dvc metrics show FILE` away (docs/grid.md).
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

from engine.cli import error_boundary
from engine.errors import StateError
from experiments.grid import SCORES_DIR
from experiments.scorefiles import CMMD, EFFECTS, SELF_PREFERENCE, read_json, write_json

SUMMARY_DIR = Path("experiments/summary")
JUDGE_MEASURE = "similarity:"  # effects' measure of a judge's similarity to the prompt: similarity:<judge>
DIGITS = 3


def summarise(effects: dict[str, Any], preference: dict[str, Any] | None,
              distances: dict[str, Any] | None = None) -> dict[str, dict[str, float]]:
    """{file stem: {share, `self_preference` or `cmmd`: value}}, a row per measure that has shares."""
    judges = (preference or {}).get("judges", {})
    cmmd = {judge: mean_pair(per.get("vqgan", {})) for judge, per in (distances or {}).get("cmmd", {}).items()}
    rows = {}
    for measure, result in effects.get("measures", {}).items():
        row = {share: round(result[share], DIGITS) for share in effects.get("shares", ())
               if result.get(share) is not None}
        judge = measure.removeprefix(JUDGE_MEASURE) if measure.startswith(JUDGE_MEASURE) else None
        if judge in judges and judges[judge].get("mean") is not None:
            row["self_preference"] = round(judges[judge]["mean"], DIGITS)
        if cmmd.get(judge) is not None:
            row["cmmd"] = round(cmmd[judge], DIGITS)
        if row:
            rows[measure.replace(":", "-")] = row
    return rows


def mean_pair(pairs: dict[str, dict[str, float | None]]) -> float | None:
    """The mean of the distances between every two levels ({A: {B: d}}, each pair once)."""
    values = [d for a, row in pairs.items() for b, d in row.items() if a < b and d is not None]
    return sum(values) / len(values) if values else None


def write_summary(scores: Path = SCORES_DIR, folder: Path = SUMMARY_DIR) -> list[Path]:
    """The summary files of the scores in `scores`, written afresh into `folder`."""
    effects = read_json(scores, EFFECTS)
    if effects is None:
        raise StateError(f"{scores / EFFECTS} is missing or unreadable; run `dvc repro effects` to make it")
    rows = summarise(effects, read_json(scores, SELF_PREFERENCE), read_json(scores, CMMD))
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return [write_json(folder / f"{stem}.json", row) for stem, row in rows.items()]


def main() -> int:
    def stage() -> None:
        written = write_summary()
        print(f"summary: {len(written)} measures -> {SUMMARY_DIR}/ (dvc metrics show)")

    return error_boundary(stage)


if __name__ == "__main__":
    sys.exit(main())
