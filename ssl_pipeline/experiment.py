"""The experiment commands on labelled features: ``fit`` heads → ``score`` heads and baselines → results.json
(``run`` and ``synthetic`` do both), with the table, the δ sweep figure and W&B logging.

Stages talk through artifacts in the run directory (``rundir``): ``config.yaml``, ``heads/<tag>.safetensors``
and ``results.json``; ``score`` can run alone on a directory that ``fit`` wrote. The features come from
``features.paired.load_run_features``, the heads from the fit stage (``fit_stage``), the scores from
``scoring.run``; this module runs them in order and prints the console report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from rich.console import Console

from ssl_pipeline.config import ExperimentConfig, require_r_within
from ssl_pipeline.errors import ConfigError
from ssl_pipeline.features.paired import load_run_features
from ssl_pipeline.fit_stage import check_devices, fit_heads
from ssl_pipeline.records.results import summary_table
from ssl_pipeline.reporting.wandb_logging import WandbRun, wandb_run
from ssl_pipeline.resume import check_resumable
from ssl_pipeline.rundir import HEADS_DIR, load_heads, resolve_run_dir, write_config
from ssl_pipeline.scoring.run import score_run


def report(
    records: list[dict], run_dir: Path, console: Console, title: Optional[str] = None,
    logger: Optional[WandbRun] = None, wide: bool = False,
) -> None:
    """Print the summary table (every metric with ``wide``) and plot the metrics against δ (``delta_sweep.png``);
    log both to W&B."""
    from ssl_pipeline.reporting.plots import plot_delta_sweep  # matplotlib
    from ssl_pipeline.reporting.views import plot_effective_delta, views_table
    from ssl_pipeline.scoring.views import view_rows

    table = summary_table(records, title or "results (mean ± std over seeds)", wide)
    if wide:  # every metric at its natural width: the terminal wraps long lines, but no number or header is folded
        from rich.measure import Measurement

        width, console_width = Measurement.get(console, console.options.update(width=100_000), table).maximum, console.width
        console.width = max(width, console_width)  # print() caps its width at the console's
        try:
            console.print(table, crop=False)
        finally:
            console.width = console_width
    else:
        console.print(table)
    figure = plot_delta_sweep(records, run_dir / "delta_sweep.png")
    figures = {"delta_sweep": figure}
    placed = view_rows(records)
    if placed:  # heads.pairs: views
        console.print(views_table(placed))
        figures["views"] = plot_effective_delta(placed, run_dir / "views.png")
    if logger is not None:
        logger.log_records(records)
        logger.log_figures(figures)
    console.print(f"wrote {run_dir / 'results.json'}, {run_dir / 'config.yaml'} and "
                  f"{' and '.join(str(path) for path in figures.values())}")


def run(
    command: str, cfg: ExperimentConfig, console: Console, wide: bool = False
) -> tuple[Optional[list[dict]], Path]:
    """``fit`` (heads only), ``score`` (heads saved in the run dir), or ``run``/``synthetic`` (fit + score); the
    table shows every metric with ``wide``."""
    if command == "synthetic" and cfg.data.source != "synthetic":
        raise ConfigError(f"`synthetic` generates its data; data.source is {cfg.data.source!r} (use `run`)")
    if command == "score" and not cfg.run_dir:
        raise ConfigError("`score` needs --run_dir, the directory where `fit` saved the heads")
    sizes = cfg.data.train_per_class
    if isinstance(sizes, (list, tuple)):
        return run_train_sizes(command, cfg, console, wide, list(sizes))
    check_devices(cfg)
    features = load_run_features(cfg, console)
    require_r_within(cfg.heads, features.dim)
    if command == "score":
        # The heads are checked before anything is written: a refused score leaves the run's config.yaml
        # matching its heads and results.json.
        run_dir = Path(cfg.run_dir)
        heads = load_heads(cfg, run_dir, features)
    else:
        run_dir = resolve_run_dir(cfg)
        check_resumable(cfg, run_dir)
    write_config(cfg, run_dir)
    with wandb_run(cfg, command, run_dir) as logger:
        if command != "score":
            heads = fit_heads(cfg, features, run_dir, console, logger)
            if command == "fit":
                console.print(f"saved the heads in {run_dir / HEADS_DIR}")
                return None, run_dir
        records = score_run(cfg, features, heads, run_dir, console)
        title = f"{cfg.name}: {records[0]['dataset']} (mean ± std over {len(cfg.seeds)} seeds)"
        report(records, run_dir, console, title, logger, wide)
    return records, run_dir


def run_train_sizes(
    command: str, cfg: ExperimentConfig, console: Console, wide: bool, sizes: list[int]
) -> tuple[Optional[list[dict]], Path]:
    """``data.train_per_class`` as an axis of the run: ``run`` once per value n, each in
    ``<run_dir>/train_per_class<n>`` (its own config, heads, results and W&B run), then every record in
    ``<run_dir>/results.json`` (each names its ``train_per_class``) with one table and figure."""
    import dataclasses

    from ssl_pipeline.records.results import write_json_atomic

    run_dir = resolve_run_dir(cfg)
    write_config(cfg, run_dir)
    records: list[dict] = []
    for i, n in enumerate(sizes, 1):
        console.print(f"[bold]data.train_per_class = {n}[/bold] ({i} of {len(sizes)})")
        sized = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, train_per_class=n),
                                    run_dir=str(run_dir / f"train_per_class{n}"), name=f"{cfg.name}_n{n}")
        part, _ = run(command, sized, console, wide)
        records += part or []
    if command == "fit":
        return None, run_dir
    write_json_atomic(run_dir / "results.json", records)
    report(records, run_dir, console, f"{cfg.name}: train_per_class {', '.join(map(str, sizes))} (mean ± std over "
           f"{len(cfg.seeds)} seeds)", None, wide)
    return records, run_dir
