"""Paired features of two modalities (docs/theory.md, "CLIP-GMM"): the ``clip`` preset's samples with their
ground truth (real sources of paired features: ``features.paired``; the cross-modal δ-partners: ``data.pairs``).

The two modalities are drawn as two **independent** labelled sets: every item of modality m carries its own
shared label k_s and private label k_m. Pairs are not fixed at generation: a CLIP head draws them batch by batch
with its own δ (``data.pairs.CrossModalSampler``), as the unimodal δ-pair sampler does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

import numpy as np

from ssl_pipeline.config import GMMConfig
from ssl_pipeline.data.labelled import LabelledFeatures
from ssl_pipeline.errors import DataError
from ssl_pipeline.theory.clip_gmm import ModalityParameters, clip_modality_parameters

SPLITS = ("train", "val", "test")


@dataclass
class ModalityFeatures:
    """One modality's splits and, for synthetic data, its ground truth.

    x_* [N, d_m] float32; shared_* [N] int64 (k_s, in 0..K_s − 1: the label both modalities carry; for real data
    the class). Synthetic data only (None for real data): private_* [N] int64 (k_m, in 0..K_m − 1) and the ground
    truth (orthonormal columns, in the features' coordinates): ``shared_fisher_basis`` [d, q_s] (the Fisher
    subspace w.r.t. k_s), ``private_fisher_basis`` [d, q_m] (w.r.t. k_m), ``noise_basis`` [d, d_noise] (the noise
    block), ``shared_means_basis`` [d, q_s] and ``private_means_basis`` [d, q_m] (the class-mean subspaces), and
    ``energy_blocks`` (``ModalityParameters.energy_blocks``: shared Fisher, rest of the shared block, private,
    noise; mutually orthogonal, together R^d, for ``scoring.multimodal.block_energies``). ``parameters``: the
    population mixture they were drawn from.

    ``held_out`` is False for a fixed set of items that serves as every split (a text tower's K × T class prompts,
    ``features.paired``: there is no held-out text; the three splits are then the same array objects, not to be
    modified in place). ``name`` says what the modality is (``image``, ``text``, ``pixels``, ``x1``…);
    ``class_names`` are the shared classes' names when known.
    """

    x_train: np.ndarray
    shared_train: np.ndarray
    x_val: np.ndarray
    shared_val: np.ndarray
    x_test: np.ndarray
    shared_test: np.ndarray
    private_train: Optional[np.ndarray] = None
    private_val: Optional[np.ndarray] = None
    private_test: Optional[np.ndarray] = None
    shared_fisher_basis: Optional[np.ndarray] = None
    private_fisher_basis: Optional[np.ndarray] = None
    noise_basis: Optional[np.ndarray] = None
    shared_means_basis: Optional[np.ndarray] = None
    private_means_basis: Optional[np.ndarray] = None
    energy_blocks: Optional[dict[str, np.ndarray]] = None
    parameters: Optional[ModalityParameters] = None
    held_out: bool = True
    name: Optional[str] = None
    class_names: Optional[list[str]] = None

    @property
    def dim(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def has_private(self) -> bool:
        """Whether the items carry a private label k_m (synthetic data)."""
        return self.private_train is not None

    def labelled(self, by: Literal["shared", "private", "combined"], dataset: str, split_seed: int,
                 data_kind: Optional[Literal["synthetic", "real", "surrogate"]] = None) -> LabelledFeatures:
        """This modality as unimodal labelled features, labelled by k_s (``shared``: the Fisher and class-mean
        subspaces are the shared ones, None when unknown: scores then estimate them on train) or by k_m
        (``private``, synthetic data only): what the unimodal heads, baselines and clustering and probe scores
        consume. ``data_kind`` None: ``synthetic`` when the modality carries the population it was drawn from
        (``parameters``), else ``real``."""
        if data_kind is None:
            data_kind = "synthetic" if self.parameters is not None else "real"
        if by != "shared" and not self.has_private:
            raise ValueError(f"modality {self.name or ''} has no private labels (real data carry only the shared one)")
        if by == "combined":  # (k_s, k_m) as one label k_s·K_m + k_m; its Fisher subspace is estimated on train
            k_m = int(max(getattr(self, f"private_{split}").max() for split in SPLITS)) + 1
            labels = {split: getattr(self, f"shared_{split}") * k_m + getattr(self, f"private_{split}")
                      for split in SPLITS}
        else:
            labels = {split: getattr(self, f"{by}_{split}") for split in SPLITS}
        k = int(max(labels[split].max() for split in SPLITS)) + 1
        names = self.class_names if by == "shared" and self.class_names else [f"{by}_{c}" for c in range(k)]
        return LabelledFeatures(
            self.x_train, labels["train"], self.x_val, labels["val"], self.x_test, labels["test"],
            dataset=dataset if by == "shared" and data_kind == "real" else f"{dataset}-{by}", data_kind=data_kind,
            split_seed=split_seed,
            class_names=list(names), fisher_basis=getattr(self, f"{by}_fisher_basis", None),
            means_basis=getattr(self, f"{by}_means_basis", None),
        )


@dataclass
class PairedFeatures:
    """Two modalities (``modality1``, ``modality2``) of labelled items that share the label k_s.

    ``aligned``: item i of modality 1 and item i of modality 2 are two views of one object in every split (an npz
    source's rows; a digits image's backbone features and its pixels), so instance retrieval is defined; False for
    independent draws (the ``clip`` preset) and for the text prompt set. Training never uses the alignment: a
    head draws its partners by k_s (``data.pairs.CrossModalSampler``)."""

    modality1: ModalityFeatures
    modality2: ModalityFeatures
    dataset: str
    data_kind: Literal["synthetic", "real", "surrogate"]
    split_seed: int
    features_key: Optional[str] = None
    aligned: bool = False
    backbone: Optional[str] = None
    """The backbone that encoded modality 1 (images), for the records."""
    text_features: Optional[np.ndarray] = None
    """The backbone's class-prompt embeddings [T·K, D], when it has a text tower: the backbone's own zero-shot
    baseline is scored beside the CLIP heads."""
    views: dict[tuple[int, str], LabelledFeatures] = field(default_factory=dict, init=False, repr=False, compare=False)
    """The labelled views made by ``view``, kept so that each view's statistics are computed once per run."""

    def view(self, m: int, target: str = "shared") -> LabelledFeatures:
        """Modality ``m`` labelled by ``target`` (the shared label k_s, or the combined (k_s, k_m) on synthetic
        pairs), made once and kept (``views``), so its span and statistics (kept on the view) are computed once per
        run. The span (and so a tower's basis) does not depend on the labels. Modality 1's view carries the pairs
        (``LabelledFeatures.paired``), the backbone and its text features."""
        if (m, target) not in self.views:
            view = self.modality(m).labelled(target, self.dataset, self.split_seed)
            view.features_key = self.features_key
            view.paired = self
            if m == 1:
                view.backbone, view.text_features = self.backbone, self.text_features
            self.views[m, target] = view
        return self.views[m, target]

    def modality(self, m: int) -> ModalityFeatures:
        """Modality 1 or 2."""
        if m not in (1, 2):
            raise ValueError(f"modality must be 1 or 2, got {m}")
        return self.modality1 if m == 1 else self.modality2

    def validate(self) -> None:
        """Raise DataError with one clear line if the pairs cannot be used: per modality, shapes agree, labels are
        non-negative integers, features are finite, and every shared class of either modality's train split has at
        least 2 training samples in both (the partner of an item is drawn among the other modality's items of its
        k_s; unimodal δ-pairs need a second member of the class) — at least 1 in a modality that is not held out
        (one prompt per class is enough to be a partner). Aligned modalities have equal labels item by item."""
        for m in (1, 2):
            modality = self.modality(m)
            for split in SPLITS:
                x = getattr(modality, f"x_{split}")
                if x.ndim != 2 or x.shape[1] != modality.dim:
                    raise DataError(f"modality {m} {split} split: features must be [N, {modality.dim}], got {x.shape}")
                for kind in ("shared", "private"):
                    y = getattr(modality, f"{kind}_{split}")
                    if y is None and kind == "private":
                        continue
                    if y is None or y.shape != (len(x),):
                        shape = None if y is None else y.shape
                        raise DataError(f"modality {m} {split} split: {kind} labels must be [{len(x)}], got {shape}")
                    if len(y) and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0):
                        raise DataError(f"modality {m} {split} split: {kind} labels must be non-negative integers")
                if not np.all(np.isfinite(x)):
                    raise DataError(f"modality {m} {split} split has NaN or inf features")
        if self.aligned:
            for split in SPLITS:
                if not np.array_equal(getattr(self.modality1, f"shared_{split}"),
                                      getattr(self.modality2, f"shared_{split}")):
                    raise DataError(f"{split} split: the two modalities are aligned item by item but their shared "
                                    "labels differ")
        classes = np.union1d(self.modality1.shared_train, self.modality2.shared_train)
        for m in (1, 2):
            modality = self.modality(m)
            need = 2 if modality.held_out else 1
            counts = np.bincount(modality.shared_train, minlength=int(classes.max()) + 1)[classes]
            if counts.min() < need:
                c = int(classes[counts.argmin()])
                why = ("cross-modal partners and same-class positives need at least 2 in each modality" if need == 2
                       else "every class needs at least one item to be a partner")
                raise DataError(f"shared class {c} has {int(counts.min())} training sample(s) in modality {m}; {why}")


