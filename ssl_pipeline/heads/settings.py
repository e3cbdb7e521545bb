"""The settings of one head: what a config's ``heads`` section resolves to for one (method, δ, seed, sweep-axis
values), recorded in every head file and results record. ``config.py`` keeps the schema (``HeadsConfig``); this
module turns it into the frozen ``HeadSettings`` the heads are built, tagged and saved from."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from ssl_pipeline.config import (
    AXES,
    AXIS_METHODS,
    AXIS_PATHS,
    SPECTRAL_METHODS,
    DeltaSetting,
    HeadMethod,
    HeadsConfig,
)


@dataclass(frozen=True)
class HeadSettings:
    """The resolved settings of one head fit (defaults with the δ-specific overrides applied, one value per sweep
    axis)."""

    method: HeadMethod
    delta: float
    seed: int
    r: int
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    optimizer: str
    standardize: bool
    tau: Optional[float]
    similarity: Optional[str]
    symmetric: Optional[bool]
    xi: Optional[float]
    predictor_lr_scale: Optional[float] = None
    early_stopping_patience: Optional[int] = None
    regularizer: Optional[str] = None
    """SimSiam's collapse guard, ``covariance`` or ``euclidean`` (None for the other methods)."""
    sim_coeff: Optional[float] = None
    std_coeff: Optional[float] = None
    cov_coeff: Optional[float] = None
    lambda_off: Optional[float] = None
    axes: tuple[str, ...] = ()
    """The sweep axes (``AXES``) its config gave several values for that apply to this head; their values enter
    the tag. Empty for a config of scalars (and for head files saved before sweep axes existed)."""
    learn_scale: Optional[bool] = None
    """CLIP: whether the logit scale is learned (from 1/τ) or fixed at 1/τ (None for the other methods)."""
    parametrization: Optional[str] = None
    """``orthonormal``, ``scaled`` or ``whitened`` (``heads.parametrization`` resolved for this head; None in head
    files saved before it existed: ``heads.fitted.legacy_parametrization``)."""
    pair_label: Optional[str] = None
    """The label the head's δ-pairs share when the config names one (``heads.pair_label``); None: the data's
    primary label."""
    views: Optional[str] = None
    """The augmentation recipe (``data.views.recipes[i].name``) whose view pairs the head trains on
    (``heads.pairs: views``); None for δ-pairs. A view head's ``delta`` is 1 — its positive is always the pair's
    other view — and it takes δ = 1's ``per_delta`` settings."""
    hidden: Optional[int] = None
    """The hidden layer's width w of a one-hidden-layer head f(x) = Aᵀσ(W(x − x̄)) (``heads.trunk``); None: linear."""
    activation: Optional[str] = None
    """σ of a one-hidden-layer head (``relu``, ``tanh``); None: linear."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "axes", tuple(self.axes))  # a list when read back from a head file's JSON

    @property
    def tag(self) -> str:
        """A file-name-safe identity, e.g. ``infonce_delta0.5_seed1``, ``simsiam-euclidean_delta1_seed0``,
        ``infonce_views-simclr_seed0`` (view pairs of the recipe ``simclr``); the
        values of the swept ``axes`` follow in ``AXES`` order: ``infonce_delta1_seed0_r8_tau0.2_lr0.003``."""
        method = self.method if self.regularizer in (None, "covariance") else f"{self.method}-{self.regularizer}"
        if self.trunk is not None:
            method += f"-{self.trunk}"
        swept = "".join(f"_{name}{getattr(self, name):g}" for name in AXES if name in self.axes)
        if self.method == "supervised":
            return f"{method}_seed{self.seed}{swept}"
        pairs = f"delta{self.delta:g}" if self.views is None else f"views-{self.views}"
        return f"{method}_{pairs}_seed{self.seed}{swept}"

    @property
    def trunk(self) -> Optional[str]:
        """``relu64`` for a one-hidden-layer head of width 64 with ReLU (the records' ``trunk``); None: linear."""
        return None if self.hidden is None else f"{self.activation}{self.hidden}"

    @property
    def width(self) -> int:
        """The columns of the first layer: w for a one-hidden-layer head, r for a linear one (the dimension of the
        subspace its scores read)."""
        return self.r if self.hidden is None else self.hidden

    @property
    def pairs(self) -> str:
        """``delta`` or ``views`` (``heads.pairs``): what the head's positive pairs are."""
        if self.method == "supervised":
            return "labels"
        return "delta" if self.views is None else "views"

    @property
    def loss_weights(self) -> Optional[str]:
        """The spectral losses' weights as a results field (``25/25/1`` for VICReg's λ/μ/ν, ``0.005`` for λ_off)."""
        if self.method == "vicreg":
            return f"{self.sim_coeff:g}/{self.std_coeff:g}/{self.cov_coeff:g}"
        if self.method == "barlowtwins":
            return f"{self.lambda_off:g}"
        return None


def resolve_head_settings(
    heads: HeadsConfig, method: HeadMethod, delta: float, seed: int, *, r: Optional[int] = None,
    tau: Optional[float] = None, xi: Optional[float] = None, sim_coeff: Optional[float] = None,
    lr: Optional[float] = None,
) -> HeadSettings:
    """Apply ``heads.per_delta`` to the defaults for one (method, δ, seed) and the sweep-axis values ``r``, ``tau``,
    ``xi``, ``lr`` (one of ``heads.axis_grid(method)``); an axis value of None takes the axis's only value
    (ValueError if it has several). An override of None keeps the default; an override of τ or lr applies where
    that axis has one value (validation refuses it where the axis has several)."""
    override = next((o for o in heads.per_delta if math.isclose(o.delta, delta)), DeltaSetting(delta=delta))
    infonce = method == "infonce"
    given = {"r": r, "tau": tau, "xi": xi, "sim_coeff": sim_coeff, "lr": lr}
    chosen = {name: _axis_value(heads, name, given[name]) if method in AXIS_METHODS.get(name, (method,)) else None
              for name in AXES}
    return HeadSettings(
        method=method,
        delta=delta,
        seed=seed,
        r=chosen["r"],
        epochs=_unless_none(override.epochs, heads.epochs),
        batch_size=_unless_none(override.batch_size, heads.batch_size),
        lr=_unless_none(override.lr, chosen["lr"]),
        weight_decay=heads.optimizer.weight_decay,
        optimizer=heads.optimizer.name,
        standardize=heads.standardize,
        tau=_unless_none(override.tau, chosen["tau"]) if infonce else heads.clip.tau if method == "clip" else None,
        similarity=heads.infonce.similarity if infonce else None,
        symmetric=heads.infonce.symmetric if infonce else None,
        xi=chosen["xi"] if method == "simsiam" else None,
        predictor_lr_scale=heads.simsiam.predictor_lr_scale if method == "simsiam" else None,
        early_stopping_patience=heads.early_stopping_patience,
        regularizer=heads.simsiam.regularizer if method == "simsiam" else None,
        sim_coeff=chosen["sim_coeff"] if method == "vicreg" else None,
        std_coeff=heads.vicreg.std_coeff if method == "vicreg" else None,
        cov_coeff=heads.vicreg.cov_coeff if method == "vicreg" else None,
        lambda_off=heads.barlowtwins.lambda_off if method == "barlowtwins" else None,
        axes=heads.swept_axes(method),
        learn_scale=heads.clip.learn_scale if method == "clip" else None,
        parametrization=resolve_parametrization(heads.parametrization, method, heads.simsiam.regularizer),
        pair_label=heads.pair_label if method != "supervised" else None,
        hidden=None if heads.trunk is None else heads.trunk.hidden,
        activation=None if heads.trunk is None else heads.trunk.activation,
    )


def resolve_parametrization(requested: str, method: str, regularizer: Optional[str]) -> str:
    """``heads.parametrization`` for one head: ``auto`` is ``scaled`` for SimSiam with the covariance guard and the
    spectral heads (whose losses constrain the outputs' second moments), ``orthonormal`` otherwise (measurements:
    ``heads.parametrization``)."""
    if requested != "auto":
        return requested
    return "scaled" if constrains_output_moments(method, regularizer) else "orthonormal"


def constrains_output_moments(method: str, regularizer: Optional[str]) -> bool:
    """SimSiam with the covariance guard and the spectral heads: losses of the outputs' second moments, the heads
    that ``auto`` gives the scaled basis (and that were whitened before ``heads.parametrization`` existed)."""
    return (method == "simsiam" and regularizer == "covariance") or method in SPECTRAL_METHODS


def _axis_value(heads: HeadsConfig, name: str, value: Optional[float]) -> Optional[float]:
    """The value of axis ``name`` chosen for one head, or the axis's only value when none is chosen."""
    if value is not None:
        return value
    values = heads.axis(name)
    if len(values) > 1:
        raise ValueError(f"{AXIS_PATHS[name]}={values} is a sweep axis; pass the head's {name}= (heads.axis_grid)")
    return values[0]


def _unless_none(value: Optional[float], default: float) -> float:
    """The per-δ override, or the default when it is None (0 is an override, refused by validation, not "unset")."""
    return default if value is None else value
