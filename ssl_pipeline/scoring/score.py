"""Score one projection: clustering of the test split, linear probe, subspace recovery (features read in chunks)."""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import numpy as np

from ssl_pipeline.config import ScoreConfig
from ssl_pipeline.data.labelled import LabelledFeatures
from ssl_pipeline.scoring.kmeans import faiss_kmeans
from ssl_pipeline.scoring.metrics import clustering_scores
from ssl_pipeline.scoring.probe import linear_probe, probe_rows
from ssl_pipeline.scoring.projections import Projection
from ssl_pipeline.theory.subspaces import (
    class_mean_subspace_from_statistics,
    effective_rank,
    feature_span,
    fisher_cos2,
    fisher_energy,
    fisher_estimate_from_statistics,
    significant_directions,
    subspace_cos2,
    total_covariance,
)


class ReferenceSubspaces(NamedTuple):
    """The subspaces a head's column space is compared with (docs/theory.md, "Subspace recovery"), each an
    orthonormal basis in feature coordinates: the Fisher subspace (true, or estimated on train), the class-mean
    subspace span{μ_k − μ̄} (true, or estimated on train), the top-r PCA subspace of train, its minor subspace (the
    eigenvectors of Σ_T of train inside the floored span by increasing variance: the first r are the bottom-r
    subspace a head biased toward low variance finds); the rank of Σ_T
    kept by the floor (recorded as ``feature_rank``); the generalised eigenvectors of (Σ_B, S_W) estimated on
    train by decreasing eigenvalue (``fisher_ordered`` [d, q]: its first r columns are the top-r Fisher subspace,
    ``FisherEstimate.ordered``); and the number of classes K present in train."""

    fisher: np.ndarray
    means: np.ndarray
    pca: np.ndarray
    feature_rank: int
    fisher_ordered: Optional[np.ndarray] = None
    classes: int = 0
    minor: Optional[np.ndarray] = None

    def at(self, r: int) -> "ReferenceSubspaces":
        """These references with the top-r PCA and bottom-r minor subspaces (they are built for the largest r of
        the ``heads.r`` axis)."""
        minor = None if self.minor is None else self.minor[:, :r]
        return self._replace(pca=self.pca[:, :r], minor=minor)

    @property
    def fisher_rank(self) -> int:
        """q = min(K − 1, ``feature_rank``): the dimension of the Fisher subspace inside the features' span."""
        return min(self.classes - 1, self.feature_rank)

    @property
    def fisher_fills_span(self) -> bool:
        """Whether the Fisher subspace is the whole span the features occupy: K − 1 ≥ the rank kept by the floor
        (``FisherEstimate.fills_span``; e.g. ImageNet's 1000 classes on 512-d features). ``fisher_cos2`` and
        ``means_cos2`` are then 1 for every head inside that span and are reported as null."""
        return self.classes - 1 >= self.feature_rank

    def fisher_top(self, r: int) -> Optional[np.ndarray]:
        """The top-r Fisher subspace [d, r], or None when r is not below q = ``fisher_rank`` (the top r would be
        all of it: ``fisher_cos2`` itself)."""
        if self.fisher_ordered is None or r >= self.fisher_rank:
            return None
        return self.fisher_ordered[:, :r]


def reference_subspaces(features: LabelledFeatures, r: int, lda_shrinkage: Optional[float]) -> ReferenceSubspaces:
    """The references of ``features``: true ones where the data carry them (synthetic), else estimated on train
    (``fisher_estimate_from_statistics`` inside the span above the floor; the class means' span), all from the
    training split's class statistics (``LabelledFeatures.statistics``: one chunked pass). The ordered Fisher
    directions (``fisher_top_cos2``) are always the train estimate's."""
    stats = features.statistics("train")
    span = feature_span(total_covariance(stats))
    if features.fisher_basis is None:
        estimate = fisher_estimate_from_statistics(stats, lda_shrinkage)
        fisher, ordered = estimate.basis, estimate.ordered
    else:
        fisher = features.fisher_basis
        try:
            ordered = fisher_estimate_from_statistics(stats, lda_shrinkage).ordered
        except np.linalg.LinAlgError:
            ordered = None
    means = features.means_basis if features.means_basis is not None else class_mean_subspace_from_statistics(stats)
    classes = int(np.sum(stats.counts > 0))
    minor = span.basis[:, ::-1][:, :r]
    return ReferenceSubspaces(fisher, means, span.basis[:, :r], span.rank, ordered, classes, minor)


def fisher_note(references: ReferenceSubspaces) -> Optional[str]:
    """The line that says why ``fisher_cos2``, ``fisher_energy`` and ``means_cos2`` are null
    (``fisher_fills_span``), or None."""
    if not references.fisher_fills_span:
        return None
    return (f"fisher_cos2, fisher_energy and means_cos2 are null: the Fisher subspace (K − 1 = {references.classes - 1} "
            f"directions) fills the {references.feature_rank}-dimensional span the features occupy, "
            "so every head inside it would score 1 (and have all its weight in it); fisher_top_cos2 compares each head with the top-r generalised "
            "eigenvectors of (Σ_B, Σ_W) instead")


