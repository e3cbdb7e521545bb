"""A static, self-contained HTML comparison of run directories (``ssl-pipeline report``).

One page (``index.html``, written atomically) that works offline from ``file://``: inline CSS, figures embedded
as base64 PNG, no script and no external URL. Per (dataset, backbone): a method × metric table with one row per
run and setting (mean ± std over that run's seeds, ``results.aggregate``) and the metrics against δ; then method
bars across backbones, the projection scatters of runs with ``projections.npz`` and the GMM checks of runs with
``checks.json`` / ``checks/*.png``. Every figure is also saved in ``figures/`` (for W&B), every table returned.
A group with records of paired data adds a section (``Two towers`` where it has CLIP heads): each CLIP tower's row
per run and δ with its energies, retrieval, zero-shot accuracy and logit scale, the other rows that carry energies
(unimodal heads on paired data, baselines) below, and energy_shared and retrieval_map against δ.

Repeated runs of one setting stay apart: they share seeds, so pooling them would count each seed twice and shrink
the std as if there were twice the seeds, while the spread between runs would go unseen.
"""

from __future__ import annotations

import base64
import glob
import html
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from matplotlib.figure import Figure

from ssl_pipeline.atomic import atomic_write_bytes
from ssl_pipeline.errors import DataError
from ssl_pipeline.reporting import figures
from ssl_pipeline.records.results import (
    AXIS_FIELDS,
    AXIS_SYMBOLS,
    _method_order,
    aggregate,
    axis_order,
    load_results,
    method_label,
    swept_fields,
)
from ssl_pipeline.scoring.projection_sample import load_projection_sample

FIGURE_METRICS = ("nmi", "probe_acc", "fisher_cos2", "means_cos2", "pca_cos2", "minor_cos2")
REPORT_METRICS = ("nmi", "ari", "acc", "probe_acc", "zeroshot_acc", "fisher_cos2", "fisher_energy", "means_cos2",
                  "pca_cos2", "minor_cos2", "optimum_cos2", "init_fisher_cos2", "effective_rank")
TOWER_METRICS = ("energy_shared", "energy_private", "energy_noise", "fisher_cos2", "retrieval_p1", "retrieval_p10",
                 "retrieval_map", "zeroshot_acc", "logit_scale")
