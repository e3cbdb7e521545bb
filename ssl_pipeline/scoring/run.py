"""Scoring a run: every fitted head and every baseline on the test split → ``results.json`` records (one per
seed), the zero-shot record of a CLIP backbone, and a 2-D sample of the main projections (``projections.npz``)."""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Optional

import numpy as np
from rich.console import Console
from rich.progress import Progress, TaskID

from ssl_pipeline.config import SPECTRAL_METHODS, ExperimentConfig
from ssl_pipeline.data.labelled import LabelledFeatures
from ssl_pipeline.errors import DataError
from ssl_pipeline.heads.fitted import FittedHead
from ssl_pipeline.heads.inputs import initial_weight
from ssl_pipeline.heads.settings import resolve_head_settings
from ssl_pipeline.records.progress import progress_bar
from ssl_pipeline.records.results import make_record, write_json_atomic
from ssl_pipeline.scoring.labels import label_fields
from ssl_pipeline.scoring.projection_sample import save_projection_sample
from ssl_pipeline.scoring.projections import Projection, baseline_projection, closed_form_projection, head_projection
from ssl_pipeline.scoring.score import (
    ProjectionScorer,
    ReferenceSubspaces,
    fisher_note,
    initialisation_scores,
    reference_subspaces,
    score_projection,
)
from ssl_pipeline.scoring.zeroshot import zeroshot_accuracy, zeroshot_classifier
from ssl_pipeline.scoring.views import add_effective_deltas
from ssl_pipeline.theory.spectral import ClosedForm, spectral_closed_form, view_pair_moments
from ssl_pipeline.theory.subspaces import total_covariance


class ClosedForms:
    """The spectral closed form per (δ, seed, r), computed once on demand from the pairs a head with those settings
    draws (``theory.spectral``): the ``spectral`` baseline, and the optimum the spectral heads are compared with
    (``optimum_cos2``). The sampler's batch is the global one (per-device batch × devices): the union of the DDP
    ranks' slices is the single-process draw at that batch. The pairs do not depend on r, so one moment estimate
    per (δ, seed) serves every r of the ``heads.r`` axis."""

    def __init__(self, cfg: ExperimentConfig, features: LabelledFeatures) -> None:
        self.cfg = cfg
        self.features = features
        self.skipped: dict[str, str] = {}  # why a head's closed form could not be estimated: the first head's tag
        self.moments: dict[tuple, object] = {}  # by (δ, seed), and ("views", recipe)
        self.cache: dict[tuple, ClosedForm] = {}  # by (δ, seed, r), and ("views", recipe, r)

    @functools.cached_property
    def total(self) -> np.ndarray:
        """Σ_T of train, shared by every (δ, seed) (from the features' cached class statistics)."""
        return total_covariance(self.features.statistics("train"))

    def get(self, delta: float, seed: int, r: int) -> ClosedForm:
        if (delta, seed) not in self.moments:
            from ssl_pipeline.data.pairs import sampled_pair_moments  # pytorch_lightning: only when needed

            s = self.settings(delta, seed)
            self.moments[delta, seed] = sampled_pair_moments(
                self.features.x_train, self.features.pair_labels("train"), delta,
                s.batch_size * self.cfg.heads.trainer.devices,
                seed, s.epochs, total=self.total)
        if (delta, seed, r) not in self.cache:
            self.cache[delta, seed, r] = spectral_closed_form(self.moments[delta, seed], r)
        return self.cache[delta, seed, r]

    def view_moments(self, recipe: str):
        """Σ_T and Σ_Δ of every view pair of ``recipe``'s train images (``theory.spectral.view_pair_moments``),
        computed once."""
        if ("views", recipe) not in self.moments:
            views = self.features.views[recipe]
            self.moments["views", recipe] = view_pair_moments(views.table, views.num_views, views.train_images)
        return self.moments["views", recipe]

    def view(self, recipe: str, r: int) -> ClosedForm:
        """The spectral closed form of ``recipe``'s view pairs at r: what the recipe makes learnable."""
        if ("views", recipe, r) not in self.cache:
            self.cache["views", recipe, r] = spectral_closed_form(self.view_moments(recipe), r)
        return self.cache["views", recipe, r]

    def for_head(self, settings) -> Optional[ClosedForm]:
        """The closed form of a spectral head's own pairs: its (δ, seed) draw, or its recipe's view pairs; None
        (its ``optimum_cos2`` null) where it cannot be estimated — too few sampled pairs for the dimension, as
        with a small ``data.train_per_class`` — the reason kept in ``skipped`` for the console."""
        try:
            if settings.views is not None:
                return self.view(settings.views, settings.r)
            return self.get(settings.delta, settings.seed, settings.r)
        except DataError as error:
            self.skipped.setdefault(str(error), settings.tag)
            return None

    def settings(self, delta: float, seed: int):
        """Epochs and batch of a spectral head at (δ, seed): the pairs the closed form is sampled from (the same
        for every value of the sweep axes)."""
        axes = self.cfg.heads.axis_grid("spectral_contrastive")[0]
        return resolve_head_settings(self.cfg.heads, "spectral_contrastive", delta, seed, **axes)