def l2_normalize(z: np.ndarray) -> np.ndarray:
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


Step = Callable[[str, float], None]
"""``step(part, share)``: a part of one scored item finished, worth ``share`` of the item (progress lines)."""


def _no_step(part: str, share: float) -> None:
    pass


class ProjectionScorer:
    """Scores of one projection (fitted on train) on test; the parts that do not depend on the seed (projections,
    probe, subspace recovery, effective rank) are computed once, k-means once per seed.

    k-means (k = number of classes) clusters the test projection, L2-normalised for cosine heads; the probe is
    trained on train (a per-class subsample when N·K is large: ``probe.probe_rows``), its L2 strength chosen on
    val; ``effective_rank`` is of the centred test projection. Every split is projected chunk by chunk
    (``Projection.apply``): only the projections [n, r] are held, never the features. The projection's subspace
    is compared with every reference (``fisher_cos2``'s formula for each; ``fisher_cos2``, ``fisher_energy`` and
    ``means_cos2`` null when the Fisher subspace fills the features' span, ``ReferenceSubspaces.fisher_fills_span``), with the top-r
    Fisher subspace (``fisher_top_cos2``, r the projection's nominal r, whenever r < q; reported, not claimed:
    the theory does not say which r directions of S_F a head picks), and with ``optimum`` [d, r], the closed
    form of its own loss, where one exists (``optimum_cos2``). ``step`` reports the parts as they finish.
    """

    def __init__(
        self, projection: Projection, features: LabelledFeatures, references: Optional[ReferenceSubspaces],
        cfg: ScoreConfig, optimum: Optional[np.ndarray] = None, step: Step = _no_step,
    ) -> None:
        num_classes = features.num_classes
        train_rows = probe_rows(features.y_train, num_classes)
        y_train = features.y_train if train_rows is None else features.y_train[train_rows]
        z = {"train": projection.apply(features.x_train, train_rows), "val": projection.apply(features.x_val),
             "test": projection.apply(features.x_test)}
        rank = effective_rank(z["test"])
        if projection.normalized:
            z = {split: l2_normalize(v) for split, v in z.items()}
        step("projected", 0.25)  # binary fractions: the parts of an item add up to exactly one
        self.z_test = z["test"]
        self.labels = features.y_test
        self.num_classes = num_classes
        self.kmeans = cfg.kmeans
        probe = linear_probe(
            z["train"], y_train, z["val"], features.y_val, z["test"], features.y_test, num_classes, cfg.probe,
        )
        step("probe", 0.5)
        subspace = projection.subspace
        recovery = references is not None and subspace is not None
        meaningful = recovery and not references.fisher_fills_span
        top = references.fisher_top(projection.r) if recovery else None
        kept = significant_directions(subspace) if subspace is not None else None  # one SVD for every reference

        def cos2(reference: np.ndarray) -> float:
            """``fisher_cos2(subspace, reference)``."""
            return subspace_cos2(kept, subspace.shape[1], reference)

        self.seed_free: dict[str, Optional[float]] = {
            "probe_acc": probe.test_accuracy,
            "fisher_cos2": cos2(references.fisher) if meaningful else None,
            "fisher_top_cos2": cos2(top) if top is not None else None,
            "fisher_rank": references.fisher_rank if references is not None else None,
            "fisher_energy": fisher_energy(subspace, references.fisher) if meaningful else None,
            "means_cos2": cos2(references.means) if meaningful else None,
            "pca_cos2": cos2(references.pca) if recovery else None,
            "minor_cos2": cos2(references.minor) if recovery and references.minor is not None else None,
            "optimum_cos2": cos2(optimum) if subspace is not None and optimum is not None else None,
            "effective_rank": rank,
            "feature_rank": references.feature_rank if references is not None else None,
        }

    def scores(self, seed: int) -> dict[str, Optional[float]]:
        """The metric fields of a results record, with k-means seeded by ``seed``."""
        clusters = faiss_kmeans(self.z_test, self.num_classes, self.kmeans, seed).assignments
        return {**clustering_scores(self.labels, clusters), **self.seed_free}


def initialisation_scores(subspace: np.ndarray, references: ReferenceSubspaces) -> dict[str, Optional[float]]:
    """``init_fisher_cos2`` and ``init_minor_cos2``: ``fisher_cos2``'s formula for a head's untrained initialisation
    ``subspace`` [d, r] against the Fisher subspace (null where it fills the span) and the minor subspace."""
    return {
        "init_fisher_cos2": None if references.fisher_fills_span else fisher_cos2(subspace, references.fisher),
        "init_minor_cos2": None if references.minor is None else fisher_cos2(subspace, references.minor),
    }


def score_projection(
    projection: Projection, features: LabelledFeatures, references: Optional[ReferenceSubspaces], cfg: ScoreConfig,
    seed: int, optimum: Optional[np.ndarray] = None, step: Step = _no_step,
) -> dict[str, Optional[float]]:
    """The metric fields of a results record for ``projection`` with one seed (see ``ProjectionScorer``)."""
    return ProjectionScorer(projection, features, references, cfg, optimum, step).scores(seed)
