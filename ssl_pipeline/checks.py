"""``ssl-pipeline check``: how well the theory's tied-covariance GMM holds on these features, and how much it matters.

Stages (docs/theory.md, "GMM checks on real features"): every statistic of ``checking.statistics`` on the real
features and on ``check.surrogates`` datasets sampled from the fitted tied GMM (same class sizes), calibrated
into ``checks.json``; the config's heads (method × δ × seed) and baselines fitted and scored on the real data
and — with ``check.surrogate_heads`` — on every surrogate (``results.json`` records with ``data: surrogate``), so
every metric gets a surrogate gap; each head is also scored against the two LDA split-half subspaces.
Figures go to ``<run_dir>/checks/`` (the HTML report embeds them), the table to the console.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
from rich.console import Console
from rich.table import Table

from ssl_pipeline.config import ExperimentConfig
from ssl_pipeline.errors import ConfigError
from ssl_pipeline.features.source import load_features
from ssl_pipeline.heads.fitted import FittedHead
from ssl_pipeline.records.progress import progress_bar
from ssl_pipeline.rundir import head_jobs, head_path, resolve_run_dir, saved_heads, write_config
from ssl_pipeline.scoring.run import release_free_memory, score_run

GAP_METRICS = ("nmi", "probe_acc", "fisher_cos2", "fisher_top_cos2", "fisher_energy", "effective_rank")


def half_fit_records(heads: list[FittedHead], half_bases: tuple[np.ndarray, np.ndarray]) -> dict[tuple, float]:
    """Per (method, δ): mean over seeds and both halves of ``fisher_cos2`` to an LDA split-half subspace."""
    from ssl_pipeline.theory.subspaces import fisher_cos2

    scores: dict[tuple, list[float]] = {}
    for head in heads:
        weight = head.feature_space_weight()
        key = (head.settings.method, head.settings.delta)
        scores.setdefault(key, []).extend(fisher_cos2(weight, basis) for basis in half_bases)
    return {key: float(np.mean(values)) for key, values in scores.items()}


def any_saved(cfg: ExperimentConfig, where: Path) -> bool:
    """Whether ``where`` holds any head the config asks for (``rundir.saved_heads`` then loads and checks them)."""
    return any(head_path(where, settings.tag).is_file() for settings in head_jobs(cfg))


def metric_means(records: list[dict]) -> dict[tuple, float]:
    """Per (method, δ, metric): the mean over seeds of one dataset's records."""
    values: dict[tuple, list[float]] = {}
    for record in records:
        for metric in GAP_METRICS:
            if record.get(metric) is not None:
                values.setdefault((record["method"], record["delta"], metric), []).append(record[metric])
    return {key: float(np.mean(v)) for key, v in values.items()}


def gap_records(real: dict[tuple, float], surrogates: list[dict[tuple, float]], statistic: Optional[str] = None) -> list[dict]:
    """checks.json records for per-(method, δ[, metric]) values: real, surrogate mean ± std, gap."""
    from ssl_pipeline.checking.calibration import calibrated_record

    return [
        {**calibrated_record(statistic or key[2], None, value, [s[key] for s in surrogates if key in s]),
         "method": key[0], "delta": key[1]}
        for key, value in real.items()
    ]


