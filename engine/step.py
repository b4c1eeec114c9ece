"""One optimisation step, in pytti's VQGAN mode, and what it needs (`Guide`) and changes (`Latent`).

Each step: quantize z → decode (`clamp_with_grad`) → per perceptor its own cutouts → embeddings →
spherical-distance loss to every prompt (weights, stops, scene blend), averaged over perceptors,
+ TV smoothing and latent losses → Adam step → update the moving average of z. From
`pre_animation_steps` on, every `steps_per_frame` steps the image moves (pytti's animation frame:
Adam restarts; 2D animation moves the averaged image and re-encodes it: `move`). Steps are
addressed by their 0-based `index` (the step done after it is step `index + 1`). The torch RNG is
`rng` throughout.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from PIL import Image

from engine.animation import apply_motion, motion_grid
from engine.cutouts import Cutouts, cutout_noise, render_with_noise, sample_cutouts
from engine.ema import LatentEMA
from engine.losses import clamp_with_grad, latent_loss, prompt_losses, tv_loss
from engine.perceptor import Perceptor
from engine.prompts import Prompt, parse_prompt_list, parse_scenes, scene_blend, scene_weight_table, total_steps
from engine.settings import Settings, SettingsError
from engine.vqgan import VQGAN


@dataclass
class Guide:
    """Everything a step needs besides the latent: models, prompt targets, the weight schedule."""

    settings: Settings
    vqgan: VQGAN
    perceptors: list[Perceptor]
    prompts: list[Prompt]
    targets: list[torch.Tensor]  # per perceptor: (P, D) unit embeddings
    schedule: torch.Tensor  # (steps, P): each prompt's weight at each step
    stops: torch.Tensor  # (P,)
    init: tuple[torch.Tensor, torch.Tensor] | None  # the init image and its codes
    motion: torch.Tensor | None  # the 2D move's sampling grid (animation_mode 2D)
    z_min: torch.Tensor
    z_max: torch.Tensor
    compilation: Callable | None = None  # `model_loss` as `engine.compiled.Compilation` runs it; None: eager


@dataclass
class Latent:
    """The optimised z, its moving average, and the stabilisation target (image, codes) once there is one."""

    z: torch.Tensor
    ema: LatentEMA
    target: tuple[torch.Tensor, torch.Tensor] | None

    def state(self) -> dict:
        """The resume state's part for the latent (host copies)."""
        target = None if self.target is None else [t.detach().cpu().clone() for t in self.target]
        return {"z": self.z.detach().cpu().clone(), "ema": self.ema.state(), "stabilisation_target": target}

    def restore(self, state: dict, device: torch.device) -> None:
        """Take the latent's part of a resume state (host tensors), moved to `device`."""
        with torch.no_grad():
            self.z.copy_(state["z"])
        self.ema = LatentEMA.from_state(state["ema"], device)
        target = state["stabilisation_target"]
        self.target = None if target is None else tuple(t.to(device) for t in target)


def load_image(path: str, size: tuple[int, int] | None, device: torch.device) -> torch.Tensor:
    """An image file → (1, 3, H, W) in [0, 1], resized to size=(H, W) with Lanczos when given."""
    try:
        image = Image.open(path).convert("RGB")
    except (OSError, ValueError) as err:
        raise SettingsError(f"image {path!r} cannot be read: {err}") from err
    if size:
        image = image.resize((size[1], size[0]), Image.LANCZOS)
    array = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255)
    return array.permute(2, 0, 1)[None].to(device)


def init_active(settings: Settings, index: int) -> bool:
    """pytti turns the init-image losses off at the first move (`pre_animation_steps`) of an animation."""
    return settings.animation_mode == "off" or index < settings.pre_animation_steps


def is_move(settings: Settings, index: int) -> bool:
    """Whether the image moves (and Adam restarts) before the step at `index`: pytti starts an animation
    frame every `steps_per_frame` steps from `pre_animation_steps` on."""
    start = settings.pre_animation_steps
    return index >= start and (index - start) % settings.steps_per_frame == 0


