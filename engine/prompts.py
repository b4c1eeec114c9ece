"""Prompt strings → `Prompt`s, and the scene schedule.

Prompt syntax (pytti-compatible)
--------------------------------
One prompt is `text`, `text:weight` or `text:weight:stop`, e.g. `a cat`, `a cat:2`,
`text:-1:-.9`. Weight defaults to 1 and stop to -inf. Numbers are decimals with optional
sign, fraction and exponent (`1`, `-1`, `.5`, `-.9`, `1e-2`, `+2`), or `inf`/`nan`
(case-insensitive), with optional spaces around them. The weight must be finite (0 is
allowed and does nothing; negative weights push away); the stop must be finite or `-inf`.

`|` separates the prompts of a scene and `||` separates scenes (the string is split on `||`
first). Whitespace around each prompt is stripped and empty prompts (a trailing `|`) are
ignored. `parse_scenes`' prefix and suffix are glued to each scene's string before it is
split on `|`: prefix `beautiful ` joins the first prompt's text, while suffix
` | text:-1:-.9` adds a prompt to every scene.

Which colons separate numbers from the text: the prompt is read from the right, and each
last colon followed by a number (up to the end of what is left) is peeled off as a field.
Then, if the leftmost peeled colon has a digit immediately on both sides (`10:30`, `16:9`),
it is a time or ratio and goes back into the text. At most two fields (weight, stop) may
remain. Consequences:

- A colon followed by anything that is not a number stays in the text, so URLs and paths
  survive: `a photo of http://example.com/a:b.png` is all text and
  `https://x.org/img.png:0.5` is that URL with weight 0.5. A URL that ends in a port needs a
  trailing `/` (`http://host:8080/`), as `:8080` would be a weight.
- `sunset at 10:30` is all text; `sunset at 10:30:2` is `sunset at 10:30` with weight 2;
  `a cat:2:0.5` has weight 2 and stop 0.5; `16:9:2:3` is `16:9` with weight 2 and stop 3.
- A space next to a colon makes it a separator: `v1.2 :3` is `v1.2` with weight 3 whereas
  `v1.2:3` is all text, and `meet at 10:30 :2` is `meet at 10:30` with weight 2.
- A time with seconds at the end reads as a time with a weight (`at 1:10:30` is `at 1:10`
  with weight 30); end such text with a word (`at 1:10:30 pm:2`).
- Errors (`PromptSyntaxError`): an empty field after a trailing colon (`a cat:`,
  `a cat::`), no text (`:2`), three or more fields (`a:1:2:3`), a non-finite weight, a
  nan or +inf stop, and a scene with no prompt of its own (`a || || b`).

Scene schedule
--------------
With N scenes of S steps each, the run has N*S steps. Scene k (0-based) covers the
0-based steps [k*S, (k+1)*S); steps past the end belong to the last scene. At step t in
scene k, let u = t - k*S and I = min(interpolation_steps, S). If k >= 1 and u < I, scene
k-1 has factor 1 - u/I and scene k factor u/I (at u = 0 only scene k-1, factor 1);
otherwise scene k alone has factor 1. Scene 0 is never blended, and factors always sum to 1.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from engine.errors import InputError

_NUMBER = re.compile(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?|inf|nan)",
                     re.ASCII | re.IGNORECASE)
_DIGITS = frozenset("0123456789")
_SYNTAX = "expected 'text', 'text:weight' or 'text:weight:stop'"


class PromptSyntaxError(InputError):
    """A prompt string that cannot be parsed; the message names it."""


@dataclass(frozen=True)
class Prompt:
    """One weighted prompt: a text or an image path/URL. scene -1 applies to every scene."""

    text: str
    weight: float = 1.0
    stop: float = float("-inf")
    scene: int = 0
    index: int = 0  # position within its scene

    @property
    def label(self) -> str:
        """Short unique name, e.g. `s1p2`; a losses.csv column name."""
        return f"s{self.scene}p{self.index}"


def _error(problem: str, prompt: str) -> PromptSyntaxError:
    return PromptSyntaxError(f"{problem} in prompt {prompt!r}; {_SYNTAX}")


def _split_fields(prompt: str) -> tuple[str, list[str]]:
    """The text and the trailing number fields of one prompt (rule in the module docstring)."""
    text, fields = prompt, []
    while ":" in text:
        head, _, field = text.rpartition(":")
        if not field.strip():
            raise _error("empty number after ':'", prompt)
        if not _NUMBER.fullmatch(field.strip()):
            break
        text, fields = head, [field, *fields]
    if fields and text[-1:] in _DIGITS and fields[0][:1] in _DIGITS:
        text, fields = f"{text}:{fields[0]}", fields[1:]
    return text, fields


def parse_prompt(text: str, scene: int = 0, index: int = 0) -> Prompt:
    """Parse `text[:weight[:stop]]`."""
    prompt = text.strip()
    body, fields = _split_fields(prompt)
    if len(fields) > 2:
        raise _error(f"too many numbers {':'.join(f.strip() for f in fields)!r} "
                     "(at most a weight and a stop may follow the text)", prompt)
    body = body.strip()
    if not body:
        raise _error("empty text", prompt)
    weight = float(fields[0]) if fields else 1.0
    if not math.isfinite(weight):
        raise _error(f"weight {fields[0].strip()!r} must be finite", prompt)
    stop = float(fields[1]) if len(fields) > 1 else -math.inf
    if math.isnan(stop) or stop == math.inf:
        raise _error(f"stop {fields[1].strip()!r} must be finite or -inf", prompt)
    return Prompt(body, weight, stop, scene, index)


def _parse_pieces(pieces: list[str], scene: int) -> list[Prompt]:
    """Parse the non-blank pieces, numbering them from 0."""
    texts = [p for p in pieces if p.strip()]
    return [parse_prompt(t, scene, i) for i, t in enumerate(texts)]


def parse_scenes(scenes: str, prefix: str = "", suffix: str = "") -> list[list[Prompt]]:
    """Parse `p | p || p | p` into one list of prompts per scene; prefix/suffix wrap each scene."""
    result = []
    for k, scene in enumerate(scenes.split("||")):
        if not any(p.strip() for p in scene.split("|")):
            raise PromptSyntaxError(f"scene {k} is empty in {scenes!r}; "
                                    "scenes are separated by '||' and each needs a prompt")
        result.append(_parse_pieces((prefix + scene + suffix).split("|"), k))
    return result


def parse_prompt_list(text: str | list[str]) -> list[Prompt]:
    """Parse image prompts, `a.png:1 | b.jpg:0.5` or a list of such strings, for all scenes.

    Indices run across the whole list; `||` is an error, as these prompts have no scenes.
    """
    strings = [text] if isinstance(text, str) else list(text)
    for s in strings:
        if "||" in s:
            raise PromptSyntaxError(f"'||' in {s!r}; this prompt list has no scenes, "
                                    "separate its prompts with '|'")
    return _parse_pieces([p for s in strings for p in s.split("|")], -1)


def _check(name: str, value: int, minimum: int) -> None:
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def total_steps(n_scenes: int, steps_per_scene: int) -> int:
    """Number of optimisation steps of the whole run."""
    _check("n_scenes", n_scenes, 1)
    _check("steps_per_scene", steps_per_scene, 1)
    return n_scenes * steps_per_scene


def scene_blend(step: int, n_scenes: int, steps_per_scene: int,
                interpolation_steps: int) -> list[tuple[int, float]]:
    """(scene, factor) pairs active at a 0-based step; factors sum to 1 (module docstring)."""
    _check("step", step, 0)
    row = scene_weight_table(np.array([step]), n_scenes, steps_per_scene, interpolation_steps)[0]
    return [(k, float(w)) for k, w in enumerate(row) if w > 0]


def scene_weight_table(steps: np.ndarray, n_scenes: int, steps_per_scene: int,
                       interpolation_steps: int) -> np.ndarray:
    """(len(steps), n_scenes): each scene's factor at each 0-based step (the module docstring's
    schedule), computed for every step at once."""
    _check("n_scenes", n_scenes, 1)
    _check("steps_per_scene", steps_per_scene, 1)
    _check("interpolation_steps", interpolation_steps, 0)
    k = np.minimum(steps // steps_per_scene, n_scenes - 1)
    u = steps - k * steps_per_scene
    span = min(interpolation_steps, steps_per_scene)
    blend = (k > 0) & (u < span)
    b = np.where(blend, u / max(span, 1), 1.0)  # the factor of scene k; scene k-1 has the rest
    table = np.zeros((len(steps), n_scenes))
    rows = np.arange(len(steps))
    table[rows, k] = b
    table[rows[blend], k[blend] - 1] = 1.0 - b[blend]
    return table
