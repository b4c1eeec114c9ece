"""One experiment's effects: every measure of a table of runs split by the analysis of variance
(`anova`), each measure's mean per level, the grid's shape, one-line readings and the text form."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from engine.errors import InputError
from experiments.effects.anova import (
    INTERACTION,
    OTHER,
    PAIR,
    RESAMPLES,
    RESIDUAL,
    Design,
    decompose,
    rounded,
    share_names,
)
from experiments.imagestats import STATS

SIMILARITY = "similarity:"  # measure name prefix: similarity to the prompt under a judge
CONSTANT = 1e-9  # relative spread under which a measure counts as constant
ROUGH_SEEDS = 8  # fewer seeds: the intervals undercover (benchmarks/effects_intervals.py)
LABELS = {"vqgan": "VQGAN", "perceptor_set": "perceptor set", INTERACTION: "VQGAN × perceptor set",
          OTHER: "other interactions", RESIDUAL: "residual"}


class EffectsError(InputError):
    """Input the analysis cannot use; the message names the value and what is allowed."""


def label(share: str) -> str:
    """How a share or factor is named to a reader (a varied setting by its own name)."""
    return LABELS.get(share, share)


def _codes(values: pd.Series) -> tuple[list[str], np.ndarray]:
    levels = sorted(set(map(str, values)))
    index = {v: i for i, v in enumerate(levels)}
    return levels, np.array([index[str(v)] for v in values], dtype=int)


def design(table: pd.DataFrame, measure: str, factors: Sequence[str] = PAIR) -> Design:
    """The runs with a value of `measure`, coded for the fits."""
    df = table[table[measure].notna()]
    coded = [_codes(df[f]) for f in factors]
    seeds = [f"seed {s}" if pd.notna(s) else f"run {r}" for s, r in zip(df["seed"], df["run"])]
    _, unit = _codes(pd.Series(seeds, dtype=object))
    return Design(df[measure].to_numpy(float), list(factors), [c for _, c in coded], [lv for lv, _ in coded], unit)


def constant_reason(y: np.ndarray) -> str | None:
    """Why a measure has no shares (it does not vary), else None."""
    if np.ptp(y) <= CONSTANT * max(1.0, float(np.abs(y).max())):
        return f"does not vary: every run reads {y[0]:.6g}, so there is no variance to split"
    return None


def analyse_measure(table: pd.DataFrame, measure: str, factors: Sequence[str] = PAIR,
                    resamples: int = RESAMPLES) -> dict[str, Any]:
    """The shares of one measure (or a reason it has none), its mean per level of each factor, a
    one-line reading, and the runs it lacks a value for."""
    d = design(table, measure, factors)
    missing = table.loc[table[measure].isna(), "run"].tolist()
    means = {f: {str(k): rounded(v) for k, v in table.groupby(f)[measure].mean().items()} for f in factors}
    reason = "no run has a value" if len(d.y) == 0 else constant_reason(d.y)
    if reason:
        out = {**dict.fromkeys(share_names(factors)), "low": None, "high": None, "reason": reason}
    else:
        out = decompose(d, resamples)
    out.update({"reading": reading(measure, out, factors), "runs": len(d.y), "means": means})
    if missing:
        out["no_value"] = missing
    return out


def reading(measure: str, result: dict[str, Any], factors: Sequence[str] = PAIR) -> str:
    """One line: the measure and its largest share, the factor that drives it ("edge density: 97 % VQGAN")."""
    name = measure.replace("_", " ")
    if result.get("reason"):
        return f"{name}: no shares ({result['reason'].split(':')[0]})"
    top = max((k for k in share_names(factors) if result[k] is not None), key=lambda k: result[k])
    return f"{name}: {round(100 * result[top])} % {label(top)}"


def grid_notes(table: pd.DataFrame, factors: Sequence[str] = PAIR) -> dict[str, Any]:
    """The grid's shape: cells, seeds, missing cells, whether balanced, and what that means."""
    levels = {f: sorted(set(map(str, table[f]))) for f in factors}
    counts = table.astype({f: str for f in factors}).groupby(list(factors)).size()  # two factors at least
    missing = [" · ".join(c) for c in pd.MultiIndex.from_product(list(levels.values())) if c not in counts.index]
    balanced = not missing and counts.nunique() == 1
    notes = []
    if counts.max() == 1:
        notes.append("one run per cell: the interactions cannot be told from seed-to-seed noise, so they are "
                     "reported as residual; add seeds (grid.seeds) to separate them")
    if missing:
        notes.append(f"missing cells ({', '.join(missing)}): the grid is incomplete; the shares come from "
                     "type II sums of squares of the cells there are")
    elif not balanced:
        uneven = ", ".join(f"{' · '.join(k)}: {n}" for k, n in counts.items())
        notes.append(f"unbalanced: runs per cell differ ({uneven}); the shares come from type II "
                     "sums of squares")
    seeds = table["seed"].dropna().nunique() + int(table["seed"].isna().sum())
    if counts.max() > 1 and seeds < ROUGH_SEEDS:
        notes.append(f"{seeds} seeds: the 95 % intervals hold the share less often than 95 % below "
                     f"{ROUGH_SEEDS} seeds (benchmarks/effects_intervals.py); read them as rough")
    for factor, values in levels.items():
        if len(values) == 1:
            notes.append(f"one {label(factor)} ({values[0]}): its share is 0 by construction")
    return {"cells": int(len(counts)), "seeds": int(seeds), "runs": int(len(table)), "balanced": bool(balanced),
            "missing": missing, "notes": notes}


