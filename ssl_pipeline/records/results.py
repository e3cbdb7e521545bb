"""The results contract (docs/theory.md, "The results contract"): ``results.json`` records and the summary table."""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Optional

from ssl_pipeline.atomic import atomic_write_bytes

SCHEMA = 3
"""3: settings ``tower`` (1 or 2: which tower of a CLIP head the record scores; null for unimodal records) and
``target`` (the label the record's clustering, probe and Fisher subspace refer to: ``shared`` for CLIP heads;
null otherwise); metrics ``energy_shared``, ``energy_private``, ``energy_noise`` (the tower's ``fisher_energy`` in
its modality's shared block, private subspace and noise block: they sum to 1; synthetic paired data only),
``retrieval_p1``, ``retrieval_p10``, ``retrieval_map`` (class-level cross-modal retrieval of this tower's test
items among the other modality's) and ``logit_scale``. Schema-2 records are read with those fields null.
2: settings ``regularizer`` (SimSiam's collapse guard), ``loss_weights`` (VICReg λ/μ/ν, BarlowTwins λ_off) and
the optimiser's ``lr``, ``weight_decay`` and ``predictor_lr_scale`` (two heads differing only there were merged);
metrics ``means_cos2``, ``pca_cos2``, ``optimum_cos2`` and ``feature_rank``. Schema-1 records are read with those
fields missing (shown as null); their SimSiam heads used the Euclidean guard."""
SETTING_FIELDS = (
    "method", "data", "dataset", "backbone", "features", "split", "split_seed", "delta", "r", "tau", "xi",
    "regularizer", "loss_weights", "similarity", "symmetric", "epochs", "batch_size", "lr", "weight_decay",
    "predictor_lr_scale", "normalized", "tower", "target", "parametrization", "pairs", "views", "pair_label",
    "score_label", "train_per_class", "trunk", "seed",
)
METRIC_FIELDS = (
    "nmi", "ari", "acc", "probe_acc", "zeroshot_acc", "fisher_cos2", "fisher_energy", "means_cos2", "pca_cos2",
    "minor_cos2", "optimum_cos2", "init_fisher_cos2", "init_minor_cos2", "effective_rank", "feature_rank", "energy_shared", "energy_private", "energy_noise",
    "retrieval_p1", "retrieval_p10", "retrieval_map", "logit_scale", "fit_seconds", "fisher_top_cos2", "fisher_rank",
    "effective_delta", "effective_delta_outside", "view_fisher_share", "within_fisher_share", "view_within_ratio",
)
"""``fisher_top_cos2``: ``fisher_cos2``'s formula against the top-r generalised eigenvectors of (Σ_B, Σ_W) estimated
on train, r the record's r, whenever r is below the Fisher subspace's dimension (reported, not claimed: the theory
does not say which r of them a head picks). ``fisher_rank``: that dimension, q = min(K − 1, ``feature_rank``).
``fisher_cos2``, ``fisher_energy`` and ``means_cos2`` are null when K − 1 ≥ ``feature_rank`` (the Fisher subspace is the whole span
the features occupy, e.g. K = 1000 classes on 512-d features: every head would score 1); scoring prints why.
Both fields were added within schema 3: records written before them read them as null.
``parametrization`` (setting): the coordinates a head was optimised in (``orthonormal``, ``scaled``, ``whitened``;
``heads.parametrization``). ``minor_cos2``: ``fisher_cos2``'s formula against the bottom-r eigenvectors of Σ_T of train inside the floored span
(the subspace a head biased toward low variance finds). ``init_fisher_cos2``, ``init_minor_cos2``: a trained head's
untrained initialisation (same parametrisation, basis and seed) scored the same way: what a head that learned
nothing scores. Added within schema 3 as well.
``pairs`` (setting): ``delta`` for heads and closed forms of δ-pairs, ``views`` for those of augmentation view pairs
(``heads.pairs: views``; their ``delta`` is null), null for the other baselines; ``views``: the recipe's name.
``effective_delta`` (view records): the δ at which the δ-pair curve of the same method (mean NMI over seeds at
each δ, the same r and loss settings) reaches the record's NMI, interpolated linearly; null with
``effective_delta_outside`` −1 (below the curve's lowest δ) or +1 (above its highest). ``view_fisher_share``,
``within_fisher_share``: the share of tr Σ_Δ^view (the recipe's view-pair difference covariance) and of tr Σ_W inside
the Fisher subspace; ``view_within_ratio``: tr Σ_Δ^view / tr Σ_W (records of the ``spectral`` closed form of view
pairs). Added within schema 3 (issue 23).
``pair_label``, ``score_label`` (settings; data with several labels only, else null): the label a head's δ-pairs
share (``heads.pair_label``) and the label every record's clustering, probe, LDA and Fisher subspace refer to
(``score.label``). ``train_per_class``: the training points per class the run was fitted on
(``data.train_per_class``; null: all). Added within schema 3 (issue 24)."""
LABELLED_METRICS = ("label_energy", "beyond_energy", "hidden_probe", "init_hidden_probe")
"""Metrics with one field per label of the data, ``<metric>_<label>`` (data with several labels;
``scoring.labels``): ``label_energy_<label>``, the share of a head's weight (a one-hidden-layer head's first
layer) inside that label's Fisher subspace (``fisher_energy``'s formula: true where known, else estimated on train);
``beyond_energy_<label>`` (labels other than the score label): the same share in that subspace with the score
label's Fisher subspace projected out (nested labels: the fine directions within the coarse classes);
``hidden_probe_<label>``, the linear probe's test accuracy on that label from a one-hidden-layer head's hidden layer
σ(W̃ᵀ(x − x̄)), and ``init_hidden_probe_<label>`` the same from its untrained first layer (random features). ``trunk`` (setting): ``relu64`` for a one-hidden-layer head of width 64 (``heads.trunk``), null for
linear heads and baselines. ``pairs`` is ``labels`` for ``supervised`` heads (trained on the score label; their
``delta`` is null). Added within schema 3 (issue 24)."""


