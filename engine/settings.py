"""Run settings as plain data, with pytti's names wherever pytti has one.

`resolve_settings` turns a mapping (from YAML and `key=value` overrides) into a validated
`Settings`; every error names the bad value and what is allowed.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from engine.errors import InputError
from engine.fsutil import read_regular
from engine.limits import MAX_CUTOUTS, MAX_FRAME_PIXELS, MAX_FRAMES, MAX_LEARNING_RATE, MAX_STEPS
from engine.prompts import PromptSyntaxError, parse_prompt_list, parse_scenes
from engine.pytti_settings import PyttiSettingsError, is_pytti_file, read_pytti_settings


def _setting(default: Any, meaning: str) -> Any:
    """A `Settings` field with its one-line meaning (listed by `engine run --help`)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"meaning": meaning})
    return field(default=default, metadata={"meaning": meaning})


@dataclass(frozen=True)
class Settings:
    """Everything that defines one run. Defaults give a short run with the pytti study's prompt style."""

    scenes: str = _setting("a photograph of a bright and beautiful spring day, by Trey Ratcliff",
                           "prompts: text:weight:stop, '|' between prompts, '||' between scenes")
    scene_prefix: str = _setting("", "glued before every scene's text, before it is split on '|'")
    scene_suffix: str = _setting("", "glued after every scene's text, before it is split on '|'")
    init_image: str | None = _setting(None, "start image: z starts at its quantised codes; else random codes")
    direct_init_weight: float = _setting(0.0, "latent + pixel MSE to the init image, until the first move")
    semantic_init_weight: float = _setting(0.0, "the init image as an image prompt of scene 0, until the first move")
    direct_stabilization_weight: float = _setting(0.0, "latent + pixel MSE to the re-encoded image after each move")
    target_images: str | list[str] = _setting("", "image prompts, path.png:weight:stop | other.jpg, every scene")
    image_model: str = _setting("VQGAN", "only VQGAN (other pytti image models are refused)")
    vqgan_model: str = _setting("imagenet_16384", "a VQGAN from `python -m engine models` (pytti's names are aliases)")
    perceptors: list[str] = _setting(["ViT-B-32:openai"], "CLIP perceptors, A+B or [A, B]; their losses are averaged")
    width: int = _setting(256, "pixels; a multiple of the VQGAN's factor (16; 8 for Gumbel and tiny models)")
    height: int = _setting(128, "pixels; a multiple of the VQGAN's factor (16; 8 for Gumbel and tiny models)")
    steps_per_scene: int = _setting(100, "optimisation steps per scene")
    steps_per_frame: int = _setting(50, "steps between moves (and Adam restarts) after pre_animation_steps")
    save_every: int = _setting(50, "a frame PNG every this many steps, decoded from the moving average of z")
    interpolation_steps: int = _setting(0, "steps over which a scene's prompts fade into the next one's")
    learning_rate: float | None = _setting(None, "Adam's step size on z; null: the model's (0.1; GumbelVQ 0.15)")
    reset_lr_each_frame: bool = _setting(True, "a fresh Adam at every move step")
    seed: int = _setting(-1, "-1 draws one (recorded in the sidecar); else 0 ... 2**64 - 1")
    cutouts: int = _setting(40, "crops per perceptor per step")
    cut_pow: float = _setting(2.0, "crop size exponent: larger values make smaller crops")
    cutout_border: float = _setting(0.25, "fraction of the side a crop may start outside the image")
    border_mode: str = _setting("clamp", "crops past the edge: clamp, mirror, smear, wrap or black")
    augmentations: bool = _setting(True, "pytti's cutout augmentations and noise; false: plain crops (not in pytti)")
    smoothing_weight: float = _setting(0.02, "weight of the total-variation loss on the image")
    animation_mode: str = _setting("off", "off or 2D (3D and Video Source are refused)")
    pre_animation_steps: int = _setting(100, "steps before the first move")
    translate_x: float = _setting(0.0, "pixels per frame; positive moves content right")
    translate_y: float = _setting(0.0, "pixels per frame; positive moves content up")
    rotate_2d: float = _setting(0.0, "degrees per frame")
    zoom_x_2d: float = _setting(0.0, "pixels per frame: the sampling grid is scaled by (W - zoom_x_2d) / W")
    zoom_y_2d: float = _setting(0.0, "pixels per frame: the sampling grid is scaled by (H - zoom_y_2d) / H")
    sampling_mode: str = _setting("bicubic", "resampling of a move: bicubic, bilinear or nearest")
    infill_mode: str = _setting("wrap", "what fills the uncovered edge after a move: mirror, smear, black or wrap")
    clamp_latent: bool = _setting(False, "clamp z to the codebook's bounds after each step (not in pytti)")
    frames_per_second: int = _setting(12, "of the video")
    display_every: int = _setting(0, "in a notebook, show the current image every N steps (0: never)")
    clear_every: int = _setting(0, "in a notebook, clear the earlier previews every N steps (0: never)")
    display_scale: float = _setting(1.0, "the previews' size relative to the image")
    file_namespace: str = _setting("default", "the run's folder name under out_dir (at most 200 characters)")
    out_dir: str = _setting("images_out", "the folder that holds the run folder")
    device: str = _setting("auto", "auto, cpu, cuda, cuda:N or mps")
    precision: str = _setting("fp32", "fp32, tf32 (CUDA) or bf16")
    compile: str = _setting("auto", "torch.compile the step's model compute: off, on or auto (long CPU runs)")
    pytti_unused: dict[str, Any] = _setting({}, "keys of a pytti settings file that change nothing here, as written")
    deterministic: bool = _setting(True, "deterministic kernels: an op without one is an error")
    allow_overwrite: bool = _setting(False, "replace a folder that holds a run with other settings")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
