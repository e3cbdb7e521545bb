"""Clustering agreement with the labels (docs/theory.md, "Clustering score"): NMI, ARI, Hungarian accuracy."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix


def hungarian_accuracy(labels: np.ndarray, clusters: np.ndarray) -> float:
    """Accuracy after the one-to-one matching of clusters to labels that maximises agreement
    (scipy ``linear_sum_assignment`` on the contingency table); a relabelled perfect clustering scores 1."""
    table = contingency_matrix(labels, clusters)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / len(labels))


def clustering_scores(labels: np.ndarray, clusters: np.ndarray) -> dict[str, float]:
    """NMI (arithmetic averaging), ARI and Hungarian-matched accuracy of ``clusters`` against ``labels``."""
    return {
        "nmi": float(normalized_mutual_info_score(labels, clusters, average_method="arithmetic")),
        "ari": float(adjusted_rand_score(labels, clusters)),
        "acc": hungarian_accuracy(labels, clusters),
    }
