"""Static export: one HTML page plus an assets folder that plays the synced grid offline.

Each run's frames are downscaled, padded with a gutter of their own edge pixels and packed into
sprite sheets (WebP or JPEG, at most MAX_SIDE px a side, so usually one per run), so the page
loads one image per cell and switches steps by moving the sheet: no server, no network, and
the same player (static/player.js) as the app. Every frame is read through
`engine.runfolder.read_frame` (its size checked against the run's before it is decoded): one that
cannot be read is a black slot and marks its run damaged, named. The export is all or nothing:
written aside, then moved into place, the page last.
"""
from __future__ import annotations

import html
import json
import math
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from engine.errors import InputError
from engine.fsutil import TEMP_MARK, BadFile
from engine.runfolder import read_frame

from .catalog import finite, levels_of, perceptor_names, run_size, select
from .context import cell_context, slot_tags
from .effects import effects_html, load_effects
from .fingerprints import experiment_prints, fingerprints_html, prints_spec
from .grid import (
    bounded_frames,
    check_axis,
    current_axis,
    grid_spec,
    page_title,
    varied_settings,
)
from .player import STATIC
from .state import RootState

MAX_SIDE = 4096  # per sheet side: every browser decodes it, and a sheet stays under 64 MB
MAX_PIXELS = 400_000_000  # decoded pixels of all the sheets together: 1.6 GB in a browser
GUTTER = 4  # px of each frame's own edge around it: neither scaling nor compression mixes in a neighbour
FORMATS = {"webp": ("WEBP", ".webp"), "jpeg": ("JPEG", ".jpg")}
PUBLIC = 0o644  # the page and sheets, whatever the umask: a static host serves them to anyone
ASSET = re.compile(r"^\d{3}-.*\.(webp|jpg)$")


class ExportError(InputError):
    """An export that cannot be written as asked; the message says why and what to change."""


def output_paths(out: str | Path) -> tuple[Path, Path]:
    """(page, assets): `X.html` and `X_files/`; for a folder, `index.html` and `assets/`."""
    out = Path(out)
    if out.suffix == ".html":
        return out, out.with_name(f"{out.stem}_files")
    return out / "index.html", out / "assets"


