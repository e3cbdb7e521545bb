"""Augmented views of the train images (``heads.pairs: views``; docs/theory.md, "Augmentation views").

A recipe (``config.ViewRecipe``) turns a decoded image uint8 [3, H, W] into one view at the backbone's resize size:
random resized crop, horizontal flip, colour jitter, grayscale, Gaussian blur, in SimCLR's order, with torchvision's
functional ops. The parameters of view v of dataset image i are drawn from numpy's generator seeded with
(view seed, i, v) (``view_parameters``), not from a global random state: a view does not depend on which worker
decodes it, on the batch it falls in, or on whether the extraction was resumed. The backbone's own eval geometry
(resize, centre crop) and normalisation then run unchanged on the view.

``ViewSplit`` presents the V views of every image of a train ``ImageSplit`` as N·V items (item p: image p // V,
view p % V) to the extraction (``features.extract.extract_split``): the cache entry holds N·V rows in that order,
and ``ViewTable`` reads it back as [N, V, d].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from ssl_pipeline.config import ViewRecipe
from ssl_pipeline.data.images import ImageSplit


@dataclass(frozen=True)
class ViewParameters:
    """The random choices of one view: crop box (top, left, height, width) in source pixels, flip, the colour
    jitter (None: not applied; else the order of brightness/contrast/saturation/hue as indices 0–3 and their
    factors), grayscale, blur σ (None: no blur)."""

    top: int
    left: int
    height: int
    width: int
    flip: bool
    jitter: Optional[tuple[tuple[int, ...], tuple[float, float, float, float]]]
    grayscale: bool
    blur_sigma: Optional[float]


def view_generator(seed: int, image: int, view: int) -> np.random.Generator:
    """The generator of view ``view`` of dataset image ``image`` (its index in the source order)."""
    return np.random.default_rng([seed, image, view])


def crop_box(height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
             rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random resized crop: torchvision's ``RandomResizedCrop.get_params`` rule (up to 10
    draws of an area share in ``scale`` and a log-uniform aspect ratio in ``ratio`` that fit the image, else the
    centre crop at the nearest allowed ratio), drawn from ``rng``."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def view_parameters(recipe: ViewRecipe, height: int, width: int, rng: np.random.Generator) -> ViewParameters:
    """Every random choice of one view of an image of ``height`` × ``width``, in a fixed order of draws."""
    top, left, h, w = crop_box(height, width, tuple(recipe.crop_scale), tuple(recipe.crop_ratio), rng)
    flip = bool(rng.random() < recipe.flip)
    jitter = None
    if rng.random() < recipe.jitter_probability and recipe.jitter_strength > 0:
        s = recipe.jitter_strength
        low, high = max(0.0, 1 - 0.8 * s), 1 + 0.8 * s
        factors = (float(rng.uniform(low, high)), float(rng.uniform(low, high)), float(rng.uniform(low, high)),
                   float(rng.uniform(-min(0.2 * s, 0.5), min(0.2 * s, 0.5))))
        jitter = (tuple(int(i) for i in rng.permutation(4)), factors)
    grayscale = bool(rng.random() < recipe.grayscale)
    blur = float(rng.uniform(*recipe.blur_sigma)) if rng.random() < recipe.blur else None
    return ViewParameters(top, left, h, w, flip, jitter, grayscale, blur)


def apply_view(image: torch.Tensor, p: ViewParameters, size: int, interpolation: str = "bilinear") -> torch.Tensor:
    """The view of ``image`` uint8 [3, H, W] under ``p``, uint8 [3, size, size]."""
    import torchvision.transforms.v2.functional as F

    mode = getattr(F.InterpolationMode, interpolation.upper())
    view = F.resized_crop(image, p.top, p.left, p.height, p.width, [size, size], interpolation=mode, antialias=True)
    if p.flip:
        view = F.horizontal_flip(view)
    if p.jitter is not None:
        order, factors = p.jitter
        adjust = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, F.adjust_hue)
        for i in order:
            view = adjust[i](view, factors[i])
    if p.grayscale:
        view = F.rgb_to_grayscale(view, num_output_channels=3)
    if p.blur_sigma is not None:
        kernel = max(3, int(0.1 * size) // 2 * 2 + 1)  # ≈ 10 % of the side, odd (SimCLR)
        view = F.gaussian_blur(view, [kernel, kernel], [p.blur_sigma, p.blur_sigma])
    return view


class ViewSplit(torch.utils.data.Dataset):
    """The V augmented views of every item of a train ``ImageSplit`` as N·V items, item p = (image p // V, view
    p % V) → (view uint8 after ``transform``, label, p). Quacks like an ``ImageSplit`` for the extraction: name,
    split, labels, indices (the source position of each item's image), class names, identity (the split's, the
    recipe, V and the seed), ``describe``. An unreadable image gives the split's sentinel (label −1) for each of
    its views."""

    def __init__(self, base: ImageSplit, recipe: ViewRecipe, num_views: int, seed: int, size: int,
                 interpolation: str = "bilinear") -> None:
        from dataclasses import asdict

        self.base, self.recipe, self.num_views, self.seed = base, recipe, num_views, seed
        self.size, self.interpolation = size, interpolation
        self.name, self.split, self.class_names = base.name, f"{base.split} views-{recipe.name}", base.class_names
        self.labels = np.repeat(base.labels, num_views)
        self.indices = np.repeat(base.indices, num_views)
        self.identity = {**base.identity, "views": {"recipe": asdict(recipe), "num_views": num_views, "seed": seed,
                                                    "size": size, "interpolation": interpolation}}
        self.transform = None
        self.pixels = None  # per-image work: the extraction's DataLoader path
        self.paths = base.paths

    def __len__(self) -> int:
        return len(self.base) * self.num_views

    def __getitem__(self, p: int) -> tuple[torch.Tensor, int, int]:
        item, view = divmod(int(p), self.num_views)
        transform, self.base.transform = self.base.transform, None
        try:
            image, label, _ = self.base[item]
        finally:
            self.base.transform = transform
        if label >= 0:
            rng = view_generator(self.seed, int(self.base.indices[item]), view)
            parameters = view_parameters(self.recipe, image.shape[1], image.shape[2], rng)
            image = apply_view(image, parameters, self.size, self.interpolation)
        if self.transform is not None:
            image = self.transform(image)
        return image, label, int(p)

    def describe(self, p: int) -> str:
        item, view = divmod(int(p), self.num_views)
        return f"{self.base.describe(item)} (view {view})"


@dataclass
class ViewTable:
    """The view features of one recipe: ``table`` [N·V, d] (a read-only memory map of the cache entry, rows in
    (image, view) order of the whole train split before the val carve), V, and the rows of the carved train and
    val splits' images (positions in the whole train split, the same as ``x_train``'s and ``x_val``'s)."""

    recipe: ViewRecipe
    table: np.ndarray
    num_views: int
    train_images: np.ndarray
    val_images: np.ndarray

    def views(self, images: np.ndarray) -> np.ndarray:
        """[n, V, d] float32 of the listed images (a copy)."""
        d = self.table.shape[1]
        return np.asarray(self.table.reshape(-1, self.num_views, d)[np.asarray(images)], dtype=np.float32)