def build_guide(settings: Settings, vqgan: VQGAN, perceptors: list[Perceptor]) -> Guide:
    """Parse prompts, embed them once per perceptor, and lay out the per-step weight schedule.

    Prompts: the scenes' texts, then (with `semantic_init_weight`) the init image as a prompt of
    scene 0, then `target_images` (every scene).
    """
    device = vqgan.codebook.device
    s = settings
    scenes = parse_scenes(s.scenes, s.scene_prefix, s.scene_suffix)
    texts = [p for scene in scenes for p in scene]
    image_prompts = parse_prompt_list(s.target_images)
    if s.semantic_init_weight:
        image_prompts.insert(0, Prompt(s.init_image, s.semantic_init_weight, scene=0, index=len(scenes[0])))
    prompts = texts + image_prompts
    targets = []
    for perceptor in perceptors:
        parts = [perceptor.encode_text([p.text for p in texts])]
        if image_prompts:
            images = torch.cat([load_image(p.text, perceptor.input_size, device) for p in image_prompts])
            with torch.no_grad():
                parts.append(perceptor.encode_image(images))
        targets.append(torch.cat(parts))
    schedule = weight_schedule(s, prompts, len(scenes), init_prompt=len(texts) if s.semantic_init_weight else None)
    init = None
    if s.init_image:
        image = load_image(s.init_image, (s.height, s.width), device)
        with torch.no_grad():
            init = image, encode_codes(vqgan, image)
    motion = None
    if s.animation_mode == "2D":
        motion = motion_grid(s.height, s.width, translate_x=s.translate_x, translate_y=s.translate_y,
                             rotate=s.rotate_2d, zoom_x=s.zoom_x_2d, zoom_y=s.zoom_y_2d,
                             infill_mode=s.infill_mode).to(device)
    z_min, z_max = vqgan.codebook_bounds()
    return Guide(s, vqgan, perceptors, prompts, targets, schedule.to(device),
                 torch.tensor([p.stop for p in prompts], device=device), init, motion, z_min, z_max)


def weight_schedule(s: Settings, prompts: list[Prompt], n_scenes: int, init_prompt: int | None) -> torch.Tensor:
    """(steps, P): each prompt's weight at each step, its weight times its scene's factor (prompts
    of no scene, the image prompts: always 1); the init image's prompt (`init_prompt`) off once
    the animation moves. Built for every step at once: a million steps take milliseconds."""
    index = np.arange(total_steps(n_scenes, s.steps_per_scene))
    factors = np.hstack([scene_weight_table(index, n_scenes, s.steps_per_scene, s.interpolation_steps),
                         np.ones((len(index), 1))])  # the last column: prompts of no scene (scene -1)
    schedule = factors[:, [p.scene for p in prompts]] * np.array([p.weight for p in prompts])
    if init_prompt is not None:
        schedule[~np.broadcast_to(init_active(s, index), index.shape), init_prompt] = 0
    return torch.from_numpy(schedule).float()


def encode_codes(vqgan: VQGAN, image: torch.Tensor) -> torch.Tensor:
    """Image → its quantised codes (pytti's encode keeps the quantised z)."""
    return vqgan.nearest_codes(vqgan.encode(image))


def initial_latent(guide: Guide, rng: torch.Generator) -> torch.Tensor:
    """z: the init image's codes, else random codebook entries."""
    vqgan, s = guide.vqgan, guide.settings
    if guide.init is not None:
        return guide.init[1].clone()
    h, w = s.height // vqgan.factor, s.width // vqgan.factor
    codes = torch.randint(vqgan.n_embed, (h * w,), generator=rng, device=rng.device)
    return vqgan.codebook.detach()[codes].view(1, h, w, -1).permute(0, 3, 1, 2).contiguous()


def start_latent(guide: Guide, rng: torch.Generator) -> Latent:
    """The latent at step 0: z, its average reset to z, and (with an init image and
    `direct_stabilization_weight`) stabilisation toward the init image from the start."""
    z = initial_latent(guide, rng).requires_grad_(True)
    target = guide.init if guide.settings.direct_stabilization_weight else None
    return Latent(z, LatentEMA.start(z), target)


def render(guide: Guide, z: torch.Tensor) -> torch.Tensor:
    """The image z stands for: quantize (straight-through), decode, `clamp_with_grad` to [0, 1]."""
    return decode(guide.vqgan, guide.vqgan.quantize_st(z))


def decode(vqgan: VQGAN, z_q: torch.Tensor) -> torch.Tensor:
    """Quantised z → image in [0, 1] through pytti's `clamp_with_grad`."""
    return clamp_with_grad(vqgan.decode(z_q, clamp=False))


def quantise_8bit(image: torch.Tensor) -> torch.Tensor:
    """pytti passes the image through 8-bit PIL images when it moves it: x ↦ floor(255 x) / 255."""
    return image.clamp(0, 1).mul(255).floor().div(255)