def clip_parameters(cfg: GMMConfig) -> tuple[ModalityParameters, ModalityParameters]:
    """The two modalities of a ``clip`` config (``clip_modality_parameters``), each seeded by (``cfg.seed``, m)."""
    clip = cfg.clip
    return tuple(
        clip_modality_parameters(clip.k_s, getattr(clip, f"k_{m}"), getattr(clip, f"d_{m}"), cfg.separation,
                                 clip.private_separation, cfg.signal_std, cfg.nuisance_std,
                                 np.random.default_rng([cfg.seed, 0, m]), rotate=cfg.rotate)
        for m in (1, 2)
    )


def modality_features(params: ModalityParameters, n: dict[str, int], rng: np.random.Generator) -> ModalityFeatures:
    """Independent train/val/test draws (sizes ``n[split]``, in that order from ``rng``) of one modality, with its
    population ground truth attached."""
    drawn = {split: params.sample(n[split], rng) for split in SPLITS}
    blocks = params.energy_blocks()
    arrays = {f"{kind}_{split}": drawn[split][i] for split in SPLITS for i, kind in enumerate(("x", "shared", "private"))}
    return ModalityFeatures(
        **arrays,
        shared_fisher_basis=params.shared_fisher_basis(), private_fisher_basis=params.private_fisher_basis(),
        noise_basis=params.noise_block, shared_means_basis=params.shared_means_basis(),
        private_means_basis=params.private_means_basis(), energy_blocks=blocks, parameters=params,
    )


