"""Models: registry names, the taming loader, tiny models, verified downloads through the registry."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from engine import cache
from engine.factory import fetch, load_perceptor, load_vqgan, model_table
from engine.registry import UnknownModelError, build_registry, registry
from engine.tiny import make_tiny_vqgan
from engine.vqgan import CheckpointError, load_vqgan_files


@pytest.mark.parametrize("name", ["tiny", "tiny-gumbel"])
def test_tiny_vqgan_round_trip(name: str) -> None:
    vqgan = load_vqgan(name)
    assert vqgan.info.untrained and vqgan.info.sha256 and vqgan.factor == 8
    x = torch.rand(2, 3, 32, 64)
    z = vqgan.encode(x)
    assert z.shape == (2, vqgan.embed_dim, 4, 8)
    image = vqgan.decode(vqgan.quantize_st(z))
    assert image.shape == x.shape and image.min() >= 0 and image.max() <= 1
    # quantize snaps to codebook vectors
    q = vqgan.nearest_codes(z).movedim(1, -1).reshape(-1, vqgan.embed_dim)
    assert (q[:, None] == vqgan.codebook[None]).all(-1).any(1).all()
    lo, hi = vqgan.codebook_bounds()
    assert lo.shape == hi.shape == (1, vqgan.embed_dim, 1, 1) and (lo <= hi).all()


def test_gradient_reaches_z_through_quantize() -> None:
    vqgan = load_vqgan("tiny")
    z = vqgan.encode(torch.rand(1, 3, 32, 32)).requires_grad_(True)
    vqgan.decode(vqgan.quantize_st(z)).mean().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_tiny_models_are_deterministic(tmp_path: Path) -> None:
    a = make_tiny_vqgan("tiny", tmp_path / "a")[1].read_bytes()
    b = make_tiny_vqgan("tiny", tmp_path / "b")[1].read_bytes()
    sa = torch.load(tmp_path / "a" / "tiny.ckpt", weights_only=True)["state_dict"]
    sb = torch.load(tmp_path / "b" / "tiny.ckpt", weights_only=True)["state_dict"]
    assert a and b and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("name", ["tiny-vit", "tiny-rn"])
def test_tiny_perceptor(name: str) -> None:
    perceptor = load_perceptor(name)
    assert perceptor.info.untrained
    text = perceptor.encode_text(["a cat", "a dog"])
    image = perceptor.encode_image(torch.rand(3, 3, *perceptor.input_size))
    assert text.shape[0] == 2 and image.shape == (3, text.shape[1])
    assert torch.allclose(image.norm(dim=-1), torch.ones(3), atol=1e-5)


def _write_vqgan_files(tmp_path: Path, *, net2net: bool = False, drop: str | None = None,
                       target: str | None = None) -> tuple[Path, Path]:
    config_path, ckpt_path = make_tiny_vqgan("tiny", tmp_path / "src")
    model = yaml.safe_load(config_path.read_text())["model"]
    state = torch.load(ckpt_path, weights_only=True)["state_dict"]
    if target:
        model["target"] = target
    if net2net:
        model = {"target": "taming.models.cond_transformer.Net2NetTransformer",
                 "params": {"first_stage_config": model, "transformer_config": {"target": "x"}}}
        state = {**{f"first_stage_model.{k}": v for k, v in state.items()},
                 "transformer.tok_emb.weight": torch.zeros(4, 4)}
    if drop:
        state = {k: v for k, v in state.items() if not k.startswith(drop)}
    out_config, out_ckpt = tmp_path / "model.yaml", tmp_path / "last.ckpt"
    out_config.write_text(yaml.safe_dump({"model": model}))
    torch.save({"state_dict": state}, out_ckpt)
    return out_config, out_ckpt


def test_net2net_first_stage_loads(tmp_path: Path) -> None:
    reference = load_vqgan("tiny")
    model = load_vqgan_files(*_write_vqgan_files(tmp_path, net2net=True))
    assert torch.equal(model.codebook, reference.codebook)
    assert torch.equal(model.decoder.conv_out.weight, reference.decoder.conv_out.weight)


def test_unknown_config_target_is_named(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="taming.models.vqgan.SomethingElse"):
        load_vqgan_files(*_write_vqgan_files(tmp_path, target="taming.models.vqgan.SomethingElse"))


def test_missing_decoder_keys_are_named(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"missing keys \[decoder\.") as err:
        load_vqgan_files(*_write_vqgan_files(tmp_path, drop="decoder."))
    assert "encoder." not in str(err.value)


def test_unexpected_keys_are_named(tmp_path: Path) -> None:
    config, ckpt = _write_vqgan_files(tmp_path)
    state = torch.load(ckpt, weights_only=True)
    state["state_dict"]["decoder.extra_layer.weight"] = torch.zeros(1)
    torch.save(state, ckpt)
    with pytest.raises(CheckpointError, match="unexpected keys.*decoder.extra_layer.weight"):
        load_vqgan_files(config, ckpt)


def test_unknown_name_lists_valid_and_closest() -> None:
    with pytest.raises(UnknownModelError) as err:
        registry().vqgan("imagenet_16385")
    message = str(err.value)
    assert "Closest: imagenet_16384" in message and "wikiart_16384" in message and "tiny-gumbel" in message
    with pytest.raises(UnknownModelError, match="Closest: .*ViT-B-32"):
        registry().perceptor("ViT-B-32:opena")


@pytest.mark.parametrize("alias,name,slug", [
    ("ViT-B/32", "ViT-B-32:openai", "ViT-B32"), ("ViT-B32", "ViT-B-32:openai", "ViT-B32"),
    ("ViTB16", "ViT-B-16:openai", "ViT-B16"), ("RN50x4", "RN50x4:openai", "RN50x4"),
    ("ViT-L/14@336px", "ViT-L-14-336:openai", "ViT-L14-336px"), ("ViTL14_336px", "ViT-L-14-336:openai", "ViT-L14-336px"),
    ("ViT-B-32:laion2b_s34b_b79k", "ViT-B-32:laion2b_s34b_b79k", "ViT-B-32-laion2b-s34b-b79k"),
])
def test_perceptor_aliases_and_slugs(alias: str, name: str, slug: str) -> None:
    source = registry().perceptor(alias)
    assert (source.name, source.slug) == (name, slug)


def test_every_open_clip_pair_is_registered_with_a_safe_unique_slug() -> None:
    import open_clip

    reg = registry()
    assert {f"{a}:{t}" for a, t in open_clip.list_pretrained()} <= set(reg.perceptors)
    slugs = [s.slug for s in (*reg.perceptors.values(), *reg.vqgans.values())]
    assert all(not set("_/@: ") & set(slug) for slug in slugs)
    assert len(set(s.slug for s in reg.perceptors.values())) == len(reg.perceptors)


def test_random_weights_need_no_download() -> None:
    vqgan = load_vqgan("imagenet_16384", random_weights=True)
    assert vqgan.n_embed == 16384 and vqgan.factor == 16 and vqgan.info.source == "random weights"
    perceptor = load_perceptor("ViT-B/32", random_weights=True)
    assert perceptor.input_size == (224, 224) and perceptor.info.untrained


def test_user_checkpoint_downloaded_from_mirrors(tmp_path: Path, file_server, monkeypatch) -> None:
    """A user entry with URLs: the dead first mirror is skipped, the file verified, locked, loaded."""
    config, ckpt = _write_vqgan_files(tmp_path)
    user_file = tmp_path / "models.yaml"
    user_file.write_text(yaml.safe_dump({"vqgans": {"my_vqgan": {
        "slug": "mine",
        "config_urls": [file_server.url("gone.yaml"), file_server.add("model.yaml", config.read_bytes())],
        "checkpoint_urls": [file_server.add("last.ckpt", ckpt.read_bytes())],
    }}}))
    monkeypatch.setenv("VQCLIP_MODELS", str(user_file))
    monkeypatch.setenv("VQCLIP_CACHE", str(tmp_path / "cache"))
    paths = fetch("my_vqgan", progress=False)
    assert [p.name for p in paths] == ["config.yaml", "last.ckpt"]
    vqgan = load_vqgan("mine")
    assert vqgan.info.name == "my_vqgan" and vqgan.info.source == file_server.url("last.ckpt")
    lock = cache.lock_file().read_text()
    assert "vqgan/my_vqgan/checkpoint" in lock and vqgan.info.sha256 in lock
    assert next(r for r in model_table() if r["name"] == "my_vqgan")["cached"]


def test_user_file_errors_name_the_entry(tmp_path: Path) -> None:
    user_file = tmp_path / "models.yaml"
    user_file.write_text(yaml.safe_dump({"vqgans": {"broken": {"checkpoint": "/x.ckpt", "colour": 3}}}))
    with pytest.raises(ValueError, match=r"vqgans.broken has unknown keys \['colour'\]"):
        build_registry(user_file)


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True, timeout=timeout)


def test_cli_models_lists_both_kinds_offline() -> None:
    out = _cli("models").stdout
    assert "imagenet_16384" in out and "ViT-B-32:openai" in out and "UNTRAINED" in out


def test_cli_models_shows_pyttis_perceptor_names_first_and_the_tiny_models_apart() -> None:
    sections = {block.splitlines()[0].split(" (")[0]: block.splitlines()[1:]
                for block in _cli("models").stdout.split("\n\n")[1:]}
    assert list(sections) == ["VQGANS", "PERCEPTORS", "UNTRAINED TINY MODELS"]
    assert sorted(line.split()[0] for line in sections["UNTRAINED TINY MODELS"]) == sorted(
        ["tiny", "tiny-gumbel", "tiny-vit", "tiny-rn"])
    perceptors = sections["PERCEPTORS"]
    assert not [line for line in perceptors if line.split()[0].startswith("tiny")]
    vit = next(line for line in perceptors if line.split()[0] == "ViT-B-32:openai")
    assert "aliases: ViT-B-32, ViT-B/32, ViT-B32, ViTB32" in vit
    first_without = next(i for i, line in enumerate(perceptors) if "aliases:" not in line)
    assert perceptors.index(vit) < first_without  # pytti's perceptors lead the list
    assert all("aliases:" not in line for line in perceptors[first_without:])


def test_cli_fetch_offline_fails_fast_with_the_urls() -> None:
    t0 = time.monotonic()
    result = _cli("fetch", "imagenet_16384")
    assert time.monotonic() - t0 < 60
    assert result.returncode == 1  # a failed download is a StateError (engine/errors.py): exit 1
    assert "heibox.uni-heidelberg.de" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "put both files, config.yaml and last.ckpt, by hand in" in result.stderr  # a VQGAN needs both
    assert "vqgan_model=tiny" in result.stderr and "/tmp/demo-grid" in result.stderr  # as the README says


def test_perceptor_sizes_come_from_the_architecture() -> None:
    from engine.param_counts import count_parameters, parameters

    rows = {r["name"]: r for r in model_table() if r["kind"] == "perceptor"}
    for name in ("ViT-B-32:openai", "RN50:openai", "tiny-vit"):
        assert rows[name]["size_mb"] and rows[name]["size_mb"] > 0, name
    assert rows["ViT-B-32:openai"]["size_mb"] == pytest.approx(151.3e6 * 4 / 2**20, rel=0.01)
    for arch in ("ViT-B-32", "RN50"):  # the shipped table is what a meta-device build counts
        assert parameters(arch) == count_parameters(arch)


# ---------------------------------------------------------------- trust and concurrency of the cache

def _user_model_on_server(tmp_path: Path, file_server, monkeypatch, ckpt_bytes: bytes) -> None:
    config, _ = _write_vqgan_files(tmp_path)
    user_file = tmp_path / "models.yaml"
    user_file.write_text(yaml.safe_dump({"vqgans": {"my_vqgan": {
        "slug": "mine", "config_urls": [file_server.add("model.yaml", config.read_bytes())],
        "checkpoint_urls": [file_server.add("last.ckpt", ckpt_bytes)]}}}))
    monkeypatch.setenv("VQCLIP_MODELS", str(user_file))
    monkeypatch.setenv("VQCLIP_CACHE", str(tmp_path / "cache"))


def test_changed_cached_file_is_refused_until_relocked(tmp_path: Path, file_server, monkeypatch) -> None:
    _, ckpt = _write_vqgan_files(tmp_path)
    _user_model_on_server(tmp_path, file_server, monkeypatch, ckpt.read_bytes())
    cached = fetch("my_vqgan", progress=False)[1]
    first = load_vqgan("my_vqgan").info.sha256
    state = torch.load(cached, weights_only=True)
    state["state_dict"]["quantize.embedding.weight"] += 1
    torch.save(state, cached)  # a file swapped in the cache after it was verified

    result = _cli("run", "vqgan_model=my_vqgan", "perceptors=tiny-vit", "width=32", "height=32",
                  "steps_per_scene=2", "save_every=2", "steps_per_frame=2", f"out_dir={tmp_path / 'out'}")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "changed after it was verified" in result.stderr and "fetch my_vqgan --relock" in result.stderr
    assert not (tmp_path / "out").exists()
    assert ChecksumLockView().sha("vqgan/my_vqgan/checkpoint") == first  # not re-locked silently

    relock = _cli("fetch", "my_vqgan", "--relock", "-q")
    assert relock.returncode == 0, relock.stderr
    assert load_vqgan("my_vqgan").info.sha256 == ChecksumLockView().sha("vqgan/my_vqgan/checkpoint") != first


def test_reupload_upstream_needs_relock(tmp_path: Path, file_server, monkeypatch) -> None:
    _, ckpt = _write_vqgan_files(tmp_path)
    _user_model_on_server(tmp_path, file_server, monkeypatch, ckpt.read_bytes())
    cached = fetch("my_vqgan", progress=False)[1]
    cached.unlink()
    state = torch.load(ckpt, weights_only=True)
    state["global_step"] = 7
    torch.save(state, ckpt)
    file_server.add("last.ckpt", ckpt.read_bytes())  # the mirror now serves other bytes

    refused = _cli("fetch", "my_vqgan", "-q")
    assert refused.returncode != 0 and "checksum mismatch" in refused.stderr
    assert "fetch my_vqgan --relock" in refused.stderr and not cached.exists()
    assert _cli("fetch", "my_vqgan", "-q", "--relock").returncode == 0
    assert cached.read_bytes() == ckpt.read_bytes()


class ChecksumLockView:
    """The session's checksum lock as a test reads it."""

    def sha(self, key: str) -> str | None:
        from engine.download import ChecksumLock

        record = ChecksumLock(cache.lock_file()).get(key)
        return record and record["sha256"]