class ItemProgress:
    """The parts of one scored item as fractional advances of the scoring task (they sum to one item), so plain
    progress lines keep coming during long items (at most every 30 s, ``records.progress``): ``step(part,
    share)`` after each part, ``finish()`` at the end of the item."""

    def __init__(self, progress: Progress, task: TaskID, label: str) -> None:
        self.progress, self.task, self.label, self.done = progress, task, label, 0.0
        progress.update(task, current=label)

    def __call__(self, part: str, share: float) -> None:
        self.done += share
        self.progress.update(self.task, current=f"{self.label} ({part})", advance=share)

    def finish(self) -> None:
        self.progress.update(self.task, current=self.label, advance=1.0 - self.done)
        release_free_memory()


def release_free_memory() -> None:
    """Hand the heap's free pages back to the kernel (glibc ``malloc_trim(0)``; nothing elsewhere) between scored
    items: the CLI's allocator keeps up to 2 GiB of freed memory for reuse (``ssl_pipeline.allocator``), and the
    probe's and k-means' temporaries of one item would otherwise stay resident through the next ones."""
    import ctypes

    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (AttributeError, OSError):
        pass


def score_run(
    cfg: ExperimentConfig, features: LabelledFeatures, heads: list[FittedHead], run_dir: Path, console: Console
) -> list[dict]:
    """Score every head and every baseline (one record per seed), write ``results.json`` and a 2-D sample of the
    main projections (``projections.npz``, for the report's scatter plots)."""
    records, scored = score_records(cfg, features, heads, console)
    write_json_atomic(run_dir / "results.json", records)
    write_projection_sample(cfg, features, scored, run_dir)
    return records


def write_projection_sample(cfg: ExperimentConfig, features: LabelledFeatures, scored: dict, run_dir: Path) -> None:
    """First two coordinates of PCA, LDA and each head method (first seed, largest δ) on a test subsample.
    ``scored`` holds the projections scoring already fitted; PCA/LDA are fitted here only if not among them."""
    projections = {
        method: scored.get(method) or baseline_projection(
            method, features.x_train, features.y_train, cfg.heads.axis("r")[0], cfg.seeds[0], cfg.score.lda_shrinkage,
            stats=features.statistics("train"),
        )
        for method in ("pca", "lda")
    }
    projections |= {method: scored[method] for method in cfg.heads.methods if method in scored}
    save_projection_sample(run_dir / "projections.npz", features.x_test, features.y_test, projections,
                           features.class_names, seed=cfg.seeds[0])