def labelled_metric(name: str) -> Optional[str]:
    """The metric of ``LABELLED_METRICS`` that ``name`` is a per-label field of (``label_energy`` for
    ``label_energy_fine``), or None for any other field."""
    return next((metric for metric in LABELLED_METRICS if name.startswith(f"{metric}_")), None)


def metric_fields(records: Iterable[dict[str, Any]]) -> tuple[str, ...]:
    """``METRIC_FIELDS`` and the per-label fields (``LABELLED_METRICS``) that some record of ``records`` has."""
    labelled = sorted({k for record in records for k in record if labelled_metric(k)})
    return METRIC_FIELDS + tuple(labelled)


AXIS_FIELDS = ("r", "tau", "xi", "lr")
"""The setting fields of the config's sweep axes (``heads.r``, ``heads.infonce.tau``, ``heads.simsiam.xi``,
``heads.optimizer.lr``; ``config.AXES``): rows of one method and δ that differ there are told apart in tables,
figures and W&B keys (``swept_fields``)."""
AXIS_SYMBOLS = {"r": "r", "tau": "τ", "xi": "ξ", "lr": "lr"}
TABLE_METRICS = ("nmi", "probe_acc", "fisher_cos2", "effective_rank")
"""The metrics of the default summary table, which fits 80 columns; the wide table shows every metric of
``METRIC_FIELDS`` that some record has, so a metric added to the contract appears there."""


