"""Real checkpoint layouts load safely without Lightning; hostile pickles never run."""
from __future__ import annotations

import json
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

from checkpoint_fixtures import (HOSTILE_GLOBALS, Hostile, lightning_names, write_hostile_vqgan,
                                 write_torchscript_clip, write_vqgan_replica)
from engine import cache
from engine.checkpoint import CheckpointError, UnsafeCheckpointError, load_checkpoint, read_torchscript_tensors
from engine.factory import load_perceptor, load_vqgan
from engine.vqgan import load_vqgan_files

REPO = Path(__file__).resolve().parent.parent
REPLICAS = ("lightning-attributedict", "lightning-dictconfig", "lightning-namespace", "legacy", "net2net")
# Installed as sitecustomize (or run first): Lightning cannot be imported, whether installed or not.
BLOCK_LIGHTNING = """
import sys
class _NoLightning:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pytorch_lightning", "lightning", "lightning_fabric"):
            raise ImportError(f"{name} is blocked in this test")
sys.meta_path.insert(0, _NoLightning())
"""
RUN = ["run", "-q", "width=64", "height=32", "cutouts=2", "steps_per_scene=2", "save_every=2",
       "steps_per_frame=2", "seed=7", "scenes=a red apple"]


def _user_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vqgans: dict, perceptors: dict | None = None
                 ) -> Path:
    monkeypatch.setenv("VQCLIP_CACHE", str(tmp_path / "cache"))  # a lock file of its own
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"vqgans": vqgans, **({"perceptors": perceptors} if perceptors else {})}))
    monkeypatch.setenv("VQCLIP_MODELS", str(path))
    return path


@pytest.fixture
def no_lightning(monkeypatch: pytest.MonkeyPatch) -> None:
    """Importing Lightning fails in this test (as where it is not installed)."""
    assert not any(m.split(".")[0] in ("pytorch_lightning", "lightning") for m in sys.modules)
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))  # the original list comes back after
    exec(BLOCK_LIGHTNING, {})  # the same blocker the subprocesses get: prepends a finder to sys.meta_path
    with pytest.raises(ImportError, match="blocked"):
        import pytorch_lightning  # noqa: F401


def _blocked_env(tmp_path: Path) -> dict:
    """The environment of a subprocess whose Python cannot import Lightning (sitecustomize)."""
    import os

    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(BLOCK_LIGHTNING)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}


@pytest.mark.parametrize("kind", REPLICAS)
def test_replica_weights_load_exactly(tmp_path: Path, kind: str, no_lightning: None) -> None:
    config, ckpt, weights = write_vqgan_replica(tmp_path, kind)
    model = load_vqgan_files(config, ckpt)
    state = model.state_dict()
    assert set(state) == set(weights) and all(torch.equal(state[k], weights[k]) for k in weights)


@pytest.mark.parametrize("kind", ["lightning-attributedict", "lightning-dictconfig", "lightning-namespace"])
def test_lightning_objects_come_back_as_plain_data(tmp_path: Path, kind: str, no_lightning: None) -> None:
    _, ckpt, _ = write_vqgan_replica(tmp_path, kind)
    loaded = load_checkpoint(ckpt)
    assert loaded["callbacks"] == {"pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint": {
        "monitor": "val/rec_loss", "best_model_score": torch.tensor(0.25),
        "best_model_path": "logs/checkpoints/last.ckpt"}}
    assert len(loaded["optimizer_states"]) == 2 and loaded["pytorch-lightning_version"] == "1.0.8"
    if kind == "lightning-namespace":
        assert loaded["hparams"] == {"base": ["configs/model.yaml"], "gpus": "0,", "resume": "", "train": True,
                                     "logdir": "/work/logs/2020-11-09T13-31-51"}
    else:
        assert type(loaded["hyper_parameters"]) is dict
        assert loaded["hyper_parameters"] == {"embed_dim": 16, "n_embed": 128,
                                              "ddconfig": {"ch_mult": [1, 1, 2, 2], "dropout": 0.0}}


def test_torchscript_clip_weights_read_without_running_it(tmp_path: Path, monkeypatch, no_lightning: None
                                                          ) -> None:
    saved = write_torchscript_clip(tmp_path / "ViT-tiny.pt")
    _user_models(tmp_path, monkeypatch, {}, {"openai-tiny": {"arch": "tiny-vit", "file": str(tmp_path / "ViT-tiny.pt")}})
    perceptor = load_perceptor("openai-tiny")
    own = perceptor.model.state_dict()
    assert all(torch.equal(own[k], saved[k].float()) for k in own)
    assert perceptor.encode_text(["a cat"]).shape == (1, 32)


