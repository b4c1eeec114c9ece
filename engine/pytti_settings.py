"""pytti `_settings.txt` files → our settings.

pytti writes one JSON object, a blank line, then one `b'<frame>: <scene>'` line per scene (those
lines repeat `scenes` and are only checked for form). Values are not always typed: `"0"` for
numbers, `""` for unset weights, `null` for `learning_rate`. Here `null` and `""` mean "the
default", numeric strings are numbers. Perceptors follow pytti's `load_clip`: with `use_mmc` the
`mmc_models` entries, and the switches (`ViTB32`, …) are ignored; without it the switches that are true.
Keys that change nothing in VQGAN mode (palette, 3D, video, audio, …) are kept, as written,
in the setting `pytti_unused`; settings of pytti features that would change the frames but are
not implemented here are refused with the key and value.
"""
from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

from engine.errors import InputError
from engine.fsutil import read_regular

# pytti settings that mean the same here, under the same name.
SHARED = ("scenes", "scene_prefix", "scene_suffix", "init_image", "direct_init_weight", "semantic_init_weight",
          "direct_stabilization_weight", "image_model", "vqgan_model", "width", "height", "steps_per_scene",
          "steps_per_frame", "save_every", "interpolation_steps", "learning_rate", "reset_lr_each_frame", "seed",
          "cutouts", "cut_pow", "cutout_border", "border_mode", "smoothing_weight", "animation_mode",
          "pre_animation_steps", "translate_x", "translate_y", "rotate_2d", "zoom_x_2d", "zoom_y_2d",
          "sampling_mode", "infill_mode", "frames_per_second", "file_namespace", "allow_overwrite",
          "display_every", "clear_every", "display_scale")
# pytti's perceptor switches; each is also a perceptor alias in our registry.
SWITCHES = ("ViTB32", "ViTB16", "ViTL14", "ViTL14_336px", "RN50", "RN101", "RN50x4", "RN50x16", "RN50x64")
# Settings of features not implemented here that change the frames unless empty or zero.
UNSUPPORTED = ("direct_image_prompts", "semantic_stabilization_weight", "depth_stabilization_weight",
               "edge_stabilization_weight")
# Keys that change nothing in VQGAN mode with 2D or no animation.
INERT = ("pixel_size", "random_initial_palette", "palette_size", "palettes", "gamma", "hdr_weight",
         "palette_normalization_weight", "show_palette", "target_palette", "lock_palette",
         "field_of_view", "near_plane", "far_plane", "translate_z_3d", "rotate_3d", "lock_camera",
         "flow_stabilization_weight", "video_path", "frame_stride", "reencode_each_frame", "flow_long_term_samples",
         "input_audio", "input_audio_offset", "input_audio_filters", "backups", "show_graphs", "approximate_vram_usage", "models_parent_dir",
         "gradient_accumulation_steps", "use_mmc", "mmc_models", "device", *SWITCHES)
_NUMERIC = ("direct_init_weight", "semantic_init_weight", "direct_stabilization_weight", "width", "height",
            "steps_per_scene", "steps_per_frame", "save_every", "interpolation_steps", "learning_rate", "seed",
            "cutouts", "cut_pow", "cutout_border", "smoothing_weight", "pre_animation_steps", "translate_x",
            "translate_y", "rotate_2d", "zoom_x_2d", "zoom_y_2d", "frames_per_second", "display_every",
            "clear_every", "display_scale")
_SCENE_LINE = re.compile(r"""^b(['"]).*\1$""")
_SEED_RANGE = 2 ** 64


MAX_FILE_BYTES = 1_000_000  # a pytti settings file is a few KB


class PyttiSettingsError(InputError):
    """A pytti settings file that cannot be read or asks for something not implemented."""


def is_pytti_file(path: str | Path) -> bool:
    """pytti names its settings files `<namespace>_settings.txt`; any `.txt` is read as one."""
    return Path(path).suffix == ".txt"


