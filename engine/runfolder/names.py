"""The names of a run folder: its files, frame n ↔ step, grid cell names and pytti's naming rules.

Pure functions on text and numbers; nothing here touches the disk (docs/run-folder-format.md).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from engine.errors import InputError
from engine.limits import MAX_FRAMES  # noqa: F401  (a run's frames at most: its readers find it here)

#: The sidecar's `format`. /1 numbered losses.csv rows by the 0-based step index; from /2 on a
#: row's `step` is the number of steps done, the same count a frame's step uses; from /3 on the
#: engine writes the frame table (frames.csv) and metrics.json no longer lists the frames' hashes.
FORMAT = "vqgan-clip-run/3"
ZERO_BASED_LOSS_FORMATS = frozenset({"vqgan-clip-run/1"})
#: Formats before the frame table (/3): their frames' steps and scene weights are re-derived.
TABLELESS_FORMATS = frozenset({None, "vqgan-clip-run/1", "vqgan-clip-run/2"})
PERCEPTOR_SET_SEP = "+"  # a perceptor set, as text: its perceptors' slugs joined by '+'

LOSSES_FILE = "losses.csv"
FRAMES_FILE = "frames.csv"  # the frame table (engine/runfolder/frames.py)
METRICS_FILE = "metrics.json"
RESUME_FILE = "resume.pt"
RESUME_PREV_FILE = "resume.prev.pt"
RUN_FILES = (LOSSES_FILE, FRAMES_FILE, METRICS_FILE)  # files only a run folder holds (besides frames and sidecars)

FRAME_RE = re.compile(r"^(?P<base>.+)_(?P<n>\d+)\.png$")
SETTINGS_RE = re.compile(r"^(?P<base>.+)_settings\.(?P<ext>json|txt)$")
RERUN_RE = re.compile(r"^(?P<stem>.*)\((?P<k>\d+)\)$")
CELL_SEP = "__"  # between a cell's experiment, its models and its seed
SEED_RE = re.compile(r"^seed-(?P<seed>\d+)$")
_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")  # a model slug in a cell name
_FAMILY_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")  # `<key>` of pytti's `_<key>-<value>` names

#: Settings that pytti's own experiment families spell with a short key in folder names
#: (`exp_video_basic_stability_modes_ref-False_dsw-0.0_ssw-1.0`); any other setting is spelled whole.
SHORT_KEYS = {"reencode_each_frame": "ref", "direct_stabilization_weight": "dsw",
              "semantic_stabilization_weight": "ssw"}
_LONG_KEYS = {short: setting for setting, short in SHORT_KEYS.items()}

#: pytti's perceptor switches and the slug each one gets in folder names (the id without '/').
PYTTI_PERCEPTORS = {
    "ViTB32": "ViT-B32", "ViTB16": "ViT-B16", "ViTL14": "ViT-L14",
    "ViTL14_336px": "ViT-L14@336px", "RN50": "RN50", "RN101": "RN101", "RN50x4": "RN50x4",
    "RN50x16": "RN50x16", "RN50x64": "RN50x64",
}


# ---------------------------------------------------------------- files

def frame_name(namespace: str, n: int) -> str:
    """Frame n (1-based, as pytti numbers them)."""
    return f"{namespace}_{n}.png"


def sidecar_name(namespace: str) -> str:
    """Our settings sidecar (JSON)."""
    return f"{namespace}_settings.json"


def pytti_settings_name(namespace: str) -> str:
    """pytti's settings file (a JSON object, then one line per scene)."""
    return f"{namespace}_settings.txt"


def video_name(namespace: str) -> str:
    return f"{namespace}.mp4"


def lock_name(namespace: str) -> str:
    """The writer's lock, beside the folder (never inside a grid cell's DVC output)."""
    return f".{namespace}.lock"


def frame_number(name: str, namespace: str) -> int | None:
    """n of `<namespace>_<n>.png`, else None."""
    m = FRAME_RE.match(name)
    return int(m["n"]) if m and m["base"] == namespace else None


# ---------------------------------------------------------------- frames and steps

