"""What drives the look: each measure's variance split between the factors of the runs (the VQGAN,
the perceptor set and each setting the grid varies), the VQGAN × perceptor set interaction, the
other interactions together, and the residual (seed-to-seed noise).

    python -m experiments.effects --root DIR [--experiment NAME] [--json] [--frames final|all] [--scores DIR]
    python -m experiments.effects --grid params.yaml     # stage `effects`: from the score files

A measure is one image statistic of experiments/imagestats.py (of each run's final frame, or the
mean over its frames) or, where the judge stage wrote them, one judge's similarity to the prompt.
`anova` holds the method; `runs` finds and measures runs; `analysis` makes the JSON and the text.
Pure numpy/pandas on images and CSVs: no torch, and nothing of the dashboard.
"""
from experiments.effects.analysis import (
    LABELS,
    SIMILARITY,
    EffectsError,
    analyse,
    analyse_measure,
    design,
    label,
    to_text,
)
from experiments.effects.anova import PAIR, RESAMPLES, decompose, share_names
from experiments.effects.runs import (
    FRAMES,
    RunInfo,
    factors_of,
    find_runs,
    measure_table,
    pick_experiment,
    usable,
    with_similarities,
)

FACTORS = PAIR  # the factors every analysis has: VQGAN and perceptor set
SHARES = tuple(share_names(PAIR))  # the shares of an analysis of those two alone


def effects_of_runs(runs: list[RunInfo], experiment: str, frames: str = "final", bias=None,
                    resamples: int = RESAMPLES) -> dict:
    """The effects JSON of one experiment's runs (those not complete are left out, named); its
    factors are VQGAN, perceptor set and every setting the runs' names say was varied."""
    mine = [r for r in runs if r.experiment == experiment]
    factors = factors_of(mine)
    kept, left = usable(mine, factors)
    table, unreadable = measure_table(kept, frames, factors)
    return analyse(with_similarities(table, bias), experiment, frames, left + unreadable, resamples, factors)


__all__ = ["FACTORS", "FRAMES", "LABELS", "PAIR", "SHARES", "SIMILARITY", "EffectsError", "RunInfo", "analyse",
           "analyse_measure", "decompose", "design", "effects_of_runs", "factors_of", "find_runs", "label",
           "measure_table", "pick_experiment", "share_names", "to_text", "usable", "with_similarities"]
