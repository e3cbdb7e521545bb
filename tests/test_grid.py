"""Grid fitting (docs/theory.md, "Grid fitting"): every head of a grid is the head its solo ``fit_head`` fits —
mixed δ, seeds, τ, methods, learning rates and epochs — in float64 to 1e-9, in float32 to the scores' precision;
frozen heads (fewer epochs, early stopping) keep exactly their best epoch's weights; two ``ddp_spawn`` ranks give
the one-process grid."""

from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from ssl_pipeline.config import GMMConfig, HeadsConfig, TrainerConfig
from ssl_pipeline.heads.settings import HeadSettings, resolve_head_settings
from ssl_pipeline.data.pairs import (
    CandidateDataModule,
    CandidateSampler,
    DeltaPairSampler,
    HeldOutPairSampler,
    delta_choice,
)
from ssl_pipeline.data.synthetic import make_synthetic
from ssl_pipeline.heads.fit import fit_grid, fit_head, head_trainer, quiet_lightning
from ssl_pipeline.heads.grid import HeadGrid, grid_groups
from ssl_pipeline.heads.inputs import head_module, held_out_features
import ssl_pipeline.heads.grid as grid_module
from ssl_pipeline.theory.subspaces import fisher_cos2

DOUBLE = TrainerConfig(precision="64-true", progress_bar=False)
SINGLE = TrainerConfig(progress_bar=False)


@pytest.fixture(scope="module")
def features():
    quiet_lightning()
    return make_synthetic(GMMConfig(d=12, k=3, n_train=600, n_val=120, n_test=60))


def head(method: str, delta: float, seed: int, **changes) -> HeadSettings:
    heads = HeadsConfig(r=2, epochs=3, batch_size=128)
    return dataclasses.replace(resolve_head_settings(heads, method, delta, seed), **changes)


MIXED = [
    head("infonce", 1.0, 0),
    head("infonce", 0.5, 0, tau=0.3),
    head("infonce", 0.0, 1, epochs=2, lr=0.02),  # per_delta-style: fewer epochs, its own lr
    head("infonce", 0.5, 1, symmetric=True, similarity="dot", weight_decay=1e-3),
    head("simsiam", 0.5, 1),  # covariance guard, whitened basis, predictor at its own lr
    head("simsiam", 1.0, 0, regularizer="euclidean", xi=0.5, predictor_lr_scale=0.1),
    head("simsiam", 0.0, 1, xi=0.0),  # one loss call with the first SimSiam head (same seed): a guard weighted 0
    head("simsiam", 0.5, 0, regularizer="euclidean", xi=2.0),  # one loss call with the euclidean one: its own ξ
    head("spectral_contrastive", 1.0, 2, r=3),
    head("vicreg", 0.5, 0, lr=0.003),
    head("barlowtwins", 0.2, 2, epochs=1),
]


def test_candidates_give_every_delta_the_solo_samplers_pairs():
    labels = torch.from_numpy(np.random.default_rng(0).integers(0, 4, 203))
    for rank in (0, 1):
        grid = CandidateSampler(labels, [0, 5], 40, rank=rank, world_size=2)
        grid.set_epoch(3)
        steps = list(grid)
        for s, seed in enumerate([0, 5]):
            for delta in (0.0, 0.3, 1.0):
                solo = DeltaPairSampler(labels, delta, 40, seed, rank=rank, world_size=2)
                solo.set_epoch(3)
                pairs = list(solo)
                assert len(pairs) == len(steps)
                for (indices, coins), pair in zip(steps, pairs):
                    positive = torch.where(delta_choice(coins[s], delta), indices[s, 1], indices[s, 2])
                    torch.testing.assert_close(torch.stack([indices[s, 0], positive]), pair, rtol=0, atol=0)
    held_out = CandidateSampler(labels, [4], 40, fixed=True)
    held_out.set_epoch(7)
    (indices, coins), *_ = list(held_out)
    solo = HeldOutPairSampler(labels, 0.5, 40, 4)
    solo.set_epoch(7)
    positive = torch.where(delta_choice(coins[0], 0.5), indices[0, 1], indices[0, 2])
    assert torch.equal(torch.stack([indices[0, 0], positive]), next(iter(solo)))


@pytest.mark.parametrize("choose_on", ["outputs", "inputs"])
def test_every_head_of_a_float64_grid_equals_its_solo_fit(features, monkeypatch, choose_on):
    """Both ways a grid picks its heads' positives (``grid.select_inputs``) give every head its solo fit."""
    monkeypatch.setattr(grid_module, "SELECT_INPUTS_MIN_WIDTH", 10**9 if choose_on == "outputs" else 1)
    grid = fit_grid(features, MIXED, DOUBLE)
    for settings, fitted in zip(MIXED, grid):
        solo = fit_head(features, settings, DOUBLE)
        assert fitted.settings == settings and fitted.weight.dtype == np.float64
        assert fitted.epochs_trained == settings.epochs == solo.epochs_trained
        assert np.abs(fitted.weight - solo.weight).max() <= 1e-9, settings.tag
        initial = head_module(features, settings).head_weight().detach().numpy()
        assert np.abs(fitted.weight - initial).max() > 1e-3, settings.tag  # training moved it


