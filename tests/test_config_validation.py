"""Every config field with a bound or a choice is checked next to its definition: a bad value stops the command
with one line naming the field by its dotted path, the value and the valid range, exit status 2, before any
command runs (so before any feature is loaded)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ssl_pipeline import cli
from ssl_pipeline.config import (
    DeltaSetting,
    ExperimentConfig,
    HeadsConfig,
    InfoNCEConfig,
    OptimizerConfig,
    validate_experiment,
)
from ssl_pipeline.errors import ConfigError
from ssl_pipeline.heads.settings import resolve_head_settings

ROOT = Path(__file__).resolve().parents[1]
PANCAKES = ["synthetic", "--config", str(ROOT / "configs" / "synthetic" / "pancakes.yaml")]
DIGITS = ["run", "--config", str(ROOT / "configs" / "default.yaml")]

SYNTHETIC_CASES = [
    # per-δ overrides (heads.per_delta), never checked before
    (["--heads.per_delta", "[{delta: 0.5, lr: -0.01}]"], "heads.per_delta[0].lr=-0.01 must be > 0 or null"),
    (["--heads.per_delta", "[{delta: 0.5, lr: 0}]"], "heads.per_delta[0].lr=0.0 must be > 0 or null"),
    (["--heads.per_delta", "[{delta: 0.5, batch_size: 1}]"], "heads.per_delta[0].batch_size=1 must be at least 2 or null"),
    (["--heads.per_delta", "[{delta: 0.5, epochs: 0}]"], "heads.per_delta[0].epochs=0 must be at least 1 or null"),
    (["--heads.per_delta", "[{delta: 0.5, tau: 0}]"], "heads.per_delta[0].tau=0.0 must be > 0 or null"),
    (["--heads.per_delta", "[{delta: 1.0}, {delta: 0.5, tau: -1}]"], "heads.per_delta[1].tau=-1.0 must be > 0 or null"),
    (["--heads.per_delta", "[{delta: 1.5}]"], "heads.per_delta[0].delta=1.5 is outside [0, 1]"),
    (["--heads.per_delta", "[{delta: 0.5, tau: 1}, {delta: 0.5, epochs: 3}]"],
     "heads.per_delta[1].delta=0.5 repeats heads.per_delta[0]"),
    # heads
    (["--heads.r", "0"], "heads.r=0 must be at least 1"),
    (["--heads.epochs", "0"], "heads.epochs=0 must be at least 1"),
    (["--heads.batch_size", "1"], "heads.batch_size=1 must be at least 2"),
    (["--heads.early_stopping_patience", "0"], "heads.early_stopping_patience=0 must be at least 1 or null"),
    (["--heads.optimizer.lr", "0"], "heads.optimizer.lr=0.0 must be > 0"),
    (["--heads.optimizer.weight_decay", "-0.1"], "heads.optimizer.weight_decay=-0.1 must be at least 0"),
    (["--heads.infonce.tau", "0"], "heads.infonce.tau=0.0 must be > 0"),
    (["--heads.infonce.tau", "-0.5"], "heads.infonce.tau=-0.5 must be > 0"),
    (["--heads.simsiam.xi", "-0.1"], "heads.simsiam.xi=-0.1 must be at least 0"),
    (["--heads.simsiam.predictor_lr_scale", "0"], "heads.simsiam.predictor_lr_scale=0.0 must be > 0"),
    (["--heads.simsiam.regularizer", "l2"], "heads.simsiam.regularizer: 'l2' is not one of covariance, euclidean"),
    (["--heads.vicreg.sim_coeff", "-1"], "heads.vicreg.sim_coeff=-1.0 must be at least 0 (a loss weight)"),
    (["--heads.vicreg.std_coeff", "-0.5"], "heads.vicreg.std_coeff=-0.5 must be at least 0 (a loss weight)"),
    (["--heads.vicreg.cov_coeff", "-2"], "heads.vicreg.cov_coeff=-2.0 must be at least 0 (a loss weight)"),
    (["--heads.barlowtwins.lambda_off", "-0.01"], "heads.barlowtwins.lambda_off=-0.01 must be at least 0 (a loss weight)"),
    (["--heads.trainer.devices", "0"], "heads.trainer.devices=0 must be at least 1"),
    (["--heads.trainer.log_every_n_steps", "0"], "heads.trainer.log_every_n_steps=0 must be at least 1"),
    # score
    (["--score.kmeans.niter", "0"], "score.kmeans.niter=0 must be at least 1"),
    (["--score.kmeans.nredo", "0"], "score.kmeans.nredo=0 must be at least 1"),
    (["--score.kmeans.max_points_per_centroid", "0"], "score.kmeans.max_points_per_centroid=0 must be at least 1 or null"),
    (["--score.probe.l2_grid", "[]"], "score.probe.l2_grid=[] must be a non-empty list of L2 strengths > 0"),
    (["--score.probe.l2_grid", "[0.01,0]"], "score.probe.l2_grid[1]=0.0 must be > 0"),
    (["--score.probe.l2_grid", "[-0.01]"], "score.probe.l2_grid[0]=-0.01 must be > 0"),
    (["--score.probe.max_iter", "0"], "score.probe.max_iter=0 must be at least 1"),
    (["--score.probe.tolerance", "0"], "score.probe.tolerance=0.0 must be > 0"),
    (["--score.probe.device", "gpu"], "score.probe.device='gpu' must be one of auto, cpu, mps, cuda, cuda:N"),
    (["--score.lda_shrinkage", "1.5"], "score.lda_shrinkage=1.5 must be in [0, 1] or null"),
    # check
    (["--check.pca_dim", "0"], "check.pca_dim=0 must be at least 1"),
    (["--check.surrogates", "1"], "check.surrogates=1 must be at least 2"),
    (["--check.shrinkage", "-0.1"], "check.shrinkage=-0.1 must be in [0, 1] or null"),
    (["--check.em_max_iter", "0"], "check.em_max_iter=0 must be at least 1"),
    (["--check.em_n_init", "0"], "check.em_n_init=0 must be at least 1"),
    (["--check.em_max_points", "0"], "check.em_max_points=0 must be at least 1 or null"),
    (["--check.repeats", "0"], "check.repeats=0 must be at least 1"),
    (["--check.alpha", "1"], "check.alpha=1.0 must be in (0, 1)"),
    (["--check.seed", "-1"], "check.seed=-1 must be at least 0"),
    # data
    (["--data.val_fraction", "0"], "data.val_fraction=0.0 must be in (0, 1)"),
    (["--data.val_fraction", "1"], "data.val_fraction=1.0 must be in (0, 1)"),
    (["--data.split_seed", "-1"], "data.split_seed=-1 must be at least 0"),
    (["--data.synthetic.k", "1"], "data.synthetic.k=1 must be at least 2"),
    (["--data.synthetic.d", "3"], "data.synthetic.d=3 must be at least data.synthetic.k=5"),
    (["--data.synthetic.n_train", "9"], "data.synthetic.n_train=9 must be at least 10 (2·k, k=5)"),
    (["--data.synthetic.n_val", "4"], "data.synthetic.n_val=4 must be at least 10"),
    (["--data.synthetic.n_test", "0"], "data.synthetic.n_test=0 must be at least 10"),
    (["--data.synthetic.separation", "0"], "data.synthetic.separation=0.0 must be > 0"),
    (["--data.synthetic.signal_std", "0"], "data.synthetic.signal_std=0.0 must be > 0"),
    (["--data.synthetic.nuisance_std", "-1"], "data.synthetic.nuisance_std=-1.0 must be > 0"),
    (["--data.synthetic.seed", "-1"], "data.synthetic.seed=-1 must be at least 0"),
    (["--data.synthetic.preset", "fisher_vs_means"],
     "data.synthetic.nuisance_std=5.0 must be at least 12.5 for the fisher_vs_means preset at k=5, separation=6"),
    (["--data.synthetic.preset", "fisher_vs_means", "--data.synthetic.nuisance_std", "15", "--data.synthetic.d", "11"],
     "data.synthetic.d=11 must be at least 3·(k − 1) = 12 for the fisher_vs_means preset"),
    (["--data.synthetic.quiet_dims", "-1"], "data.synthetic.quiet_dims=-1 must be at least 0"),
    (["--heads.trainer.precision", "bogus"],
     "heads.trainer.precision='bogus' must be one of 32-true, bf16-mixed, bf16-true, 16-mixed, 16-true, 64-true"),
    (["--data.synthetic.quiet_std", "3"],
     "data.synthetic.quiet_std=3.0 must be in (0.158, 2.14) for the pancakes preset: below √(smallest eigenvalue"),
    (["--data.synthetic.quiet_std", "0.1"], "data.synthetic.quiet_std=0.1 must be in (0.158, 2.14)"),
    (["--data.synthetic.preset", "spectrum", "--data.synthetic.alpha", "0"], "data.synthetic.alpha=0.0 must be > 0"),
    (["--data.synthetic.preset", "spectrum", "--data.synthetic.k", "10", "--data.synthetic.d", "8",
      "--heads.r", "4", "--data.synthetic.quiet_dims", "0"],
     "data.synthetic.d=8 must be at least data.synthetic.k − 1 = 9 for the spectrum preset"),
    # top level
    (["--seeds", "0,-1"], "seeds[1]=-1 must be at least 0"),
    (["--seeds", "[]"], "seeds is empty"),
    (["--deltas", "1,1.5"], "delta=1.5 is outside [0, 1]"),
]

IMAGES_CASES = [
    (["--data.dataset.test_fraction", "0"], "data.dataset.test_fraction=0.0 must be in (0, 1)"),
    (["--data.backbone.image_size", "4"], "data.backbone.image_size=4 must be at least 8 or null"),
    (["--data.backbone.device", "tpu"], "data.backbone.device='tpu' must be one of auto, cpu, mps, cuda, cuda:N"),
    (["--data.backbone.device", "cuda:x"], "data.backbone.device='cuda:x' must be one of"),
    (["--data.backbone.prompts", "[a photo]"], "data.backbone.prompts=['a photo'] must be non-empty templates with a {}"),
    (["--data.backbone.name", "resnet50"], "data.backbone.name='resnet50' must be efficientnet_lite0"),
    (["--data.extract.batch_size", "0"], "data.extract.batch_size=0 must be at least 1"),
    (["--data.extract.shard_size", "0"], "data.extract.shard_size=0 must be at least 1"),
    (["--data.extract.num_workers", "-2"], "data.extract.num_workers=-2 must be at least -1"),
]


@pytest.fixture
def nothing_runs(monkeypatch):
    """A refused config never reaches a command: running one fails the test."""
    monkeypatch.setattr(cli, "run_command", lambda *args, **kwargs: pytest.fail("the command ran"))


def refusal(capsys, argv: list[str]) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("ssl-pipeline: error: ") and "Traceback" not in err, err
    return err.removeprefix("ssl-pipeline: error: ")


@pytest.mark.parametrize(("override", "message"), SYNTHETIC_CASES, ids=[case[1].split("=")[0] for case in SYNTHETIC_CASES])
def test_out_of_range_field_is_refused_in_one_line_naming_it(capsys, nothing_runs, override, message):
    assert refusal(capsys, [*PANCAKES, *override]).startswith(message)


@pytest.mark.parametrize(("override", "message"), IMAGES_CASES, ids=[case[1].split("=")[0] for case in IMAGES_CASES])
def test_out_of_range_image_setting_is_refused_in_one_line_naming_it(capsys, nothing_runs, override, message):
    assert refusal(capsys, [*DIGITS, *override]).startswith(message)


def test_npz_source_without_a_path_is_refused(capsys, nothing_runs):
    err = refusal(capsys, [*PANCAKES, "--data.source", "npz"])
    assert err == "data.source is 'npz' but data.path is not set; give --data.path FILE.npz"


def test_sections_of_an_unused_data_source_are_not_checked(capsys, monkeypatch):
    monkeypatch.setattr(cli, "run_command", lambda *args, **kwargs: 0)
    assert cli.main([*PANCAKES, "--data.extract.batch_size", "0", "--data.dataset.test_fraction", "2"]) == 0
    assert cli.main([*DIGITS, "--data.synthetic.k", "1"]) == 0


def test_choices_are_checked_for_configs_built_in_code():
    cfg = ExperimentConfig(heads=HeadsConfig(methods=["infonce", "byol"]))
    with pytest.raises(ConfigError, match=r"^heads.methods\[1\]='byol' must be one of infonce, simsiam, spectral_contrastive, vicreg, barlowtwins, clip, supervised$"):
        validate_experiment(cfg)
    cfg = ExperimentConfig(heads=HeadsConfig(infonce=InfoNCEConfig(similarity="l2")))
    with pytest.raises(ConfigError, match=r"^heads.infonce.similarity='l2' must be one of cosine, dot$"):
        validate_experiment(cfg)


def test_a_per_delta_override_is_used_unless_it_is_none():
    heads = HeadsConfig(epochs=20, batch_size=256, optimizer=OptimizerConfig(lr=0.01), infonce=InfoNCEConfig(tau=0.1),
                        per_delta=[DeltaSetting(delta=0.5, tau=0.0, epochs=0, lr=0.0, batch_size=0)])
    zero = resolve_head_settings(heads, "infonce", 0.5, 0)  # refused by validation, but never taken for "unset"
    assert (zero.tau, zero.epochs, zero.lr, zero.batch_size) == (0.0, 0, 0.0, 0)
    default = resolve_head_settings(heads, "infonce", 1.0, 0)
    assert (default.tau, default.epochs, default.lr, default.batch_size) == (0.1, 20, 0.01, 256)
