"""The coordinates heads are optimised in (``heads.parametrization``; docs/theory.md, "Linear heads"): the bases,
SimSiam's exact guard in each, the scaled basis's independence of the features' units, and what an untrained
head scores in each (its own chance level, ``init_fisher_cos2``/``init_minor_cos2``)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from ssl_pipeline.config import GMMConfig, HeadsConfig, TrainerConfig
from ssl_pipeline.data.synthetic import make_synthetic
from ssl_pipeline.heads.fit import fit_head, quiet_lightning
from ssl_pipeline.heads.inputs import initial_weight, input_span
from ssl_pipeline.heads.losses import orthogonality_penalty
from ssl_pipeline.heads.parametrization import head_basis
from ssl_pipeline.heads.settings import resolve_head_settings
from ssl_pipeline.theory.subspaces import FeatureSpan, fisher_cos2

QUIET_PANCAKES = GMMConfig(preset="pancakes", d=40, k=5, n_train=3000, n_val=500, n_test=500, quiet_dims=8,
                           quiet_std=0.5, seed=0)


def _span(seed: int = 0, m: int = 12, d: int = 20) -> FeatureSpan:
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((d, m)))[0]
    return FeatureSpan(basis, np.sort(rng.uniform(0.01, 30.0, m))[::-1])


@pytest.mark.parametrize("name", ["orthonormal", "scaled", "whitened"])
def test_the_guard_in_each_basis_is_the_covariance_guard_of_the_data(name):
    """‖Bᵀdiag(v)B − I‖²_F = ‖AᵀΣ̂A − I‖²_F with A = basis·B and Σ̂ = UΛUᵀ, in every parametrization."""
    span = _span()
    basis, variances = head_basis(span, name)
    sigma = (span.basis * span.eigenvalues) @ span.basis.T
    np.testing.assert_allclose(np.diag(basis.T @ sigma @ basis), variances, rtol=1e-12)
    b = torch.randn(3, span.rank, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    a = torch.from_numpy(basis) @ b
    direct = ((a.transpose(-1, -2) @ torch.from_numpy(sigma) @ a - torch.eye(4, dtype=torch.float64)) ** 2).sum((1, 2))
    torch.testing.assert_close(orthogonality_penalty(b, torch.from_numpy(variances)), direct)
    expected_top = {"orthonormal": span.eigenvalues[0], "scaled": 1.0, "whitened": 1.0}[name]
    assert variances[0] == pytest.approx(expected_top)
    if name == "whitened":
        np.testing.assert_allclose(variances, 1.0)


def test_unknown_parametrization_is_refused():
    with pytest.raises(ValueError, match="unknown parametrization 'polar'; valid: orthonormal, scaled, whitened"):
        head_basis(_span(), "polar")


@pytest.mark.parametrize(("name", "unit_free"), [("scaled", True), ("orthonormal", False)])
def test_the_scaled_basis_trains_the_same_head_whatever_the_features_units(name, unit_free):
    """Features × 10 give the same trained spectral head in the scaled basis, its weights ÷ 10 (the top direction's std
    is the unit of each step), not in the orthonormal one (there each step moves the outputs 10× as far)."""
    quiet_lightning()
    features = make_synthetic(replace(QUIET_PANCAKES, n_train=1000))
    louder = make_synthetic(replace(QUIET_PANCAKES, n_train=1000))
    for split in ("train", "val", "test"):
        setattr(louder, f"x_{split}", getattr(louder, f"x_{split}") * np.float32(10))
    heads = replace(HeadsConfig(r=4, epochs=3, batch_size=250), parametrization=name)
    settings = resolve_head_settings(heads, "spectral_contrastive", 1.0, 0)
    a = fit_head(features, settings, TrainerConfig()).feature_space_weight().astype(np.float64)
    b = fit_head(louder, settings, TrainerConfig()).feature_space_weight().astype(np.float64)
    difference = np.linalg.norm(10 * b - a) / np.linalg.norm(a)
    if unit_free:
        assert difference < 1e-4
    else:
        assert difference > 0.1


def test_an_untrained_whitened_head_sits_in_the_minor_subspace_and_a_scaled_one_at_chance():
    """What a head that learned nothing scores depends on its coordinates: on the quiet pancakes the whitened
    initialisation leans toward the 8 quiet (lowest-variance) directions, the scaled one is a random subspace of the
    span (chance max(r, q)/m for fisher_cos2 and r/m for the minor subspace)."""
    features = make_synthetic(QUIET_PANCAKES)
    span = input_span(features, np.ones(features.dim))
    minor = span.basis[:, ::-1][:, :4]
    scores = {}
    for name in ("scaled", "whitened"):
        heads = replace(HeadsConfig(r=4), parametrization=name)
        weights = [initial_weight(features, resolve_head_settings(heads, "simsiam", 1.0, seed)) for seed in range(5)]
        scores[name] = np.median([fisher_cos2(w, minor) for w in weights])
        fisher = np.median([fisher_cos2(w, features.fisher_basis) for w in weights])
        if name == "scaled":
            assert fisher < 3 * 4 / span.rank
    assert scores["scaled"] < 3 * 4 / span.rank
    assert scores["whitened"] > 0.3


def test_auto_gives_the_scaled_basis_to_simsiam_and_the_spectral_heads_only():
    heads = HeadsConfig(r=4)
    chosen = {method: resolve_head_settings(heads, method, 1.0, 0).parametrization
              for method in ("infonce", "simsiam", "spectral_contrastive", "vicreg", "barlowtwins")}
    assert chosen == {"infonce": "orthonormal", "simsiam": "scaled", "spectral_contrastive": "scaled",
                      "vicreg": "scaled", "barlowtwins": "scaled"}
    heads.simsiam.regularizer = "euclidean"
    assert resolve_head_settings(heads, "simsiam", 1.0, 0).parametrization == "orthonormal"
