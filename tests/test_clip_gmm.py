"""The CLIP-GMM (docs/theory.md, "CLIP-GMM"): orthogonal blocks, population ground truth recomputed here and
checked against samples, Fisher ≠ means in the shared block, PCA in the noise block, cross-modal δ-partners, and
the config's one-line refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.linalg import eigh, subspace_angles
from sklearn.decomposition import PCA

from ssl_pipeline.config import CLIPGMMConfig, DataConfig, ExperimentConfig, GMMConfig, HeadsConfig, validate_experiment
from ssl_pipeline.data.multimodal import clip_parameters, make_clip_gmm
from ssl_pipeline.data.pairs import ClassIndex, cross_modal_candidates, sample_cross_modal_partners
from ssl_pipeline.errors import ConfigError
from ssl_pipeline.scoring.multimodal import block_energies
from ssl_pipeline.theory.clip_gmm import ENERGY_BLOCKS, clip_subspace_report
from ssl_pipeline.theory.gmm import FISHER_VS_MEANS_COS2
from ssl_pipeline.theory.subspaces import fisher_estimate


def _cfg(**clip) -> GMMConfig:
    return GMMConfig(preset="clip", nuisance_std=15.0, n_train=600, n_val=200, n_test=300, seed=3,
                     clip=CLIPGMMConfig(**clip))


def _cos2(a, b):
    return float(np.sum(np.cos(subspace_angles(a, b)) ** 2) / min(a.shape[1], b.shape[1]))


def _between(means):
    centred = means - means.mean(axis=0)
    return centred.T @ centred / len(means)


@pytest.fixture(scope="module")
def params():
    return clip_parameters(_cfg(k_s=5, k_1=4, k_2=3, d_1=64, d_2=40))


def test_blocks_are_orthonormal_mutually_orthogonal_and_span_the_space(params):
    for p, (d, q_s, q_m) in zip(params, [(64, 4, 3), (40, 4, 2)]):
        blocks = [p.shared_block, p.private_block, p.noise_block]
        assert [b.shape for b in blocks] == [(d, 2 * q_s), (d, q_m), (d, d - 2 * q_s - q_m)]
        stacked = np.concatenate(blocks, axis=1)
        np.testing.assert_allclose(stacked.T @ stacked, np.eye(d), atol=1e-10)
        energy = p.energy_blocks()
        assert tuple(energy) == ENERGY_BLOCKS
        stacked = np.concatenate(list(energy.values()), axis=1)
        np.testing.assert_allclose(stacked.T @ stacked, np.eye(d), atol=1e-10)
        # Σ is block-diagonal across the blocks; shared means in the shared block, private means in the private one
        for i, a in enumerate(blocks):
            for j, b in enumerate(blocks):
                if i != j:
                    assert np.abs(a.T @ p.covariance @ b).max() < 1e-9
        np.testing.assert_allclose(p.shared_means @ (np.eye(d) - p.shared_block @ p.shared_block.T), 0, atol=1e-10)
        np.testing.assert_allclose(p.private_means @ (np.eye(d) - p.private_block @ p.private_block.T), 0, atol=1e-10)
        np.testing.assert_allclose(p.noise_block.T @ p.covariance @ p.noise_block, 15.0**2 * np.eye(d - 2 * q_s - q_m),
                                   atol=1e-9)


def test_ground_truth_is_the_population_fisher_geometry_recomputed_from_the_moments(params):
    """Shared Fisher: the top q_s generalised eigenvectors of (Σ_B(k_s), Σ + Σ_B(k_m)); private likewise."""
    for p in params:
        q_s, q_m = p.k_shared - 1, p.k_private - 1
        shared_between, private_between = _between(p.shared_means), _between(p.private_means)
        vectors = eigh(shared_between, p.covariance + private_between)[1][:, ::-1][:, :q_s]
        assert _cos2(p.shared_fisher_basis(), vectors) == pytest.approx(1.0, abs=1e-9)
        vectors = eigh(private_between, p.covariance + shared_between)[1][:, ::-1][:, :q_m]
        assert _cos2(p.private_fisher_basis(), vectors) == pytest.approx(1.0, abs=1e-9)
        # the shared Fisher subspace lies in the shared block, the private one is the private block
        assert block_energies(p.shared_fisher_basis(), {"shared": p.shared_block})["shared"] == pytest.approx(1.0)
        assert _cos2(p.private_fisher_basis(), p.private_block) == pytest.approx(1.0, abs=1e-9)
        # Fisher ≠ means in the shared block, exactly as the fisher_vs_means preset
        means = np.linalg.svd((p.shared_means - p.shared_means.mean(0)).T, full_matrices=False)[0][:, :q_s]
        assert _cos2(means, p.shared_fisher_basis()) == pytest.approx(FISHER_VS_MEANS_COS2, abs=1e-6)


def test_population_report_fisher_far_from_means_and_pca_in_the_noise_block(params):
    for p in params:
        report = clip_subspace_report(p)
        assert report["shared_fisher_vs_means"] == pytest.approx(FISHER_VS_MEANS_COS2, abs=1e-6)
        assert report["shared_fisher_vs_pca"] < 1e-9 and report["shared_means_vs_pca"] < 1e-9
        assert report["private_fisher_vs_means"] == pytest.approx(1.0)
        assert report["pca_noise_energy"] == pytest.approx(1.0, abs=1e-9)
        eigenvalues = report["shared_fisher_eigenvalues"]
        assert eigenvalues[0] / eigenvalues[-1] == pytest.approx(3.0, rel=1e-6)
        assert eigenvalues[-1] == pytest.approx(6.0**2 / (2 * 5), rel=1e-6)
        # top of Σ_T: the noise block's variance, with the documented margin over every other block
        total = np.linalg.eigvalsh(p.total_covariance())[::-1]
        noise_dim = p.noise_block.shape[1]
        np.testing.assert_allclose(total[:noise_dim], 15.0**2, rtol=1e-9)
        assert total[noise_dim] <= 0.8 * 15.0**2 * (1 + 1e-9)


def test_ground_truth_bases_put_all_their_energy_in_their_own_block(params):
    for p in params:
        blocks = p.energy_blocks()
        for name, basis in blocks.items():
            energies = block_energies(basis, blocks)
            assert energies[name] == pytest.approx(1.0, abs=1e-10)
            assert sum(energies.values()) == pytest.approx(1.0, abs=1e-10)
        random_head = np.random.default_rng(0).standard_normal((p.dim, 6))
        assert sum(block_energies(random_head, blocks).values()) == pytest.approx(1.0, abs=1e-10)


def test_samples_match_the_population_and_estimated_fisher_subspaces_match_the_truth():
    cfg = GMMConfig(preset="clip", nuisance_std=15.0, n_train=60000, n_val=20, n_test=20, seed=1)
    data = make_clip_gmm(cfg)
    for m in (1, 2):
        modality = data.modality(m)
        p = modality.parameters
        x = modality.x_train.astype(np.float64)
        shared, private = modality.shared_train, modality.private_train
        # class means within 5 standard errors (per coordinate, from the population within-class covariance)
        for labels, means, within in ((shared, p.shared_means, p.shared_within()),
                                      (private, p.private_means, p.private_within())):
            for k in range(len(means)):
                members = labels == k
                error = (x[members].mean(0) - means[k]) / np.sqrt(np.diag(within) / members.sum())
                assert np.abs(error).max() < 5
        residual = x - p.shared_means[shared] - p.private_means[private]
        covariance = residual.T @ residual / len(x)
        assert np.linalg.norm(covariance - p.covariance) / np.linalg.norm(p.covariance) < 0.05
        assert _cos2(fisher_estimate(x, shared, p.k_shared).basis, modality.shared_fisher_basis) >= 0.99
        assert _cos2(fisher_estimate(x, private, p.k_private).basis, modality.private_fisher_basis) >= 0.99
        q = p.k_shared - 1 + p.k_private - 1
        pca = PCA(q).fit(x).components_.T
        assert block_energies(pca, {"noise": modality.noise_basis})["noise"] >= 0.99
        # the sampled class means follow the shared means, far from the shared Fisher subspace
        means = np.stack([x[shared == k].mean(0) for k in range(p.k_shared)])
        sampled = np.linalg.svd((means - means.mean(0)).T, full_matrices=False)[0][:, : p.k_shared - 1]
        assert _cos2(sampled, modality.shared_fisher_basis) < 0.25


def test_generation_is_seeded_and_the_modalities_differ():
    a, b, c = make_clip_gmm(_cfg()), make_clip_gmm(_cfg()), make_clip_gmm(GMMConfig(**{**vars(_cfg()), "seed": 4}))
    np.testing.assert_array_equal(a.modality1.x_train, b.modality1.x_train)
    np.testing.assert_array_equal(a.modality2.private_test, b.modality2.private_test)
    assert not np.array_equal(a.modality1.x_train, c.modality1.x_train)
    assert not np.allclose(a.modality1.parameters.shared_means, a.modality2.parameters.shared_means)
    assert a.modality1.x_val.dtype == np.float32 and a.modality1.shared_val.dtype == np.int64
    a.validate()


def test_the_unimodal_view_by_shared_or_private_label_carries_the_matching_ground_truth():
    data = make_clip_gmm(_cfg())
    shared = data.modality1.labelled("shared", data.dataset, data.split_seed)
    shared.validate()
    assert shared.num_classes == 5 and shared.fisher_basis is data.modality1.shared_fisher_basis
    private = data.modality2.labelled("private", data.dataset, data.split_seed)
    assert private.num_classes == 4 and np.array_equal(private.y_test, data.modality2.private_test)
    assert private.means_basis is data.modality2.private_means_basis


@pytest.mark.parametrize("delta", [0.0, 0.3, 1.0])
def test_partners_share_k_s_with_probability_delta_plus_chance(delta):
    rng = np.random.default_rng(0)
    shared_1 = rng.integers(4, size=20000)
    shared_2 = rng.choice(4, size=5000, p=[0.4, 0.3, 0.2, 0.1])
    partners = sample_cross_modal_partners(shared_1, shared_2, delta, torch.Generator().manual_seed(1))
    assert partners.shape == (20000,) and int(partners.min()) >= 0 and int(partners.max()) < 5000
    same = shared_2[partners.numpy()] == shared_1
    share = np.bincount(shared_2, minlength=4) / len(shared_2)
    expected = np.mean(delta + (1 - delta) * share[shared_1])
    tolerance = 4 * np.sqrt(expected * (1 - expected) / len(shared_1)) + 1e-12
    assert abs(same.mean() - expected) <= tolerance
    if delta == 1.0:
        assert same.all()
        # the same-class draw is uniform over the partner modality's members of the class
        members = np.flatnonzero(shared_2 == 3)
        hits = np.bincount(partners.numpy()[shared_1 == 3], minlength=5000)[members]
        assert hits.sum() == np.sum(shared_1 == 3) and hits.min() >= 1


def test_partner_draws_do_not_depend_on_delta_and_are_seeded():
    rng = np.random.default_rng(1)
    shared_1, shared_2 = torch.as_tensor(rng.integers(3, size=500)), torch.as_tensor(rng.integers(3, size=400))
    index = ClassIndex(shared_2)
    first = cross_modal_candidates(shared_1, index, torch.Generator().manual_seed(7))
    again = cross_modal_candidates(shared_1, index, torch.Generator().manual_seed(7))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    same_class, uniform, coin = first
    assert torch.equal(shared_2[same_class], shared_1)
    for delta in (0.2, 0.7):
        partners = sample_cross_modal_partners(shared_1, shared_2, delta, torch.Generator().manual_seed(7))
        assert torch.equal(partners, torch.where(coin < delta, same_class, uniform))


def test_a_shared_class_missing_from_the_partner_modality_is_refused():
    with pytest.raises(ValueError, match="shared class 2 has no item in the partner modality"):
        sample_cross_modal_partners(np.array([0, 1, 2]), np.array([0, 1, 1, 0]), 0.5, torch.Generator())


def _error(cfg: GMMConfig) -> str:
    with pytest.raises(ConfigError) as error:
        cfg.validate()
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("change,message", [
    ({"clip": CLIPGMMConfig(k_s=1)}, "data.synthetic.clip.k_s=1 must be at least 2"),
    ({"clip": CLIPGMMConfig(k_2=1)}, "data.synthetic.clip.k_2=1 must be at least 2"),
    ({"clip": CLIPGMMConfig(d_1=17)}, "data.synthetic.clip.d_1=17 must be at least 3·(k_s − 1) + 2·(k_1 − 1) = 18"),
    ({"clip": CLIPGMMConfig(k_2=6, d_2=20)}, "data.synthetic.clip.d_2=20 must be at least 3·(k_s − 1) + 2·(k_2 − 1) = 22"),
    ({"clip": CLIPGMMConfig(private_separation=0)}, "data.synthetic.clip.private_separation=0 must be > 0"),
    ({"clip": CLIPGMMConfig(private_separation=60)},
     "data.synthetic.clip.private_separation=60 gives modality 1's private block the variance 451"),
    ({"nuisance_std": 5.0}, "data.synthetic.nuisance_std=5.0 must be at least 12.5 for the clip preset at clip.k_s=5"),
    ({"n_val": 9}, "data.synthetic.n_val=9 must be at least 10 (2·max(k_s, k_1, k_2) = 10 points per modality)"),
    ({"signal_std": 0.0}, "data.synthetic.signal_std=0.0 must be > 0"),
])
def test_invalid_clip_settings_are_refused_in_one_line(change, message):
    cfg = GMMConfig(**{**vars(_cfg()), **change})
    assert _error(cfg).startswith(message)


def test_the_shipped_defaults_validate_and_k_and_d_are_not_used():
    GMMConfig(preset="clip", nuisance_std=15.0, d=3, k=40).validate()


def test_clip_heads_need_the_clip_preset_and_r_fits_both_modalities():
    heads = HeadsConfig(methods=["clip"], r=4)
    with pytest.raises(ConfigError, match="heads.methods contains clip, which trains two towers"):
        validate_experiment(ExperimentConfig(heads=heads))
    clip_data = DataConfig(synthetic=_cfg(d_1=64, d_2=20))
    validate_experiment(ExperimentConfig(data=clip_data, heads=heads))
    with pytest.raises(ConfigError, match="heads.r=21 exceeds the feature dimension d=20"):
        validate_experiment(ExperimentConfig(data=clip_data, heads=HeadsConfig(methods=["clip"], r=21)))


def test_a_one_source_command_refuses_the_clip_preset_in_one_line():
    from ssl_pipeline.features.source import load_features

    with pytest.raises(ConfigError, match="generates two paired modalities; this command reads one") as error:
        load_features(DataConfig(synthetic=_cfg()))
    assert "\n" not in str(error.value)


def test_other_presets_keep_their_features_key():
    from ssl_pipeline.features.source import synthetic_features_key

    from dataclasses import asdict

    from ssl_pipeline.digests import json_digest

    pancakes = GMMConfig()
    later = ("clip", "alpha", "quiet_dims", "quiet_std")  # absent from the key at their defaults
    before = {name: value for name, value in asdict(pancakes).items() if name not in later}  # the fields it had before
    assert synthetic_features_key(pancakes) == "gmm-" + json_digest(before)
    assert synthetic_features_key(pancakes) == synthetic_features_key(GMMConfig(clip=CLIPGMMConfig(k_s=3)))
    assert synthetic_features_key(_cfg()) != synthetic_features_key(_cfg(k_s=3, d_1=64))