def make_folder(folder: Path, out: str | Path) -> None:
    """Create `folder` (and its parents) for the export `--out out`; ExportError naming it where
    it cannot be made or written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"--out {out}: cannot make the folder {e.filename or folder} "
                          f"({e.strerror or e}); choose a folder you can write") from e
    if not os.access(folder, os.W_OK):
        raise ExportError(f"--out {out}: the folder {folder} is not writable; choose a folder "
                          "you can write")


def frame_box(root: Path, run: Any, width: int) -> tuple[int, int]:
    """(w, h) a run's frames are shown at: their size (from its settings, else its first frame
    that reads) scaled to at most `width` px wide; `width` square where no frame reads."""
    size = run_size(run)
    for name in () if size else run.frames:
        try:
            h0, w0 = read_frame(root / name).shape[:2]
            size = w0, h0
            break
        except (OSError, BadFile):
            continue
    w0, h0 = size or (width, width)
    w = min(width, w0)
    return w, max(1, round(h0 * w / w0))


def sheet_layout(n: int, w: int, h: int) -> list[tuple[int, int]]:
    """(columns, rows) of each sprite sheet holding `n` frames of w x h plus their gutters: as
    few sheets as fit MAX_SIDE, each near-square."""
    pw, ph = w + 2 * GUTTER, h + 2 * GUTTER
    fit_c, fit_r = MAX_SIDE // pw, MAX_SIDE // ph
    if not fit_c or not fit_r:
        widest = min(MAX_SIDE - 2 * GUTTER, (MAX_SIDE - 2 * GUTTER) * w // h)
        raise ExportError(f"--width {w}: a {w}x{h} px frame does not fit a {MAX_SIDE} px sprite "
                          f"sheet; use --width {widest} or less")
    per = fit_c * fit_r
    layout = []
    for m in [per] * (n // per) + ([n % per] if n % per else []):
        cols = min(fit_c, max(1, math.ceil(math.sqrt(m * ph / pw))))
        if math.ceil(m / cols) > fit_r:
            cols = math.ceil(m / fit_r)
        layout.append((cols, math.ceil(m / cols)))
    return layout


def _sheet_pixels(sizes: dict[str, tuple[int, int, int]], scale: float = 1.0) -> int:
    return sum(n * (round(w * scale) + 2 * GUTTER) * (round(h * scale) + 2 * GUTTER)
               for n, w, h in sizes.values())


def check_budget(sizes: dict[str, tuple[int, int, int]], width: int) -> None:
    """Refuse, naming the size and the --width that fits, an export whose sheets would hold
    more than MAX_PIXELS; `sizes` maps run -> (frames, w, h)."""
    total = _sheet_pixels(sizes)
    if total <= MAX_PIXELS:
        return
    fits = int(width * math.sqrt(MAX_PIXELS / total))
    while fits > 1 and _sheet_pixels(sizes, fits / width) > MAX_PIXELS:
        fits -= 1
    frames = sum(n for n, _, _ in sizes.values())
    raise ExportError(f"the export would hold {total / 1e6:.0f} Mpx ({frames} frames of "
                      f"{len(sizes)} runs), over the {MAX_PIXELS / 1e6:.0f} Mpx a browser page "
                      f"can decode; use --width {fits} or less, or export fewer runs "
                      "(--experiment, --vqgan, --perceptor)")


def _padded(frame: Image.Image) -> Image.Image:
    """`frame` with GUTTER px of its own edge pixels repeated around it."""
    arr = np.pad(np.asarray(frame), ((GUTTER, GUTTER), (GUTTER, GUTTER), (0, 0)), mode="edge")
    return Image.fromarray(arr, "RGB")


def decoded_frame(path: Path, size: tuple[int, int] | None, box: tuple[int, int]) -> Image.Image:
    """The frame at `path` (refused from its header where it is not `size`, the run's: `read_frame`)
    as RGB scaled to `box`; OSError or BadFile where it cannot be read."""
    frame = Image.fromarray(read_frame(path, size), "RGB")
    return frame if frame.size == box else frame.resize(box, Image.Resampling.LANCZOS)


def sheets(root: Path, frames: list[str], size: tuple[int, int] | None, box: tuple[int, int],
           problems: list[str] | None = None) -> tuple[int, Iterator[tuple[Image.Image, int, int]]]:
    """(frames per sheet, the sheets as (image, columns, rows)): `frames` (of the run's `size`)
    scaled to `box`, each padded with a gutter and packed row by row, made one at a time as they
    are iterated. A frame that cannot be read is left black, and named in `problems`."""
    w, h = box
    pw, ph = w + 2 * GUTTER, h + 2 * GUTTER
    layout = sheet_layout(len(frames), w, h)
    per = layout[0][0] * layout[0][1] if len(layout) > 1 else len(frames)

    def made() -> Iterator[tuple[Image.Image, int, int]]:
        for s, (cols, rows) in enumerate(layout):
            sheet = Image.new("RGB", (cols * pw, rows * ph))
            for k, name in enumerate(frames[s * per:(s + 1) * per]):
                try:
                    frame = decoded_frame(root / name, size, box)
                except (OSError, BadFile) as e:
                    if problems is not None:
                        problems.append(f"{name} cannot be read ({getattr(e, 'strerror', None) or e})")
                    continue
                sheet.paste(_padded(frame), ((k % cols) * pw, (k // cols) * ph))
            yield sheet, cols, rows

    return per, made()


def sprite(sheet_list: list[dict[str, Any]], per: int, size: tuple[int, int]) -> dict[str, Any]:
    """A cell's frames in the player's grid spec: its sheets (`url`, `cols`, `rows`)."""
    return {"sprite": {"sheets": sheet_list, "per": per, "gutter": GUTTER},
            "width": size[0], "height": size[1]}


def pack_sheets(root: Path, run: Any, box: tuple[int, int], dest: Path, fmt: str,
                quality: int) -> tuple[int, list[dict[str, Any]], list[str]]:
    """Write the `sheets` of a catalog row's frames to `dest` (one sheet) or `dest` with `-1`,
    `-2`... before the suffix (several); (frames per sheet, each sheet's `name`, `cols` and
    `rows`, the frames that could not be read)."""
    problems: list[str] = []
    per, made = sheets(root, list(run.frames), run_size(run), box, problems)
    written = []
    for s, (sheet, cols, rows) in enumerate(made):
        path = dest if per >= len(run.frames) else dest.with_name(f"{dest.stem}-{s + 1}{dest.suffix}")
        sheet.save(path, format=FORMATS[fmt][0], quality=quality, method=4)
        path.chmod(PUBLIC)
        written.append({"name": path.name, "cols": cols, "rows": rows})
    return per, written, problems


@contextmanager
def staged(html_path: Path, assets: Path, out: str | Path) -> Iterator[Path]:
    """A private folder beside the page to write the export into. On success its sheets move into
    `assets`, then its page onto `html_path`; on any failure (Ctrl-C included) it is deleted with
    the folders made for it, and nothing at `out` has changed."""
    made = [p for p in [html_path.parent, *html_path.parent.parents] if not p.exists()]
    make_folder(html_path.parent, out)
    stage = Path(tempfile.mkdtemp(dir=html_path.parent, prefix=f".{assets.name}.{TEMP_MARK}", suffix=".tmp"))
    try:
        yield stage
        make_folder(assets, out)
        for sheet in stage.iterdir():
            if sheet.name != html_path.name:
                os.replace(sheet, assets / sheet.name)
        os.replace(stage / html_path.name, html_path)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        for folder in made:  # deepest first; one that holds anything else stays
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    stage.rmdir()


def page(spec: dict, title: str, compact: bool = False, extra: str = "") -> str:
    """The HTML page: the player's CSS and JS inline, the grid as strict JSON, then `extra` HTML
    (the "What drives the look" panel, the fingerprints' heatmaps). `compact` fits a docs column
    (tiles scale to the page width, smaller controls)."""
    css = (STATIC / "player.css").read_text(encoding="utf-8")
    js = (STATIC / "player.js").read_text(encoding="utf-8")
    data = json.dumps(finite(spec), separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    options = json.dumps({"compact": compact, "fitHeight": not compact})
    return "\n".join([
        "<!doctype html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>",
        "<style>", css, "body { margin: 8px; }", "</style>", "</head>",
        f'<body class="{"dp-compact" if compact else ""}">',
        f"<h1 class='dp-title'>{html.escape(title)}</h1>",
        '<div id="dp-root"></div>',
        f'<script type="application/json" id="dp-data">{data}</script>',
        '<script type="module">', js,
        'const data = JSON.parse(document.getElementById("dp-data").textContent);',
        f'mount(document.getElementById("dp-root"), data, {options});',
        "</script>", extra, "</body>", "</html>", "",
    ])


def _known(option: str, given: list[str] | None, allowed: list[str]) -> None:
    """ExportError naming a value of `option` (`--vqgan `, `--level scenes=`) that no run has,
    and those allowed."""
    for value in given or ():
        if value not in allowed:
            raise ExportError(f"{option}{value}: no run with frames has it; choose from "
                              f"{', '.join(allowed) or '(none)'}")


def chosen_runs(state: RootState, experiments: list[str] | None = None,
                vqgans: list[str] | None = None, perceptors: list[str] | None = None,
                levels: Mapping[str, list[str]] | None = None) -> pd.DataFrame:
    """The runs with frames under the root of `state` that the page's filters would show (None:
    all; `levels`: {varied setting: its levels}), with their losses; ExportError for a name no
    run has, or where nothing is left."""
    runs = state.catalog().query("n_frames > 0")
    _known("--experiment ", experiments, sorted(runs["experiment"].unique()))
    _known("--vqgan ", vqgans, sorted(runs["vqgan"].unique()))
    _known("--perceptor ", perceptors, perceptor_names(runs))
    for setting, ticked in (levels or {}).items():
        _known("--level ", [setting], varied_settings(runs))
        _known(f"--level {setting}=", ticked, levels_of(runs, setting))
    runs = select(runs, vqgans, perceptors, experiments, levels)
    if runs.empty:
        raise ExportError("no run with frames is left by --experiment, --vqgan, --perceptor and "
                          "--level together; widen the selection")
    return bounded_frames(state.losses(runs))


def export(root: str | Path, out: str | Path, rows: str = "vqgan", cols: str = "perceptor_set",
           width: int = 256, fmt: str = "webp", quality: int = 80, title: str | None = None,
           compact: bool = False, *, experiments: list[str] | None = None,
           vqgans: list[str] | None = None, perceptors: list[str] | None = None,
           levels: Mapping[str, list[str]] | None = None) -> Path:
    """Write the static page for the runs under `root` (those of `experiments`, `vqgans`,
    `perceptors` and the `levels` of varied settings, as the page filters them; None: all) to
    `out`, laid out by the axes `rows` and `cols` (any axis of the page: `scenes`); return the
    page's path. An InputError, before anything is written, where an axis does not lay out these
    runs or the sheets would be too large; the title defaults to `grid.page_title`. A frame that
    cannot be read is a black slot, and its run is marked damaged with the frame named."""
    if width < 1:
        raise ExportError(f"--width {width}: must be at least 1 px")
    state = RootState.open(root)
    root, rows, cols = state.root, current_axis(rows), current_axis(cols)
    runs = chosen_runs(state, experiments, vqgans, perceptors, levels)
    check_axis(runs, rows, "--rows")
    check_axis(runs, cols, "--cols")
    html_path, assets = output_paths(out)
    ext = FORMATS[fmt][1]
    names = {run: f"{i:03d}-{re.sub(r'[^A-Za-z0-9._-]+', '-', run)[:80]}{ext}"
             for i, run in enumerate(runs["run"])}
    boxes = {run.run: frame_box(root, run, width) for run in runs.itertuples()}
    for run in runs.itertuples():
        sheet_layout(len(run.frames), *boxes[run.run])
    check_budget({run.run: (len(run.frames), *boxes[run.run]) for run in runs.itertuples()}, width)
    look = effects_html(load_effects(state.scores, runs, root))
    catalog = state.catalog()
    prints = [experiment_prints(catalog[catalog["experiment"] == e], root, state.scores)
              for e in sorted(set(runs["experiment"]))]
    with staged(html_path, assets, out) as stage:
        packed = {run.run: pack_sheets(root, run, boxes[run.run], stage / names[run.run], fmt, quality)
                  for run in tqdm(runs.itertuples(), total=len(runs), desc="packing", unit="cell")}
        runs = with_problems(runs, {run: problems for run, (_, _, problems) in packed.items()})
        tags = slot_tags(runs)

        def sheet_frames(run: pd.Series) -> dict:
            per, written, _ = packed[run.run]
            urls = [{"url": f"{assets.name}/{s['name']}", "cols": s["cols"], "rows": s["rows"]}
                    for s in written]
            return {**sprite(urls, per, boxes[run.run]), **cell_context(run, tags.get(run.run))}

        spec = {**grid_spec(runs, rows, cols, sheet_frames), "prints": prints_spec(prints)}
        extra = look + fingerprints_html(prints)
        staged_page = stage / html_path.name
        staged_page.write_text(page(spec, title or page_title(runs["experiment"].unique()), compact, extra),
                               encoding="utf-8")
        staged_page.chmod(PUBLIC)
    written = {s["name"] for _, sheet_list, _ in packed.values() for s in sheet_list}
    for stale in assets.iterdir():
        if ASSET.match(stale.name) and stale.name not in written:
            stale.unlink()
    return html_path


def with_problems(runs: pd.DataFrame, problems: Mapping[str, list[str]]) -> pd.DataFrame:
    """`runs` where each run with `problems` (frames that could not be read) is damaged, with
    them first in its reason."""
    bad = runs["run"].map(lambda r: bool(problems.get(r)))
    if not bad.any():
        return runs
    runs = runs.copy()
    runs.loc[bad, "status"] = "damaged"
    runs.loc[bad, "reason"] = ["; ".join([*problems[r.run], r.reason] if r.reason else problems[r.run])
                               for r in runs[bad].itertuples()]
    return runs


def export_size(out: str | Path) -> int:
    """Bytes of the page written to `out` and its assets."""
    html_path, assets = output_paths(out)
    return html_path.stat().st_size + sum(p.stat().st_size for p in assets.glob("*") if p.is_file())