def test_float32_grid_scores_equal_the_solo_fits(features):
    jobs = [head("infonce", 1.0, 0), head("infonce", 0.5, 1, tau=0.5), head("simsiam", 1.0, 0, epochs=2),
            head("spectral_contrastive", 0.5, 1)]
    for settings, fitted in zip(jobs, fit_grid(features, jobs, SINGLE)):
        solo = fit_head(features, settings, SINGLE)
        assert fitted.weight.dtype == np.float32
        np.testing.assert_allclose(fitted.weight, solo.weight, atol=1e-5)
        grid_score = fisher_cos2(fitted.feature_space_weight(), features.fisher_basis)
        solo_score = fisher_cos2(solo.feature_space_weight(), features.fisher_basis)
        assert abs(grid_score - solo_score) <= 1e-3, settings.tag


class RecordWeights(pl.Callback):
    """Every member's weights after each epoch's training (validation sees them unchanged)."""

    def __init__(self) -> None:
        self.epochs: list[list[np.ndarray]] = []

    def on_train_epoch_end(self, trainer, grid) -> None:  # called before the grid's own hook freezes anything
        self.epochs.append([m.head_weight().detach().numpy().copy() for m in grid.members])


def test_stopped_heads_keep_their_best_epoch_bit_for_bit_and_equal_their_solo_fits(features):
    jobs = [head("infonce", delta, seed, epochs=12, lr=0.05, early_stopping_patience=1)
            for delta, seed in [(1.0, 0), (0.0, 0), (0.2, 1)]]
    jobs.append(head("simsiam", 0.5, 1, epochs=2))  # fewer epochs, no early stopping
    jobs.append(head("infonce", 0.5, 0, epochs=12))  # runs to the end
    grid = HeadGrid([head_module(features, s) for s in jobs])
    record = RecordWeights()
    trainer = head_trainer(DOUBLE, 12, None, True, [record])
    x = torch.from_numpy(features.x_train.astype(np.float32))
    y = torch.from_numpy(features.y_train.astype(np.int64))
    trainer.fit(grid, datamodule=CandidateDataModule(x, y, grid.seeds, 128, **held_out_features(features)))
    fitted = [grid.fitted_head(h) for h in range(len(jobs))]
    stopped = [f for f in fitted[:3] if f.epochs_trained < 11]
    assert stopped, [f.epochs_trained for f in fitted]  # early stopping fired for at least one head
    assert len(record.epochs) == 12 and fitted[3].epochs_trained == 2 and fitted[4].epochs_trained == 12
    for h, f in enumerate(fitted):
        assert 1 <= f.epochs_trained <= jobs[h].epochs
        assert np.array_equal(f.weight, record.epochs[f.epochs_trained - 1][h]), f.settings.tag
        solo = fit_head(features, jobs[h], DOUBLE)
        assert solo.epochs_trained == f.epochs_trained
        assert np.abs(f.weight - solo.weight).max() <= 1e-9, f.settings.tag
    for h in [*(fitted.index(f) for f in stopped), 3]:  # frozen after their last epoch: nothing moved since
        assert all(np.array_equal(w[h], fitted[h].weight) for w in record.epochs[jobs[h].epochs if h == 3 else 11:])


@pytest.mark.slow
def test_two_rank_ddp_grid_equals_the_one_process_grid(features):
    jobs = [head("infonce", 1.0, 0, batch_size=64), head("infonce", 0.2, 1, batch_size=64, symmetric=True),
            head("simsiam", 0.5, 0, batch_size=64, epochs=2), head("vicreg", 1.0, 1, batch_size=64),
            head("infonce", 0.5, 1, batch_size=64, epochs=6, lr=0.05, early_stopping_patience=1)]
    ddp = fit_grid(features, jobs, dataclasses.replace(DOUBLE, devices=2, strategy="ddp_spawn"))
    single = fit_grid(features, [dataclasses.replace(s, batch_size=128) for s in jobs], DOUBLE)
    for a, b in zip(ddp, single):
        assert a.epochs_trained == b.epochs_trained, a.settings.tag
        assert np.abs(a.weight - b.weight).max() <= 1e-9, a.settings.tag


def test_grids_group_by_batches_and_log_each_head_under_its_tag(features, tmp_path):
    from pytorch_lightning.loggers import CSVLogger

    jobs = [head("infonce", 1.0, 0), head("simsiam", 0.5, 0, batch_size=64), head("vicreg", 0.5, 1)]
    jobs.append(head("infonce", 0.5, 1, standardize=not jobs[0].standardize))  # another centring/scaling
    assert grid_groups(jobs) == [[0, 2], [1], [3]]
    logger = CSVLogger(tmp_path, name="grid")
    fit_grid(features, [jobs[0], jobs[2]], dataclasses.replace(SINGLE, log_every_n_steps=1), logger=logger)
    with open(next(tmp_path.rglob("metrics.csv"))) as f:
        columns = next(csv.reader(f))
    for tag in ("infonce_delta1_seed0", "vicreg_delta0_5_seed1"):
        assert f"{tag}/train/loss_step" in columns and f"{tag}/train/loss_epoch" in columns, columns