def read_pytti_settings(path: str | Path) -> dict[str, Any]:
    """Read a pytti `_settings.txt` and convert it (`from_pytti`)."""
    try:
        text = read_regular(path, MAX_FILE_BYTES, "pytti settings file").decode("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise PyttiSettingsError(f"pytti settings file {path}: {err}") from err
    try:
        values, end = json.JSONDecoder().raw_decode(text.lstrip())
    except json.JSONDecodeError as err:
        raise PyttiSettingsError(f"pytti settings file {path}: not a JSON object followed by scene lines ({err})") \
            from None
    except RecursionError:
        raise PyttiSettingsError(f"pytti settings file {path}: nested too deeply to be settings") from None
    if not isinstance(values, dict):
        raise PyttiSettingsError(f"pytti settings file {path}: expected a JSON object, got {type(values).__name__}")
    for line in text.lstrip()[end:].splitlines():
        if line.strip() and not _SCENE_LINE.match(line.strip()):
            raise PyttiSettingsError(f"pytti settings file {path}: unexpected line {line.strip()[:80]!r} "
                                     "after the JSON object (expected scene lines like b'0.00: a scene')")
    return from_pytti(values)


def from_pytti(values: dict[str, Any]) -> dict[str, Any]:
    """pytti's settings (as `_settings.txt` holds them) → a mapping for `resolve_settings`."""
    result: dict[str, Any] = {}
    for key in SHARED:
        value = values.get(key)
        if value is None or value == "":
            continue  # pytti's "unset": our default
        result[key] = _number(key, value) if key in _NUMERIC else value
    if isinstance(result.get("seed"), int) and result["seed"] < 0:
        result["seed"] %= _SEED_RANGE  # torch.manual_seed(-n) seeds as 2**64 - n
    for key in UNSUPPORTED:
        value = values.get(key)
        if value not in (None, "", "0", 0, 0.0):
            raise PyttiSettingsError(f"pytti setting {key}={value!r}: not implemented here (VQGAN mode with "
                                     "2D or no animation); leave it empty or 0")
    result["perceptors"] = perceptors(values)
    unknown = sorted(k for k in values if k not in (*SHARED, *UNSUPPORTED, *INERT))
    if unknown:
        warnings.warn(f"pytti settings not known to this engine, recorded in pytti_unused and ignored: "
                      f"{', '.join(unknown)}", stacklevel=2)
    result["pytti_unused"] = {k: values[k] for k in values if k not in SHARED}
    return result


def _number(key: str, value: Any) -> Any:
    """pytti's typed or string number → int or float; expressions (`10*sin(t)`) are refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise PyttiSettingsError(f"pytti setting {key}={value!r}: expected a number")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise PyttiSettingsError(f"pytti setting {key}={value!r}: time-varying expressions are not "
                                     "implemented; give a number") from None
    return int(value) if isinstance(value, float) and value.is_integer() and abs(value) < 2 ** 64 else value


def perceptors(values: dict[str, Any]) -> list[str]:
    """pytti's `load_clip` rule: `use_mmc` → the `mmc_models` ids (switches ignored), else the true switches."""
    if values.get("use_mmc"):
        entries = values.get("mmc_models")
        if not isinstance(entries, list) or not entries:
            raise PyttiSettingsError(f"pytti setting mmc_models={entries!r}: use_mmc is true, so it must list "
                                     "at least one {architecture, publisher, id} entry")
        names = []
        for entry in entries:
            if not (isinstance(entry, dict) and entry.get("publisher") == "openai" and isinstance(entry.get("id"), str)):
                raise PyttiSettingsError(f"pytti mmc_models entry {entry!r}: only OpenAI CLIP entries "
                                         "({architecture: clip, publisher: openai, id: ViT-B/32 …}) are understood")
            names.append(entry["id"])
        return names
    names = [switch for switch in SWITCHES if values.get(switch) is True]
    if not names:
        raise PyttiSettingsError(f"pytti settings: no perceptor; use_mmc is false and none of {', '.join(SWITCHES)} "
                                 "is true")
    return names