def test_safetensors_clip_weights_load(tmp_path: Path, monkeypatch) -> None:
    """The format open_clip's hub downloads come in (`open_clip_model.safetensors`)."""
    from safetensors.torch import save_file

    reference = load_perceptor("tiny-rn").model.state_dict()
    path = tmp_path / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in reference.items()}, str(path))
    _user_models(tmp_path, monkeypatch, {}, {"st": {"arch": "tiny-rn", "file": str(path)}})
    own = load_perceptor("st").model.state_dict()
    assert all(torch.equal(own[k], reference[k]) for k in reference)


def test_cli_runs_a_legacy_lightning_replica_and_torchscript_clip_without_lightning(tmp_path: Path, monkeypatch
                                                                                     ) -> None:
    """`python -m engine run` in a Python where importing Lightning fails: a Lightning 1.0.8 dump in
    the legacy format (ModelCheckpoint key, AttributeDict, Adam states) and an OpenAI-style CLIP."""
    config, ckpt, _ = write_vqgan_replica(tmp_path / "files", "legacy")
    clip = tmp_path / "files" / "ViT-tiny.pt"
    write_torchscript_clip(clip)
    models = _user_models(tmp_path, monkeypatch, {"taming-legacy": {"config": str(config), "checkpoint": str(ckpt)}},
                          {"openai-tiny": {"arch": "tiny-vit", "file": str(clip)}})
    env = {**_blocked_env(tmp_path), "VQCLIP_MODELS": str(models), "VQCLIP_CACHE": str(tmp_path / "cache")}
    blocked = subprocess.run([sys.executable, "-c", "import pytorch_lightning"], capture_output=True, text=True,
                             env=env, timeout=120)
    assert blocked.returncode != 0 and "blocked in this test" in blocked.stderr
    result = subprocess.run([sys.executable, "-m", "engine", *RUN, "vqgan_model=taming-legacy",
                             "perceptors=openai-tiny", f"out_dir={tmp_path / 'out'}", "file_namespace=replica"],
                            capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
    assert result.returncode == 0, result.stderr
    assert list((tmp_path / "out").rglob("replica*.png"))


@pytest.mark.parametrize("global_name", HOSTILE_GLOBALS)
def test_hostile_local_checkpoint_is_refused_before_it_runs(tmp_path: Path, monkeypatch, global_name: str) -> None:
    marker = tmp_path / "payload-ran"
    config, ckpt = write_hostile_vqgan(tmp_path, global_name, marker)
    _user_models(tmp_path, monkeypatch, {"mine": {"config": str(config), "checkpoint": str(ckpt)}})
    with pytest.raises(UnsafeCheckpointError, match=f"calls {global_name}") as err:
        load_vqgan("mine")
    assert str(ckpt) in str(err.value) and not marker.exists()
    assert ckpt.exists()  # a user's own file is reported, never deleted; its checksum record is
    assert "vqgan/mine/checkpoint" not in cache.lock_file().read_text()


@pytest.mark.parametrize("global_name", HOSTILE_GLOBALS)
def test_hostile_download_is_refused_and_evicted(tmp_path: Path, monkeypatch, file_server, global_name: str
                                                 ) -> None:
    marker = tmp_path / "payload-ran"
    config, ckpt = write_hostile_vqgan(tmp_path / "src", global_name, marker)
    _user_models(tmp_path, monkeypatch, {"mirrored": {
        "config_urls": [file_server.add("model.yaml", config.read_bytes())],
        "checkpoint_urls": [file_server.add("last.ckpt", ckpt.read_bytes())]}})
    with pytest.raises(UnsafeCheckpointError, match=f"calls {global_name}.*deleted.*127.0.0.1"):
        load_vqgan("mirrored")
    assert not marker.exists()
    assert not (cache.vqgan_dir("mirrored") / "last.ckpt").exists()
    lock = json.loads(cache.lock_file().read_text()) if cache.lock_file().exists() else {}
    assert "vqgan/mirrored/checkpoint" not in lock


def test_lightning_functions_load_as_inert_stand_ins(tmp_path: Path, monkeypatch) -> None:
    """A pickle that calls a Lightning-named function gets our stand-in, not Lightning's code."""
    marker = tmp_path / "function-ran"
    module = types.ModuleType("pytorch_lightning.utilities.cloud_io")

    def load(path: str) -> None:  # would run if the loader imported Lightning's real function
        Path(path).touch()

    load.__module__, load.__qualname__ = module.__name__, "load"
    module.load = load

    class CallsLightning:
        def __reduce__(self):
            return load, (str(marker),)

    path = tmp_path / "calls.ckpt"
    with lightning_names():
        monkeypatch.setitem(sys.modules, module.__name__, module)
        torch.save({"state_dict": {"w": torch.ones(2)}, "loader": CallsLightning()}, path)
    loaded = load_checkpoint(path)
    assert loaded["loader"] == "pytorch_lightning.utilities.cloud_io.load" and not marker.exists()


def test_hostile_legacy_file_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    path = tmp_path / "legacy.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "x": Hostile("posix.system", marker)}, path,
               _use_new_zipfile_serialization=False)
    with pytest.raises(UnsafeCheckpointError, match="calls posix.system"):
        load_checkpoint(path, keep="state_dict")
    assert not marker.exists()


