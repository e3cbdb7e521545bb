"""DDP through Lightning (gloo on CPU, ``ddp_spawn`` so pytest is not re-launched): two ranks with per-rank
batch B train the same head as one process with batch 2B, because the ranks split the same global batches and
InfoNCE's negatives are gathered with their gradients (docs/theory.md, "Under DDP")."""

from __future__ import annotations

import numpy as np
import pytest

from ssl_pipeline.config import GMMConfig, HeadsConfig, TrainerConfig
from ssl_pipeline.data.synthetic import make_synthetic
from ssl_pipeline.heads.fit import fit_head, quiet_lightning
from ssl_pipeline.heads.parametrization import orthonormal_init
from ssl_pipeline.heads.settings import resolve_head_settings


@pytest.mark.slow
def test_two_rank_ddp_training_equals_single_process_training():
    quiet_lightning()
    features = make_synthetic(GMMConfig(d=12, k=3, n_train=2048, n_val=16, n_test=16))

    def fit(batch_size: int, trainer: TrainerConfig) -> np.ndarray:
        settings = resolve_head_settings(HeadsConfig(r=2, epochs=2, batch_size=batch_size), "infonce", 1.0, 0)
        return fit_head(features, settings, trainer).weight

    ddp = fit(128, TrainerConfig(devices=2, strategy="ddp_spawn"))
    single = fit(256, TrainerConfig())
    assert np.abs(single - orthonormal_init(1, 12, 2, 0).numpy()).max() > 0.05  # training moved the weights
    np.testing.assert_allclose(ddp, single, atol=2e-4)
