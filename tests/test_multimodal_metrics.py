"""Scores of two towers (docs/theory.md, "Scores for two towers"): block energies and class-level cross-modal
retrieval, the latter against a brute-force computation with scikit-learn's average precision."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from ssl_pipeline.scoring.multimodal import block_energies, class_retrieval
from ssl_pipeline.theory.subspaces import fisher_energy


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_block_energies_are_fisher_energies_and_sum_to_one_over_a_split_of_the_space(rng):
    d = 12
    basis = np.linalg.qr(rng.standard_normal((d, d)))[0]
    blocks = {"a": basis[:, :3], "b": basis[:, 3:5], "c": basis[:, 5:]}
    head = rng.standard_normal((d, 4))
    energies = block_energies(head, blocks)
    assert energies == {name: fisher_energy(head, block) for name, block in blocks.items()}
    assert sum(energies.values()) == pytest.approx(1.0, abs=1e-12)
    inside = blocks["b"] @ rng.standard_normal((2, 4))
    assert block_energies(inside, blocks)["b"] == pytest.approx(1.0)
    assert block_energies(np.zeros((d, 2)), blocks) == {"a": 0.0, "b": 0.0, "c": 0.0}


def brute_force(z1, y1, z2, y2, ks):
    """Per query: cosine similarities to every item, precision of the top k, and sklearn's average precision."""
    a = z1 / np.linalg.norm(z1, axis=1, keepdims=True)
    b = z2 / np.linalg.norm(z2, axis=1, keepdims=True)
    precision, ap = {k: [] for k in ks}, []
    for i in range(len(z1)):
        similarity = b @ a[i]
        relevant = y2 == y1[i]
        top = np.argsort(-similarity)
        for k in ks:
            precision[k].append(relevant[top[:k]].mean())
        if relevant.any():
            ap.append(average_precision_score(relevant, similarity))
    return {f"class_precision@{k}": float(np.mean(v)) for k, v in precision.items()} | {"map": float(np.mean(ap))}


@pytest.mark.parametrize("chunk", [None, 1, 7])
def test_retrieval_equals_a_brute_force_computation_with_sklearn(rng, chunk):
    z1, z2 = rng.standard_normal((60, 5)), rng.standard_normal((80, 5))
    y1, y2 = rng.integers(4, size=60), rng.integers(4, size=80)
    z2[y2 == 1] += 1.5  # some structure, so the scores are not all at chance
    z1[y1 == 1] += 1.5
    ks = (1, 3, 10)
    scores = class_retrieval(z1, y1, z2, y2, ks=ks, chunk=chunk)
    reference = brute_force(z1, y1, z2, y2, ks)
    for key, value in reference.items():
        assert scores[key] == pytest.approx(value, abs=1e-6), key
    assert scores["map_queries"] == 60
    counts1, counts2 = np.bincount(y1, minlength=4), np.bincount(y2, minlength=4)
    assert scores["chance"] == pytest.approx(float(counts1 @ counts2) / (60 * 80))


def test_a_perfect_embedding_scores_one_and_a_random_one_scores_chance(rng):
    k, n = 5, 2000
    y1, y2 = rng.integers(k, size=n), rng.integers(k, size=n)
    centres = np.eye(k) * 10
    perfect = class_retrieval(centres[y1] + rng.standard_normal((n, k)), y1,
                              centres[y2] + rng.standard_normal((n, k)), y2, ks=(1, 10, 100))
    assert perfect["map"] == pytest.approx(1.0) and perfect["class_precision@100"] == pytest.approx(1.0)
    random = class_retrieval(rng.standard_normal((n, 8)), y1, rng.standard_normal((n, 8)), y2, ks=(1, 10))
    assert random["chance"] == pytest.approx(0.2, abs=0.02)
    assert random["map"] == pytest.approx(random["chance"], abs=0.02)
    assert random["class_precision@10"] == pytest.approx(random["chance"], abs=0.02)


def test_queries_whose_label_is_absent_from_the_partner_modality_are_left_out_of_the_map(rng):
    z1, z2 = rng.standard_normal((10, 3)), rng.standard_normal((12, 3))
    y1 = np.array([0, 1, 2] * 3 + [7])
    y2 = np.array([0, 1, 2, 5] * 3)
    scores = class_retrieval(z1, y1, z2, y2, ks=(2,))
    kept = y1 != 7
    reference = brute_force(z1[kept], y1[kept], z2, y2, (2,))
    assert scores["map_queries"] == 9 and scores["map"] == pytest.approx(reference["map"], abs=1e-6)
    # the query of label 7 still counts in the precision (it finds nothing relevant)
    assert scores["class_precision@2"] == pytest.approx(reference["class_precision@2"] * 9 / 10, abs=1e-6)


def test_k_beyond_the_partner_items_is_refused(rng):
    with pytest.raises(ValueError, match=r"every k of \(1, 20\) must be in \[1, 12\]"):
        class_retrieval(rng.standard_normal((5, 3)), np.zeros(5, int), rng.standard_normal((12, 3)),
                        np.zeros(12, int), ks=(1, 20))


@pytest.mark.slow
def test_ten_thousand_by_ten_thousand_runs_chunked(rng):
    n, k = 10_000, 10
    y1, y2 = rng.integers(k, size=n), rng.integers(k, size=n)
    z1 = rng.standard_normal((n, 16)).astype(np.float32)
    z2 = rng.standard_normal((n, 16)).astype(np.float32)
    z1[:, :k] += 2 * np.eye(k)[y1]
    z2[:, :k] += 2 * np.eye(k)[y2]
    scores = class_retrieval(z1, y1, z2, y2)
    assert scores["map_queries"] == n and scores["chance"] < scores["map"] < 1
