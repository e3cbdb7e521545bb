"""Linear CLIP heads (docs/theory.md, "CLIP loss"): grid members whose result does not depend on their grid, equal
under 2-process DDP to one process on the same global batches, with a clamped learnable logit scale, saved and
scored per tower; bad input refused in one line."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from ssl_pipeline.config import GMMConfig, HeadsConfig, TrainerConfig
from ssl_pipeline.data.multimodal import make_clip_gmm
from ssl_pipeline.errors import DataError
from ssl_pipeline.heads.fit import fit_grid, quiet_lightning
from ssl_pipeline.heads.fitted import FittedHead
from ssl_pipeline.heads.grid import grid_groups
from ssl_pipeline.heads.losses import LOGIT_SCALE_MAX
from ssl_pipeline.heads.settings import resolve_head_settings

DOUBLE = TrainerConfig(precision="64-true", progress_bar=False)


@pytest.fixture(scope="module")
def paired():
    quiet_lightning()
    gmm = GMMConfig(preset="clip", n_train=400, n_val=120, n_test=100, nuisance_std=15)
    gmm.clip.d_1, gmm.clip.d_2 = 24, 20
    return make_clip_gmm(gmm)


def clip(delta: float, seed: int, **changes):
    heads = HeadsConfig(methods=["clip"], r=2, epochs=3, batch_size=64)
    return dataclasses.replace(resolve_head_settings(heads, "clip", delta, seed), **changes)


def test_clip_heads_of_a_grid_equal_the_same_heads_fitted_alone(paired):
    jobs = [clip(1.0, 0), clip(0.5, 0, tau=0.5), clip(0.0, 1, learn_scale=True, tau=0.07, epochs=2),
            clip(1.0, 1, r=3, lr=0.02, early_stopping_patience=1, epochs=4)]
    grid = fit_grid(paired, jobs, DOUBLE)
    for settings, head in zip(jobs, grid):
        alone = fit_grid(paired, [settings], DOUBLE)[0]
        assert head.weight.shape == (1, 24, settings.r) and head.weight2.shape == (1, 20, settings.r)
        assert np.abs(head.weight - alone.weight).max() <= 1e-9, settings.tag
        assert np.abs(head.weight2 - alone.weight2).max() <= 1e-9, settings.tag
        assert head.epochs_trained == alone.epochs_trained and head.logit_scale == pytest.approx(alone.logit_scale)
    assert grid[0].logit_scale == pytest.approx(1 / 0.2) and grid[1].logit_scale == pytest.approx(2.0)
    assert grid[2].logit_scale != pytest.approx(1 / 0.07)  # learned
    assert 1.0 <= grid[2].logit_scale <= LOGIT_SCALE_MAX


def test_a_learned_scale_is_clamped_like_open_clips(paired):
    """Started at 1/τ = 200 (above open_clip's ceiling of 100), the scale is clamped after the first step and
    then moves by at most the Adam steps of one epoch (lr 0.01 in log-space, 7 steps): without the clamp it
    would end near 200 · e^(±0.07)."""
    head = fit_grid(paired, [clip(1.0, 0, learn_scale=True, tau=0.005, epochs=1)], DOUBLE)[0]
    assert math.log(LOGIT_SCALE_MAX) - 0.1 <= math.log(head.logit_scale) <= math.log(LOGIT_SCALE_MAX) + 1e-12


@pytest.mark.slow
def test_two_rank_ddp_clip_grid_equals_the_one_process_grid(paired):
    jobs = [clip(1.0, 0, batch_size=32), clip(0.5, 1, batch_size=32, learn_scale=True)]
    ddp = fit_grid(paired, jobs, dataclasses.replace(DOUBLE, devices=2, strategy="ddp_spawn"))
    single = fit_grid(paired, [dataclasses.replace(s, batch_size=64) for s in jobs], DOUBLE)
    for a, b in zip(ddp, single):
        assert np.abs(a.weight - b.weight).max() <= 1e-9 and np.abs(a.weight2 - b.weight2).max() <= 1e-9
        assert a.logit_scale == pytest.approx(b.logit_scale, abs=1e-9)


def test_clip_and_unimodal_heads_train_in_separate_grids():
    jobs = [clip(1.0, 0), dataclasses.replace(clip(1.0, 0), method="infonce", learn_scale=None, tau=0.1)]
    assert grid_groups(jobs) == [[0], [1]]


def test_a_clip_head_file_keeps_both_towers_and_the_scale(paired, tmp_path):
    head = fit_grid(paired, [clip(1.0, 0, learn_scale=True, epochs=1)], TrainerConfig(progress_bar=False))[0]
    head.save(tmp_path / "h.safetensors")
    back = FittedHead.load(tmp_path / "h.safetensors")
    assert back.settings == head.settings and back.logit_scale == pytest.approx(head.logit_scale)
    for name in ("weight", "weight2", "mean", "mean2", "scale", "scale2"):
        np.testing.assert_array_equal(getattr(back, name), getattr(head, name).astype(np.float32))
    x2 = paired.modality2.x_test
    np.testing.assert_allclose(back.project(x2, tower=2), (x2 - back.mean2) @ (back.scale2[:, None] * back.weight2[0]))


def test_r_above_a_modalitys_span_is_refused_in_one_line(paired):
    with pytest.raises(DataError, match=r"heads.r=21 exceeds the rank") as error:
        fit_grid(paired, [clip(1.0, 0, r=21)], DOUBLE)
    assert "\n" not in str(error.value)


TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 1},
}


def test_clip_heads_on_a_tiny_open_clip_backbone_score_the_image_tower_with_retrieval_and_zero_shot(tmp_path):
    """The real-data path end to end: images × class prompts of a randomly initialised open_clip model."""
    import json

    import open_clip
    from fake_datasets import write_image_folder

    from ssl_pipeline.cli import main
    from ssl_pipeline.records.results import load_results

    (tmp_path / "ssl-test-tiny-clip.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(tmp_path / "ssl-test-tiny-clip.json")
    write_image_folder(tmp_path / "images", ["cat", "dog", "eel"], 8, 40, seed=0)
    config = tmp_path / "clip.yaml"
    config.write_text(
        "name: tiny_clip\nseeds: [0]\ndeltas: [1.0, 0.0]\n"
        "data: {source: images, dataset: {name: imagefolder, root: %s}, extract: {cache_root: %s, batch_size: 32, "
        "num_workers: 0}, backbone: {kind: open_clip, name: ssl-test-tiny-clip, prompts: ['a photo of a {}.', 'a {}.']}}\n"
        "heads: {methods: [clip, infonce], r: 2, epochs: 2, batch_size: 32}\n"
        "score: {baselines: [lda], kmeans: {nredo: 1}, probe: {l2_grid: [0.001]}}\nwandb: {mode: disabled}\n"
        % (tmp_path / "images", tmp_path / "features")
    )
    assert main(["run", "--config", str(config), "--run_dir", str(tmp_path / "run")]) == 0
    records = load_results(tmp_path / "run" / "results.json")
    clip = [r for r in records if r["method"] == "clip"]
    assert sorted((r["delta"], r["tower"]) for r in clip) == [(0.0, 1), (1.0, 1)]  # prompts: image tower only
    for r in clip:
        assert r["target"] == "shared" and r["energy_shared"] is None  # no ground truth on real data
        assert 0 <= r["zeroshot_acc"] <= 1 and 0 <= r["retrieval_map"] <= 1 and r["retrieval_p1"] is not None
        assert r["retrieval_p10"] is None  # 6 prompts: no top 10
        assert r["logit_scale"] == pytest.approx(1 / 0.2) and r["dataset"] == "imagefolder"
    unimodal = [r for r in records if r["method"] in ("infonce", "lda")]
    assert len(unimodal) == 3 and all(r["target"] == "shared" and r["tower"] is None for r in unimodal)
    assert any(r["method"] == "zeroshot" for r in records)  # the backbone's own zero-shot beside the towers'