def frame_count(total_steps: int, save_every: int) -> int:
    """How many frames a complete run saves: one every `save_every` steps and one at the end."""
    return -(-total_steps // save_every)


def is_save_point(done: int, save_every: int, total_steps: int) -> bool:
    """Whether a frame is saved once `done` steps are done."""
    return done % save_every == 0 or done == total_steps


def frame_step(n: int, save_every: int, total_steps: int | None = None) -> int:
    """Frame n's step: the number of steps done when it was saved, `min(n · save_every, total)`.
    Its loss is that of the last step done (losses.csv row `step` = this number)."""
    step = n * save_every
    return min(step, total_steps) if total_steps else step


def saved_frame(done: int, save_every: int) -> int:
    """The number of the frame saved once `done` steps are done (at a save point)."""
    return -(-done // save_every)


# ---------------------------------------------------------------- grid cells

@dataclass(frozen=True)
class CellName:
    """A grid cell's folder name: `<experiment>__<vqgan>_<p1>_<p2>[__<key>-<level>_...][__seed-<n>]`:
    the pytti study's names, with the levels of the grid's varied settings (`grid.vary`) in
    pytti's `key-value` convention where there are some. Slugs never hold `_`, experiments never `__`."""

    experiment: str
    vqgan: str
    perceptors: tuple[str, ...]
    seed: int | None = None  # a replicate's seed (grid.seeds); None: the study's seed
    varied: tuple[tuple[str, str], ...] = ()  # (setting, level slug) of each varied setting

    def __str__(self) -> str:
        parts = [self.experiment, f"{self.vqgan}_{'_'.join(self.perceptors)}"]
        if self.varied:
            parts.append(pairs_text(self.varied))
        if self.seed is not None:
            parts.append(f"seed-{self.seed}")
        return CELL_SEP.join(parts)


def cell_name(experiment: str, vqgan: str, perceptors: Iterable[str], seed: int | None = None,
              varied: Iterable[tuple[str, str]] = ()) -> str:
    """The folder name of a grid cell; InputError names a part that would not parse back."""
    perceptors, varied = tuple(perceptors), tuple(varied)
    for slug in (vqgan, *perceptors, *(level for _, level in varied)):
        if not _SLUG.match(slug):
            raise InputError(f"slug {slug!r}: use letters, digits and '-' (cell names split on '_')")
    if not experiment or CELL_SEP in experiment or not perceptors:
        raise InputError(f"experiment {experiment!r} with perceptors {perceptors!r}: an experiment is "
                         f"non-empty text without {CELL_SEP!r}, and a cell has at least one perceptor")
    return str(CellName(experiment, vqgan, perceptors, seed, varied))


def parse_cell_name(name: str) -> CellName | None:
    """The parts of a cell name (a `(k)` re-run suffix is ignored), else None."""
    parts = split_rerun(name)[0].split(CELL_SEP)
    seed = None
    if len(parts) > 2 and (m := SEED_RE.match(parts[-1])):
        seed = int(m["seed"])
        parts = parts[:-1]
    varied: tuple[tuple[str, str], ...] = ()
    if len(parts) == 3:
        found = _pairs(parts[2].split("_"), setting_names(), first=0)
        if found is None or found[0] != 0 or not all(_SLUG.match(v) for v in found[1].values()):
            return None
        varied = tuple((setting_of(k), v) for k, v in found[1].items())
        parts = parts[:2]
    if len(parts) != 2 or not parts[0]:
        return None
    vqgan, *perceptors = parts[1].split("_")
    if not perceptors or not all(_SLUG.match(s) for s in (vqgan, *perceptors)):
        return None
    return CellName(parts[0], vqgan, tuple(perceptors), seed, varied)


# ---------------------------------------------------------------- key-value pairs (pytti's families, varied settings)

def folder_key(setting: str) -> str:
    """How a setting is spelled as a key in a folder name: pytti's short key where its families
    have one (`dsw`), else the setting's name."""
    return SHORT_KEYS.get(setting, setting)


def setting_of(key: str) -> str:
    """The setting a folder-name key spells (`dsw` -> `direct_stabilization_weight`)."""
    return _LONG_KEYS.get(key, key)


def setting_names() -> set[str]:
    """Every engine setting's name and short key: the keys a folder name may hold with `_` in them."""
    from engine.settings import FIELDS

    return {*FIELDS, *SHORT_KEYS.values(), *SHORT_KEYS}


def pairs_text(pairs: Iterable[tuple[str, str]]) -> str:
    """`<key>-<level>_<key>-<level>...` of (setting, level) pairs, keys as `folder_key` spells them."""
    return "_".join(f"{folder_key(setting)}-{level}" for setting, level in pairs)


def _pairs(tokens: list[str], known: set[str], first: int) -> tuple[int, dict[str, str]] | None:
    """The `<key>-<value>` pairs of `_`-split `tokens` from token `first` on: (the token where the
    first key starts, {key: value}), or None. A key is a word (letters, then letters and digits), or
    one of `known` (names that may hold `_`: the longest wins); a value runs to the next `_<key>-`."""
    starts: list[tuple[int, int]] = []  # (first token of the key, token holding '-')
    for i in range(first, len(tokens)):
        word, dash, value = tokens[i].partition("-")
        if not dash or not value or not _FAMILY_KEY.match(word):
            continue
        start = next((j for j in range(first, i) if "_".join([*tokens[j:i], word]) in known), i)
        if not starts or start > starts[-1][1]:
            starts.append((start, i))
    if not starts:
        return None
    values = {}
    for (start, i), nxt in zip(starts, [*starts[1:], (len(tokens), 0)]):
        key = "_".join([*tokens[start:i], tokens[i].partition("-")[0]])
        values[key] = "_".join([tokens[i].partition("-")[2], *tokens[i + 1:nxt[0]]])
    return starts[0][0], values


# ---------------------------------------------------------------- pytti's rules

def split_rerun(name: str) -> tuple[str, int]:
    """pytti's re-runs: `ns(2)` -> (`ns`, 2); `ns` -> (`ns`, 0)."""
    m = RERUN_RE.match(name)
    return (m["stem"], int(m["k"])) if m else (name, 0)


def parse_family(name: str, known_keys: Iterable[str] = ()) -> tuple[str, dict[str, str]] | None:
    """pytti's experiment families, `<experiment>_<key>-<value>_<key>-<value>…`, whatever the keys
    (`exp_video_basic_stability_modes_ref-True_dsw-1.0_ssw-0.0` -> experiment
    `exp_video_basic_stability_modes`, {ref: True, dsw: 1.0, ssw: 0.0}): the experiment is the part
    before the first `_<key>-<value>` (`_pairs`; `known_keys`: names that may hold `_`). None for
    names without such a part (or with `__`)."""
    stem = split_rerun(name)[0]
    if CELL_SEP in stem:
        return None
    tokens = stem.split("_")
    found = _pairs(tokens, {k for k in known_keys if k}, first=1)
    return None if found is None else ("_".join(tokens[:found[0]]), found[1])
