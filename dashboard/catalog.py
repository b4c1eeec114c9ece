"""Read a folder of VQGAN+CLIP runs (ours or pytti's) into a catalog: a DataFrame, a row a run."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import pandas as pd

#: pytti's perceptor switches and the slug each one gets in folder names (id without '/').
PYTTI_PERCEPTORS = {
    "ViTB32": "ViT-B32", "ViTB16": "ViT-B16", "ViTL14": "ViT-L14",
    "ViTL14_336px": "ViT-L14@336px", "RN50": "RN50", "RN101": "RN101", "RN50x4": "RN50x4",
    "RN50x16": "RN50x16", "RN50x64": "RN50x64",
}
RUN_FILES = ("losses.csv", "metrics.json")
FRAME_RE = re.compile(r"^(?P<base>.+)_(?P<n>\d+)\.png$")
SETTINGS_RE = re.compile(r"^(?P<base>.+)_settings\.(?P<ext>json|txt)$")
RERUN_RE = re.compile(r"^(?P<stem>.*)\((?P<k>\d+)\)$")
COLUMNS = [
    "run", "cell", "rerun", "folder", "experiment", "vqgan", "perceptors", "generator", "seed",
    "width", "height", "size", "save_every", "n_frames", "frames", "frame_steps", "frame_losses",
    "losses", "final_loss", "metrics", "settings", "source", "untrained", "status", "reason",
]
SUMMARY = ["run", "experiment", "vqgan", "generator", "seed", "size", "n_frames", "final_loss",
           "source", "untrained", "status", "reason"]


class MetadataError(ValueError):
    """A settings file exists but cannot be read."""


@dataclass
class Meta:
    """What a settings file (or, failing that, the folder name) says about a run."""

    source: str
    vqgan: str = "?"
    perceptors: list[str] = field(default_factory=list)
    experiment: str | None = None
    seed: int | None = None
    width: int | None = None
    height: int | None = None
    save_every: int = 1
    expected_frames: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    untrained: bool = False  # made with a random-weight model: says nothing about a checkpoint


def split_rerun(name: str) -> tuple[str, int]:
    """`ns(2)` -> (`ns`, 2); `ns` -> (`ns`, 0)."""
    m = RERUN_RE.match(name)
    return (m["stem"], int(m["k"])) if m else (name, 0)


def parse_cell_name(name: str) -> tuple[str, str | None, list[str]]:
    """`<experiment>__<vqgan>_<p1>_<p2>` -> (experiment, vqgan, [p1, p2]); slugs never hold `_`."""
    experiment, sep, rest = split_rerun(name)[0].rpartition("__")
    if not sep:
        return "", None, []
    vqgan, *perceptors = rest.split("_")
    return experiment, vqgan or None, perceptors


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _scene_count(scenes: Any) -> int:
    if isinstance(scenes, list):
        return len(scenes)
    return len([s for s in str(scenes or "").split("||") if s.strip()])


def _read_object(path: Path, parse: Callable[[str], Any] = json.loads) -> dict[str, Any]:
    """The JSON object `parse` finds in the file, else MetadataError."""
    try:
        obj = parse(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MetadataError(f"unreadable {path.name}: {e}") from e
    if not isinstance(obj, dict):
        raise MetadataError(f"unreadable {path.name}: not a JSON object")
    return obj


def read_ours(path: Path) -> Meta:
    """Our `<ns>_settings.json` sidecar (docs/run-folder-format.md)."""
    doc = _read_object(path)
    settings = doc.get("settings") or {}
    models = doc.get("models") or {}
    vqgan = (models.get("vqgan") or {}).get("slug") or settings.get("vqgan_model") or "?"
    perceptors = [p.get("slug") or p.get("name") for p in models.get("perceptors") or []]
    return Meta(
        source="ours", vqgan=vqgan, perceptors=perceptors or list(settings.get("perceptors") or []),
        experiment=doc.get("experiment") or settings.get("experiment"),
        seed=_int(doc.get("seed", settings.get("seed"))),
        width=_int(settings.get("width")), height=_int(settings.get("height")),
        save_every=_int(settings.get("save_every")) or 1, settings=settings,
        untrained=any(m.get("untrained") for m in [models.get("vqgan") or {}, *(models.get("perceptors") or [])]),
    )


def pytti_perceptors(settings: dict[str, Any]) -> list[str]:
    """The perceptors of a pytti run: its switches, then its mmc models (id without '/')."""
    slugs = [slug for switch, slug in PYTTI_PERCEPTORS.items() if settings.get(switch)]
    if settings.get("use_mmc"):
        slugs += [str(m.get("id", "")).replace("/", "") for m in settings.get("mmc_models") or []]
    return list(dict.fromkeys(s for s in slugs if s))


def read_pytti(path: Path) -> Meta:
    """pytti's `<ns>_settings.txt`: a JSON object, then a `b'<time>: <scene>'` line per scene."""
    settings = _read_object(path, lambda text: json.JSONDecoder().raw_decode(text.lstrip())[0])
    image_model = settings.get("image_model", "VQGAN")
    save_every = _int(settings.get("save_every")) or 1
    steps = _int(settings.get("steps_per_scene"))
    expected = steps * _scene_count(settings.get("scenes")) // save_every if steps else None
    return Meta(
        source="pytti",
        vqgan=settings.get("vqgan_model", "?") if image_model == "VQGAN" else image_model,
        perceptors=pytti_perceptors(settings), seed=_int(settings.get("seed")),
        width=_int(settings.get("width")), height=_int(settings.get("height")),
        save_every=save_every, expected_frames=expected, settings=settings,
    )


