"""torchvision classifiers (ResNet-18/50, ViT-B/16, …) with their official weights enums; the classifier layer
is replaced by the identity, so features are the pooled penultimate activations (512/2048/768-d)."""

from __future__ import annotations

from ssl_pipeline.backbones import BackboneInfo, Preprocess
from ssl_pipeline.backbones.weights import checkpoint_identity, require_download, torch_hub_cached
from ssl_pipeline.config import BackboneConfig
from ssl_pipeline.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _weights(cfg: BackboneConfig):
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)
    if cfg.name not in names:
        raise ConfigError(f"unknown torchvision model {cfg.name!r}; valid: {', '.join(sorted(names))}")
    if cfg.pretrained is None:
        return None
    enum = torchvision.models.get_model_weights(cfg.name)
    try:
        return enum[cfg.pretrained] if cfg.pretrained != "DEFAULT" else enum.DEFAULT
    except KeyError:
        valid = ", ".join(["DEFAULT"] + [w.name for w in enum])
        raise ConfigError(f"unknown weights {cfg.pretrained!r} for torchvision {cfg.name}; valid: {valid}") from None


def describe(cfg: BackboneConfig):
    weights = _weights(cfg)
    if cfg.checkpoint:
        tag = checkpoint_identity(cfg.checkpoint)
    elif weights is not None:
        tag = f"{type(weights).__name__}.{weights.name}"
        if not torch_hub_cached(weights.url):
            require_download(weights.url, f"torchvision weights {tag}")
    else:
        tag = f"random-init-seed{cfg.seed}"
    if weights is not None:
        t = weights.transforms()
        preprocess = Preprocess(int(t.resize_size[0]), int(t.crop_size[0]), t.interpolation.value,
                                tuple(t.mean), tuple(t.std))
    else:
        preprocess = Preprocess(256, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD)
    return BackboneInfo(identity=f"torchvision:{cfg.name}:{tag}", preprocess=preprocess)


def build(cfg: BackboneConfig):
    import torch
    import torchvision

    weights = _weights(cfg)
    torch.manual_seed(cfg.seed)
    model = torchvision.models.get_model(cfg.name, weights=None if cfg.checkpoint else weights)
    if cfg.checkpoint:
        model.load_state_dict(torch.load(cfg.checkpoint, map_location="cpu", weights_only=True))
    for attribute in ("fc", "heads", "classifier"):
        if hasattr(model, attribute):
            setattr(model, attribute, torch.nn.Identity())
            break
    return model, model, None