# The settings by topic, as docs/engine.md's tables group them (and `engine run --help` lists them).
SETTING_GROUPS: dict[str, tuple[str, ...]] = {
    "Prompts and scenes": ("scenes", "scene_prefix", "scene_suffix", "target_images", "steps_per_scene",
                           "interpolation_steps"),
    "Start image and stabilisation": ("init_image", "direct_init_weight", "semantic_init_weight",
                                      "direct_stabilization_weight"),
    "Models and size": ("image_model", "vqgan_model", "perceptors", "width", "height"),
    "Optimisation": ("learning_rate", "reset_lr_each_frame", "seed", "smoothing_weight", "clamp_latent"),
    "Cutouts": ("cutouts", "cut_pow", "cutout_border", "border_mode", "augmentations"),
    "2D animation": ("animation_mode", "pre_animation_steps", "steps_per_frame", "translate_x", "translate_y",
                     "rotate_2d", "zoom_x_2d", "zoom_y_2d", "sampling_mode", "infill_mode"),
    "Output": ("save_every", "frames_per_second", "file_namespace", "out_dir", "allow_overwrite"),
    "Notebook previews": ("display_every", "clear_every", "display_scale"),
    "Device and reproducibility": ("device", "precision", "compile", "deterministic"),
    "Recorded only": ("pytti_unused",),
}
ANIMATION_MODES = ("off", "2D")
SAMPLING_MODES = ("bicubic", "bilinear", "nearest")  # pytti 2D animation: engine/animation.py
INFILL_MODES = ("mirror", "smear", "black", "wrap")
IMAGE_MODELS = ("VQGAN",)
BORDER_MODES = ("clamp", "mirror", "smear", "wrap", "black")
PRECISIONS = ("fp32", "tf32", "bf16")
COMPILES = ("off", "on", "auto")
# Settings that change where, how or how fast a run is computed and stored, not what it computes
# (device and compile may change the frames' last bits; a run may resume with another value).
NON_RESULT_KEYS = ("out_dir", "allow_overwrite", "device", "compile", "display_every", "clear_every", "display_scale")
_NAMESPACE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+()=-]*$")
MAX_NAMESPACE = 200  # characters; the folder and file names built from it must fit NAME_MAX (255)
SEED_MAX = 2**64 - 1  # torch.Generator.manual_seed takes 0 .. 2**64 - 1 (negatives wrap around)
MAX_CONFIG_BYTES = 1_000_000
# YAML 1.1's other words for booleans, read as text by our YAML 1.2 loader: a true/false setting takes them.
YAML11_BOOLS = {"yes": True, "on": True, "no": False, "off": False}


Config = str | Path | Mapping[str, Any] | Settings | None  # what engine.run takes as its first argument


