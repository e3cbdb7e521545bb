"""timm models (DINOv2, ConvNeXt, …): ``name`` is a timm model name, optionally with its pretrained tag
(``vit_small_patch14_dinov2.lvd142m``); ``pretrained`` anything but null loads the hub weights. Features are
timm's pooled pre-logits (``num_classes=0``)."""

from __future__ import annotations

import difflib
import math

from ssl_pipeline.backbones import BackboneInfo, Preprocess
from ssl_pipeline.backbones.weights import checkpoint_identity, hf_file_cached, require_download
from ssl_pipeline.config import BackboneConfig
from ssl_pipeline.errors import ConfigError


def _pretrained_cfg(cfg: BackboneConfig):
    import timm

    architecture = cfg.name.partition(".")[0]
    if architecture not in timm.list_models():
        close = difflib.get_close_matches(architecture, timm.list_models(), n=10, cutoff=0.6)
        raise ConfigError(f"unknown timm model {cfg.name!r}; similar: {', '.join(close) or 'none'} (timm.list_models() lists all)")
    pretrained_cfg = timm.models.get_pretrained_cfg(cfg.name)
    if pretrained_cfg is None:
        tags = timm.list_pretrained(f"{architecture}.*")
        raise ConfigError(f"unknown pretrained tag in {cfg.name!r}; valid: {', '.join(tags) or 'none'}")
    return pretrained_cfg


def describe(cfg: BackboneConfig):
    pcfg = _pretrained_cfg(cfg)
    if cfg.checkpoint:
        tag = checkpoint_identity(cfg.checkpoint)
    elif cfg.pretrained is not None:
        tag = f"{pcfg.architecture}.{pcfg.tag}"
        if pcfg.hf_hub_id and not any(hf_file_cached(pcfg.hf_hub_id, f) for f in ("model.safetensors", "pytorch_model.bin")):
            require_download("huggingface.co", f"timm weights {tag}")
    else:
        tag = f"random-init-seed{cfg.seed}"
    crop = int(pcfg.input_size[-1])
    resize = int(math.floor(crop / pcfg.crop_pct)) if pcfg.crop_mode == "center" else crop
    preprocess = Preprocess(resize, crop, pcfg.interpolation if pcfg.interpolation in ("bicubic", "bilinear") else "bicubic",
                            tuple(pcfg.mean), tuple(pcfg.std), "shortest" if pcfg.crop_mode == "center" else "squash")
    return BackboneInfo(identity=f"timm:{cfg.name}:{tag}", preprocess=preprocess)


def build(cfg: BackboneConfig):
    import timm
    import torch

    torch.manual_seed(cfg.seed)
    kwargs = {"pretrained_cfg_overlay": {"file": cfg.checkpoint}} if cfg.checkpoint else {}
    try:
        model = timm.create_model(cfg.name, pretrained=bool(cfg.pretrained or cfg.checkpoint), num_classes=0, **kwargs)
    except (RuntimeError, OSError) as error:
        raise ConfigError(f"cannot load timm {cfg.name} ({str(error).splitlines()[0][:200]}); "
                          "give a local weights file with data.backbone.checkpoint=PATH") from None
    return model, model, None
