"""The ``ssl-pipeline`` command: ``run | extract | fit | score | synthetic | check | report | cache``.

Every sub-command takes the same experiment config (``--config FILE.yaml``, dotted overrides such as
``--heads.r 8``, ``--print_config``). Each command's modules (and with them rich, numpy, torch, …) are
imported only inside it, so ``--help`` and config errors answer at once. User errors print one line and exit 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
import typing
from pathlib import Path
from typing import Optional, Sequence

import yaml
from jsonargparse import ActionConfigFile, ArgumentParser, set_parsing_settings

from ssl_pipeline.allocator import configure_malloc
from ssl_pipeline.blas import configure_blas_threads
from ssl_pipeline.config import ExperimentConfig, WandbConfig, validate_experiment
from ssl_pipeline.errors import ConfigError, PipelineError

COMMANDS = {
    "run": "extract (or reuse cached) features → fit heads → score heads and baselines (e.g. configs/default.yaml)",
    "extract": "encode a dataset's train/test images with a frozen backbone into the feature cache (data.source: images)",
    "fit": "fit linear heads (every method × δ × seed) on a labelled feature source; saves them in the run dir",
    "score": "score the heads saved in --run_dir and the baselines; writes results.json and prints the table",
    "synthetic": "fit + score on a generated Gaussian mixture (e.g. configs/synthetic/pancakes.yaml)",
    "check": "GMM checks: how well a tied-covariance Gaussian mixture fits the features, calibrated against "
             "surrogates sampled from it, and the surrogate gap of every head metric → checks.json",
}
REPORT_HELP = "a static, self-contained HTML comparison of many runs (tables + figures), e.g. --runs 'runs/*' --out report/"
CACHE_COMMANDS = {
    "list": "list cache entries (complete and partial) with dataset, split, backbone, shape and size",
    "verify": "recompute the checksums of complete entries (all, or the KEYS given)",
    "clean": "remove entries (the KEYS given, all partial ones with --partial, or all)",
}
LIST_OPTIONS = ("--deltas", "--seeds")
AXIS_OPTIONS = ("--heads.r", "--heads.infonce.tau", "--heads.simsiam.xi", "--heads.optimizer.lr")
"""Sweep axes: a scalar stays a scalar (``--heads.r 4``), comma-separated values become a list (``--heads.r 4,8``)."""
TABLE_COMMANDS = ("run", "score", "synthetic")
INTERNAL_FIELDS = ("provenance",)
WIDE_HELP = "print every metric in the results table (default: nmi, probe_acc, fisher_cos2, effective_rank, which fit 80 columns)"
DESCRIPTION = (
    "Test why self-supervised learning works: fit linear InfoNCE/SimSiam heads on δ-pairs of labelled features and "
    "score them against the Fisher (LDA) subspace and the LDA/PCA/random/raw baselines. "
    "Every command takes --config FILE.yaml, dotted overrides (--heads.r 8) and --print_config."
)


def build_parser(command: Optional[str] = None):
    """The parser of every command. Only the experiment command ``command`` (the one being run) gets the config's
    options: their help is read from the attribute docstrings of the config dataclasses, about 0.15 s a
    sub-parser, and the other sub-parsers are never used."""
    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    parser = ArgumentParser(prog="ssl-pipeline", description=DESCRIPTION, exit_on_error=False)
    subcommands = parser.add_subcommands(dest="command", required=True)
    for name, help_text in COMMANDS.items():
        sub = ArgumentParser(description=help_text, exit_on_error=False)
        if name == command:
            sub.add_argument("--config", action=ActionConfigFile, help="YAML experiment config")
            sub.add_class_arguments(ExperimentConfig, None, fail_untyped=True, sub_configs=True)
            for action in sub._actions:
                if action.dest in INTERNAL_FIELDS:
                    action.help = argparse.SUPPRESS  # accepted (a run's config.yaml is a valid --config), not shown
            if name in TABLE_COMMANDS:
                sub.add_argument("--wide", action="store_true", default=argparse.SUPPRESS, help=WIDE_HELP)
        subcommands.add_subcommand(name, sub, help=help_text)
    report = ArgumentParser(description=REPORT_HELP, exit_on_error=False)
    report.add_argument("--runs", nargs="+", default=["runs/*"], help="run directories or glob patterns (quote them)")
    report.add_argument("--out", default="report", help="output directory for index.html and figures/")
    report.add_argument("--title", default=None, help="page title")
    report.add_argument("--wandb_report", "--wandb-report", action="store_true",
                        help="also build a W&B Report over the project's runs (saved when wandb.mode=online)")
    report.add_class_arguments(WandbConfig, "wandb")
    subcommands.add_subcommand("report", report, help=REPORT_HELP)
    cache = ArgumentParser(description="inspect and maintain the feature cache", exit_on_error=False)
    subcommands.add_subcommand("cache", cache, help="list | verify | clean the feature cache")
    cache_commands = cache.add_subcommands(dest="action", required=True)
    for name, help_text in CACHE_COMMANDS.items():
        sub = ArgumentParser(description=help_text, exit_on_error=False)
        sub.add_argument("--root", default="data/features", help="cache root (data.extract.cache_root)")
        if name != "list":
            sub.add_argument("key", nargs="*", default=[], help="cache keys (default: all)")
        if name == "clean":
            sub.add_argument("--partial", action="store_true", help="remove only partial (interrupted) entries")
        cache_commands.add_subcommand(name, sub, help=help_text)
    return parser


def bracket_lists(argv: Sequence[str]) -> list[str]:
    """Accept ``--deltas 1,0.5,0`` and ``--seeds 0`` as well as jsonargparse's ``--deltas [1,0.5,0]``, and
    ``--heads.r 4,8`` for ``--heads.r [4,8]`` (a sweep axis with one value stays a scalar)."""
    out = list(argv)
    for i, arg in enumerate(out):
        name, eq, value = arg.partition("=")
        if eq and not value.startswith("[") and (name in LIST_OPTIONS or (name in AXIS_OPTIONS and "," in value)):
            out[i] = f"{name}=[{value}]"
        elif (arg in LIST_OPTIONS or arg in AXIS_OPTIONS) and i + 1 < len(out):
            value = out[i + 1]
            if not value.startswith(("[", "--")) and (arg in LIST_OPTIONS or "," in value):
                out[i + 1] = f"[{value}]"
    return out


def _dataclass_at(path: str) -> Optional[type]:
    """The config dataclass at a dotted path ('' is ExperimentConfig), or None if the path is not a section."""
    cls: type = ExperimentConfig
    for part in [p for p in path.split(".") if p]:
        cls = typing.get_type_hints(cls).get(part)
        if cls is None or not dataclasses.is_dataclass(cls):
            return None
    return cls


def explain_parse_error(message: str) -> str:
    """One line from a jsonargparse error; unknown keys come with the valid keys of their section."""
    unknown = (
        re.search(r"Group '([\w.]+)' does not accept option '([\w.]+)'", message)
        or re.search(r"Subcommand \S+ does not accept option '()([\w.]+)'", message)
        or re.search(r"()Option '([\w.]+)' is not accepted", message)
        or re.search(r"unrecognized arguments: --()([\w.]+)", message)
    )
    if unknown:
        section, key = unknown.group(1), unknown.group(2)
        full = f"{section}.{key}" if section else key
        parent = full.rpartition(".")[0]
        cls = _dataclass_at(parent)
        valid = ", ".join(f.name for f in dataclasses.fields(cls)) if cls else "see --print_config"
        where = f"section '{parent}'" if parent else "the top level"
        return f"unknown config key '{full}'; valid keys in {where}: {valid}"
    choice = re.search(r'Parser key "([\w.]+)":\s*Expected a typing\.Literal\[(.+?)\]\. Got value: (.+)', message)
    if choice:
        options = choice.group(2).replace("'", "")
        return f"{choice.group(1)}: {choice.group(3).strip()!r} is not one of {options}"
    missing = re.search(r"File does not exist: '?([^'\n]+)'?", message)
    if missing:
        return f"config file {missing.group(1)} does not exist; give a path such as configs/synthetic/pancakes.yaml"
    return " ".join(line.strip() for line in message.splitlines() if line.strip())


def config_files(argv: Sequence[str]) -> list[str]:
    """The files named by ``--config`` and by section options (``--heads FILE.yaml``), in the order given."""
    files = []
    for i, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        key = name[2:] if name.startswith("--") else ""
        if key and (key == "config" or _dataclass_at(key) is not None):
            if eq:
                files.append(value)
            elif i + 1 < len(argv):
                files.append(argv[i + 1])
    return files


def invalid_yaml(argv: Sequence[str]) -> Optional[str]:
    """One line naming the first config file of ``argv`` that is not valid YAML, with the line and column of the
    problem; None if every one parses (jsonargparse's own message does not name the file)."""
    for file in config_files(argv):
        path = Path(file)
        if not path.is_file():
            continue
        try:
            yaml.safe_load(path.read_bytes().decode("utf-8"))
        except UnicodeDecodeError as error:
            return f"config file {path} is not UTF-8 text (byte {error.start}); give a YAML file"
        except yaml.MarkedYAMLError as error:
            mark, context = error.problem_mark, error.context_mark
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            during = f" ({error.context} at line {context.line + 1})" if error.context and context else ""
            return f"config file {path} is not valid YAML{where}: {error.problem}{during}"
        except yaml.YAMLError as error:
            return f"config file {path} is not valid YAML: {str(error).splitlines()[0]}"
    return None


def parse_command(argv: Sequence[str]):
    """Parse and validate; every problem becomes a ConfigError with one line. Returns (command, config, wide): the
    config of ``cache`` and ``report`` is its namespace, and ``wide`` whether ``--wide`` asked for every metric in
    the table."""
    parser = build_parser(next((arg for arg in argv if arg in COMMANDS), None))
    try:
        namespace = parser.parse_args(bracket_lists(argv))
        if namespace.command in ("cache", "report"):
            return namespace.command, namespace[namespace.command], False
        parsed = parser.instantiate_classes(namespace)[namespace.command]
    except (argparse.ArgumentError, UnicodeDecodeError) as error:
        raise ConfigError(invalid_yaml(argv) or explain_parse_error(str(error))) from None
    cfg = ExperimentConfig(**{f.name: getattr(parsed, f.name) for f in dataclasses.fields(ExperimentConfig)})
    validate_experiment(cfg)
    if namespace.command == "extract" and cfg.data.source != "images":
        raise ConfigError("`extract` encodes images; set data.source: images (see configs/default.yaml)")
    if namespace.command == "check" and (cfg.heads.pair_label or cfg.score.label or cfg.data.train_per_class):
        raise ConfigError("`check` fits and scores its heads on every training point by the data's primary label "
                          "(its surrogates carry no other); remove heads.pair_label, score.label and "
                          "data.train_per_class for the checks")
    if namespace.command == "check" and cfg.heads.pairs == "views":
        raise ConfigError("`check` fits its heads on the real features and on GMM surrogates, which have no augmented "
                          "views; use heads.pairs: delta (--heads.pairs delta) for the checks")
    return namespace.command, cfg, bool(getattr(parsed, "wide", False))


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        configure_malloc()  # before torch allocates: glibc keeps large freed blocks for reuse (SSL_PIPELINE_MALLOC=off)
        configure_blas_threads()  # before numpy loads OpenBLAS: idle threads sleep instead of spinning
        command, cfg, wide = parse_command(argv)
        return run_command(command, cfg, wide)
    except PipelineError as error:
        print(f"ssl-pipeline: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        detail = str(interrupt) or "finished artifacts are kept, partial ones were never written"
        print(f"ssl-pipeline: interrupted; {detail}", file=sys.stderr)
        return 130


def run_command(command: str, cfg, wide: bool = False) -> int:
    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 160)
    if command == "cache":
        return cache_command(cfg, console)
    if command == "report":
        return report_command(cfg, console)
    if command == "extract":
        from ssl_pipeline.features.source import extract_all
        from ssl_pipeline.reporting.wandb_logging import wandb_run

        with wandb_run(cfg, "extract", None) as logger:
            entries = extract_all(cfg.data, console, relaunch=True,  # only `extract` may be re-run whole
                                  views=cfg.heads.pairs == "views")
            if logger is not None:
                logger.log_metrics(extraction_metrics(entries))
        return 0
    if command == "check":
        from ssl_pipeline.checks import run_check

        run_check(cfg, console)
        return 0
    from ssl_pipeline import experiment

    experiment.run(command, cfg, console, wide)
    return 0


def extraction_metrics(entries: dict) -> dict:
    """Per cache entry: items, dimension, seconds and images/s of the extraction that wrote it."""
    metrics = {}
    for split, entry in entries.items():
        timing = entry.manifest.get("timing", {})
        metrics |= {f"extract/{split}/items": entry.manifest["num_items"], f"extract/{split}/dim": entry.manifest["dim"],
                    f"extract/{split}/seconds": timing.get("seconds"),
                    f"extract/{split}/images_per_second": timing.get("images_per_second")}
    return {k: v for k, v in metrics.items() if v is not None}


def report_command(args, console) -> int:
    """``report``: the HTML comparison of many runs (and, online, a W&B Report over the project's runs)."""
    from ssl_pipeline.reporting.html import build_report, resolve_runs
    from ssl_pipeline.reporting.wandb_logging import wandb_run

    run_dirs = resolve_runs(args.runs)
    wandb_cfg = WandbConfig(**{f.name: getattr(args.wandb, f.name) for f in dataclasses.fields(WandbConfig)})
    artifacts = build_report(run_dirs, Path(args.out), args.title)
    console.print(f"wrote {artifacts.html} ({len(run_dirs)} runs, {len(artifacts.figures)} figures)")
    with wandb_run(ExperimentConfig(name=args.title or "report", wandb=wandb_cfg), "report", Path(args.out)) as logger:
        if logger is not None:
            logger.log_figures(artifacts.figures)
    if args.wandb_report:
        from ssl_pipeline.reporting.wandb_report import build_wandb_report

        groups = sorted({yaml.safe_load((d / "config.yaml").read_text()).get("name", d.name) for d in run_dirs})
        online = (wandb_cfg.mode == "online") and os.environ.get("WANDB_MODE", "online") == "online"
        built = build_wandb_report(wandb_cfg.project, wandb_cfg.entity, groups, save=online)
        console.print(f"W&B Report {'saved: ' + str(getattr(built, 'url', '')) if online else 'built (offline: not saved)'}")
    return 0


def cache_command(args, console) -> int:
    """``cache list | verify | clean``; verify returns 1 when an entry is corrupt."""
    from ssl_pipeline.features.cache import FeatureCache
    from ssl_pipeline.features.tables import entries_table

    action = args.action
    sub = getattr(args, action)
    cache = FeatureCache(sub.root)
    if action == "list":
        console.print(entries_table(cache.entries()))
        return 0
    keys = sub.key or None
    if action == "verify":
        results = cache.verify(keys)
        for key, ok, message in results:
            console.print(f"{'ok ' if ok else '[red]BAD[/red]'} {key} {message}")
        bad = [key for key, ok, _ in results if not ok]
        console.print(f"{len(results) - len(bad)} of {len(results)} entries verified")
        return 1 if bad else 0
    removed = cache.clean(keys, partial_only=sub.partial)
    console.print(f"removed {len(removed)} entr{'y' if len(removed) == 1 else 'ies'}: {' '.join(removed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
