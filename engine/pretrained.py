"""The one table of pretrained VQGAN checkpoint sources.

Each entry lists its mirrors in the order they are tried. Links of this kind die often: add
your own mirrors or checkpoints in the user models file (see `engine.registry`), no code
change needed. Expected sizes are approximate and only shown to the user; downloads are
verified against the size the server announces and against the sha256 (published, or recorded
in the lock file on first download).
"""
from __future__ import annotations

from dataclasses import dataclass, field

_HEIBOX = "https://heibox.uni-heidelberg.de"
_KOOFR = "https://app.koofr.net/content/links"


def _taming_model(target: str, n_embed: int, ch_mult: list[int], attn: list[int]) -> dict:
    ddconfig = {"double_z": False, "z_channels": 256, "resolution": 256, "in_channels": 3, "out_ch": 3,
                "ch": 128, "ch_mult": ch_mult, "num_res_blocks": 2, "attn_resolutions": attn, "dropout": 0.0}
    return {"target": f"taming.models.vqgan.{target}",
            "params": {"embed_dim": 256, "n_embed": n_embed, "ddconfig": ddconfig}}


_F16 = ([1, 1, 2, 2, 4], [16])
_F8 = ([1, 1, 2, 4], [32])


@dataclass(frozen=True)
class VQGANSource:
    """Where a VQGAN's config and checkpoint come from."""

    name: str
    slug: str  # safe in folder and DVC stage names: no '_', '/', '@' or spaces
    description: str
    config_urls: tuple[str, ...] = ()
    checkpoint_urls: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    approx_size_mb: int | None = None
    config_sha256: str | None = None
    checkpoint_sha256: str | None = None
    local_config: str | None = None  # user entries may point at files on disk
    local_checkpoint: str | None = None
    untrained: bool = False
    # The taming `model:` section, known without a download; used only to build random
    # weights for benchmarks when the real config is not cached (a cached config wins).
    architecture: dict | None = field(default=None, compare=False)