def make_record(**fields: Any) -> dict[str, Any]:
    """A record with every contract field present (``None`` where it does not apply)."""
    unknown = {k for k in set(fields) - set(SETTING_FIELDS) - set(METRIC_FIELDS) if not labelled_metric(k)}
    if unknown:
        raise ValueError(f"unknown record fields {sorted(unknown)}")
    labelled = {k: fields[k] for k in sorted(fields) if labelled_metric(k)}
    return {"schema": SCHEMA, **{k: fields.get(k) for k in SETTING_FIELDS + METRIC_FIELDS}, **labelled}


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON through a temp file and a rename, so readers never see a half-written file."""
    atomic_write_bytes(path, (json.dumps(payload, indent=1, allow_nan=False) + "\n").encode())


def load_results(path: Path) -> list[dict[str, Any]]:
    """The records of a results.json, any schema: fields a record lacks (schema 1) are null, and a schema-1
    SimSiam record gets ``regularizer: euclidean`` (the only guard that existed)."""
    records = json.loads(Path(path).read_text())
    return [upgrade_record(record) for record in records]


def upgrade_record(record: dict[str, Any]) -> dict[str, Any]:
    """A record with every field of the current schema (missing ones null); the ``schema`` it was written with
    is kept."""
    upgraded = {"schema": record.get("schema", 1), **{k: record.get(k) for k in SETTING_FIELDS + METRIC_FIELDS}}
    if upgraded["schema"] < 2 and upgraded["method"] == "simsiam" and upgraded["regularizer"] is None:
        upgraded["regularizer"] = "euclidean"
    extra = {k: v for k, v in record.items() if k not in upgraded}
    return {**upgraded, **extra}


def aggregate(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Group records by their setting fields except ``seed``; per metric: mean, std (over seeds) and n."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for record in records:
        groups[tuple(record.get(k) for k in SETTING_FIELDS if k != "seed")].append(record)
    rows = []
    metrics = metric_fields(record for members in groups.values() for record in members)
    for key, members in groups.items():
        row: dict[str, Any] = dict(zip([k for k in SETTING_FIELDS if k != "seed"], key))
        row["seeds"] = len(members)
        for metric in metrics:
            values = [m[metric] for m in members if m.get(metric) is not None]
            row[metric] = _mean_std(values)
        rows.append(row)
    return rows


def _mean_std(values: list[float]) -> Optional[tuple[float, float]]:
    if not values:
        return None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _method_order(row: dict) -> tuple:
    order = ["infonce", "simsiam", "spectral_contrastive", "vicreg", "barlowtwins", "clip", "spectral", "lda", "means",
             "pca", "minor", "random", "raw", "zeroshot"]
    method = row["method"]
    delta = row.get("delta")
    return (order.index(method) if method in order else len(order), method, -(delta if delta is not None else math.inf))


def summary_table(records: list[dict[str, Any]], title: str = "results (mean ± std over seeds)", wide: bool = False):
    """A rich Table: one row per (method, δ) setting (the method cell names the values of swept axes,
    ``infonce r=8 τ=0.2``), one column per metric (``TABLE_METRICS``; with ``wide``,
    every metric). Numbers are never elided: without vertical rules the default table fits 80 columns, and a
    column too narrow for a number folds it onto a second line rather than cutting it."""
    from rich import box
    from rich.table import Table

    # wide: every metric some record has (a CLIP run's energies and retrieval, per-label scores, or none of them)
    metrics = [m for m in metric_fields(records) if any(r.get(m) is not None for r in records)] if wide else TABLE_METRICS
    table = Table(title=title, header_style="bold", box=box.SIMPLE_HEAD, show_edge=False, collapse_padding=True)
    table.add_column("method", overflow="fold")
    for header in ("δ", "seeds", *metrics):
        table.add_column(header, justify="right", overflow="fold")
    rows = aggregate(records)
    swept = swept_fields(rows)
    for row in sorted(rows, key=lambda row: _series_order(row, swept.get(method_label(row), ()))):
        cells = [_format(row[m], m) for m in metrics]
        delta = "" if row.get("delta") is None else f"{row['delta']:g}"
        axes = axis_label(row, swept.get(method_label(row), ()))
        table.add_row(f"{method_label(row)} {axes}" if axes else method_label(row), delta, str(row["seeds"]), *cells)
    return table


def _series_order(row: dict[str, Any], fields: tuple[str, ...]) -> tuple:
    """``_method_order`` with the swept axes' values before δ: each series' rows together, by decreasing δ."""
    order, method, delta = _method_order(row)
    return order, method, axis_order(row, fields), delta


def method_label(row: dict[str, Any]) -> str:
    """The method as tables and plots name it: ``simsiam-euclidean`` for the Euclidean guard, VICReg and
    BarlowTwins with their loss weights (``vicreg 25/25/1``), a CLIP head's towers as ``clip tower 1``/``2``, a
    one-hidden-layer head with its trunk (``infonce relu64``), a head or closed form of view pairs with its recipe
    (``infonce views:simclr``), a run on a training subsample with its size (``lda n=20``: ``data.train_per_class``)."""
    label = row["method"]
    if row.get("tower") is not None:
        label += f" tower {row['tower']}"
    if row.get("regularizer") not in (None, "covariance"):
        label += f"-{row['regularizer']}"
    if row.get("trunk"):
        label += f" {row['trunk']}"
    if row.get("loss_weights"):
        label += f" {row['loss_weights']}"
    if row.get("views"):
        label += f" views:{row['views']}"
    if row.get("pair_label") and row.get("pair_label") != row.get("score_label"):
        label += f" pairs:{row['pair_label']}"
    if row.get("train_per_class") is not None:
        label += f" n={row['train_per_class']}"
    return label


def swept_fields(rows: Iterable[dict[str, Any]], within: tuple[str, ...] = ("data", "features", "run")
                 ) -> dict[str, tuple[str, ...]]:
    """Per method label (``method_label``): the ``AXIS_FIELDS`` that take several values among its rows of one δ
    (and one ``within`` group: data, features key, run), in ``AXIS_FIELDS`` order. A field that changes only with δ
    (τ set per δ by ``heads.per_delta``) is not swept; a method without swept fields is absent."""
    seen: dict[tuple, set] = defaultdict(set)
    for row in rows:
        where = (method_label(row), row.get("delta"), *(row.get(w) for w in within))
        for name in AXIS_FIELDS:
            seen[(*where, name)].add(row.get(name))
    swept: dict[str, set] = defaultdict(set)
    for (label, *_, name), values in seen.items():
        if len(values) > 1:
            swept[label].add(name)
    return {label: tuple(name for name in AXIS_FIELDS if name in names) for label, names in swept.items()}


def axis_label(row: dict[str, Any], fields: Iterable[str]) -> str:
    """The values of ``fields`` (swept axes) of a row as tables and legends show them: ``r=8 τ=0.2``."""
    return " ".join(f"{AXIS_SYMBOLS.get(name, name)}={_value(row.get(name))}" for name in fields)


def axis_key(row: dict[str, Any], fields: Iterable[str]) -> str:
    """The values of ``fields`` as a name suffix safe in file and metric names: ``_r8_tau0_2``."""
    return "".join(f"_{name}{_value(row.get(name))}" for name in fields).replace(".", "_").replace("-", "_")


def axis_order(row: dict[str, Any], fields: Iterable[str]) -> tuple:
    """A sort key of a row's values of ``fields`` (None first)."""
    return tuple((row.get(name) is not None, row.get(name) or 0) for name in fields)


def _value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _format(value: Optional[tuple[float, float]], metric: str) -> str:
    if value is None:
        return "–"
    mean, std = value
    if metric == "feature_rank":
        return f"{mean:.0f}" if std == 0 else f"{mean:.0f}±{std:.0f}"
    digits = 1 if metric == "effective_rank" else 3
    return f"{mean:.{digits}f}±{std:.{digits}f}"