def measure_columns(table: pd.DataFrame) -> list[str]:
    """The table's measures: the image statistics and each judge's similarity."""
    return [c for c in table.columns if c in STATS or c.startswith(SIMILARITY)]


def analyse(table: pd.DataFrame, experiment: str, frames: str = "final", left_out: Sequence[dict[str, str]] = (),
            resamples: int = RESAMPLES, factors: Sequence[str] = PAIR) -> dict[str, Any]:
    """The effects JSON of a measure table (a row per run: `run`, `cell`, each factor, `seed`, measures)."""
    if table.empty:
        raise EffectsError(f"experiment {experiment}: no complete run to analyse"
                           + (f" ({len(left_out)} left out: see 'excluded')" if left_out else ""))
    return {"experiment": experiment, "factors": list(factors), "shares": share_names(factors),
            **grid_notes(table, factors), "frames": frames, "excluded": list(left_out),
            "measures": {m: analyse_measure(table, m, factors, resamples) for m in measure_columns(table)}}


def _figure(result: dict[str, Any], key: str) -> str:
    value = result[key]
    if value is None:
        return "-"
    text = f"{value:.2f}"
    if result["low"] and result["low"][key] is not None:
        text += f" [{result['low'][key]:.2f}, {result['high'][key]:.2f}]"
    return text


def to_text(effects: dict[str, Any]) -> str:
    """A small table (a column per share, measures by their VQGAN share, those without shares last;
    the reading says which factor drives each measure), and the notes."""
    shares = effects.get("shares") or share_names(PAIR)
    ordered = sorted(effects["measures"].items(),
                     key=lambda kv: (kv[1]["vqgan"] is None, -(kv[1]["vqgan"] or 0), kv[0]))
    rows = [("measure", *(label(k) for k in shares), "reading")]
    rows += [(m, *(_figure(r, k) for k in shares), r.get("reason") or r["reading"]) for m, r in ordered]
    widths = [max(len(row[i]) for row in rows) for i in range(len(shares) + 1)]
    factors = ", ".join(label(f) for f in effects.get("factors", PAIR))
    lines = [f"experiment {effects['experiment']}: {effects['cells']} cells, {effects['seeds']} seed(s), "
             f"{effects['runs']} runs, frames: {effects['frames']}" + ("" if effects["balanced"] else ", unbalanced")
             + f"; factors: {factors}"]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row[:-1], widths)) + "  " + row[-1] for row in rows]
    lines += [f"note: {n}" for n in effects["notes"]]
    lines += [f"left out: {e['run']} ({e['reason']})" for e in effects["excluded"]]
    return "\n".join(lines)