PRETRAINED_VQGANS: tuple[VQGANSource, ...] = (
    VQGANSource(
        "imagenet_16384", "imagenet", "VQModel f16, 16384 codes, ImageNet",
        config_urls=(f"{_HEIBOX}/f/274fb24ed38341bfa753/?dl=1",
                     f"{_HEIBOX}/d/a7530b09fed84f80a887/files/?p=%2Fconfigs%2Fmodel.yaml&dl=1"),
        checkpoint_urls=(f"{_HEIBOX}/f/867b05fc8c4841768640/?dl=1",
                         f"{_HEIBOX}/d/a7530b09fed84f80a887/files/?p=%2Fckpts%2Flast.ckpt&dl=1"),
        aliases=("imagenet",), approx_size_mb=980,
        architecture=_taming_model("VQModel", 16384, *_F16)),
    VQGANSource(
        "imagenet_1024", "imagenet1024", "VQModel f16, 1024 codes, ImageNet",
        config_urls=(f"{_HEIBOX}/d/8088892a516d4e3baf92/files/?p=%2Fconfigs%2Fmodel.yaml&dl=1",),
        checkpoint_urls=(f"{_HEIBOX}/d/8088892a516d4e3baf92/files/?p=%2Fckpts%2Flast.ckpt&dl=1",),
        approx_size_mb=958, architecture=_taming_model("VQModel", 1024, *_F16)),
    VQGANSource(
        "openimages_8192", "openimages", "GumbelVQ f8, 8192 codes, Open Images (vqgan_gumbel_f8_8192)",
        config_urls=(f"{_HEIBOX}/d/2e5662443a6b4307b470/files/?p=%2Fconfigs%2Fmodel.yaml&dl=1",),
        checkpoint_urls=(f"{_HEIBOX}/d/2e5662443a6b4307b470/files/?p=%2Fckpts%2Flast.ckpt&dl=1",),
        aliases=("openimages", "vqgan_gumbel_f8_8192"), approx_size_mb=376,
        architecture=_taming_model("GumbelVQ", 8192, *_F8)),
    VQGANSource(
        "wikiart_16384", "wikiart", "VQModel f16, 16384 codes, WikiArt",
        config_urls=("http://eaidata.bmk.sh/data/Wikiart_16384/wikiart_f16_16384_8145600.yaml",),
        checkpoint_urls=("http://eaidata.bmk.sh/data/Wikiart_16384/wikiart_f16_16384_8145600.ckpt",),
        aliases=("wikiart",), approx_size_mb=1000,
        architecture=_taming_model("VQModel", 16384, *_F16)),
    VQGANSource(
        "coco", "coco", "Net2NetTransformer first stage, COCO",
        config_urls=("http://batbot.ai/models/VQGAN/coco_first_stage.yaml",
                     "https://dl.nmkd.de/ai/clip/coco/coco.yaml"),
        checkpoint_urls=("http://batbot.ai/models/VQGAN/coco_first_stage.ckpt",
                         "https://dl.nmkd.de/ai/clip/coco/coco.ckpt"),
        approx_size_mb=8400),
    VQGANSource(
        "sflckr", "sflckr", "Net2NetTransformer first stage, S-FLCKR landscapes",
        config_urls=(f"{_HEIBOX}/d/73487ab6e5314cb5adba/files/?p=%2Fconfigs%2F2020-11-09T13-31-51-project.yaml&dl=1",),
        checkpoint_urls=(f"{_HEIBOX}/d/73487ab6e5314cb5adba/files/?p=%2Fcheckpoints%2Flast.ckpt&dl=1",)),
    VQGANSource(
        "faceshq", "faceshq", "Net2NetTransformer first stage, faces",
        config_urls=("https://drive.google.com/uc?export=download&id=1fHwGx_hnBtC8nsq7hesJvs-Klv-P0gzT",),
        checkpoint_urls=(f"{_KOOFR}/a04deec9-0c59-4673-8b37-3d696fe63a5d/files/get/last.ckpt"
                         "?path=%2F2020-11-13T21-41-45_faceshq_transformer%2Fcheckpoints%2Flast.ckpt",)),
    VQGANSource(
        "ffhq", "ffhq", "Net2NetTransformer first stage, FFHQ faces",
        config_urls=(f"{_KOOFR}/0fc005bf-3dca-4079-9d40-cdf38d42cd7a/files/get/2021-04-23T18-19-01-project.yaml"
                     "?path=%2F2021-04-23T18-19-01_ffhq_transformer%2Fconfigs%2F2021-04-23T18-19-01-project.yaml&force",),
        checkpoint_urls=(f"{_KOOFR}/0fc005bf-3dca-4079-9d40-cdf38d42cd7a/files/get/last.ckpt"
                         "?path=%2F2021-04-23T18-19-01_ffhq_transformer%2Fcheckpoints%2Flast.ckpt&force",)),
    VQGANSource(
        "celebahq", "celebahq", "Net2NetTransformer first stage, CelebA-HQ faces",
        config_urls=(f"{_KOOFR}/6dddf083-40c8-470a-9360-a9dab2a94e96/files/get/2021-04-23T18-11-19-project.yaml"
                     "?path=%2F2021-04-23T18-11-19_celebahq_transformer%2Fconfigs%2F2021-04-23T18-11-19-project.yaml&force",),
        checkpoint_urls=(f"{_KOOFR}/6dddf083-40c8-470a-9360-a9dab2a94e96/files/get/last.ckpt"
                         "?path=%2F2021-04-23T18-11-19_celebahq_transformer%2Fcheckpoints%2Flast.ckpt&force",)),
    VQGANSource(
        "ade20k", "ade20k", "Net2NetTransformer first stage, ADE20K scenes",
        config_urls=("https://static.miraheze.org/intercriaturaswiki/b/bf/Ade20k.txt",),
        checkpoint_urls=(f"{_KOOFR}/0f65c2cd-7102-4550-a2bd-07fd383aac9e/files/get/last.ckpt"
                         "?path=%2F2020-11-20T21-45-44_ade20k_transformer%2Fcheckpoints%2Flast.ckpt",)),
)