class SettingsError(InputError):
    """Settings with a bad name or value: `problems` holds one line each; the message lists them all."""

    def __init__(self, *problems: str) -> None:
        self.problems = list(problems)
        super().__init__(problems[0] if len(problems) == 1 else f"{len(problems)} settings cannot be used:\n"
                         + "\n".join(f"  - {p}" for p in problems))


def _coerce(name: str, value: Any) -> Any:
    kind = FIELDS[name].type
    try:
        if name == "perceptors":
            return _perceptor_list(value)
        if name == "target_images":
            if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
                return list(value)
            if value is None or isinstance(value, str):
                return value or ""
            raise TypeError
        if kind in ("str", "str | None"):
            if value is None and kind == "str | None":
                return None
            if not isinstance(value, str):
                raise TypeError
            return value
        if name == "pytti_unused":
            if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
                raise TypeError
            return dict(value)
        if kind == "bool":
            if isinstance(value, str) and value.lower() in YAML11_BOOLS:
                return YAML11_BOOLS[value.lower()]
            if not isinstance(value, bool):
                raise TypeError
            return value
        if kind == "int":
            if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
                raise TypeError
            return int(value)
        if kind in ("float", "float | None"):
            if value is None and kind == "float | None":
                return None
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError
            if not math.isfinite(value):
                raise SettingsError(f"setting {name}={value!r}: must be a finite number")
            return float(value)
    except TypeError:
        raise SettingsError(f"setting {name}={value!r}: expected {kind}") from None
    raise AssertionError(f"unhandled setting type {kind}")


def _perceptor_list(value: Any) -> list[str]:
    """`A+B` or ["A", "B"] → ["A", "B"]."""
    if isinstance(value, str):
        value = value.split("+")
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise SettingsError(f"setting perceptors={value!r}: expected one or more perceptor names, "
                            "as a list or joined with '+' (e.g. perceptors=ViT-B-32:openai+RN50)")
    return [v.strip() for v in value]


def resolve_settings(values: Mapping[str, Any]) -> Settings:
    """Validate a mapping of settings (unknown keys, types, ranges) into `Settings`; a SettingsError
    lists every problem at once."""
    problems = [_unknown(key) for key in values if key not in FIELDS]
    coerced = {}
    for key, value in values.items():
        if key in FIELDS:
            try:
                coerced[key] = _coerce(key, value)
            except SettingsError as err:
                problems += err.problems
    settings = Settings(**coerced)  # a value that failed keeps its default, so the other checks still run
    problems += _range_problems(settings)
    if problems:
        raise SettingsError(*problems)
    return settings


