"""Per-frame image statistics: what a checkpoint does to colour, contrast and detail.

All take an (H, W, 3) uint8 RGB array and are deterministic.

- colourfulness: Hasler & Süsstrunk (2003), sqrt(σ_rg² + σ_yb²) + 0.3·sqrt(μ_rg² + μ_yb²) with
  rg = R − G and yb = (R + G)/2 − B on the 0–255 scale (0 for grey; ~100+ is very colourful).
- saturation: mean HSV saturation, (max − min) / max per pixel (0 where max = 0), in [0, 1].
- contrast: RMS contrast, the standard deviation of luma (Rec. 601, in [0, 1]).
- edge_density: the fraction of pixels (borders excluded) whose Sobel gradient magnitude of luma,
  scaled so that a full black-to-white step reads 1, exceeds `EDGE_THRESHOLD`.
- spectral_slope: the slope of log10 power against log10 frequency of luma's radially averaged
  power spectrum (`power_spectrum`: mean removed, Hann window, rings on a fixed log-frequency grid)
  over the mid band `SLOPE_BAND`: about −2 for natural photographs, steeper for smoother images,
  flatter for noisy or sharpened ones (Corvi et al., arXiv 2304.06408: generators leave spectral
  traces).
- grid_artifact: how visible a VQGAN's code grid is: the mean absolute luma difference across the
  boundaries of its latent cells (every `factor`-th column and row) over the same difference
  everywhere else; 1 where no grid shows, above 1 where it does.
- cielab_a, cielab_b: the mean CIELAB a* (green − / red +) and b* (blue − / yellow +, warmth) of
  the frame (`lab`: Pillow's ImageCms, LittleCMS, sRGB to the ICC's D50 CIELAB).
- palette: the `PALETTE_SIZE` dominant colours by median cut (PIL), most frequent first, as
  `#rrggbb;#rrggbb;...` (fewer when the frame has fewer colours).

Stage `imagestats` (`python -m experiments.imagestats [params.yaml]`): every frame of every cell
of the grid measured, into experiments/scores/ (experiments/scorefiles.py): image_stats.csv (a row
per frame) and image_stats.json ({vqgan: {perceptor set: {statistic: mean over frames and
seeds}}}). It loads no model.
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
DEFAULT_FACTOR = 16  # a VQGAN's pixels per latent cell side, where a run does not record it
#: cycles per pixel: the fixed log-frequency grid every spectrum is given on (2 to 64 pixels a cycle)
SPECTRUM_FREQUENCIES = np.geomspace(1 / 64, 1 / 2, 16)
SLOPE_BAND = (1 / 32, 1 / 4)  # the mid band the spectral slope is fitted over
FLAT = 0.5 / 255  # the least luma step grid_artifact divides by: half an 8-bit grey level
STATS = ("colourfulness", "saturation", "contrast", "edge_density", "spectral_slope", "grid_artifact",
         "cielab_a", "cielab_b")


def _float(rgb: np.ndarray) -> np.ndarray:
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB array, got shape {rgb.shape}")
    return rgb.astype(np.float32)  # the statistics need no more; a frame is never held as float64


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


def lab(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) float32 CIELAB (L* 0–100, a*, b*) of an sRGB frame, through LittleCMS (8 bits a channel)."""
    from PIL import ImageCms

    transform = ImageCms.buildTransform(ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB")
    out = np.asarray(ImageCms.applyTransform(Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)), transform))
    return np.dstack([out[..., 0] * (100 / 255), out[..., 1:].view(np.int8)]).astype(np.float32)


def cielab_a(rgb: np.ndarray) -> float:
    return float(lab(rgb)[..., 1].mean())


def cielab_b(rgb: np.ndarray) -> float:
    return float(lab(rgb)[..., 2].mean())


