"""Scores of two towers (docs/theory.md, "Scores for two towers"): where a head's weight lies among orthogonal
blocks of its modality, and class-level cross-modal retrieval."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ssl_pipeline.theory.subspaces import fisher_energy

_CHUNK_ENTRIES = 1 << 21
"""Query × item entries per chunk of ``class_retrieval`` (≈ 2M: about 100 MB of temporaries)."""


def block_energies(weight: np.ndarray, blocks: dict[str, np.ndarray]) -> dict[str, float]:
    """Per block, ``fisher_energy(weight, block)`` = ‖Bᵀ Ã‖²_F / ‖Ã‖²_F: the share of the head's weight Ã [d, r]
    inside each block (an orthonormal basis [d, q_b]). For mutually orthogonal blocks that together span R^d
    (``ModalityParameters.energy_blocks``) the shares sum to 1; a zero head scores 0 everywhere."""
    return {name: fisher_energy(weight, basis) for name, basis in blocks.items()}


def _unit_rows(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float32)
    norms = np.linalg.norm(z, axis=1, keepdims=True)
    return z / np.maximum(norms, np.finfo(np.float32).tiny)


def class_retrieval(z1: np.ndarray, y1: np.ndarray, z2: np.ndarray, y2: np.ndarray,
                    ks: Sequence[int] = (1, 5, 10), chunk: Optional[int] = None) -> dict[str, float]:
    """Class-level retrieval from queries z1 [N1, r] (labels y1 [N1]) into the partner modality's items z2 [N2, r]
    (labels y2 [N2]), ranked by cosine similarity; an item is relevant to a query when it has the query's label
    (k_s), since many items share a label and instance-level recall means nothing there.

    - ``class_precision@k``: the mean over queries of the share of the k top-ranked items that are relevant.
    - ``map``: the mean over queries of the average precision over the full ranking, AP = (1/R) Σ_j P@rank_j over
      the R relevant items (sklearn's ``average_precision_score`` of the similarities, without ties); queries
      whose label has no item in z2 (R = 0) are left out of the mean (``map_queries`` counts those kept).
    - ``chance``: the expected precision (and ≈ AP) of a random ranking, Σ_c (n1_c / N1)(n2_c / N2).

    Queries are processed ``chunk`` at a time (default: about 2M query × item entries, so memory stays near
    100 MB whatever N1 and N2 are; 10⁴ × 10⁴ runs in a few seconds).
    A zero row has cosine 0 with everything. ValueError unless 1 ≤ k ≤ N2 for every k.
    """
    y1, y2 = np.asarray(y1), np.asarray(y2)
    n2 = len(y2)
    if any(not 1 <= k <= n2 for k in ks):
        raise ValueError(f"every k of {tuple(ks)} must be in [1, {n2}] (the partner items)")
    a, b = _unit_rows(z1), _unit_rows(z2)
    classes, y2_codes = np.unique(y2, return_inverse=True)
    per_class = np.bincount(y2_codes, minlength=len(classes))
    position = np.searchsorted(classes, y1)
    known = (position < len(classes)) & (classes[np.minimum(position, len(classes) - 1)] == y1)
    relevant_count = np.where(known, per_class[np.minimum(position, len(classes) - 1)], 0)
    precision_sums = {k: 0.0 for k in ks}
    ap_sum, ap_queries = 0.0, 0
    ranks = np.arange(1, n2 + 1, dtype=np.float64)
    chunk = chunk or max(1, _CHUNK_ENTRIES // max(n2, 1))
    for start in range(0, len(y1), chunk):
        stop = min(start + chunk, len(y1))
        order = np.argsort(-(a[start:stop] @ b.T), axis=1)
        relevant = y2[order] == y1[start:stop, None]  # [C, N2] in ranked order
        for k in ks:
            precision_sums[k] += float(relevant[:, :k].sum()) / k
        hits = np.cumsum(relevant, axis=1, dtype=np.int32)
        counts = relevant_count[start:stop]
        kept = counts > 0
        ap = (np.where(relevant, hits / ranks, 0.0).sum(axis=1)[kept] / counts[kept])
        ap_sum += float(ap.sum())
        ap_queries += int(kept.sum())
    n1 = len(y1)
    chance = float(np.sum(relevant_count) / (n1 * n2)) if n1 and n2 else 0.0
    scores = {f"class_precision@{k}": precision_sums[k] / n1 if n1 else float("nan") for k in ks}
    scores.update({"map": ap_sum / ap_queries if ap_queries else float("nan"), "map_queries": ap_queries,
                   "chance": chance})
    return scores
