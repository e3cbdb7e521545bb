"""Frozen pretrained image encoders behind one small interface.

``describe_backbone(cfg)`` answers cheaply — no weights read, no model built — with the backbone's stable
identity and its preprocessing, which together key the feature cache; it also refuses unknown names and tags
and unreachable weights. ``load_backbone(cfg)`` builds the frozen model in ``eval()`` on its device.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import Callable, Literal, Optional

from ssl_pipeline.config import BackboneConfig
from ssl_pipeline.errors import ConfigError


@dataclass(frozen=True)
class Preprocess:
    """Eval-time preprocessing of a uint8 image [3, H, W]: resize (shortest side to ``resize``, or both sides for
    ``squash``), centre crop to ``crop``, scale to [0, 1], normalise by ``mean``/``std``. Frozen and JSON-able so it
    is part of the cache key (a changed transform never reuses a stale cache)."""

    resize: int
    crop: int
    interpolation: Literal["bicubic", "bilinear", "nearest"]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize_mode: Literal["shortest", "squash"] = "shortest"

    def at_size(self, size: Optional[int]) -> "Preprocess":
        """The same preprocessing at another resolution (resize straight to ``size``, no crop margin)."""
        if size is None:
            return self
        return Preprocess(size, size, self.interpolation, self.mean, self.std, "squash")

    def as_dict(self) -> dict:
        return asdict(self)

    def geometry(self) -> Callable:
        """uint8 [3, H, W] → uint8 [3, crop, crop] (runs per image, in DataLoader workers)."""
        import torchvision.transforms.v2 as T

        mode = getattr(T.InterpolationMode, self.interpolation.upper())
        size = [self.resize, self.resize] if self.resize_mode == "squash" else self.resize
        return T.Compose([T.Resize(size, interpolation=mode, antialias=True), T.CenterCrop(self.crop)])

    def normalize(self, images):
        """uint8 [B, 3, h, w] → float32 [B, 3, h, w] normalised (runs on the model's device, one batch at a time)."""
        import torch

        mean = torch.tensor(self.mean, device=images.device).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(self.std, device=images.device).view(1, 3, 1, 1) * 255.0
        return (images.float() - mean) / std


@dataclass(frozen=True)
class BackboneInfo:
    """What keys a cache entry: the identity string (kind, name, weights tag or checkpoint checksum) and the
    preprocessing. ``has_text`` says whether a text tower embeds class-name prompts (open_clip); ``device`` is the
    configured ``data.backbone.device`` (not part of the identity: it places the ranks of an extraction)."""

    identity: str
    preprocess: Preprocess
    has_text: bool = False
    device: str = "auto"


@dataclass
class Backbone:
    """A frozen encoder: ``encode_images`` float [B, 3, h, w] → [B, dim]; ``encode_text`` prompts → [n, dim]."""

    info: BackboneInfo
    dim: int
    model: object
    device: object
    encode_images: Callable
    encode_text: Optional[Callable] = None


def _kind_module(kind: str):
    """The module implementing ``describe(cfg)`` and ``build(cfg)`` for a ``data.backbone.kind``."""
    # Imported here, not above: each of them imports BackboneInfo and Preprocess from this package.
    from ssl_pipeline.backbones import open_clip_models, packaged, timm_models, torchvision_models

    return {"packaged": packaged, "torchvision": torchvision_models, "open_clip": open_clip_models,
            "timm": timm_models}[kind]


def describe_backbone(cfg: BackboneConfig) -> BackboneInfo:
    """Identity and preprocessing of ``cfg`` without building it; unknown names/tags and unreachable weights are
    ConfigErrors here, before any data is read."""
    info = _kind_module(cfg.kind).describe(cfg)
    return BackboneInfo(info.identity, info.preprocess.at_size(cfg.image_size), info.has_text, cfg.device)


def resolve_device(name: str):
    """``auto`` → CUDA, then Apple MPS, then CPU; an explicit device must exist."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"data.backbone.device={name} but no CUDA device is visible; use auto or cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("data.backbone.device=mps but Apple MPS is not available; use auto or cpu")
    return torch.device(name)


def load_backbone(cfg: BackboneConfig, info: Optional[BackboneInfo] = None) -> Backbone:
    """Build the frozen model (weights loaded, ``eval()``, no gradients) on its device, with AMP and
    channels_last as configured, and measure its feature dimension with one dummy batch."""
    import torch

    info = info or describe_backbone(cfg)
    device = resolve_device(cfg.device)
    model, encode, encode_text = _kind_module(cfg.kind).build(cfg)
    model.eval().requires_grad_(False).to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)

    autocast = contextlib.nullcontext
    if cfg.amp and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        autocast = lambda: torch.autocast("cuda", dtype=dtype)  # noqa: E731

    def encode_images(images):
        if cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast():
            return encode(images).float()

    def encode_prompts(prompts: list[str]):
        with torch.inference_mode(), autocast():
            return encode_text(prompts, device).float()

    size = info.preprocess.crop
    try:
        dim = int(encode_images(torch.zeros(2, 3, size, size, device=device)).shape[1])
    except RuntimeError as error:
        raise ConfigError(f"backbone {info.identity} cannot encode {size}×{size} images ({str(error).splitlines()[0]}); "
                          "change data.backbone.image_size") from None
    return Backbone(info, dim, model, device, encode_images, encode_prompts if encode_text else None)