def step_loss(guide: Guide, z: torch.Tensor, index: int, rng: torch.Generator,
              target: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Total loss and per-prompt losses (P,) for the step at `index`; no host-device sync.

    Prompt losses are averaged over perceptors (each sees its own cutouts); then pytti's TV
    smoothing, the init-image latent loss (until the first move) and the stabilisation latent
    loss toward `target` (the re-encoded moved image, or the init image before the first move).
    """
    s = guide.settings
    z_q = guide.vqgan.quantize_st(z)
    draws = [draw_cutouts(s, perceptor, rng) for perceptor in guide.perceptors]
    weights = guide.schedule[min(index, len(guide.schedule) - 1)]
    image, total, per_prompt = (guide.compilation or model_loss)(guide, z_q, draws, weights)
    if guide.init is not None and s.direct_init_weight and init_active(s, index):
        total = total + s.direct_init_weight * latent_loss(z_q, guide.init[1], image, guide.init[0])
    if target is not None and s.direct_stabilization_weight:
        total = total + s.direct_stabilization_weight * latent_loss(z_q, target[1], image, target[0])
    return total, per_prompt


def draw_cutouts(settings: Settings, perceptor: Perceptor, rng: torch.Generator) -> tuple[Cutouts, torch.Tensor]:
    """A perceptor's cutouts for one step and their noise: every random draw of the step's compute."""
    s = settings
    cutouts = sample_cutouts(s.cutouts, s.height, s.width, cut_size=perceptor.input_size[0], cut_pow=s.cut_pow,
                             border=s.cutout_border, border_mode=s.border_mode, augment=s.augmentations, rng=rng)
    return cutouts, cutout_noise(cutouts, rng)


def model_loss(guide: Guide, z_q: torch.Tensor, draws: list[tuple[Cutouts, torch.Tensor]],
               weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The step's model compute, a pure function of its inputs (what `compile` compiles): decode
    quantised z, render each perceptor's cutouts (`draws`), embed them, the prompt losses averaged
    over perceptors, plus TV smoothing. Returns the image, the total and the per-prompt losses."""
    image = decode(guide.vqgan, z_q)
    per_prompt = torch.zeros_like(guide.stops)
    for perceptor, embeds_target, (cutouts, noise) in zip(guide.perceptors, guide.targets, draws):
        batch = render_with_noise(image, cutouts, noise, mean=perceptor.mean.flatten(), std=perceptor.std.flatten())
        embeds = perceptor.encode_normalised(batch)
        per_prompt = per_prompt + prompt_losses(embeds, embeds_target, weights, guide.stops)
    per_prompt = per_prompt / len(guide.perceptors)
    total = per_prompt.sum()
    if guide.settings.smoothing_weight:
        total = total + guide.settings.smoothing_weight * tv_loss(image)
    return image, total, per_prompt


def take_step(guide: Guide, latent: Latent, optimiser: torch.optim.Optimizer, index: int,
              rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step of z: loss, backward, Adam, the optional z clamp, the EMA update.
    Returns the total and per-prompt losses (on the device; no sync)."""
    total, per_prompt = step_loss(guide, latent.z, index, rng, latent.target)
    optimiser.zero_grad(set_to_none=True)
    total.backward()
    optimiser.step()
    if guide.settings.clamp_latent:
        clamp_latent(guide, latent.z)
    latent.ema.update(latent.z)
    return total, per_prompt


@torch.no_grad()
def move(guide: Guide, latent: Latent) -> None:
    """pytti's move at the start of an animation frame (2D): decode the average, move it, re-encode to
    quantised codes, reset the average, and aim stabilisation at the re-encoded image."""
    s, vqgan = guide.settings, guide.vqgan
    image = quantise_8bit(vqgan.decode(vqgan.nearest_codes(latent.ema.average)))
    moved = quantise_8bit(apply_motion(image, guide.motion, sampling_mode=s.sampling_mode, infill_mode=s.infill_mode))
    latent.z.copy_(encode_codes(vqgan, moved))
    latent.ema = LatentEMA.start(latent.z)
    if s.direct_stabilization_weight:
        settled = quantise_8bit(vqgan.decode(latent.z))
        latent.target = settled, encode_codes(vqgan, settled)


def learning_rate(settings: Settings, vqgan: VQGAN) -> float:
    """`learning_rate`, or pytti's default for the model when it is None: 0.15 GumbelVQ, else 0.1."""
    if settings.learning_rate is not None:
        return settings.learning_rate
    return 0.15 if vqgan.gumbel else 0.1


def clamp_latent(guide: Guide, z: torch.Tensor) -> None:
    """Clamp z to the codebook's per-channel bounds (the Crowson notebooks; setting `clamp_latent`)."""
    with torch.no_grad():
        z.copy_(torch.maximum(torch.minimum(z, guide.z_max), guide.z_min))


def scene_count(guide: Guide) -> int:
    """How many scenes the run's prompts have."""
    return 1 + max(p.scene for p in guide.prompts)


def scene_at(guide: Guide, index: int) -> int:
    """The scene the step at `index` belongs to: the newest active one while blending."""
    s = guide.settings
    return max(scene for scene, _ in scene_blend(index, scene_count(guide), s.steps_per_scene, s.interpolation_steps))


def new_optimiser(guide: Guide, latent: Latent) -> torch.optim.Adam:
    """Adam on z at the run's learning rate (pytti restarts it at each frame with `reset_lr_each_frame`)."""
    return torch.optim.Adam([latent.z], lr=learning_rate(guide.settings, guide.vqgan))