def score_records(
    cfg: ExperimentConfig, features: LabelledFeatures, heads: list[FittedHead], console: Console
) -> tuple[list[dict], dict[str, Projection]]:
    """The records, and the projections of the first seed (heads at the largest δ, baselines) for the scatter.
    Each head is compared with the references at its own r; the baselines that take an r (and the ``spectral``
    closed form) are scored once per value of the ``heads.r`` axis. Prints why ``fisher_cos2`` and ``means_cos2``
    are null where the Fisher subspace fills the features' span (``score.fisher_note``)."""
    x = features.x_train
    console.print(f"class statistics of train ({len(x)} × {x.shape[1]} {np.dtype(x.dtype).name}, "
                  f"{features.num_classes} classes), in chunks")
    references = reference_subspaces(features, max(cfg.heads.axis("r")), cfg.score.lda_shrinkage)
    note = fisher_note(references)
    if note:
        console.print(note)
    closed_forms = ClosedForms(cfg, features)
    several = len(features.label_names) > 1  # then every record names its score label, heads their pair label
    common = dict(
        data=features.data_kind, dataset=features.dataset, backbone=features.backbone,
        features=features.features_key, split="test", split_seed=features.split_seed,
        score_label=features.label if several else None, train_per_class=cfg.data.train_per_class,
    )
    first_seed: dict[str, Projection] = {}
    per_seed = sum(len(cfg.deltas) if method == "spectral" else 1 for method in cfg.score.baselines
                   for _ in baseline_rs(cfg, method))
    per_seed += len(view_recipes(cfg)) * len(cfg.heads.axis("r"))
    total = len(heads) + per_seed * len(cfg.seeds)
    with progress_bar(console, "item") as progress:
        task = progress.add_task("scoring", total=total, current="")
        paired = {**common, "pair_label": (features.pair_label or features.label) if several else None}
        records = _head_records(cfg, features, heads, references, closed_forms, paired, first_seed, progress, task)
        records += _baseline_records(cfg, features, references, closed_forms, common, paired, first_seed, progress,
                                     task)
        records += _view_closed_form_records(cfg, features, references, closed_forms, common, progress, task)
    for reason, tag in closed_forms.skipped.items():
        console.print(f"optimum_cos2 is null for {tag} and heads like it: {reason}")
    if features.text_features is not None:
        records.append(zeroshot_record(features, common))
    add_effective_deltas(records)
    return records, first_seed


def view_recipes(cfg: ExperimentConfig) -> list[str]:
    """The recipes whose view pairs the run trains on (``heads.pairs: views``), else none."""
    return [recipe.name for recipe in cfg.data.views.recipes] if cfg.heads.pairs == "views" else []


def _head_records(
    cfg: ExperimentConfig, features: LabelledFeatures, heads: list[FittedHead], references: ReferenceSubspaces,
    closed_forms: ClosedForms, common: dict, first_seed: dict[str, Projection], progress: Progress, task: TaskID,
) -> list[dict]:
    """One record per head (a spectral head also against its closed form at the same δ and seed); the projection
    of each method's first-seed head at the largest δ goes to ``first_seed``."""
    records = []
    top = max(cfg.deltas)
    clip = None
    for head in heads:
        s = head.settings
        item = ItemProgress(progress, task, s.tag)
        if s.method == "clip":
            from ssl_pipeline.scoring.clip import ClipScoring

            clip = clip or ClipScoring(cfg, features, references)
            for tower, metrics in clip.metrics(head).items():
                records.append(make_record(
                    **common, method=s.method, delta=s.delta, r=s.r, tau=s.tau, epochs=s.epochs,
                    batch_size=s.batch_size, lr=s.lr, weight_decay=s.weight_decay, normalized=True, tower=tower,
                    target="shared", seed=s.seed, fit_seconds=head.fit_seconds, **metrics,
                ))
            item.finish()
            continue
        projection = head_projection(head)
        if s.seed == cfg.seeds[0] and s.delta == top and s.views is None:
            first_seed.setdefault(s.method, projection)
        closed = closed_forms.for_head(s) if s.method in SPECTRAL_METHODS else None
        optimum = None if closed is None else closed.basis
        at_r = references.at(s.r)
        metrics = score_projection(projection, features, at_r, cfg.score, s.seed, optimum, step=item)
        initial = initial_weight(features, s)
        metrics.update(initialisation_scores(initial, at_r))
        metrics.update(paired_fields(cfg, features, projection))
        metrics.update(label_fields(features, projection.subspace, cfg.score.lda_shrinkage, head, cfg.score.probe,
                                    initial))
        labelled = s.method == "supervised"  # trained on the score label: no pairs, no δ
        records.append(make_record(
            **{**common, "pair_label": None} if labelled else common, method=s.method,
            delta=s.delta if s.pairs == "delta" else None, pairs=s.pairs, views=s.views, trunk=s.trunk,
            r=s.r, tau=s.tau, xi=s.xi, regularizer=s.regularizer,
            loss_weights=s.loss_weights, similarity=s.similarity,
            symmetric=s.symmetric, epochs=s.epochs, batch_size=s.batch_size, lr=s.lr, weight_decay=s.weight_decay,
            predictor_lr_scale=s.predictor_lr_scale, normalized=projection.normalized,
            parametrization=s.parametrization, seed=s.seed, fit_seconds=head.fit_seconds, **metrics,
        ))
        item.finish()
    return records


