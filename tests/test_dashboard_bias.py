"""The bias view: per-judge z-scores on one diverging scale, the diagonal outlined, the
self-preference as the judge stage's self_preference.json says it, and what the seeds allow."""
from __future__ import annotations

import subprocess
import sys

import panel as pn
import pandas as pd

from dashboard.bias import bias_view, judged_cells
from dashboard_fixtures import REPO
from test_score import JUDGES, VQGANS, table

ONE_SEED = {"judges": {j: {"mean": 0.8125, "low": None, "high": None, "seeds": 1} for j in JUDGES},
            "vqgans": {v: {"mean": -0.25, "low": None, "high": None, "seeds": 1} for v in VQGANS}}
SEEDS = {"judges": {j: {"mean": 0.8125, "low": 0.5, "high": 1.125, "seeds": 3} for j in JUDGES},
         "vqgans": {v: {"mean": -0.25, "low": -0.5, "high": 0.0, "seeds": 3} for v in VQGANS}}


def _shown(bias: pd.DataFrame) -> pd.DataFrame:
    return bias[["vqgan", "perceptor_set"]].drop_duplicates()


def _markdown(view: pn.Column) -> str:
    return " ".join(str(p.object) for p in view.select(pn.pane.Markdown))


def test_each_judge_column_spreads_over_the_scale() -> None:
    cells = judged_cells(table({1: 0.0}))
    for _, column in cells.groupby("judge"):  # raw values differ 100-fold between judges
        assert column["z"].min() < -0.5 and column["z"].max() > 1.5
    view = bias_view(table({1: 0.0}), ONE_SEED, _shown(table({1: 0.0})))
    heatmap = view[0].object
    outlines = [r for r in heatmap.renderers if getattr(r.glyph, "fill_alpha", 1) == 0]
    solid, dashed = (next(r for r in outlines if r.glyph.line_width == w) for w in (3, 2))
    assert list(zip(solid.data_source.data["x"], solid.data_source.data["y"])) == [
        (j, f"{v} · {j}") for v in VQGANS for j in JUDGES]  # the diagonal, cell by cell
    assert set(dashed.data_source.data["x"]) == {"ViT-B32", "RN50"}  # judges within the pair
    cmap = heatmap.renderers[0].glyph.fill_color.transform
    assert cmap.low == -cmap.high


def test_the_self_preference_is_the_judge_stages() -> None:
    text = _markdown(bias_view(table({1: 0.0}), ONE_SEED, _shown(table({1: 0.0}))))
    assert "One seed per cell: no interval" in text
    assert "| ViT-B16 | +0.81 | 1 |" in text and "| coco | -0.25 | 1 |" in text


def test_several_seeds_give_intervals() -> None:
    bias = table({1: -0.1, 2: 0.0, 3: 0.1})
    text = _markdown(bias_view(bias, SEEDS, _shown(bias)))
    assert "Mean over 3 seeds with a 95 % t-interval" in text and "no interval" not in text
    assert "| RN50 | +0.81 [+0.50, +1.12] | 3 |" in text
    assert text.count(" [") == len(JUDGES) + len(VQGANS)


def test_without_the_judge_stages_file_the_heatmap_says_what_is_missing() -> None:
    bias = table({1: -0.1, 2: 0.0})
    view = bias_view(bias, None, _shown(bias))
    assert len(view[0].object.y_range.factors) == len(VQGANS) * (len(JUDGES) + 1)
    assert "needs the judge stage's `self_preference.json`" in _markdown(view)
    assert "| RN50 |" not in _markdown(view)


def test_filtered_cells_keep_the_judges_whole_spread() -> None:
    bias = table({1: 0.0})
    shown = _shown(bias)
    one = bias_view(bias, ONE_SEED, shown[shown["vqgan"] == "coco"])
    fig = one[0].object
    assert len(fig.y_range.factors) == len(JUDGES) + 1  # coco's four perceptor sets
    full = judged_cells(bias).query("vqgan == 'coco'")["z"].tolist()
    assert fig.renderers[0].data_source.data["z"] == full  # z-scored over the whole grid
    assert "| coco |" in _markdown(one) and "| wikiart |" not in _markdown(one)
    assert isinstance(bias_view(bias, ONE_SEED, shown.iloc[0:0]), str)


def test_no_diagonal_no_preference() -> None:
    bias = table({1: 0.0})
    bias = bias[bias["perceptor_set"] == "ViT-B32+RN50"]  # only the pair: nobody judged its own images
    text = _markdown(bias_view(bias, {"judges": {}, "vqgans": {}}, _shown(bias)))
    assert "no self-preference to show" in text and "Solid outline" in text


def test_the_bias_view_needs_no_scipy() -> None:
    code = ("import sys\nsys.modules['scipy'] = None  # any import of scipy fails\n"
            "import pandas as pd\nimport dashboard.app\nfrom dashboard.bias import bias_view\n"
            "bias = pd.DataFrame({'vqgan': ['a'] * 4, 'perceptor_set': ['P', 'P', 'Q', 'Q'],\n"
            "                     'judge': ['P', 'Q'] * 2, 'seed': [1, 2] * 2, 'similarity': [.3, .2, .1, .25]})\n"
            "bias_view(bias, None, bias)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
