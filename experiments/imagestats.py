"""Per-frame image statistics: what a checkpoint does to colour, contrast and detail.

All take an (H, W, 3) uint8 RGB array and are deterministic.

- colourfulness: Hasler & Süsstrunk (2003), sqrt(σ_rg² + σ_yb²) + 0.3·sqrt(μ_rg² + μ_yb²) with
  rg = R − G and yb = (R + G)/2 − B on the 0–255 scale (0 for grey; ~100+ is very colourful).
- saturation: mean HSV saturation, (max − min) / max per pixel (0 where max = 0), in [0, 1].
- contrast: RMS contrast, the standard deviation of luma (Rec. 601, in [0, 1]).
- edge_density: the fraction of pixels (borders excluded) whose Sobel gradient magnitude of luma,
  scaled so that a full black-to-white step reads 1, exceeds `EDGE_THRESHOLD`.
- palette: the `PALETTE_SIZE` dominant colours by median cut (PIL), most frequent first, as
  `#rrggbb;#rrggbb;...` (fewer when the frame has fewer colours).

Stage `imagestats` (`python -m experiments.imagestats [params.yaml]`): every frame of every cell
of the grid measured, into experiments/scores/ (experiments/scorefiles.py): image_stats.csv (a row
per frame) and image_stats.json ({vqgan: {perceptor set: {statistic: mean over frames and
seeds}}}, DVC metrics). It loads no model.
"""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import pandas as pd

    from experiments.grid import Grid

EDGE_THRESHOLD = 0.1
PALETTE_SIZE = 5
STATS = ("colourfulness", "saturation", "contrast", "edge_density")


def _float(rgb: np.ndarray) -> np.ndarray:
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB array, got shape {rgb.shape}")
    return rgb.astype(np.float64)


def colourfulness(rgb: np.ndarray) -> float:
    x = _float(rgb)
    rg = x[..., 0] - x[..., 1]
    yb = 0.5 * (x[..., 0] + x[..., 1]) - x[..., 2]
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def saturation(rgb: np.ndarray) -> float:
    x = _float(rgb)
    hi, lo = x.max(axis=2), x.min(axis=2)
    s = np.divide(hi - lo, hi, out=np.zeros_like(hi), where=hi > 0)
    return float(s.mean())


def luma(rgb: np.ndarray) -> np.ndarray:
    x = _float(rgb) / 255.0
    return 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]


def contrast(rgb: np.ndarray) -> float:
    return float(luma(rgb).std())


def edge_density(rgb: np.ndarray, threshold: float = EDGE_THRESHOLD) -> float:
    y = luma(rgb)
    if min(y.shape) < 3:
        return 0.0
    # Sobel on the interior: gx = [-1 0 1; -2 0 2; -1 0 1], gy its transpose; a unit step gives 4.
    gx = (y[:-2, 2:] + 2 * y[1:-1, 2:] + y[2:, 2:]) - (y[:-2, :-2] + 2 * y[1:-1, :-2] + y[2:, :-2])
    gy = (y[2:, :-2] + 2 * y[2:, 1:-1] + y[2:, 2:]) - (y[:-2, :-2] + 2 * y[:-2, 1:-1] + y[:-2, 2:])
    magnitude = np.hypot(gx, gy) / 4.0
    return float((magnitude > threshold).mean())


def palette(rgb: np.ndarray, size: int = PALETTE_SIZE) -> str:
    image = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB")
    quantized = image.quantize(colors=size, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    colours = quantized.getpalette()[: 3 * size]
    counts = sorted(((count, index) for count, index in (quantized.getcolors(size) or [])),
                    key=lambda ci: (-ci[0], ci[1]))
    hexes = []
    for _, index in counts:
        r, g, b = colours[3 * index: 3 * index + 3]
        hexes.append(f"#{r:02x}{g:02x}{b:02x}")
    return ";".join(hexes)


def frame_stats(rgb: np.ndarray) -> dict[str, float | str]:
    """Every statistic of one frame."""
    return {"colourfulness": colourfulness(rgb), "saturation": saturation(rgb), "contrast": contrast(rgb),
            "edge_density": edge_density(rgb), "palette": palette(rgb)}


# ---------------------------------------------------------------- the stage

def stats_table(grid: Grid) -> pd.DataFrame:
    """A row per frame of every cell: the run's columns, frame, step, each statistic and the palette."""
    import pandas as pd

    from experiments.cells import frame_pixels, read_cells
    from experiments.scorefiles import FRAME_COLUMNS

    records, rows = read_cells(grid), []
    for cell in grid.cells:
        record = records[cell.name]
        for frame, pixels in zip(record.frames, frame_pixels(record)):
            rows.append([cell.name, cell.vqgan.slug, cell.perceptor_set, cell.seed, frame.n, frame.step,
                         *frame_stats(pixels).values()])
    return pd.DataFrame(rows, columns=[*FRAME_COLUMNS, *STATS, "palette"])


def summary(table: pd.DataFrame) -> dict:
    """{vqgan: {perceptor set: {statistic: mean over frames and seeds}}}."""
    from experiments.scorefiles import rounded

    means = table.groupby(["vqgan", "perceptor_set"], sort=False)[list(STATS)].mean()
    result: dict = {}
    for (vqgan, perceptor_set), row in means.iterrows():
        result.setdefault(vqgan, {})[perceptor_set] = {k: rounded(row[k]) for k in STATS}
    return result


def measure_grid(params: str) -> None:
    """The stage: measure every frame of the grid of `params` and write the score files."""
    from experiments.grid import SCORES_DIR, load_grid
    from experiments.scorefiles import FRAME_COLUMNS, IMAGE_STATS, IMAGE_STATS_SUMMARY, write_csv, write_json

    grid = load_grid(params)
    table = stats_table(grid)
    SCORES_DIR.mkdir(parents=True, exist_ok=True)
    write_csv(SCORES_DIR / IMAGE_STATS, table, [*FRAME_COLUMNS, *STATS, "palette"])
    write_json(SCORES_DIR / IMAGE_STATS_SUMMARY, summary(table))
    print(f"imagestats: {len(table)} frames of {len(grid.cells)} cells -> {SCORES_DIR / IMAGE_STATS}")


def main(argv: list[str] | None = None) -> int:
    from engine.cli import error_boundary
    from experiments.grid import PARAMS_FILE

    args = sys.argv[1:] if argv is None else argv
    return error_boundary(lambda: measure_grid(args[0] if args else PARAMS_FILE))


if __name__ == "__main__":
    sys.exit(main())
