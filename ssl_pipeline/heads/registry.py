"""Which LightningModule implements each unimodal head method: the registry above the implementations
(``heads.modules``: InfoNCE, SimSiam; ``heads.spectral``: spectral contrastive, VICReg, BarlowTwins), as
solo-learn's ``solo/methods/__init__.py``. A new method is a class in its own module and a line here. CLIP heads
have two towers and are built from paired features (``heads.clip.clip_head_module``)."""

from __future__ import annotations

from ssl_pipeline.config import SPECTRAL_METHODS
from ssl_pipeline.heads.modules import InfoNCEHead, LinearHead, SimSiamHead, SupervisedHead
from ssl_pipeline.heads.spectral import BarlowTwinsHead, SpectralContrastiveHead, VICRegHead

HEAD_CLASSES: dict[str, type[LinearHead]] = {
    "infonce": InfoNCEHead,
    "simsiam": SimSiamHead,
    "spectral_contrastive": SpectralContrastiveHead,
    "vicreg": VICRegHead,
    "barlowtwins": BarlowTwinsHead,
    "supervised": SupervisedHead,
}
SPECTRAL_HEAD_CLASSES: dict[str, type[LinearHead]] = {method: HEAD_CLASSES[method] for method in SPECTRAL_METHODS}


def head_class(method: str) -> type[LinearHead]:
    """The LightningModule of a unimodal head method."""
    return HEAD_CLASSES[method]