def test_two_processes_fetch_one_model_into_one_cache(tmp_path: Path, file_server, monkeypatch) -> None:
    _, ckpt = _write_vqgan_files(tmp_path)
    _user_model_on_server(tmp_path, file_server, monkeypatch, ckpt.read_bytes())
    file_server.misbehave("last.ckpt", pause_s=0.2)  # slow enough that both processes overlap
    procs = [subprocess.Popen([sys.executable, "-m", "engine", "fetch", "my_vqgan", "-q"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    folder = tmp_path / "cache" / "vqgan" / "my_vqgan"
    assert sorted(p.name for p in folder.iterdir()) == ["config.yaml", "last.ckpt"]
    assert (folder / "last.ckpt").read_bytes() == ckpt.read_bytes()
    assert len(file_server.requests_for("last.ckpt")) == 1  # one download, the other process waited


def test_two_processes_generate_tiny_models_into_one_cache(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("VQCLIP_CACHE", str(tmp_path / "cache"))
    procs = [subprocess.Popen([sys.executable, "-m", "engine", "fetch", "tiny", "tiny-vit", "-q"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    names = sorted(p.name for p in (tmp_path / "cache" / "tiny").iterdir())
    assert names == ["tiny-rn.json", "tiny-vit.json", "tiny-vit.pt", "tiny.ckpt", "tiny.yaml"]
    reference = make_tiny_vqgan("tiny", tmp_path / "ref")[1]
    assert torch.load(reference, weights_only=True)["state_dict"].keys() == \
        torch.load(tmp_path / "cache" / "tiny" / "tiny.ckpt", weights_only=True)["state_dict"].keys()