def make_clip_gmm(cfg: GMMConfig,
                  params: Optional[tuple[ModalityParameters, ModalityParameters]] = None) -> PairedFeatures:
    """The ``clip`` preset's data (docs/theory.md, "CLIP-GMM"): per modality m, ``n_train``, ``n_val`` and
    ``n_test`` independent draws of (x, k_s, k_m) from ``clip_parameters(cfg)`` (or ``params``, if already built
    from ``cfg``), seeded by (``cfg.seed``, 1, m), with the ground truth attached.

    Construction of modality m (``clip_modality_parameters``): coordinates [shared 2q_s | private q_m | noise
    d_m − 2q_s − q_m], then one random rotation of R^{d_m}. The shared block is the signal block of
    ``fisher_vs_means`` at K_s classes (shared Fisher subspace at cos² 0.15 from the shared means), the private
    block a regular simplex of K_m means with isotropic variance, the noise block carries variance nuisance_std²,
    the largest, so the top-(q_s + q_m) PCA subspace lies in it; k_s and k_m are independent and uniform.
    """
    if cfg.preset != "clip":
        raise ValueError(f"make_clip_gmm needs the clip preset, got {cfg.preset!r}")
    params = clip_parameters(cfg) if params is None else params
    n = {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test}
    modalities = [modality_features(params[m - 1], n, np.random.default_rng([cfg.seed, 1, m])) for m in (1, 2)]
    for m, modality in enumerate(modalities, start=1):
        modality.name = f"modality {m}"
    return PairedFeatures(*modalities, dataset="gmm-clip", data_kind="synthetic", split_seed=cfg.seed)
