"""A W&B Report over a project's runs with the comparisons of the run report, built with wandb-workspaces.

Panels read what ``wandb_logging`` logs: the ``by_delta/*`` history rows (a metric against δ per head method, the
baselines as flat lines), the ``summary/*`` means over seeds (bars per backbone, scalars) and the ``results``
Table. Building makes no network call: the entity is passed explicitly and runsets only resolve their project
when the report is saved, which only ``save=True`` does.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, TypeVar

from ssl_pipeline.errors import ConfigError
from ssl_pipeline.reporting.wandb_logging import error_reason

HEAD_METHODS = ("infonce", "simsiam", "clip_tower1", "clip_tower2")
"""Series of the panels, as ``wandb_logging.series_names`` names them (a CLIP head's towers apart)."""
BASELINE_METHODS = ("lda", "pca", "minor", "random", "raw")
DEFAULT_METRICS = ("nmi", "probe_acc", "fisher_cos2")
T = TypeVar("T")


def build_wandb_report(
    project: str,
    entity: Optional[str],
    groups: Sequence[str],
    metrics: Sequence[str] = DEFAULT_METRICS,
    save: bool = False,
    title: str = "Linear SSL heads against the Fisher subspace",
):
    """A ``wandb_workspaces.reports.v2.Report``: a title, an intro naming ``groups``, one panel grid per metric
    (metric against δ per head method with the baselines, bars per backbone, InfoNCE's and LDA's values) over
    the runs of ``groups`` in ``project``, and a grid with the runs' ``results`` tables.

    ``save=False`` (offline) only builds it. ``save=True`` uploads it (online; ``entity`` None means the API key's
    default entity); a failure to reach or authenticate with W&B is a ConfigError.
    """
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces import expr

    if not groups:
        raise ConfigError("no W&B groups given for the report; pass the experiment names whose runs it compares")
    if save and entity is None:
        entity = _call_wandb(_default_entity, "find your default W&B entity")

    def runset(name: str) -> wr.Runset:
        return wr.Runset(
            entity=entity or "", project=project, name=name, filters=[expr.Metric("Group").isin(list(groups))]
        )

    blocks: list = [
        wr.H1(text=title),
        wr.P(text=(
            f"Runs of the groups {', '.join(groups)} in {project}: linear InfoNCE/SimSiam heads fitted on δ-pairs, "
            "scored with FAISS k-means NMI, a linear probe and fisher_cos2 (the mean cos² of the principal angles "
            "to the Fisher subspace), against the LDA/PCA/random/raw baselines. Means over seeds."
        )),
    ]
    for metric in metrics:
        blocks += [
            wr.H2(text=metric),
            wr.PanelGrid(runsets=[runset(f"{metric} runs")], panels=_metric_panels(wr, metric)),
        ]
    blocks += [
        wr.H2(text="Every record"),
        wr.PanelGrid(runsets=[runset("results tables")], panels=[
            wr.WeavePanelSummaryTable(table_name="results", layout=wr.Layout(w=24, h=12)),
            wr.RunComparer(diff_only="split", layout=wr.Layout(w=24, h=10)),
        ]),
    ]
    report = wr.Report(project=project, entity=entity or "", title=title, blocks=blocks, width="fluid")
    if save:
        _call_wandb(report.save, "save the report")
    return report


def _metric_panels(wr, metric: str) -> list:
    """Metric against δ (heads, with the baselines as flat lines), bars per backbone, InfoNCE's and LDA's values
    (means over the runs)."""
    methods = HEAD_METHODS + BASELINE_METHODS
    return [
        wr.LinePlot(
            title=f"{metric} against δ", x="by_delta/delta", y=[f"by_delta/{m}/{metric}" for m in methods],
            title_x="δ (probability that a positive shares the class)", title_y=metric, layout=wr.Layout(w=12, h=8),
        ),
        wr.BarPlot(
            title=f"{metric} per backbone (heads at their largest δ)",
            metrics=[f"summary/{m}/{metric}_mean" for m in methods],
            groupby=wr.Config("data.backbone.name"), groupby_aggfunc="mean", groupby_rangefunc="stddev",
            orientation="v", layout=wr.Layout(w=12, h=8),
        ),
        wr.ScalarChart(
            title=f"InfoNCE {metric} (largest δ)", metric=f"summary/infonce/{metric}_mean",
            groupby_aggfunc="mean", groupby_rangefunc="stddev", layout=wr.Layout(w=6, h=4),
        ),
        wr.ScalarChart(
            title=f"LDA {metric}", metric=f"summary/lda/{metric}_mean",
            groupby_aggfunc="mean", groupby_rangefunc="stddev", layout=wr.Layout(w=6, h=4),
        ),
    ]


def _default_entity() -> str:
    import wandb

    return wandb.Api().default_entity


def _call_wandb(call: Callable[[], T], what: str) -> T:
    """Run a W&B API call; a network or authentication failure becomes one ConfigError line without the key."""
    try:
        return call()
    except Exception as error:  # the API raises requests, GraphQL and wandb errors alike
        raise ConfigError(f"could not {what} ({error_reason(error)}); run `wandb login` (or set WANDB_API_KEY) on a "
                          "machine that reaches W&B, or leave out --wandb-report") from None