def _from_name(name: str) -> Meta:
    experiment, vqgan, perceptors = parse_cell_name(name)
    return Meta(source="folder name", vqgan=vqgan or "?", perceptors=perceptors,
                experiment=experiment or None)


def _frame_losses(losses: pd.DataFrame | None, steps: list[int]) -> list[float | None]:
    """The total loss at each frame step: the last logged row at or before it."""
    if losses is None or not {"step", "total"} <= set(losses.columns) or losses.empty:
        return [None] * len(steps)
    log = losses.dropna(subset=["step"]).sort_values("step")
    idx = log["step"].searchsorted(steps, side="right") - 1
    totals = log["total"].tolist()
    return [float(totals[i]) if i >= 0 and pd.notna(totals[i]) else None for i in idx]


def _json_safe(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with every missing value as None."""
    return df.astype(object).where(df.notna(), None)


def _read_losses(folder: Path) -> tuple[pd.DataFrame | None, str | None]:
    path = folder / "losses.csv"
    if not path.exists():
        return None, None
    try:
        return pd.read_csv(path), None
    except (OSError, ValueError) as e:
        return None, f"unreadable losses.csv: {e}"


def _read_metrics(folder: Path) -> tuple[dict[str, Any] | None, str | None]:
    path = folder / "metrics.json"
    if not path.exists():
        return None, None
    try:
        return _read_object(path), None
    except MetadataError as e:
        return None, str(e)


def read_meta(folder: Path, base: str, files: set[str]) -> tuple[Meta, list[str]]:
    """The run's metadata from its sidecar, else from the folder name, with what went wrong."""
    sidecar = next((f"{base}_settings.{e}" for e in ("json", "txt")
                    if f"{base}_settings.{e}" in files), None)
    if sidecar is None:
        problem = "no settings file"
    else:
        try:
            return (read_ours if sidecar.endswith(".json") else read_pytti)(folder / sidecar), []
        except MetadataError as e:
            problem = str(e)
    meta = _from_name(base)
    return meta, [problem + ("; metadata from the folder name" if meta.vqgan != "?" else "")]


def read_run(root: Path, folder: Path, base: str, files: set[str]) -> dict[str, Any]:
    """One catalog row: the run whose files in `folder` are named `<base>_*`."""
    frames = sorted(
        (int(m["n"]), name) for name in files
        if (m := FRAME_RE.match(name)) and m["base"] == base
    )
    meta, problems = read_meta(folder, base, files)

    losses, metrics = None, None
    if meta.source != "pytti":  # pytti writes neither file
        (losses, losses_err), (metrics, metrics_err) = _read_losses(folder), _read_metrics(folder)
        problems += [e for e in (losses_err, metrics_err) if e]
    if not frames:
        problems.insert(0, "no frames")
    elif meta.source == "ours" and not (metrics or {}).get("complete"):
        problems.append("no metrics.json: running or interrupted")
    elif meta.expected_frames and len(frames) < meta.expected_frames:
        problems.append(f"{len(frames)} of {meta.expected_frames} frames")

    steps = [n * meta.save_every for n, _ in frames]
    frame_losses = _frame_losses(losses, steps)
    final_loss = (metrics or {}).get("final_loss")
    if final_loss is None:
        final_loss = next((x for x in reversed(frame_losses) if x is not None), None)
    rel = folder.relative_to(root)  # "." where the root is itself the run folder
    run = (rel if base == folder.name else rel / base).as_posix()
    cell, rerun = split_rerun(base)
    group = rel.parent.as_posix()
    experiment = meta.experiment or parse_cell_name(base)[0] or ("" if group == "." else group)
    size = f"{meta.width}x{meta.height}" if meta.width and meta.height else "?"
    return {
        "run": base if run == "." else run, "cell": cell, "rerun": rerun,
        "folder": rel.as_posix(), "experiment": experiment, "vqgan": meta.vqgan,
        "perceptors": meta.perceptors, "generator": "+".join(meta.perceptors) or "?",
        "seed": meta.seed, "width": meta.width, "height": meta.height, "size": size,
        "save_every": meta.save_every, "n_frames": len(frames),
        "frames": [(rel / name).as_posix() for _, name in frames], "frame_steps": steps,
        "frame_losses": frame_losses,
        "losses": None if losses is None else _json_safe(losses).to_dict("list"),
        "final_loss": final_loss, "metrics": metrics, "settings": meta.settings,
        "source": meta.source, "untrained": meta.untrained,
        "status": "incomplete" if problems else "complete",
        "reason": "; ".join(problems),
    }


def _run_bases(folder: Path, files: set[str]) -> list[str]:
    """The base names of the runs in `folder`: the folder's own name and its `(k)` re-runs."""
    stem = split_rerun(folder.name)[0]
    found = {m["base"] for name in files if (m := FRAME_RE.match(name) or SETTINGS_RE.match(name))}
    bases = {b for b in found if split_rerun(b)[0] == stem}
    return sorted(bases or {folder.name}, key=lambda b: split_rerun(b)[1])


def _is_run_folder(files: set[str]) -> bool:
    return any(FRAME_RE.match(f) or SETTINGS_RE.match(f) or f in RUN_FILES for f in files)


def run_folders(root: Path, skip: Iterable[Path] = ()) -> Iterator[tuple[Path, set[str]]]:
    """Folders under `root` holding run files, or empty ones (listed as incomplete); others are
    searched for nested runs. Hidden folders and `skip` are left out."""
    skip = {p.resolve() for p in skip}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if folder.resolve() in skip:
            continue
        try:
            entries = list(folder.iterdir())
        except OSError:  # unreadable: listed as a run with no frames
            entries = []
        files = {p.name for p in entries if p.is_file()}
        subdirs = [p for p in entries if p.is_dir() and not p.name.startswith(".")]
        if _is_run_folder(files) or not subdirs:
            yield folder, files
        else:
            yield from run_folders(folder, skip)


def load_catalog(root: str | Path, skip: Iterable[Path] = ()) -> pd.DataFrame:
    """The catalog of every run under `root` (or of `root`, itself a run folder): one row per
    run, columns `COLUMNS`."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"no such folder: {root}")
    files = {p.name for p in root.iterdir() if p.is_file()}
    folders = [(root, files)] if _is_run_folder(files) else run_folders(root, skip)
    rows = [
        read_run(root, folder, base, files)
        for folder, files in folders
        for base in _run_bases(folder, files)
    ]
    df = pd.DataFrame(rows, columns=COLUMNS)
    return df.astype({"seed": "Int64", "width": "Int64", "height": "Int64"})


def select(df: pd.DataFrame, vqgans: Iterable[str] | None = None,
           perceptors: Iterable[str] | None = None,
           experiments: Iterable[str] | None = None) -> pd.DataFrame:
    """The runs with frames whose VQGAN, experiment and every perceptor are among those given
    (None = no filter). `ViT-B32` alone never brings in a `ViT-B32+RN50` run."""
    keep = df["n_frames"] > 0
    if vqgans is not None:
        keep &= df["vqgan"].isin(list(vqgans))
    if experiments is not None:
        keep &= df["experiment"].isin(list(experiments))
    if perceptors is not None:
        allowed = set(perceptors)
        keep &= df["perceptors"].map(lambda ps: set(ps) <= allowed)
    return df[keep]


def perceptor_names(df: pd.DataFrame) -> list[str]:
    """Every perceptor slug in the catalog, in order of first appearance."""
    return list(dict.fromkeys(p for ps in df["perceptors"] for p in ps))


def to_table(df: pd.DataFrame) -> str:
    """A readable table of the catalog."""
    if df.empty:
        return "no runs found"
    table = df[SUMMARY].round({"final_loss": 4}).astype(object)
    return table.where(table.notna(), "-").to_string(index=False, max_colwidth=60)


def to_json(df: pd.DataFrame) -> str:
    """The full catalog as a JSON list of runs."""
    records = _json_safe(df).to_dict("records")
    return json.dumps(records, indent=2, default=str)