def _baseline_records(
    cfg: ExperimentConfig, features: LabelledFeatures, references: ReferenceSubspaces, closed_forms: ClosedForms,
    common: dict, paired: dict, first_seed: dict[str, Projection], progress: Progress, task: TaskID,
) -> list[dict]:
    """One record per baseline, r and seed (``spectral``: per δ, r and seed; ``raw``: per seed); each baseline's
    first-seed projection goes to ``first_seed``."""
    records = []
    for method in cfg.score.baselines:
        if method == "spectral":  # sampled from the heads' δ-pairs: its records name their pair label (``paired``)
            records += _closed_form_records(cfg, features, references, closed_forms, paired, progress, task)
            continue
        for r in baseline_rs(cfg, method):
            suffix = f"_r{r}" if len(cfg.heads.axis("r")) > 1 and method != "raw" else ""
            for seed in cfg.seeds:
                item = ItemProgress(progress, task, f"{method}{suffix}_seed{seed}")
                # Only the random projection depends on the seed; the others are fitted and probed once and
                # only their k-means is seeded. Baselines are fitted from the cached class statistics of train.
                if method == "random" or seed == cfg.seeds[0]:
                    start = time.perf_counter()
                    projection = baseline_projection(
                        method, features.x_train, features.y_train, r, seed, cfg.score.lda_shrinkage,
                        stats=features.statistics("train"),
                    )
                    fit_seconds = time.perf_counter() - start
                    scorer = ProjectionScorer(projection, features, references.at(r), cfg.score,
                                              step=item)
                    first_seed.setdefault(method, projection)
                records.append(make_record(
                    **common, method=method, r=projection.r, normalized=False, seed=seed,
                    fit_seconds=fit_seconds, **scorer.scores(seed), **paired_fields(cfg, features, projection),
                    **label_fields(features, projection.subspace, cfg.score.lda_shrinkage),
                ))
                item.finish()
    return records


def paired_fields(cfg: ExperimentConfig, features: LabelledFeatures, projection: Projection) -> dict:
    """On paired features, a unimodal record's ``target`` (the label its modality-1 view carries, ``heads.target``)
    and, where modality 1 has ground-truth blocks (synthetic), its subspace's energies in the shared block, the
    private subspace and the noise block (as the CLIP towers'); nothing on unimodal data."""
    if features.paired is None:
        return {}
    fields = {"target": cfg.heads.target}
    blocks = features.paired.modality1.energy_blocks
    if blocks and projection.subspace is not None:
        from ssl_pipeline.scoring.multimodal import block_energies

        energies = block_energies(projection.subspace, blocks)
        fields.update(energy_shared=energies["shared_fisher"] + energies["shared_rest"],
                      energy_private=energies["private"], energy_noise=energies["noise"])
    return fields


def baseline_rs(cfg: ExperimentConfig, method: str) -> list[int]:
    """The r values a baseline is scored at: every value of the ``heads.r`` axis (each head is compared with the
    baselines of its own r), one for ``raw`` (the features themselves, r = d)."""
    rs = cfg.heads.axis("r")
    return rs[:1] if method == "raw" else rs