"""The columns of the paired-data table (``Two towers``): where a tower's (or a unimodal subspace's) energy lies in
its modality's shared block, private subspace and noise block, and how well the towers retrieve across modalities."""
TOWER_FIGURE_METRICS = ("energy_shared", "retrieval_map")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1280px;padding:0 1rem;color:#222}
.scroll{overflow-x:auto;max-width:100%;margin:1rem 0}
table{border-collapse:collapse;font-size:.85rem}
th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:right;white-space:nowrap}
th{background:#f3f3f3;position:sticky;top:0}td:first-child,th:first-child{text-align:left}
td:first-child{position:sticky;left:0;background:#fff}th:first-child{left:0;z-index:1}
figure{display:block;margin:1.5rem 0}img{display:block;width:100%;max-width:100%;height:auto}
figcaption{font-size:.8rem;color:#555}.note{color:#a33}
"""
"""Tables scroll sideways inside the page (their method column stays in view); figures take the page's width."""


@dataclass
class ReportArtifacts:
    """The page, its figures as PNG files (by figure key) and its tables as flat rows (by table id)."""

    html: Path
    figures: dict[str, Path] = field(default_factory=dict)
    tables: dict[str, list[dict]] = field(default_factory=dict)


@dataclass
class Run:
    """A run directory's records, with the name and git commit its ``config.yaml`` gives ("–" without one) and
    the label its rows carry in the report (the directory name; ``run_labels``)."""

    path: Path
    records: list[dict]
    name: str
    commit: str
    label: str = ""

    def __post_init__(self) -> None:
        self.label = self.label or self.path.name


def run_labels(paths: list[Path]) -> list[str]:
    """The directory names of the runs, or as many trailing path parts as make them unique (``a/run``, ``b/run``)."""
    parts = [Path(path).parts for path in paths]
    for depth in range(1, max(map(len, parts), default=1) + 1):
        labels = ["/".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [str(path) for path in paths]


def resolve_runs(patterns: list[str]) -> list[Path]:
    """The run directories (those holding ``results.json``) that the glob patterns match, sorted, once each."""
    matches = (Path(m) for pattern in patterns for m in glob.glob(str(Path(pattern).expanduser()), recursive=True))
    runs = {match.resolve() for match in matches if (match / "results.json").is_file()}
    if not runs:
        raise DataError(
            f"no run directory matches {' '.join(patterns) or '(no pattern)'}; a run dir needs a results.json, "
            "e.g. from `ssl-pipeline run`"
        )
    return sorted(runs)


def load_run(path: Path) -> Run:
    """A run directory's records and its config (empty when ``config.yaml`` is missing); DataError if unreadable."""
    try:
        records = load_results(path / "results.json")
        config = yaml.safe_load((path / "config.yaml").read_text()) if (path / "config.yaml").is_file() else {}
    except (OSError, ValueError, yaml.YAMLError) as error:
        raise DataError(f"cannot read run {path} ({error}); re-run `ssl-pipeline score --run_dir {path}`") from error
    if not isinstance(records, list) or not all(isinstance(r, dict) and "method" in r for r in records):
        raise DataError(f"{path / 'results.json'} is not a list of result records; re-run `ssl-pipeline score`")
    config = config if isinstance(config, dict) else {}
    provenance = config.get("provenance") or {}
    return Run(path, records, str(config.get("name", "–")), str(provenance.get("git_commit", "–")))


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "-", text.lower()).strip("-") or "x"


def _cell(value: Any) -> str:
    if isinstance(value, tuple):
        mean, std = value
        return f'<td data-mean="{mean!r}" data-std="{std!r}">{mean:.3f} ± {std:.3f}</td>'
    if isinstance(value, float):
        value = f"{value:.4g}"
    return f"<td>{html.escape('–' if value is None else str(value))}</td>"


class Page:
    """The page under construction: HTML parts, figures written to ``out_dir/figures``, tables."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.parts: list[str] = []
        self.artifacts = ReportArtifacts(out_dir / "index.html")
        self.keys: set[str] = set()

    def key(self, text: str) -> str:
        """A stable, unique, file-name-safe id for ``text``."""
        base = key = _slug(text)
        index = 2
        while key in self.keys:
            key, index = f"{base}-{index}", index + 1
        self.keys.add(key)
        return key

    def png(self, key: str, data: bytes, caption: str) -> None:
        path = self.out_dir / "figures" / f"{key}.png"
        atomic_write_bytes(path, data)
        self.artifacts.figures[key] = path
        text = html.escape(caption)
        self.parts.append(
            f'<figure id="figure-{key}" data-figure="{key}"><img alt="{text}" '
            f'src="data:image/png;base64,{base64.b64encode(data).decode()}"><figcaption>{text}</figcaption></figure>'
        )

    def figure(self, key: str, figure: Figure, caption: str) -> None:
        self.png(key, figures.png_bytes(figure), caption)

    def table(self, key: str, header: list[str], rows: list[list[Any]], flat: list[dict]) -> None:
        self.artifacts.tables[key] = flat
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
        self.parts.append(
            f'<div class="scroll"><table id="{key}" data-table="{key}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>"
        )

    def text(self, markup: str) -> None:
        self.parts.append(markup)


def backbone_name(identity: str) -> str:
    """A backbone's name for people: ``efficientnet_lite0 (packaged)``, ``resnet50 (torchvision, IMAGENET1K_V2)``,
    ``ViT-B-32 (open_clip, laion2b_s34b_b79k)``, ``resnet50 (torchvision, local weights)`` for a checkpoint file
    (its hash stays in the runs table); an identity of another form is shown whole."""
    kind, _, rest = identity.partition(":")
    name, _, tag = rest.rpartition(":")
    if not (kind and name and tag):
        return identity
    if tag.startswith("file-sha256="):
        return f"{name} ({kind})" if kind == "packaged" else f"{name} ({kind}, local weights)"
    return f"{name} ({kind}, {tag})"


def backbone_names(identities: set[str]) -> dict[str, str]:
    """``backbone_name`` of each identity, with the weights hash's first 8 characters added where two identities
    would share a name (two checkpoints of one model)."""
    names = {identity: backbone_name(identity) for identity in identities}
    shared = {name for name in names.values() if list(names.values()).count(name) > 1}
    return {identity: f"{name} [{identity.rpartition('=')[2][:8] or identity.rpartition(':')[2]}]" if name in shared
            else name for identity, name in names.items()}


def _group_key(record: dict) -> tuple:
    """What a report section groups by: dataset, backbone identity, and real data or surrogates."""
    return (str(record.get("dataset")), record.get("backbone") or "", record.get("data") == "surrogate")


def _group_label(key: tuple, names: dict[str, str]) -> str:
    dataset, backbone, surrogate = key
    label = f"{dataset} / {names[backbone]}" if backbone else dataset
    return label + " — surrogate (tied GMM fitted to it)" if surrogate else label


def _pooled_surrogates(record: dict) -> dict:
    """Surrogate records of ``check`` differ only in their features key (one per surrogate draw): pool them, so
    each setting's mean ± std runs over surrogates × seeds."""
    if record.get("data") != "surrogate":
        return record
    return {**record, "features": "surrogates"}


def _runs_table(page: Page, runs: list[Run]) -> None:
    """One row per run: directory, config name, datasets, backbones (their full identities, weights hash
    included: the sections name them by ``backbone_name``), git commit, number of records."""
    header = ["run", "name", "dataset", "backbone", "git commit", "records"]
    listing = []
    for run in runs:
        groups = sorted({(str(r.get("dataset")), str(r.get("backbone") or "–")) for r in run.records})
        datasets, backbones = (", ".join(dict.fromkeys(g[i] for g in groups)) for i in (0, 1))
        listing.append([run.label, run.name, datasets, backbones, run.commit, len(run.records)])
    page.table("runs", header, listing, [dict(zip(header, row)) for row in listing])


def _per_run_rows(members: list[tuple[Run, dict]]) -> list[dict]:
    """``aggregate`` of each run's records on its own, every row labelled with its ``run``; ordered by method and
    δ, then by run in the order given, then by the sweep axes' values."""
    by_run: dict[str, list[dict]] = {}
    for run, record in members:
        by_run.setdefault(run.label, []).append(record)
    order = {label: index for index, label in enumerate(by_run)}
    rows = [{**row, "run": label} for label, records in by_run.items() for row in aggregate(records)]
    return sorted(rows, key=lambda row: (*_method_order(row), order[row["run"]], row.get("tower") or 0,
                                         axis_order(row, AXIS_FIELDS)))


def _metric_table(page: Page, key: str, rows: list[dict], fields: list[str], headers: list[str],
                  metrics: tuple[str, ...]) -> None:
    """A table of aggregate rows: the setting ``fields`` (``method`` as ``method_label`` names it, so a CLIP head's
    towers are rows apart) under ``headers``, then one mean ± std column per metric; its flat rows hold the
    fields and ``{metric}_mean`` / ``{metric}_std``."""
    table_rows, flat = [], []
    for row in rows:
        settings = [method_label(row) if name == "method" else row[name] for name in fields]
        table_rows.append([*settings, *(row.get(m) for m in metrics)])
        flat.append(dict(zip(fields, settings)))
        for metric in metrics:
            flat[-1][f"{metric}_mean"], flat[-1][f"{metric}_std"] = row.get(metric) or (None, None)
    page.table(key, [*headers, *metrics], table_rows, flat)


def _paired_section(page: Page, slug: str, label: str, rows: list[dict]) -> None:
    """``Two towers`` (or, without CLIP heads, ``Energies on paired data``): the rows of each CLIP tower (one per
    run, δ and tower), then the other rows with energies (unimodal heads on paired data, baselines), with
    ``TOWER_METRICS``; and ``TOWER_FIGURE_METRICS`` against δ. Nothing for a group without energies or towers."""
    towers = [row for row in rows if row.get("tower") is not None]
    others = [row for row in rows if row.get("tower") is None and row.get("energy_shared") is not None]
    if not towers and not others:
        return
    title = "Two towers" if towers else "Energies on paired data"
    retrieval = ("; class-level cross-modal retrieval of each tower's test items among the other modality's and "
                 "the zero-shot accuracy of tower 1 with tower 2's class prototypes") if towers else ""
    page.text(f'<section id="paired-{slug}"><h3>{title}</h3><p>The share of each subspace\'s energy in its '
              "modality's shared block, private subspace and noise block (they sum to 1; unimodal heads and "
              f"baselines in modality 1){retrieval}. Mean ± std over seeds.</p>")
    fields = ["method", "delta", "tower", "target", "r", "seeds", "run"]
    _metric_table(page, f"towers-{slug}", towers + others, fields,
                  ["method", "δ", "tower", "target", "r", "n seeds", "run"], TOWER_METRICS)
    _delta_figures(page, slug, label, rows, TOWER_FIGURE_METRICS, "each tower and head as mean ± std over seeds; "
                   "baselines as lines")
    page.text("</section>")


def _delta_figures(page: Page, slug: str, label: str, rows: list[dict], metrics: tuple[str, ...], legend: str) -> None:
    """A metric-vs-δ figure per metric that some head has (``figures.has_head_curve``), its caption ending in
    ``legend``."""
    for metric in metrics:
        if figures.has_head_curve(rows, metric):
            page.figure(
                page.key(f"{slug}-{metric}-vs-delta"), figures.metric_vs_delta(rows, metric, f"{metric} against δ"),
                f"{metric} against δ on {label}: {legend}",
            )


def _group_section(page: Page, label: str, members: list[tuple[Run, dict]]) -> list[dict]:
    """Table and metric-vs-δ figures of one (dataset, backbone), with the paired-data section where its records
    have energies (``_paired_section``); returns its aggregate rows (one per run and setting). The table has a
    column for r and one for each of the sweep axes τ, ξ, lr that some method of the group sweeps (several values
    at one δ of one run)."""
    rows = _per_run_rows(members)
    slug = page.key(label)
    page.text(f'<section id="group-{slug}"><h2>{html.escape(label)}</h2>')
    swept = {name for names in swept_fields(rows).values() for name in names}
    axes = ["r", *(name for name in ("tau", "xi", "lr") if name in swept)]
    header = ["method", "δ", *(AXIS_SYMBOLS[name] for name in axes), "n seeds", "run"]
    _metric_table(page, f"table-{slug}", rows, ["method", "delta", *axes, "seeds", "run"], header, REPORT_METRICS)
    _paired_section(page, slug, label, rows)
    _delta_figures(page, slug, label, rows, FIGURE_METRICS,
                   "heads as mean ± std over seeds; LDA (solid black), PCA, random as lines")
    _views_section(page, slug, label, members)
    _labels_section(page, slug, label, rows)
    page.text("</section>")
    return rows


def _labels_section(page: Page, slug: str, label: str, rows: list[dict]) -> None:
    """On data with several labels: each head's and baseline's weight in every label's Fisher subspace
    (``label_energy_<label>``) and, for one-hidden-layer heads, the probe of the hidden layer on every label
    (``hidden_probe_<label>``), mean ± std over seeds, with a bar figure per metric."""
    from ssl_pipeline.records.results import LABELLED_METRICS, labelled_metric

    metrics = sorted({k for row in rows for k, v in row.items() if labelled_metric(k) and v is not None},
                     key=lambda k: (LABELLED_METRICS.index(labelled_metric(k)), k))
    if not metrics:
        return
    shown = [row for row in rows if any(row.get(k) is not None for k in metrics)]
    page.text(f"<h3>What the pairs taught about every label ({html.escape(label)})</h3>"
              "<p>label_energy_&lt;l&gt;: share of the head's weight (a one-hidden-layer head's first layer) in label "
              "l's Fisher subspace; beyond_energy_&lt;l&gt;: the same outside the score label's; "
              "hidden_probe_&lt;l&gt;: linear probe on l from the hidden layer (init_: from the untrained one).</p>")
    _metric_table(page, f"table-{slug}-labels", shown, ["method", "delta", "run"], ["method", "δ", "run"],
                  tuple(metrics))
    for name, prefixes in (("label_energy", ("label_energy_", "beyond_energy_")),
                           ("hidden_probe", ("hidden_probe_", "init_hidden_probe_"))):
        chosen = [k for k in metrics if k.startswith(prefixes)]
        if chosen:
            key = page.key(f"{slug}-{name}")
            page.figure(key, figures.label_bars(shown, chosen),
                        f"{label}: {' and '.join(p.rstrip('_') for p in prefixes)} per label (mean ± std over seeds)")


def _views_section(page: Page, slug: str, label: str, members: list[tuple[Run, dict]]) -> None:
    """Per run with view pairs (``heads.pairs: views``): the recipes side by side (``reporting.views``: NMI,
    effective δ, the recipe's closed form and pair statistics) and each method's δ curve with the recipes' heads
    placed on it."""
    from ssl_pipeline.reporting.views import VIEW_COLUMNS, view_table_rows
    from ssl_pipeline.scoring.views import view_rows

    by_run: dict[str, list[dict]] = {}
    for run, record in members:
        by_run.setdefault(run.label, []).append(record)
    for run_label, records in by_run.items():
        placed = view_rows(records)
        if not placed:
            continue
        rows = view_table_rows(placed)
        key = page.key(f"{slug}-views-{run_label}")
        page.text(f"<h3>Augmentation recipes on the δ axis ({html.escape(run_label)})</h3>")
        page.table(f"table-{key}", ["run", *VIEW_COLUMNS], [[run_label, *row] for row in rows],
                   [dict(zip(["run", *VIEW_COLUMNS], [run_label, *row])) for row in rows])
        page.figure(key, figures.effective_delta_figure(placed),
                    f"{label}, {run_label}: each method's δ-pair NMI curve (mean over seeds) and its view-pair heads "
                    "at their effective δ (▼/▲: below/above the curve)")


def _flat_records(payload: Any) -> bool:
    scalar = (str, int, float, bool, type(None))
    return isinstance(payload, list) and all(
        isinstance(item, dict) and all(isinstance(v, scalar) for v in item.values()) for item in payload
    )


def _checks_section(page: Page, run: Run) -> None:
    """The GMM checks of a run: ``checks.json`` as a table (when a list of flat records), every ``checks/*.png``."""
    page.text(f"<h3>{html.escape(run.label)}</h3>")
    slug = _slug(run.label)
    path = run.path / "checks.json"
    if path.is_file():
        try:
            checks = json.loads(path.read_text())
        except ValueError:
            checks = None
        if not _flat_records(checks):
            page.text(f'<p class="note">{html.escape(str(path))} is not a list of flat records; not shown</p>')
        elif checks:
            columns = list(dict.fromkeys(k for check in checks for k in check))
            page.table(page.key(f"checks-{slug}"), columns, [[c.get(k) for k in columns] for c in checks], checks)
    for png in sorted((run.path / "checks").rglob("*.png")):
        data = png.read_bytes()
        if data.startswith(PNG_MAGIC):
            page.png(page.key(f"checks-{slug}-{png.stem}"), data, png.name)
        else:
            page.text(f'<p class="note">{html.escape(str(png))} is not a PNG image; not shown</p>')


def build_report(run_dirs: list[Path], out_dir: Path, title: str | None = None) -> ReportArtifacts:
    """Write ``out_dir/index.html`` (and ``out_dir/figures/*.png``) comparing the runs; see the module docstring."""
    runs = [load_run(Path(path)) for path in run_dirs]
    for run, label in zip(runs, run_labels([run.path for run in runs])):
        run.label = label
    title = title or f"ssl_pipeline report: {len(runs)} run{'s' * (len(runs) != 1)}"
    page = Page(Path(out_dir))
    generated = datetime.now().astimezone().isoformat(timespec="seconds")
    page.text(f"<header><h1>{html.escape(title)}</h1><p>generated {html.escape(generated)}</p></header>")
    _runs_table(page, runs)
    grouped: dict[tuple, list[tuple[Run, dict]]] = {}
    for run in runs:
        for record in map(_pooled_surrogates, run.records):
            grouped.setdefault(_group_key(record), []).append((run, record))
    names = backbone_names({key[1] for key in grouped if key[1]})
    labels = {key: _group_label(key, names) for key in grouped}
    rows_by_group = {labels[key]: _group_section(page, labels[key], grouped[key])
                     for key in sorted(grouped, key=lambda key: labels[key])}
    if rows_by_group:
        page.text('<section id="backbones"><h2>Across backbones</h2>')
        for metric in FIGURE_METRICS:
            if any(row[metric] is not None for rows in rows_by_group.values() for row in rows):
                page.figure(
                    page.key(f"backbones-{metric}"), figures.method_bars(rows_by_group, metric),
                    f"{metric} per dataset / backbone, mean ± std over seeds; heads at their largest δ",
                )
        page.text("</section>")
    scattered = [run for run in runs if (run.path / "projections.npz").is_file()]
    if scattered:
        page.text('<section id="projections"><h2>Projections of test points (first two coordinates)</h2>')
        for run in scattered:
            sample = load_projection_sample(run.path / "projections.npz")
            page.figure(
                page.key(f"projections-{run.label}"), figures.projection_scatter(sample),
                f"{run.label}: test points projected by {', '.join(sample['projections'])}, coloured by class",
            )
        page.text("</section>")
    checked = [run for run in runs if (run.path / "checks.json").is_file() or (run.path / "checks").is_dir()]
    if checked:
        page.text('<section id="checks"><h2>GMM checks</h2>')
        for run in checked:
            _checks_section(page, run)
        page.text("</section>")
    document = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>{''.join(page.parts)}</body></html>\n"
    )
    atomic_write_bytes(page.artifacts.html, document.encode())
    return page.artifacts