def run_check(cfg: ExperimentConfig, console: Console) -> tuple[list[dict], Path]:
    """Run every check; write ``checks.json``, ``results.json`` (real + surrogate records), ``checks/*.png``."""
    from ssl_pipeline.checking.calibration import calibrate
    from ssl_pipeline.checking.surrogate import sample_surrogate
    from ssl_pipeline.fit_stage import check_devices
    from ssl_pipeline.reporting.wandb_logging import wandb_run

    check_devices(cfg)
    features, checked = checked_features(cfg, console)
    run_dir = resolve_run_dir(cfg)

    def dataset(i: int):
        """0: the (checked rows of the) real features; i ≥ 1: surrogate i, drawn when asked (deterministic per seed:
        one surrogate is held at a time)."""
        if i == 0:
            return features
        return sample_surrogate(checked, cfg.check.shrinkage, cfg.check.seed + i)

    count = 1 + cfg.check.surrogates
    head_runs = list(range(count)) if cfg.check.surrogate_heads else [0]
    head_dirs = [run_dir if i == 0 else run_dir / "surrogates" / f"s{i}" for i in head_runs]
    # Heads saved by an earlier fit/run/check are checked as `score` checks them, before anything is written:
    # heads fitted on other features or with other settings are refused, never fitted over.
    # (a surrogate is drawn for this only where its directory holds heads)
    saved = [saved_heads(cfg, where, dataset(i)) if any_saved(cfg, where) else None
             for where, i in zip(head_dirs, head_runs)]
    write_config(cfg, run_dir)
    with wandb_run(cfg, "check", run_dir) as logger:
        results = gmm_statistics(cfg, [checked] + [None] * cfg.check.surrogates, dataset, console)
        statistics = calibrate(results[0], results[1:], cfg.check)
        all_records, halves, means = [], [], []
        for i, where, heads in zip(head_runs, head_dirs, saved):
            scored, heads = heads_and_scores(cfg, dataset(i), where, heads, console, logger if i == 0 else None,
                                             "real features" if i == 0 else f"surrogate {i}")
            all_records += scored
            halves.append(half_fit_records(heads, results[i].lda_half_bases))
            means.append(metric_means(scored))
        records = list(statistics)
        records += gap_records(halves[0], halves[1:], "fisher_cos2_vs_lda_halves")
        records += gap_records(means[0], means[1:])
        write_outputs(run_dir, records, all_records, statistics, results, console, logger)
    return records, run_dir


def checked_features(cfg: ExperimentConfig, console: Console):
    """(the config's features, the rows the GMM checks and surrogates use): the features themselves, or a seeded
    stratified subsample of at most ``checking.statistics.MAX_CHECK_ROWS`` rows per split at scale (announced;
    surrogate heads are refused there, their comparison would not be calibrated)."""
    from ssl_pipeline.checking.statistics import MAX_CHECK_ROWS, check_sample

    features = load_features(cfg.data, console)
    if cfg.check.pca_dim >= features.dim:
        raise ConfigError(f"check.pca_dim={cfg.check.pca_dim} must be below the feature dimension d={features.dim}")
    checked = check_sample(features, cfg.check.seed)
    if checked is not features:
        sizes = ", ".join(f"{split} {len(getattr(checked, f'y_{split}'))} of {n}"
                          for split, n in checked.sampled_from.items())
        if cfg.check.surrogate_heads:
            raise ConfigError(
                f"check.surrogate_heads=true compares heads fitted on all {len(features.y_train)} real training rows "
                f"with heads fitted on surrogates of the checks' {MAX_CHECK_ROWS}-row subsample, which is not "
                "calibrated; set check.surrogate_heads=false at this scale")
        console.print(f"GMM checks and surrogates on a seeded stratified subsample ({sizes} rows)")
    return features, checked


def gmm_statistics(cfg: ExperimentConfig, given: list, dataset, console: Console) -> list:
    """``checking.statistics.run_checks`` on every dataset: ``given[i]`` where not None, else ``dataset(i)``
    (surrogates are drawn one at a time and freed)."""
    from ssl_pipeline.checking.statistics import run_checks

    results = []
    with progress_bar(console, "dataset") as progress:
        task = progress.add_task("GMM checks", total=len(given), current="")
        for i, data in enumerate(given):
            progress.update(task, current="real" if i == 0 else f"surrogate {i}")
            results.append(run_checks(data if data is not None else dataset(i), cfg.check, cfg.score.lda_shrinkage))
            release_free_memory()  # a surrogate and EM's [n, K] arrays, freed but kept by the tuned allocator
            progress.advance(task)
    return results