def _unknown(key: str) -> str:
    close = difflib.get_close_matches(key, FIELDS, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; valid settings: {', '.join(FIELDS)}"
    return f"unknown setting {key!r}{hint}"


def _range_problems(s: Settings) -> list[str]:
    problems: list[str] = []

    def need(ok: bool, message: str) -> None:
        if not ok:
            problems.append(message)

    for name in ("width", "height", "steps_per_scene", "steps_per_frame", "save_every", "cutouts",
                 "frames_per_second"):
        need(getattr(s, name) > 0, f"setting {name}={getattr(s, name)}: must be a positive integer")
    need(s.interpolation_steps >= 0, f"setting interpolation_steps={s.interpolation_steps}: must be >= 0")
    need(s.learning_rate is None or s.learning_rate > 0,
         f"setting learning_rate={s.learning_rate}: must be > 0, or null for the model's default")
    need(s.pre_animation_steps >= 0, f"setting pre_animation_steps={s.pre_animation_steps}: must be >= 0")
    need(s.cut_pow > 0, f"setting cut_pow={s.cut_pow}: must be > 0")
    need(s.cutout_border >= 0, f"setting cutout_border={s.cutout_border}: must be >= 0")
    need(-1 <= s.seed <= SEED_MAX, f"setting seed={s.seed}: must be -1 (random) or an integer from 0 to 2**64 - 1")
    for name, allowed in (("animation_mode", ANIMATION_MODES), ("image_model", IMAGE_MODELS),
                          ("border_mode", BORDER_MODES), ("sampling_mode", SAMPLING_MODES),
                          ("infill_mode", INFILL_MODES), ("precision", PRECISIONS), ("compile", COMPILES)):
        need(getattr(s, name) in allowed,
             f"setting {name}={getattr(s, name)!r}: allowed values are {', '.join(allowed)}")
    need(len(s.file_namespace) <= MAX_NAMESPACE,
         f"setting file_namespace={s.file_namespace[:40]!r}... ({len(s.file_namespace)} characters): "
         f"at most {MAX_NAMESPACE} characters")
    need(bool(_NAMESPACE.match(s.file_namespace)),
         f"setting file_namespace={s.file_namespace!r}: use letters, digits and . _ + ( ) = - "
         "(no '/', spaces, or leading punctuation)")
    need(bool(re.match(r"^(auto|cpu|cuda(:\d+)?|mps)$", s.device)),
         f"setting device={s.device!r}: allowed values are auto, cpu, cuda, cuda:N, mps")
    for name in ("direct_init_weight", "direct_stabilization_weight", "smoothing_weight"):
        need(getattr(s, name) >= 0, f"setting {name}={getattr(s, name)}: must be >= 0")
    try:
        n_scenes = len(parse_scenes(s.scenes, s.scene_prefix, s.scene_suffix))
        parse_prompt_list(s.target_images)
    except PromptSyntaxError as err:
        problems.append(f"bad prompt syntax: {err}")
        n_scenes = 1
    return problems + _motion_and_preview_problems(s) + _size_problems(s, n_scenes)


def _motion_and_preview_problems(s: Settings) -> list[str]:
    """The 2D move within the image, the notebook previews, and the init image's weights."""
    moves = (("zoom_x_2d", s.width), ("zoom_y_2d", s.height), ("translate_x", s.width), ("translate_y", s.height))
    problems = [f"setting {name}={getattr(s, name)}: must be within (-{size}, {size}) pixels per frame (the image's "
                "size along that axis)" for name, size in moves if not abs(getattr(s, name)) < size]
    problems += [f"setting {name}={getattr(s, name)}: must be >= 0 steps (0: never)"
                 for name in ("display_every", "clear_every") if getattr(s, name) < 0]
    if not 0 < s.display_scale <= 16:
        problems.append(f"setting display_scale={s.display_scale}: must be > 0 and <= 16")
    if abs(s.rotate_2d) > 360:
        problems.append(f"setting rotate_2d={s.rotate_2d}: must be within [-360, 360] degrees per frame")
    return problems + [f"setting {name}={getattr(s, name)} needs init_image"
                       for name in ("direct_init_weight", "semantic_init_weight")
                       if s.init_image is None and getattr(s, name) != 0]


def _size_problems(s: Settings, n_scenes: int) -> list[str]:
    """Sizes the run could never hold, refused before anything of their size is made (the memory a
    step needs is checked against the device once the models are loaded: engine/budget.py)."""
    problems, steps = [], s.steps_per_scene * n_scenes
    if steps > MAX_STEPS:
        problems.append(f"setting steps_per_scene={s.steps_per_scene} × {n_scenes} scene(s) = {steps} steps: at most "
                        f"{MAX_STEPS} (the run keeps a row of losses and weights per step)")
    elif s.save_every > 0 and -(-steps // s.save_every) > MAX_FRAMES:
        problems.append(f"setting save_every={s.save_every}: {steps} steps would save {-(-steps // s.save_every)} "
                        f"frames, at most {MAX_FRAMES}; save every {-(-steps // MAX_FRAMES)} steps or more")
    if s.width * s.height > MAX_FRAME_PIXELS:
        problems.append(f"settings width={s.width} × height={s.height} = {s.width * s.height} pixels: at most "
                        f"{MAX_FRAME_PIXELS} (4096 × 4096), what every reader of the frames decodes")
    if s.cutouts > MAX_CUTOUTS:
        problems.append(f"setting cutouts={s.cutouts}: at most {MAX_CUTOUTS} a step (pytti's default is 40)")
    if s.learning_rate is not None and s.learning_rate > MAX_LEARNING_RATE:
        problems.append(f"setting learning_rate={s.learning_rate:g}: at most {MAX_LEARNING_RATE} (pytti's default is "
                        "0.1; a larger step overflows the latent)")
    return problems


def check_size_for_factor(s: Settings, factor: int) -> None:
    """Width and height must be multiples of the VQGAN's downsampling factor."""
    for name in ("width", "height"):
        value = getattr(s, name)
        if value % factor:
            rounded = max(factor, round(value / factor) * factor)
            raise SettingsError(f"setting {name}={value}: must be a multiple of {factor} for VQGAN "
                                f"{s.vqgan_model!r} (downsampling factor {factor}); use {rounded}")


class _Loader(yaml.SafeLoader):
    """Safe YAML with YAML 1.2 booleans (only true/false: pytti's `animation_mode: off` is the text
    "off") and floats (`1e-3` is a number, not text), and no aliases (no alias bombs)."""

    def compose_node(self, parent, index):  # noqa: ANN001 (PyYAML's signature)
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in settings",
                                              event.start_mark)
        return super().compose_node(parent, index)


_BOOL_TAG = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(_BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.?[0-9_]*|\.[0-9_]+)(?:[eE][-+]?[0-9]+)?$"
               r"|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"),
    list("-+0123456789."))