def _closed_form_records(
    cfg: ExperimentConfig, features: LabelledFeatures, references: ReferenceSubspaces, closed_forms: ClosedForms,
    common: dict, progress: Progress, task: TaskID,
) -> list[dict]:
    """The ``spectral`` baseline: one record per δ, r and seed, the closed form of that seed's sampled pairs."""
    records = []
    swept = len(cfg.heads.axis("r")) > 1
    for delta in sorted(cfg.deltas, reverse=True):
        for r in cfg.heads.axis("r"):
            for seed in cfg.seeds:
                item = ItemProgress(progress, task, f"spectral_delta{delta:g}_seed{seed}" + (f"_r{r}" if swept else ""))
                start = time.perf_counter()
                closed = closed_forms.get(delta, seed, r)
                projection = train_closed_form_projection(features, closed.basis)
                fit_seconds = time.perf_counter() - start
                s = closed_forms.settings(delta, seed)
                metrics = score_projection(projection, features, references.at(r), cfg.score, seed,
                                           closed.basis, step=item)
                metrics.update(label_fields(features, projection.subspace, cfg.score.lda_shrinkage))
                records.append(make_record(
                    **common, method="spectral", delta=delta, pairs="delta", r=projection.r, epochs=s.epochs,
                    batch_size=s.batch_size, normalized=False, seed=seed, fit_seconds=fit_seconds, **metrics,
                ))
                item.finish()
    return records


def train_closed_form_projection(features: LabelledFeatures, basis: np.ndarray) -> Projection:
    """``closed_form_projection`` of a closed form [d, r], centred with x̄_train from the cached class statistics."""
    stats = features.statistics("train")
    return closed_form_projection(features.x_train, basis, stats.weights @ stats.means)


def _view_closed_form_records(
    cfg: ExperimentConfig, features: LabelledFeatures, references: ReferenceSubspaces, closed_forms: ClosedForms,
    common: dict, progress: Progress, task: TaskID,
) -> list[dict]:
    """Per recipe of ``heads.pairs: views``, r and seed: the ``spectral`` closed form of the recipe's view pairs
    (``ClosedForms.view``; scored like the δ closed forms, only k-means is seeded), with the pair statistics that
    explain where the recipe sits (``view_pair_statistics``)."""
    records = []
    swept = len(cfg.heads.axis("r")) > 1
    for recipe in view_recipes(cfg):
        statistics = view_pair_statistics(closed_forms.view_moments(recipe), features, references)
        for r in cfg.heads.axis("r"):
            scorer, fit_seconds, projection = None, None, None
            for seed in cfg.seeds:
                item = ItemProgress(progress, task, f"spectral_views-{recipe}_seed{seed}" + (f"_r{r}" if swept else ""))
                if scorer is None:
                    start = time.perf_counter()
                    closed = closed_forms.view(recipe, r)
                    projection = train_closed_form_projection(features, closed.basis)
                    fit_seconds = time.perf_counter() - start
                    scorer = ProjectionScorer(projection, features, references.at(r), cfg.score, closed.basis,
                                              step=item)
                records.append(make_record(
                    **common, method="spectral", pairs="views", views=recipe, r=projection.r, normalized=False,
                    seed=seed, fit_seconds=fit_seconds, **scorer.scores(seed), **statistics,
                ))
                item.finish()
    return records


def view_pair_statistics(moments, features: LabelledFeatures, references: ReferenceSubspaces) -> dict:
    """How a recipe's view pairs relate to the classes: the share of tr Σ_Δ^view inside the Fisher subspace (low:
    the two views of an image differ mostly outside it, as the δ = 1 pairs do), the same share of the within-class
    covariance Σ_W (the δ = 1 pairs' Σ_Δ, ½·2Σ_W), and tr Σ_Δ^view / tr Σ_W (how far apart the views are)."""
    within = features.statistics("train").within_covariance
    view = moments.delta_covariance

    def fisher_share(covariance: np.ndarray) -> float:
        trace = float(np.trace(covariance))
        inside = float(np.einsum("dq,de,eq->", references.fisher, covariance, references.fisher))
        return inside / trace if trace > 0 else float("nan")

    return {"view_fisher_share": fisher_share(view), "within_fisher_share": fisher_share(within),
            "view_within_ratio": float(np.trace(view) / np.trace(within))}


def zeroshot_record(features: LabelledFeatures, common: dict) -> dict:
    """The text-prompt classifier of a CLIP backbone on test (method ``zeroshot``; no head, no seed)."""
    classifier = zeroshot_classifier(features.text_features, features.num_classes)
    return make_record(**common, method="zeroshot", zeroshot_acc=zeroshot_accuracy(features.x_test, features.y_test, classifier))
