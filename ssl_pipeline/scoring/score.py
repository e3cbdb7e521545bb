"""Score one projection: clustering of the test split, linear probe, subspace recovery."""

from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

from ssl_pipeline.config import ScoreConfig
from ssl_pipeline.data.labelled import LabelledFeatures
from ssl_pipeline.scoring.kmeans import faiss_kmeans
from ssl_pipeline.scoring.metrics import clustering_scores
from ssl_pipeline.scoring.probe import linear_probe
from ssl_pipeline.scoring.projections import Projection
from ssl_pipeline.theory.subspaces import (
    class_mean_subspace,
    class_statistics,
    effective_rank,
    feature_span,
    fisher_cos2,
    fisher_energy,
    fisher_estimate,
    total_covariance,
)


class ReferenceSubspaces(NamedTuple):
    """The subspaces a head's column space is compared with (docs/theory.md, "Subspace recovery"), each an
    orthonormal basis in feature coordinates: the Fisher subspace (true, or estimated on train), the class-mean
    subspace span{μ_k − μ̄} (true, or estimated on train), the top-r PCA subspace of train; and the rank of Σ_T
    kept by the floor (recorded as ``feature_rank``)."""

    fisher: np.ndarray
    means: np.ndarray
    pca: np.ndarray
    feature_rank: int


def reference_subspaces(features: LabelledFeatures, r: int, lda_shrinkage: Optional[float]) -> ReferenceSubspaces:
    """The references of ``features``: true ones where the data carry them (synthetic), else estimated on train
    (``fisher_estimate`` inside the span above the floor; the class means' span)."""
    x, y, k = features.x_train, features.y_train, features.num_classes
    total = total_covariance(class_statistics(x, y, k))
    span = feature_span(total)
    fisher = features.fisher_basis
    if fisher is None:
        fisher = fisher_estimate(x, y, k, lda_shrinkage).basis
    means = features.means_basis if features.means_basis is not None else class_mean_subspace(x, y, k)
    return ReferenceSubspaces(fisher, means, span.basis[:, :r], span.rank)


def l2_normalize(z: np.ndarray) -> np.ndarray:
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


class ProjectionScorer:
    """Scores of one projection (fitted on train) on test; the parts that do not depend on the seed (projections,
    probe, subspace recovery, effective rank) are computed once, k-means once per seed.

    k-means (k = number of classes) clusters the test projection, L2-normalised for cosine heads; the probe is
    trained on train, its L2 strength chosen on val; ``effective_rank`` is of the centred test projection. The
    projection's subspace is compared with every reference (``fisher_cos2``'s formula for each), and with
    ``optimum`` [d, r], the closed form of its own loss, where one exists (``optimum_cos2``).
    """

    def __init__(
        self, projection: Projection, features: LabelledFeatures, references: Optional[ReferenceSubspaces],
        cfg: ScoreConfig, optimum: Optional[np.ndarray] = None,
    ) -> None:
        z = {split: projection.transform(getattr(features, f"x_{split}")) for split in ("train", "val", "test")}
        rank = effective_rank(z["test"])
        if projection.normalized:
            z = {split: l2_normalize(v) for split, v in z.items()}
        self.z_test = z["test"]
        self.labels = features.y_test
        self.num_classes = features.num_classes
        self.kmeans = cfg.kmeans
        probe = linear_probe(
            z["train"], features.y_train, z["val"], features.y_val, z["test"], features.y_test,
            self.num_classes, cfg.probe,
        )
        subspace = projection.subspace
        recovery = references is not None and subspace is not None
        self.seed_free: dict[str, Optional[float]] = {
            "probe_acc": probe.test_accuracy,
            "fisher_cos2": fisher_cos2(subspace, references.fisher) if recovery else None,
            "fisher_energy": fisher_energy(subspace, references.fisher) if recovery else None,
            "means_cos2": fisher_cos2(subspace, references.means) if recovery else None,
            "pca_cos2": fisher_cos2(subspace, references.pca) if recovery else None,
            "optimum_cos2": fisher_cos2(subspace, optimum) if subspace is not None and optimum is not None else None,
            "effective_rank": rank,
            "feature_rank": references.feature_rank if references is not None else None,
        }

    def scores(self, seed: int) -> dict[str, Optional[float]]:
        """The metric fields of a results record, with k-means seeded by ``seed``."""
        clusters = faiss_kmeans(self.z_test, self.num_classes, self.kmeans, seed).assignments
        return {**clustering_scores(self.labels, clusters), **self.seed_free}


def score_projection(
    projection: Projection, features: LabelledFeatures, references: Optional[ReferenceSubspaces], cfg: ScoreConfig,
    seed: int, optimum: Optional[np.ndarray] = None,
) -> dict[str, Optional[float]]:
    """The metric fields of a results record for ``projection`` with one seed (see ``ProjectionScorer``)."""
    return ProjectionScorer(projection, features, references, cfg, optimum).scores(seed)
