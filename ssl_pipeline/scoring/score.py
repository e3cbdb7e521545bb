"""Score one projection: clustering of the test split, linear probe, subspace recovery."""

from __future__ import annotations

from typing import Optional

import numpy as np

from ssl_pipeline.config import ScoreConfig
from ssl_pipeline.data.labelled import LabelledFeatures
from ssl_pipeline.scoring.kmeans import faiss_kmeans
from ssl_pipeline.scoring.metrics import clustering_scores
from ssl_pipeline.scoring.probe import linear_probe
from ssl_pipeline.scoring.projections import Projection
from ssl_pipeline.theory.subspaces import effective_rank, fisher_cos2, fisher_energy


def l2_normalize(z: np.ndarray) -> np.ndarray:
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


class ProjectionScorer:
    """Scores of one projection (fitted on train) on test; the parts that do not depend on the seed (projections,
    probe, subspace recovery, effective rank) are computed once, k-means once per seed.

    k-means (k = number of classes) clusters the test projection, L2-normalised for cosine heads; the probe is
    trained on train, its L2 strength chosen on val; ``effective_rank`` is of the centred test projection.
    """

    def __init__(
        self, projection: Projection, features: LabelledFeatures, fisher_basis: Optional[np.ndarray], cfg: ScoreConfig
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
        recovery = fisher_basis is not None and subspace is not None
        self.seed_free: dict[str, Optional[float]] = {
            "probe_acc": probe.test_accuracy,
            "fisher_cos2": fisher_cos2(subspace, fisher_basis) if recovery else None,
            "fisher_energy": fisher_energy(subspace, fisher_basis) if recovery else None,
            "effective_rank": rank,
        }

    def scores(self, seed: int) -> dict[str, Optional[float]]:
        """The metric fields of a results record, with k-means seeded by ``seed``."""
        clusters = faiss_kmeans(self.z_test, self.num_classes, self.kmeans, seed).assignments
        return {**clustering_scores(self.labels, clusters), **self.seed_free}


def score_projection(
    projection: Projection, features: LabelledFeatures, fisher_basis: Optional[np.ndarray], cfg: ScoreConfig, seed: int
) -> dict[str, Optional[float]]:
    """The metric fields of a results record for ``projection`` with one seed (see ``ProjectionScorer``)."""
    return ProjectionScorer(projection, features, fisher_basis, cfg).scores(seed)
