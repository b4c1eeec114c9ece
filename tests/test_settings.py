"""Settings that used to pass validation and then crash mid-run are refused before any file is written."""
from __future__ import annotations

import itertools
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.__main__ import main
from engine.settings import FIELDS, SETTING_GROUPS, Settings, SettingsError, load_config, parse_overrides

REPO = Path(__file__).resolve().parent.parent

TINY = ["vqgan_model=tiny", "perceptors=tiny-vit", "width=32", "height=32", "steps_per_scene=2"]


@pytest.mark.parametrize("override, message", [
    ("cutout_border=.inf", "cutout_border=inf: must be a finite number"),
    ("rotate_2d=.inf", "rotate_2d=inf: must be a finite number"),
    ("direct_stabilization_weight=.inf", "direct_stabilization_weight=inf: must be a finite number"),
    ("smoothing_weight=.nan", "smoothing_weight=nan: must be a finite number"),
    ("seed=18446744073709551616", "seed=18446744073709551616: must be -1 .* 2\\*\\*64 - 1"),
    ("zoom_x_2d=-100", "zoom_x_2d=-100.0: must be within \\(-32, 32\\)"),
    ("zoom_y_2d=32", "zoom_y_2d=32.0: must be within"),
    ("translate_y=40", "translate_y=40.0: must be within"),
    ("rotate_2d=720", "rotate_2d=720.0: must be within \\[-360, 360\\]"),
    ("file_namespace=" + "a" * 300, "300 characters\\): at most 200 characters"),
    ("precision=fp16", "precision='fp16': allowed values are fp32, tf32, bf16"),
])
def test_cli_refuses_before_writing(tmp_path: Path, capsys, override: str, message: str):
    assert main(["run", "--quiet", *TINY, f"out_dir={tmp_path / 'out'}", override]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and len(err) < 400
    assert re.search(message, err), err
    assert not (tmp_path / "out").exists()


def test_cli_process_refuses_infinite_cutout_border(tmp_path: Path):
    # once a segfault mid-run
    proc = subprocess.run([sys.executable, "-m", "engine", "run", "--quiet", *TINY, f"out_dir={tmp_path}",
                           "cutout_border=.inf"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "cutout_border=inf: must be a finite number" in proc.stderr
    assert "Traceback" not in proc.stderr and not any(tmp_path.iterdir())


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="MPS is available here")
def test_unavailable_mps_is_a_clear_error(tmp_path: Path, capsys):
    assert main(["run", "--quiet", *TINY, f"out_dir={tmp_path / 'out'}", "device=mps"]) == 2
    assert "device='mps': MPS (Apple GPU) is not available" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_yaml_floats_are_numbers(tmp_path: Path):
    assert load_config(None, ["learning_rate=1e-3"]).learning_rate == 0.001
    config = tmp_path / "c.yaml"
    config.write_text("learning_rate: 2E-2\ncut_pow: 1e0\nseed: 3\n")
    s = load_config(config)
    assert (s.learning_rate, s.cut_pow, s.seed) == (0.02, 1.0, 3)


def test_alias_bomb_is_refused_with_a_short_message(tmp_path: Path):
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    with pytest.raises(SettingsError, match="aliases") as err:
        load_config(bomb)
    assert len(str(err.value)) < 500
    with pytest.raises(SettingsError, match="aliases"):
        parse_overrides(["perceptors=[*a]"])


def test_text_settings_stay_text():
    assert parse_overrides(["scenes=*a star", "file_namespace=2024"]) == {"scenes": "*a star", "file_namespace": "2024"}


def test_seed_range_is_the_generators():
    assert load_config(None, ["seed=18446744073709551615"]).seed == 2**64 - 1
    torch.Generator().manual_seed(2**64 - 1)  # the largest seed torch takes
    with pytest.raises(SettingsError, match="seed=-2"):
        load_config(None, ["seed=-2"])


def test_every_bad_setting_of_a_command_is_reported_together(tmp_path: Path, capsys) -> None:
    assert main(["run", "--quiet", *TINY, f"out_dir={tmp_path / 'out'}", "widht=64", "cutouts=-3",
                 "precision=fp16", "seed=abc"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "error: 4 settings cannot be used:"
    assert lines[1:] == ["  - unknown setting 'widht'; did you mean width?",
                         "  - setting seed='abc': expected int",
                         "  - setting cutouts=-3: must be a positive integer",
                         "  - setting precision='fp16': allowed values are fp32, tf32, bf16"]
    assert not (tmp_path / "out").exists()


def test_run_help_lists_every_setting_with_its_default_and_meaning_by_docs_group(capsys) -> None:
    with pytest.raises(SystemExit) as done:
        main(["run", "--help"])
    assert done.value.code == 0
    help_text = capsys.readouterr().out
    assert "docs/engine.md" in help_text
    grouped = [name for names in SETTING_GROUPS.values() for name in names]
    assert sorted(grouped) == sorted(FIELDS)  # each setting in exactly one group
    epilog = help_text[help_text.index("\nPrompts and scenes:"):]
    titles = [line[:-1] for line in epilog.splitlines() if line and not line.startswith(" ")]
    assert titles == list(SETTING_GROUPS)
    defaults = Settings()
    lines = epilog.splitlines()
    for name in grouped:
        at = next(i for i, line in enumerate(lines) if line.startswith(f"  {name}="))
        typed, *meaning = re.split(r"\s{2,}", lines[at].strip(), maxsplit=1)  # typed: as in a shell
        assert getattr(load_config(None, shlex.split(typed)), name) == getattr(defaults, name), typed
        meaning += [line.strip() for line in itertools.takewhile(lambda line: line.startswith(" " * 8), lines[at + 1:])]
        assert " ".join(meaning) == FIELDS[name].metadata["meaning"], name
    docs = (REPO / "docs/engine.md").read_text()
    headings = [line.removeprefix("### ") for line in docs.splitlines() if line.startswith("### ")]
    assert [h for h in headings if h in SETTING_GROUPS] == list(SETTING_GROUPS)  # docs/engine.md's groups, in order
    for group, names in SETTING_GROUPS.items():
        table = docs.split(f"### {group}\n", 1)[1].split("\n#", 1)[0]
        assert all(f"`{name}`" in table for name in names), group
