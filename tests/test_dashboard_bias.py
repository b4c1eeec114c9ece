"""The bias view: per-judge z-scores on one diverging scale, the diagonal outlined, the
self-preference table and what the seeds allow."""
from __future__ import annotations

import panel as pn
import pandas as pd

from dashboard.bias import bias_view, judged_cells
from test_score import BONUS, JUDGES, VQGANS, _spread, table


def _shown(bias: pd.DataFrame) -> pd.DataFrame:
    return bias[["vqgan", "generator"]].drop_duplicates()


def _markdown(view: pn.Column) -> str:
    return " ".join(str(p.object) for p in view.select(pn.pane.Markdown))


def test_each_judge_column_spreads_over_the_scale() -> None:
    cells = judged_cells(table({1: 0.0}))
    for _, column in cells.groupby("judge"):  # raw values differ 100-fold between judges
        assert column["z"].min() < -0.5 and column["z"].max() > 1.5
    view = bias_view(table({1: 0.0}), _shown(table({1: 0.0})))
    heatmap = view[0].object
    outlines = [r for r in heatmap.renderers if getattr(r.glyph, "fill_alpha", 1) == 0]
    solid, dashed = (next(r for r in outlines if r.glyph.line_width == w) for w in (3, 2))
    assert list(zip(solid.data_source.data["x"], solid.data_source.data["y"])) == [
        (j, f"{v} · {j}") for v in VQGANS for j in JUDGES]  # the diagonal, cell by cell
    assert set(dashed.data_source.data["x"]) == {"ViT-B32", "RN50"}  # judges within the pair
    cmap = heatmap.renderers[0].glyph.fill_color.transform
    assert cmap.low == -cmap.high


def test_one_seed_says_so() -> None:
    text = _markdown(bias_view(table({1: 0.0}), _shown(table({1: 0.0}))))
    assert "One seed per cell: no interval" in text
    assert f"| ViT-B16 | {BONUS / _spread(BONUS):+.2f} | 1 |" in text


def test_several_seeds_give_intervals() -> None:
    bias = table({1: -0.1, 2: 0.0, 3: 0.1})
    text = _markdown(bias_view(bias, _shown(bias)))
    assert "Mean over 3 seeds with a 95 % t-interval" in text and "no interval" not in text
    assert text.count(" [") == len(JUDGES) + len(VQGANS)


def test_filtered_cells_keep_the_judges_whole_spread() -> None:
    bias = table({1: 0.0})
    shown = _shown(bias)
    one = bias_view(bias, shown[shown["vqgan"] == "coco"])
    fig = one[0].object
    assert len(fig.y_range.factors) == len(JUDGES) + 1  # coco's four generators
    full = judged_cells(bias).query("vqgan == 'coco'")["z"].tolist()
    assert fig.renderers[0].data_source.data["z"] == full  # z-scored over the whole grid
    assert "| coco |" in _markdown(one) and "| wikiart |" not in _markdown(one)
    assert isinstance(bias_view(bias, shown.iloc[0:0]), str)


def test_no_diagonal_no_preference() -> None:
    bias = table({1: 0.0})
    bias = bias[bias["generator"] == "ViT-B32+RN50"]  # only the pair: nobody judged its own images
    text = _markdown(bias_view(bias, _shown(bias)))
    assert "no self-preference to show" in text and "Solid outline" in text