def power_spectrum(rgb: np.ndarray) -> np.ndarray:
    """log10 of luma's radially averaged power spectrum at `SPECTRUM_FREQUENCIES` (mean removed,
    Hann-windowed; each frequency the ring between its geometric neighbours; NaN where the frame is
    too small to have that ring)."""
    y = luma(rgb).astype(np.float32)
    h, w = y.shape
    window = np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)
    power = np.abs(np.fft.fft2((y - y.mean()) * window)) ** 2 / (h * w)
    radius = np.hypot(*np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij"))
    log_f = np.log(SPECTRUM_FREQUENCIES)
    edges = np.exp(np.concatenate([[log_f[0] - (log_f[1] - log_f[0]) / 2], (log_f[1:] + log_f[:-1]) / 2,
                                   [log_f[-1] + (log_f[1] - log_f[0]) / 2]]))
    ring = np.digitize(radius.ravel(), edges) - 1
    inside = (ring >= 0) & (ring < len(SPECTRUM_FREQUENCIES))
    total = np.bincount(ring[inside], power.ravel()[inside], len(SPECTRUM_FREQUENCIES))
    count = np.bincount(ring[inside], minlength=len(SPECTRUM_FREQUENCIES))
    mean = np.divide(total, count, out=np.full(len(total), np.nan), where=count > 0)
    return np.log10(np.maximum(mean, 1e-20), where=count > 0, out=np.full(len(mean), np.nan))


def spectrum_slope(log_power: np.ndarray) -> float:
    """The least-squares slope of a log10 spectrum against log10 frequency over `SLOPE_BAND`."""
    band = (SPECTRUM_FREQUENCIES >= SLOPE_BAND[0]) & (SPECTRUM_FREQUENCIES <= SLOPE_BAND[1]) & ~np.isnan(log_power)
    if band.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log10(SPECTRUM_FREQUENCIES[band]), log_power[band], 1)[0])


def spectral_slope(rgb: np.ndarray) -> float:
    return spectrum_slope(power_spectrum(rgb))


def grid_artifact(rgb: np.ndarray, factor: int = DEFAULT_FACTOR) -> float:
    """Mean |Δ luma| across the latent cells' boundaries over the same away from them (NaN where the
    frame holds no boundary; 1 for a flat frame; flat cells count as half a grey level of change)."""
    y = luma(rgb).astype(np.float32)
    dx, dy = np.abs(np.diff(y, axis=1)), np.abs(np.diff(y, axis=0))
    across_x = (np.arange(1, y.shape[1]) % factor) == 0  # the step from column j-1 to j crosses a boundary
    across_y = (np.arange(1, y.shape[0]) % factor) == 0
    if not (across_x.any() or across_y.any()):
        return float("nan")
    boundary = np.concatenate([dx[:, across_x].ravel(), dy[across_y].ravel()])
    interior = np.concatenate([dx[:, ~across_x].ravel(), dy[~across_y].ravel()])
    if boundary.mean() == interior.mean() == 0:
        return 1.0
    return float(boundary.mean() / max(interior.mean(), FLAT))


def frame_measures(rgb: np.ndarray, factor: int = DEFAULT_FACTOR) -> dict[str, float]:
    """Every numeric statistic of `STATS` of one frame (`factor`: its VQGAN's pixels per latent cell side)."""
    return {"colourfulness": colourfulness(rgb), "saturation": saturation(rgb), "contrast": contrast(rgb),
            "edge_density": edge_density(rgb), "spectral_slope": spectral_slope(rgb),
            "grid_artifact": grid_artifact(rgb, factor), "cielab_a": cielab_a(rgb), "cielab_b": cielab_b(rgb)}


def frame_stats(rgb: np.ndarray, factor: int = DEFAULT_FACTOR) -> dict[str, float | str]:
    """Every statistic of one frame, its palette last."""
    return {**frame_measures(rgb, factor), "palette": palette(rgb)}


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
                         *frame_stats(pixels, record.meta.vqgan_factor).values()])
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
    from experiments.scorefiles import (
        FRAME_COLUMNS,
        IMAGE_STATS,
        IMAGE_STATS_SUMMARY,
        write_csv,
        write_json,
    )

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
