"""The `precision` setting: bf16 reruns are byte-identical, both precisions lower the loss, bad values
and CPUs without bf16 are refused with a clear message."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from engine.__main__ import main
from engine.factory import load_perceptor, load_vqgan
from engine.precision import CPU_BF16_ENV, check_precision, cpu_has_bf16, prepare_models
from engine.loop import execute
from engine.settings import SettingsError, load_config

TINY = ["vqgan_model=tiny", "perceptors=tiny-vit", "width=32", "height=16", "cutouts=2", "seed=3",
        "scenes=a red apple", "steps_per_frame=100", "save_every=5"]


@pytest.fixture
def emulated_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    """bf16 on this CPU even without bf16 instructions (slow, but the tiny models are small)."""
    monkeypatch.setenv(CPU_BF16_ENV, "emulate")


def tiny_run(out_dir: Path, name: str, *extra: str) -> Path:
    return execute(load_config(None, [*TINY, f"out_dir={out_dir}", f"file_namespace={name}", *extra]), quiet=True)


def frames(folder: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(folder.glob("*.png"), key=lambda p: int(p.stem.rsplit("_", 1)[-1]))]


def losses(folder: Path) -> list[float]:
    with open(folder / "losses.csv", newline="") as f:
        return [float(row["total"]) for row in csv.DictReader(f)]


def test_bf16_reruns_are_byte_identical_and_differ_from_fp32(tmp_path: Path, emulated_bf16: None) -> None:
    first = tiny_run(tmp_path, "a", "precision=bf16", "steps_per_scene=6", "save_every=3")
    second = tiny_run(tmp_path, "b", "precision=bf16", "steps_per_scene=6", "save_every=3")
    fp32 = tiny_run(tmp_path, "c", "precision=fp32", "steps_per_scene=6", "save_every=3")
    assert len(frames(first)) == 2
    assert frames(first) == frames(second)
    assert frames(first) != frames(fp32)  # bf16 really ran in bf16
    assert json.loads(next(first.glob("*settings*.json")).read_text())["settings"]["precision"] == "bf16"


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_both_precisions_lower_the_loss_over_30_steps(tmp_path: Path, emulated_bf16: None, precision: str) -> None:
    values = losses(tiny_run(tmp_path, precision, f"precision={precision}", "steps_per_scene=30",
                             "augmentations=false", "save_every=30"))
    assert len(values) == 30
    assert sum(values[-5:]) / 5 < sum(values[:5]) / 5


def test_prepared_bf16_models_keep_z_and_outputs_fp32(emulated_bf16: None) -> None:
    vqgan, perceptor = load_vqgan("tiny"), load_perceptor("tiny-vit")
    prepare_models("bf16", torch.device("cpu"), vqgan, [perceptor])
    assert vqgan.decoder.conv_in.weight.dtype == torch.bfloat16
    assert next(perceptor.model.parameters()).dtype == torch.bfloat16
    assert vqgan.codebook.dtype == torch.float32  # quantisation compares fp32 distances
    z = torch.randn(1, vqgan.embed_dim, 4, 8, requires_grad=True)
    image = vqgan.decode(z)
    embeds = perceptor.encode_image(image)
    assert image.dtype == embeds.dtype == torch.float32
    embeds.sum().backward()
    assert z.grad is not None and z.grad.dtype == torch.float32


@pytest.mark.parametrize("value", ["fp16", "float32", "BF16"])
def test_other_precisions_are_refused_by_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture, value: str) -> None:
    code = main(["run", *TINY, f"out_dir={tmp_path}", f"precision={value}"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"precision={value!r}" in err and "fp32, tf32, bf16" in err
    assert not any(tmp_path.iterdir())


def test_bf16_on_a_cpu_without_bf16_is_refused_clearly(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CPU_BF16_ENV, "absent")  # what the CPU check reports on a CPU without AVX512-BF16/AMX
    assert not cpu_has_bf16()
    code = main(["run", *TINY, f"out_dir={tmp_path}", "precision=bf16"])
    err = capsys.readouterr().err
    assert code == 2
    assert "precision=bf16" in err and "no bf16 matrix instructions" in err and "precision=fp32" in err
    assert not any(tmp_path.iterdir())
    check_precision("fp32", torch.device("cpu"))  # fp32 always runs


def test_the_cpu_check_refuses_an_unknown_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CPU_BF16_ENV, "yes")
    with pytest.raises(SettingsError, match=f"{CPU_BF16_ENV}='yes'.*detect, emulate, absent"):
        check_precision("bf16", torch.device("cpu"))


def test_tf32_off_cuda_is_refused_clearly(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["run", *TINY, f"out_dir={tmp_path}", "device=cpu", "precision=tf32"])
    err = capsys.readouterr().err
    assert code == 2
    assert "precision=tf32" in err and "CUDA" in err and "precision=fp32" in err
    assert not any(tmp_path.iterdir())