def test_device_resident_gather_gives_the_host_gather_grid_bit_for_bit(features):
    """The CUDA/MPS path (indices to the device, features gathered there, val too) run on CPU: same heads."""
    jobs = [head("infonce", 1.0, 0, early_stopping_patience=2, epochs=4), head("simsiam", 0.5, 1)]
    host = fit_grid(features, jobs, SINGLE, resident=False)
    resident = fit_grid(features, jobs, SINGLE, resident=True)
    for a, b in zip(host, resident):
        assert np.array_equal(a.weight, b.weight) and a.epochs_trained == b.epochs_trained


def test_float16_features_are_gathered_in_their_dtype_and_widened_per_batch():
    from ssl_pipeline.data.pairs import CandidateFeatures, CandidateIndices, gather_candidates

    x = torch.randn(50, 6).half()
    indices = torch.randint(0, 50, (2, 3, 8))
    blocks = gather_candidates(x, indices)
    assert blocks.dtype == torch.float32 and blocks.shape == (2, 3, 8, 6)
    assert torch.equal(blocks[1, 2, 5], x[indices[1, 2, 5]].float())
    coins = torch.rand(2, 8)
    assert CandidateIndices(50)[(indices, coins)][0] is indices
    assert torch.equal(CandidateFeatures(x)[(indices, coins)][0], blocks)


def test_a_grid_over_its_step_memory_budget_is_split_into_chunks_keeping_seeds_together():
    from ssl_pipeline.heads.grid import step_bytes

    jobs = [head("infonce", d, s, batch_size=1024) for d in (1.0, 0.5) for s in (0, 1, 2)]
    jobs.append(head("simsiam", 1.0, 0, batch_size=1024))
    per_head = step_bytes(jobs[0])
    assert per_head == 16 * 1024 * 1024 and step_bytes(jobs[0], world_size=2) == 2 * per_head
    assert grid_groups(jobs) == [list(range(7))]
    chunks = grid_groups(jobs, step_budget=2 * per_head + step_bytes(jobs[-1]))
    assert sorted(i for chunk in chunks for i in chunk) == list(range(7))
    assert all(sum(step_bytes(jobs[i]) for i in chunk) <= 2 * per_head + step_bytes(jobs[-1]) for chunk in chunks)
    assert [sorted({jobs[i].seed for i in chunk}) for chunk in chunks] == [[0], [1], [2]]
    assert grid_groups(jobs, step_budget=1) == [[i] for i in (0, 3, 6, 1, 4, 2, 5)]  # one head each, never none


def test_epoch_reports_summarise_each_methods_losses():
    from ssl_pipeline.heads.grid import EpochReport

    report = EpochReport(epoch=3, epochs=10, losses={"infonce_delta1_seed0": 5.1234, "infonce_delta0.5_seed0": 5.31,
                                                    "simsiam_delta1_seed0": -0.93,
                                                    "spectral_contrastive_delta1_seed0_r8": -2.5}, done=3)
    assert report.summary() == ("epoch 3/10 · infonce 5.12–5.31 (2 heads) · simsiam -0.93 (1 head) · "
                                "spectral_contrastive -2.5 (1 head)")


def test_a_memory_mapped_split_is_gathered_from_the_map_and_fits_the_same_heads(features, tmp_path):
    """Head fitting reads batches from the memory map (``feature_table``: no float32 copy of the split) and gives
    the heads of the same split held in memory, bit for bit — float32 and float16 files alike."""
    from ssl_pipeline.heads.inputs import feature_table
    from ssl_pipeline.theory.chunks import FeatureRows

    jobs = [head("infonce", 1.0, 0), head("simsiam", 0.5, 1, early_stopping_patience=1, epochs=3)]
    for dtype in (np.float32, np.float16):
        stored = np.concatenate([features.x_val, features.x_train, features.x_test]).astype(dtype)
        np.save(tmp_path / "x.npy", stored)
        mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
        rows = np.arange(len(features.x_val), len(features.x_val) + len(features.x_train))
        on_disk = dataclasses.replace(features, x_train=FeatureRows(mapped, rows, np.float32))
        in_memory = dataclasses.replace(features, x_train=stored[rows].astype(np.float32))
        table, index = feature_table(on_disk.x_train)
        assert table.dtype == {np.float32: torch.float32, np.float16: torch.float16}[dtype]
        assert table.data_ptr() == mapped.ctypes.data and torch.equal(index, torch.from_numpy(rows))
        for a, b in zip(fit_grid(on_disk, jobs, SINGLE), fit_grid(in_memory, jobs, SINGLE)):
            assert np.array_equal(a.weight, b.weight) and np.array_equal(a.mean, b.mean), (dtype, a.settings.tag)
