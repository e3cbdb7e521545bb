"""Labelled features drawn from a shared-covariance Gaussian mixture (docs/theory.md, "GMM"): the config's
"parallel pancakes", random-Σ, fisher-vs-means or spectrum mixture, with its quiet directions (``theory.gmm``),
split into train/val/test."""

from __future__ import annotations

import numpy as np
from scipy.stats import ortho_group

from ssl_pipeline.config import GMMConfig
from ssl_pipeline.data.labelled import LabelledFeatures
from ssl_pipeline.theory.gmm import GMMParameters, preset_parameters, with_quiet_dims


def gmm_parameters(cfg: GMMConfig) -> GMMParameters:
    """The mixture of a config, seeded by ``cfg.seed``, with ``quiet_dims`` class-free directions of std
    ``quiet_std`` appended (``theory.gmm.with_quiet_dims``), optionally rotated by one random orthogonal matrix.
    The two-modality ``clip`` preset is not one mixture: ``data.multimodal.clip_parameters`` (ValueError here)."""
    if cfg.preset == "clip":
        raise ValueError("the clip preset has two modalities; build it with data.multimodal.clip_parameters")
    rng = np.random.default_rng(cfg.seed)
    params = preset_parameters(cfg.preset, cfg.k, cfg.d, cfg.separation, cfg.signal_std, cfg.nuisance_std, cfg.alpha,
                               rng, cfg.k_coarse, cfg.nesting, cfg.hidden_separation)
    params = with_quiet_dims(params, cfg.quiet_dims, cfg.quiet_std)  # validated by GMMConfig.validate
    dim = params.means.shape[1]
    if cfg.rotate and dim > 1:
        params = params.rotated(ortho_group.rvs(dim, random_state=rng))
    return params


def make_synthetic(cfg: GMMConfig, params: GMMParameters | None = None) -> LabelledFeatures:
    """Train/val/test splits drawn from the config's mixture (``params``, if already built from ``cfg``), with its
    true Fisher and class-mean subspaces attached."""
    params = gmm_parameters(cfg) if params is None else params
    rng = np.random.default_rng([cfg.seed, 1])
    x_train, y_train = params.sample(cfg.n_train, rng)
    x_val, y_val = params.sample(cfg.n_val, rng)
    x_test, y_test = params.sample(cfg.n_test, rng)
    if params.labels is None:
        return LabelledFeatures(
            x_train, y_train, x_val, y_val, x_test, y_test,
            dataset=f"gmm-{cfg.preset}", data_kind="synthetic", split_seed=cfg.seed,
            class_names=[f"component_{k}" for k in range(cfg.k)], fisher_basis=params.fisher_basis(),
            means_basis=params.mean_basis(),
        )
    # several labels per point (hierarchy): the components mapped to each label, the first one primary
    names = list(params.labels)
    by_label = {name: tuple(params.labels[name][y] for y in (y_train, y_val, y_test)) for name in names}
    references = {name: (view.fisher_basis(), view.mean_basis())
                  for name, view in ((name, params.label_view(name)) for name in names)}
    primary = names[0]
    return LabelledFeatures(
        x_train, *by_label[primary][:1], x_val, by_label[primary][1], x_test, by_label[primary][2],
        dataset=f"gmm-{cfg.preset}", data_kind="synthetic", split_seed=cfg.seed,
        class_names=[f"{primary}_{k}" for k in range(int(params.labels[primary].max()) + 1)],
        fisher_basis=references[primary][0], means_basis=references[primary][1], label=primary,
        other_labels={name: by_label[name] for name in names[1:]}, label_references=references,
    )
