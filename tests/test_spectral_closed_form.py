"""Pair statistics from the heads' own sampler and the spectral closed form (theory/spectral.py; docs/theory.md,
"Spectral view of the pairs")."""

import numpy as np
import pytest

from ssl_pipeline.errors import DataError
from ssl_pipeline.theory.gmm import pancakes_parameters
from ssl_pipeline.data.pairs import sampled_pair_moments
from ssl_pipeline.theory.spectral import expected_pair_covariance, spectral_closed_form
from ssl_pipeline.theory.subspaces import fisher_cos2


def _mixture(n: int, seed: int = 0, d: int = 6, k: int = 3):
    params = pancakes_parameters(k=k, d=d, separation=4.0, signal_std=1.0, nuisance_std=2.0)
    x, y = params.sample(n, np.random.default_rng(seed))
    return x, y, params


@pytest.mark.parametrize("delta", [1.0, 0.5, 0.0])
def test_sampled_pair_covariance_matches_its_exact_expectation_for_the_sampler(delta):
    """Σ_Δ from 60 epochs of DeltaPairSampler pairs equals δ·Σ_k (n_k/N)(n_k/(n_k−1)) S_k + (1−δ) S_T within its
    sampling error, and is clearly farther from the expectation at a δ 0.25 away."""
    x, y, _ = _mixture(600)
    moments = sampled_pair_moments(x, y, delta, batch_size=100, seed=3, epochs=60)
    assert moments.pairs == 60 * 600
    expected = expected_pair_covariance(x, y, delta)
    error = np.linalg.norm(moments.delta_covariance - expected) / np.linalg.norm(expected)
    assert error < 0.03
    wrong = expected_pair_covariance(x, y, delta + 0.25 if delta < 0.5 else delta - 0.25)
    assert np.linalg.norm(moments.delta_covariance - wrong) / np.linalg.norm(wrong) > 2 * error
    np.testing.assert_allclose(moments.total, np.cov(x.T.astype(np.float64), bias=True), rtol=1e-8, atol=1e-10)


def test_same_class_draws_exclude_the_anchor():
    """Classes of 2 samples at δ = 1: every pair is the class's other member, so Σ_Δ = Σ_k (n_k/N)·2·S_k exactly
    (n_k/(n_k − 1) = 2); a draw that could return the anchor would shrink it."""
    x = np.array([[0.0], [2.0], [10.0], [14.0]], dtype=np.float32)
    y = np.array([0, 0, 1, 1])
    moments = sampled_pair_moments(x, y, 1.0, batch_size=4, seed=0, epochs=3)
    assert moments.pairs == 12
    np.testing.assert_allclose(moments.delta_covariance, expected_pair_covariance(x, y, 1.0))
    np.testing.assert_allclose(moments.delta_covariance, [[0.5 * (4.0 + 16.0) / 2]])


def test_closed_form_spans_the_fisher_subspace_and_refuses_too_few_pairs_and_too_large_r():
    x, y, params = _mixture(4000, d=12, k=4)
    moments = sampled_pair_moments(x, y, 1.0, batch_size=500, seed=0, epochs=5)
    closed = spectral_closed_form(moments, r=3)
    assert closed.rank == 12 and closed.basis.shape == (12, 3)
    assert fisher_cos2(closed.basis, params.fisher_basis()) > 0.98
    assert np.all(np.diff(closed.eigenvalues) >= 0) and closed.eigenvalues[-1] < 1
    with pytest.raises(DataError, match="choose r < 12"):
        spectral_closed_form(moments, r=12)
    with pytest.raises(DataError, match=r"at least 10·d = 120 pairs \(raise heads.epochs"):
        sampled_pair_moments(x[:100], y[:100], 1.0, batch_size=50, seed=0, epochs=1)


def replayed_pair_moments(x: np.ndarray, pairs: np.ndarray, total: np.ndarray):
    """The reference Σ_Δ: every pair [2, P] replayed, ½·mean of (x_a − x_b)(x_a − x_b)ᵀ in float64 (what
    ``pair_moments`` computed before it summed by pair counts)."""
    from ssl_pipeline.theory.spectral import PairMoments

    scatter = np.zeros((x.shape[1], x.shape[1]))
    for start in range(0, pairs.shape[1], 8192):
        a, b = pairs[:, start : start + 8192]
        diff = x[a].astype(np.float64) - x[b].astype(np.float64)
        scatter += diff.T @ diff
    return PairMoments(total, 0.5 * scatter / pairs.shape[1], pairs.shape[1])


def sampler_pairs(y: np.ndarray, delta: float, batch_size: int, seed: int, epochs: int) -> np.ndarray:
    """Every pair [2, P] that ``epochs`` epochs of the heads' ``DeltaPairSampler`` draw."""
    import torch

    from ssl_pipeline.data.pairs import DeltaPairSampler

    sampler = DeltaPairSampler(torch.from_numpy(np.asarray(y, dtype=np.int64)), delta, batch_size, seed)
    drawn = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        drawn.extend(sampler)
    return torch.cat(drawn, dim=1).numpy()


def closed_form_against_replay(x: np.ndarray, y: np.ndarray, delta: float, batch_size: int, epochs: int, r: int,
                               block_sizes: tuple = (None,)) -> list[tuple[float, float]]:
    """Per column-block budget (None: the default): (relative Frobenius distance of Σ_Δ, cos² between the closed
    forms' subspaces), pair counts against replay."""
    from ssl_pipeline.theory.spectral import PAIR_BLOCK_BYTES, pair_moments
    from ssl_pipeline.theory.subspaces import class_statistics, total_covariance

    pairs = sampler_pairs(y, delta, batch_size, 0, epochs)
    total = total_covariance(class_statistics(x, y, int(y.max()) + 1))
    replayed = replayed_pair_moments(x, pairs, total)
    reference = spectral_closed_form(replayed, r).basis
    found = []
    for block_bytes in block_sizes:
        counted = pair_moments(x, y, [pairs], total=total, block_bytes=block_bytes or PAIR_BLOCK_BYTES)
        assert counted.pairs == replayed.pairs == pairs.shape[1] > epochs * (len(y) - batch_size)
        distance = np.linalg.norm(counted.delta_covariance - replayed.delta_covariance)
        cos2 = fisher_cos2(spectral_closed_form(counted, r).basis, reference)
        found.append((distance / np.linalg.norm(replayed.delta_covariance), cos2))
    return found


@pytest.mark.parametrize("delta", [1.0, pytest.param(0.5, marks=pytest.mark.slow), pytest.param(0.0, marks=pytest.mark.slow)])
def test_pair_counts_give_the_replayed_closed_form_on_the_pancakes(delta):
    """Σ_Δ summed by pair counts (X̃ᵀ(D − W)X̃) is the replayed sum up to float64 rounding, so the closed form's
    subspace is unchanged (cos² ≥ 1 − 1e-9) on the shipped pancakes lab at its own batch and epochs; columns in
    blocks (a 1 MiB block budget: 8 blocks of 14 columns) give the same sum."""
    from ssl_pipeline.cli import parse_command
    from ssl_pipeline.features.source import load_features

    cfg = parse_command(["synthetic", "--config", "configs/synthetic/pancakes.yaml"])[1]
    features = load_features(cfg.data)
    x, y = np.asarray(features.x_train, dtype=np.float32), features.y_train
    for distance, cos2 in closed_form_against_replay(x, y, delta, cfg.heads.batch_size, cfg.heads.epochs,
                                                     features.num_classes - 1, (None, 2**20)):
        assert distance < 1e-12 and cos2 >= 1 - 1e-9