class _Refused(SettingsError):
    """YAML refused outright (too long, aliases), never taken as plain text."""


def parse_yaml(text: str, origin: str) -> Any:
    """Parse settings YAML (`_Loader`); errors name `origin` and stay short."""
    if len(text) > MAX_CONFIG_BYTES:
        raise _Refused(f"{origin}: {len(text)} characters; settings are limited to {MAX_CONFIG_BYTES}")
    try:
        return yaml.load(text, Loader=_Loader)
    except RecursionError:
        raise _Refused(f"{origin}: nested too deeply to be settings") from None
    except yaml.YAMLError as err:
        message = " ".join(str(err).split())
        kind = _Refused if "aliases" in message else SettingsError
        raise kind(f"{origin}: {message[:300]}") from None


_TEXT_KEYS = ("scenes", "scene_prefix", "scene_suffix", "file_namespace", "vqgan_model")


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """`key=value` strings → a dict; values are parsed as YAML (`steps=10`, `perceptors=[A, B]`, `perceptors=A+B`);
    text settings stay as typed, and a value that is not YAML is taken as text."""
    result = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SettingsError(f"override {item[:100]!r}: expected key=value")
        if key in _TEXT_KEYS:
            result[key] = raw
            continue
        try:
            value = parse_yaml(raw, f"override {key}") if raw.strip() else ""
        except _Refused:
            raise
        except SettingsError:
            value = raw  # plain text, e.g. a prompt with ': ' in it
        result[key] = value
    return result


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> Settings:
    """Settings from an optional file plus `key=value` overrides (overrides win).

    The file is YAML/JSON, or a pytti `_settings.txt` (any `.txt`; see `engine.pytti_settings`).
    """
    return resolve_settings({**(file_settings(path) if path else {}), **parse_overrides(overrides)})


def file_settings(path: str | Path) -> dict[str, Any]:
    """The settings a YAML/JSON file or a pytti `_settings.txt` (any `.txt`) holds, unvalidated."""
    if is_pytti_file(path):
        try:
            return read_pytti_settings(path)
        except PyttiSettingsError as err:
            raise SettingsError(str(err)) from None
    try:
        text = read_regular(path, MAX_CONFIG_BYTES, "settings file").decode("utf-8")
    except FileNotFoundError:
        raise SettingsError(f"config file {path} does not exist; give the path of a YAML/JSON settings "
                            "file or a pytti _settings.txt") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SettingsError(f"config file {path}: {err}") from err
    loaded = parse_yaml(text, f"config file {path}") or {}
    if not isinstance(loaded, dict):
        raise SettingsError(f"config file {path}: expected a mapping of settings, got {type(loaded).__name__}")
    return loaded


def settings_from(config: Config, overrides: Mapping[str, Any]) -> Settings:
    """`config` (a YAML/JSON or pytti `_settings.txt` path, a mapping or `Settings`) with
    `overrides` (Python values) on top, validated."""
    if isinstance(config, Settings):
        values = config.to_dict()
    elif isinstance(config, Mapping):
        values = dict(config)
    else:
        values = file_settings(config) if config is not None else {}
    return resolve_settings({**values, **overrides})


def result_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings that determine a run's frames (for comparing a folder's run with a new one)."""
    return {k: v for k, v in settings.items() if k not in NON_RESULT_KEYS}