def test_hostile_clip_weights_file_is_refused(tmp_path: Path, monkeypatch) -> None:
    marker = tmp_path / "payload-ran"
    path = tmp_path / "clip.pt"
    torch.save({"state_dict": {"logit_scale": torch.ones([])}, "extra": Hostile("builtins.exec", marker)}, path)
    _user_models(tmp_path, monkeypatch, {}, {"mine": {"arch": "tiny-vit", "file": str(path)}})
    with pytest.raises(UnsafeCheckpointError, match=f"{path}: refused to load: its pickle calls builtins.exec"):
        load_perceptor("mine")
    assert not marker.exists() and path.exists()
    assert "clip/mine" not in cache.lock_file().read_text()


def test_cli_refuses_a_hostile_checkpoint_in_one_line(tmp_path: Path, monkeypatch) -> None:
    marker = tmp_path / "payload-ran"
    config, ckpt = write_hostile_vqgan(tmp_path, "posix.system", marker)
    models = _user_models(tmp_path, monkeypatch, {"mine": {"config": str(config), "checkpoint": str(ckpt)}})
    result = subprocess.run([sys.executable, "-m", "engine", *RUN, "vqgan_model=mine", "perceptors=tiny-vit",
                             f"out_dir={tmp_path / 'out'}"], capture_output=True, text=True, timeout=300,
                            cwd=REPO, env={**_blocked_env(tmp_path), "VQCLIP_MODELS": str(models)})
    assert result.returncode == 2 and not marker.exists()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "posix.system" in lines[0], result.stderr
    assert str(ckpt) in lines[0]


def test_torchscript_archive_with_a_hostile_global_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("evil/constants.pkl", b"\x80\x02).")
        archive.writestr("evil/data.pkl", __import__("pickle").dumps(Hostile("posix.system", marker), protocol=2))
    with pytest.raises(UnsafeCheckpointError, match="posix.system"):
        read_torchscript_tensors(path)
    assert not marker.exists()


@pytest.mark.parametrize("content,message", [
    (b"<!DOCTYPE html><html>Link does not exist.</html>", "HTML page"),
    (b"PK\x03\x04 truncated", "not a checkpoint"),
])
def test_unreadable_files_name_the_problem(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "last.ckpt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_truncated_checkpoint_is_one_clear_error(tmp_path: Path) -> None:
    _, ckpt, _ = write_vqgan_replica(tmp_path, "legacy")
    ckpt.write_bytes(ckpt.read_bytes()[:-5000])
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint.*download it again"):
        load_checkpoint(ckpt)


def test_legacy_file_with_parameters_falls_back_to_torchs_reader(tmp_path: Path) -> None:
    """Globals the lazy legacy reader leaves to torch (here nn.Parameter's rebuild) still load."""
    weight = torch.nn.Parameter(torch.randn(4, 3))
    path = tmp_path / "params.ckpt"
    torch.save({"state_dict": {"w": weight}, "optimizer_states": [{"state": {}}]}, path,
               _use_new_zipfile_serialization=False)
    state = load_checkpoint(path, keep="state_dict")
    assert set(state) == {"w"} and torch.equal(state["w"], weight.detach())
