"""The checks.json records: each GMM-check statistic of the real data against its surrogate distribution
(docs/theory.md, "GMM checks on real features")."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ssl_pipeline.checking.statistics import GMMCheckResult
from ssl_pipeline.config import CheckConfig
from ssl_pipeline.errors import ConfigError
from ssl_pipeline.theory.gmm_checks import holm, ks_calibrated


def calibrate(real: GMMCheckResult, surrogates: Sequence[GMMCheckResult], cfg: CheckConfig) -> list[dict]:
    """The checks.json records: each statistic on the real data against its surrogate distribution (docs/theory.md,
    "GMM checks on real features"). One record per statistic (``class`` None) and per class for
    ``heterogeneity`` and ``gaussianity_ks``, each {statistic, class, real, surrogate_mean, surrogate_std (ddof 1),
    gap = real − surrogate_mean, p_value, p_holm, rejected} (the last three null except for Gaussianity).

    Gaussianity: the two-sample Kolmogorov–Smirnov distance between the squared Mahalanobis distances of a class's
    test points and those of the same class in the surrogates. So that real and surrogate values share the
    reference size, the real value is the mean over s of its distance to the surrogates other than s, and surrogate
    s gets its distance to the other surrogates; the p-value compares the real distances with all surrogates',
    Holm-corrected across classes and rejected at ``cfg.alpha``. ``gaussianity_rejected`` counts rejections (for
    a surrogate: of its own tests against the others); ``gaussianity_ks_pooled`` pools all classes (the QQ plot).
    """
    if len(surrogates) < 2:
        raise ConfigError(f"calibration needs at least 2 surrogates, got {len(surrogates)}; set check.surrogates ≥ 2")
    surrogate_scalars = [s.scalar_statistics() for s in surrogates]
    records = [calibrated_record(name, None, value, [s[name] for s in surrogate_scalars])
               for name, value in real.scalar_statistics().items()]
    records += [calibrated_record("heterogeneity", k, value, [s.heterogeneity[k] for s in surrogates])
                for k, value in enumerate(real.heterogeneity)]
    classes = np.unique(real.test_labels)
    tests = [ks_calibrated([r.test_distances[r.test_labels == k] for r in (real, *surrogates)]) for k in classes]
    real_ks = np.array([test.real for test in tests])
    p_values = np.array([test.p_value for test in tests])
    surrogate_ks = np.array([test.surrogate for test in tests])  # [classes, surrogates]
    surrogate_p = np.array([test.surrogate_p_values for test in tests])
    p_holm = holm(p_values)
    rejected = p_holm < cfg.alpha
    records += [calibrated_record("gaussianity_ks", int(k), real_ks[i], surrogate_ks[i], float(p_values[i]),
                                  float(p_holm[i]), bool(rejected[i])) for i, k in enumerate(classes)]
    surrogate_rejected = [np.sum(holm(column) < cfg.alpha) for column in surrogate_p.T]
    pooled = ks_calibrated([r.test_distances for r in (real, *surrogates)])
    return records + [
        calibrated_record("gaussianity_rejected", None, np.sum(rejected), surrogate_rejected),
        calibrated_record("gaussianity_ks_mean", None, real_ks.mean(), surrogate_ks.mean(axis=0)),
        calibrated_record("gaussianity_ks_pooled", None, pooled.real, pooled.surrogate, pooled.p_value),
    ]


def calibrated_record(statistic: str, klass: int | None, real: float, surrogate: Sequence[float],
                      p_value: float | None = None, p_holm: float | None = None, rejected: bool | None = None) -> dict:
    """One checks.json record: the real value against the surrogates' (mean, std with ddof 1, gap = real − mean);
    the surrogate fields are null when there are too few surrogate values for them."""
    values = np.asarray(surrogate, dtype=np.float64)
    mean = float(values.mean()) if len(values) else None
    return {"statistic": statistic, "class": klass, "real": float(real), "surrogate_mean": mean,
            "surrogate_std": float(values.std(ddof=1)) if len(values) > 1 else None,
            "gap": float(real) - mean if mean is not None else None,
            "p_value": p_value, "p_holm": p_holm, "rejected": rejected}
