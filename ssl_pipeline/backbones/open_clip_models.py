"""open_clip CLIP models: any ``model`` + ``pretrained`` tag from ``open_clip.list_pretrained()``, a local
checkpoint, or a randomly initialised model (also one registered at run time with ``open_clip.add_model_config``).
Image features are the image tower's CLIP embedding (``encode_image``, before L2 normalisation); the text tower
embeds class-name prompts into the same space (zero-shot classifier, later multimodal heads)."""

from __future__ import annotations

from pathlib import Path

from ssl_pipeline.backbones import BackboneInfo, Preprocess
from ssl_pipeline.backbones.weights import checkpoint_identity, hf_file_cached, require_download
from ssl_pipeline.config import BackboneConfig
from ssl_pipeline.digests import json_digest
from ssl_pipeline.errors import ConfigError

HUB_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def _pretrained_cfg(cfg: BackboneConfig) -> dict:
    import open_clip

    models = open_clip.list_models()
    if cfg.name not in models:
        raise ConfigError(f"unknown open_clip model {cfg.name!r}; valid: {', '.join(models)}")
    if cfg.pretrained is None or cfg.checkpoint:
        return {}
    if not open_clip.is_pretrained_cfg(cfg.name, cfg.pretrained):
        tags = open_clip.list_pretrained_tags_by_model(cfg.name)
        raise ConfigError(
            f"unknown pretrained tag {cfg.pretrained!r} for open_clip {cfg.name}; valid: {', '.join(tags) or 'none'} "
            "(open_clip.list_pretrained() lists all), or give data.backbone.checkpoint=PATH"
        )
    return open_clip.get_pretrained_cfg(cfg.name, cfg.pretrained)


def describe(cfg: BackboneConfig):
    import open_clip
    from open_clip.transform import PreprocessCfg

    pretrained = _pretrained_cfg(cfg)
    model_cfg = open_clip.get_model_config(cfg.name)
    if cfg.checkpoint:
        tag = checkpoint_identity(cfg.checkpoint)
    elif pretrained:
        tag = cfg.pretrained
        hub = pretrained.get("hf_hub", "").strip("/")
        if hub and not any(hf_file_cached(hub, name) for name in HUB_WEIGHT_FILES):
            require_download("huggingface.co", f"open_clip weights {cfg.name}:{tag}")
        elif not hub and not (Path("~/.cache/clip").expanduser() / Path(pretrained.get("url", "")).name).is_file():
            require_download(pretrained.get("url", ""), f"open_clip weights {cfg.name}:{tag}")
    else:
        tag = f"random-init-seed{cfg.seed}-config{json_digest(model_cfg, 12)}"
    defaults = PreprocessCfg()
    size = model_cfg["vision_cfg"].get("image_size", 224)
    size = size[0] if isinstance(size, (list, tuple)) else size
    mode = pretrained.get("resize_mode", defaults.resize_mode)
    preprocess = Preprocess(
        int(size), int(size), pretrained.get("interpolation", defaults.interpolation),
        tuple(pretrained.get("mean", defaults.mean)), tuple(pretrained.get("std", defaults.std)),
        "squash" if mode == "squash" else "shortest",
    )
    return BackboneInfo(identity=f"open_clip:{cfg.name}:{tag}", preprocess=preprocess, has_text=True)


def build(cfg: BackboneConfig):
    import open_clip
    import torch

    torch.manual_seed(cfg.seed)
    pretrained = cfg.checkpoint or cfg.pretrained
    try:
        model = open_clip.create_model(cfg.name, pretrained=pretrained, load_weights=pretrained is not None)
    except RuntimeError as error:
        raise ConfigError(
            f"cannot load open_clip {cfg.name}:{pretrained} ({str(error).splitlines()[0][:200]}); "
            "give a local weights file with data.backbone.checkpoint=PATH"
        ) from None
    tokenizer = open_clip.get_tokenizer(cfg.name)

    def encode_text(prompts: list[str], device):
        return model.encode_text(tokenizer(prompts).to(device))

    return model, model.encode_image, encode_text