def heads_and_scores(cfg: ExperimentConfig, data, where: Path, heads: Optional[list[FittedHead]], console: Console,
                     logger, name: str) -> tuple[list[dict], list[FittedHead]]:
    """The config's heads on one dataset (``heads``: saved ones, else fitted in ``where``) and the records of their
    scores with the baselines'."""
    from ssl_pipeline.fit_stage import fit_heads

    where.mkdir(parents=True, exist_ok=True)
    console.print(f"heads and scores on the {name}")
    if heads is None:
        heads = fit_heads(cfg, data, where, console, logger)
    return score_run(cfg, data, heads, where, console), heads


def write_outputs(run_dir: Path, records: list[dict], all_records: list[dict], statistics: list[dict], results: list,
                  console: Console, logger) -> None:
    """``results.json``, ``checks.json``, the figures (``checks/*.png``, ``delta_sweep.png``), the two console
    tables, and the W&B logs."""
    from ssl_pipeline.records.results import write_json_atomic
    from ssl_pipeline.reporting.check_plots import save_check_figures
    from ssl_pipeline.reporting.plots import plot_delta_sweep

    write_json_atomic(run_dir / "results.json", all_records)
    write_json_atomic(run_dir / "checks.json", records)
    figures = save_check_figures(results[0], results[1:], run_dir / "checks")
    real_records = [r for r in all_records if r["data"] != "surrogate"]
    figures["delta_sweep"] = plot_delta_sweep(real_records, run_dir / "delta_sweep.png")
    console.print(check_table(statistics, results[0]))
    console.print(gap_table(records))
    if logger is not None:
        logger.log_records(all_records)
        logger.log_metrics({f"check/{r['statistic']}": r["real"] for r in statistics if r["class"] is None})
        logger.log_metrics({f"check/{r['statistic']}_gap": r["gap"] for r in statistics if r["class"] is None})
        logger.log_figures(figures)
    console.print(f"wrote {run_dir / 'checks.json'}, {run_dir / 'results.json'} and {run_dir / 'checks'}/")


def _cell(value) -> str:
    return "–" if value is None else f"{value:.3g}"


def check_table(records: list[dict], real) -> Table:
    """The one-number statistics: real, surrogate mean ± std, gap (and Holm rejections for Gaussianity)."""
    table = Table(title=f"GMM checks (PCA {real.pca_dim} dims; surrogate = fitted tied GMM)", header_style="bold")
    for column in ("statistic", "real", "surrogate", "gap"):
        table.add_column(column, justify="left" if column == "statistic" else "right")
    for record in records:
        if record["class"] is None and record.get("method") is None:
            surrogate = f"{_cell(record['surrogate_mean'])} ± {_cell(record['surrogate_std'])}"
            table.add_row(record["statistic"], _cell(record["real"]), surrogate, _cell(record["gap"]))
    return table


def gap_table(records: list[dict]) -> Table:
    """Per head and δ: the surrogate gap of every metric, with the LDA split-half agreement beside fisher_cos2."""
    rows = [r for r in records if r.get("method") is not None]
    split_half = next((r for r in records if r["statistic"] == "lda_split_half_cos2"), None)
    title = "surrogate gap (real − surrogate mean)"
    if split_half is not None:
        title += f"; LDA split-half agreement {split_half['real']:.3f} (surrogate {split_half['surrogate_mean']:.3f})"
    table = Table(title=title, header_style="bold")
    for column in ("method", "δ", "statistic", "real", "surrogate", "gap"):
        table.add_column(column, justify="left" if column in ("method", "statistic") else "right")
    for r in sorted(rows, key=lambda r: (r["method"], -(r["delta"] if r["delta"] is not None else 2), r["statistic"])):
        delta = "" if r["delta"] is None else f"{r['delta']:g}"
        surrogate = f"{_cell(r['surrogate_mean'])} ± {_cell(r['surrogate_std'])}"
        table.add_row(r["method"], delta, r["statistic"], _cell(r["real"]), surrogate, _cell(r["gap"]))
    return table
