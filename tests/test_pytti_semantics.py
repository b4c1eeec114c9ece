"""pytti's VQGAN-mode formulas, checked against values worked out by hand from pytti's definitions."""
from __future__ import annotations

import pytest
import torch

from engine.ema import LatentEMA
from engine.factory import load_perceptor, load_vqgan
from engine.losses import clamp_with_grad, latent_loss, tv_loss
from engine.prompts import scene_blend
from engine.step import build_guide, init_active, is_move, learning_rate, step_loss
from engine.settings import load_config

TINY = ["vqgan_model=tiny", "width=32", "height=32", "cutouts=3", "augmentations=false", "smoothing_weight=0",
        "scenes=a red apple | a dog:-1:-.9"]


def test_ema_after_n_steps_is_the_bias_corrected_average():
    d = 0.99
    zs = [torch.full((1, 2, 1, 1), float(v)) for v in (4.0, 1.0, 2.0, -3.0)]
    ema = LatentEMA.start(zs[0])
    torch.testing.assert_close(ema.average, zs[0])  # right after a reset the average is z
    for z in zs[1:]:
        ema.update(z)
    # sum_k (1 - d) d^(n - k) z_k / (1 - d^(n + 1)), n = 3
    expected = sum((1 - d) * d ** (3 - k) * float(z[0, 0]) for k, z in enumerate(zs)) / (1 - d ** 4)
    assert float(ema.average[0, 0]) == pytest.approx(expected, rel=1e-5)  # float32, as pytti
    assert float(ema.accum) == pytest.approx(d ** 4, rel=1e-6)
    again = LatentEMA.from_state(ema.state(), torch.device("cpu"))
    torch.testing.assert_close(again.average, ema.average)


def test_stabilisation_loss_on_a_known_pair():
    z_q, codes = torch.zeros(1, 4, 2, 2), torch.ones(1, 4, 2, 2)  # latent MSE 1 → 1/2
    image, target = torch.zeros(1, 3, 8, 8), torch.full((1, 3, 8, 8), 0.5)  # pixel MSE 0.25 → 0.025
    assert float(0.3 * latent_loss(z_q, codes, image, target)) == pytest.approx(0.3 * (0.5 + 0.025))


def test_tv_loss_compares_last_row_and_column_with_themselves():
    image = torch.tensor([[0.0, 1.0], [0.0, 1.0]]).expand(1, 3, 2, 2)
    # dx: [[1, 0], [1, 0]], dy: 0 → mean 0.5
    assert float(tv_loss(image)) == pytest.approx(0.5)


def test_clamp_with_grad_passes_gradients_that_lead_back_into_range():
    x = torch.tensor([1.5, 1.5, 0.5, -0.5]).requires_grad_()
    out = clamp_with_grad(x)
    assert out.tolist() == [1.0, 1.0, 0.5, 0.0]
    (out * torch.tensor([1.0, -1.0, 1.0, 1.0])).sum().backward()
    # descent moves x by -grad: 1.5 with grad 1 goes down (passes), with grad -1 goes up (blocked);
    # -0.5 with grad 1 would go further down (blocked)
    assert x.grad.tolist() == [1.0, 0.0, 1.0, 0.0]


def test_scene_weights_at_pytti_steps():
    # steps_per_scene 1000, interpolation_steps 500: pytti's t = u / 500 for scene 1
    blend = {step: dict(scene_blend(step, 2, 1000, 500)) for step in (999, 1000, 1250, 1500)}
    assert blend == {999: {0: 1.0}, 1000: {0: 1.0}, 1250: {0: 0.5, 1: 0.5}, 1500: {1: 1.0}}


def test_moves_start_at_pre_animation_steps_and_switch_init_losses_off():
    s = load_config(None, [*TINY, "perceptors=tiny-vit", "animation_mode=2D", "pre_animation_steps=50",
                           "steps_per_frame=50"])
    assert [is_move(s, i) for i in (0, 49, 50, 75, 100)] == [False, False, True, False, True]
    assert [init_active(s, i) for i in (49, 50)] == [True, False]
    still = load_config(None, [*TINY, "perceptors=tiny-vit", "pre_animation_steps=50"])
    assert init_active(still, 10_000)


def test_default_learning_rate_is_the_models():
    s = load_config(None, [*TINY, "perceptors=tiny-vit"])
    assert s.learning_rate is None
    assert learning_rate(s, load_vqgan("tiny-gumbel")) == 0.15
    assert learning_rate(s, load_vqgan("tiny")) == 0.1
    assert learning_rate(load_config(None, [*TINY, "perceptors=tiny-vit", "learning_rate=1e-3"]),
                         load_vqgan("tiny-gumbel")) == 0.001


def test_prompt_losses_are_averaged_over_perceptors():
    # a square image as large as the crops: every cutout is the whole image, the same for both perceptors
    vqgan = load_vqgan("tiny")
    vit, rn = load_perceptor("tiny-vit"), load_perceptor("tiny-rn")
    s = load_config(None, [*TINY, "perceptors=[tiny-vit, tiny-rn]", "cutout_border=0"])
    z = torch.randn(1, vqgan.embed_dim, 4, 4, generator=torch.Generator().manual_seed(1))

    def per_prompt(perceptors):
        guide = build_guide(s, vqgan, perceptors)
        with torch.no_grad():
            return step_loss(guide, z, 0, torch.Generator().manual_seed(0), None)[1]

    alone = [per_prompt([vit]), per_prompt([rn])]
    torch.testing.assert_close(per_prompt([vit, rn]), (alone[0] + alone[1]) / 2)
    torch.testing.assert_close(per_prompt([vit, vit]), alone[0])
