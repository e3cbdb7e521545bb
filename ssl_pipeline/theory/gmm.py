"""Shared-covariance Gaussian mixtures (docs/theory.md, "GMM"): the parameters, their true Fisher subspace, draws,
and the constructions of the synthetic lab: the "parallel pancakes", a random-Σ mixture, ``fisher_vs_means``, the
real-feature-like ``spectrum`` and the class-free ``quiet`` directions any of them may carry (docs/theory.md, "Four
subspaces, and labs that keep them apart")."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import eigh
from scipy.stats import ortho_group

from ssl_pipeline.theory.subspaces import FEATURE_FLOOR, fisher_cos2, fisher_subspace, orthonormal_basis


@dataclass
class GMMParameters:
    """weights π [K], means μ [K, d], shared covariance Σ [d, d]; ``labels``: for mixtures whose points carry
    several labels (``hierarchy``), each label's value of every component, {name: int [K]}, the first one primary;
    None: one label, the component."""

    weights: np.ndarray
    means: np.ndarray
    covariance: np.ndarray
    labels: dict[str, np.ndarray] | None = None

    def fisher_basis(self) -> np.ndarray:
        """The true Fisher subspace [d, q] from μ_k and Σ."""
        return fisher_subspace(self.means, self.covariance, self.weights)

    def mean_basis(self) -> np.ndarray:
        """The true class-mean subspace span{μ_k − μ̄} [d, ≤ K − 1], μ̄ = Σ_k π_k μ_k."""
        weights = np.asarray(self.weights, dtype=np.float64) / np.sum(self.weights)
        return orthonormal_basis((self.means - weights @ self.means).T)[:, : len(weights) - 1]

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draw k ~ π, x ~ N(μ_k, Σ): features [n, d] float32, labels [n] int64."""
        labels = rng.choice(len(self.weights), size=n, p=self.weights)
        factor = np.linalg.cholesky(self.covariance)
        noise = rng.standard_normal((n, self.means.shape[1])) @ factor.T
        return (self.means[labels] + noise).astype(np.float32), labels.astype(np.int64)

    def rotated(self, rotation: np.ndarray) -> GMMParameters:
        """The mixture of R x for x from this one, R [d, d] orthogonal: means μ_k Rᵀ and covariance R Σ Rᵀ."""
        return GMMParameters(self.weights, self.means @ rotation.T, rotation @ self.covariance @ rotation.T,
                             self.labels)

    def label_view(self, name: str) -> GMMParameters:
        """The population statistics of label ``name`` (``labels``): its classes' weights π_l, means μ_l and the
        pooled within-class covariance Σ_W = Σ + Σ_l Σ_{k ∈ l} π_k (μ_k − μ_l)(μ_k − μ_l)ᵀ — a class of a coarser
        label is itself a mixture. Its ``fisher_basis`` and ``mean_basis`` are that label's true Fisher and
        class-mean subspaces. Not a Gaussian mixture: do not ``sample`` it."""
        of = self.labels[name]
        weights = np.asarray(self.weights, dtype=np.float64) / np.sum(self.weights)
        values = np.unique(of)
        label_weights = np.array([weights[of == v].sum() for v in values])
        label_means = np.stack([weights[of == v] @ self.means[of == v] / w for v, w in zip(values, label_weights)])
        spread = sum(weights[k] * np.outer(self.means[k] - label_means[np.searchsorted(values, of[k])],
                                           self.means[k] - label_means[np.searchsorted(values, of[k])])
                     for k in range(len(weights)))
        return GMMParameters(label_weights, label_means, self.covariance + spread)


def regular_simplex(k: int, edge: float) -> np.ndarray:
    """K points [K, K−1] centred at 0 with every pairwise distance equal to ``edge``."""
    centred = np.eye(k) - 1.0 / k
    basis = np.linalg.svd(centred)[0][:, : k - 1]
    return centred @ basis * (edge / np.sqrt(2.0))


def pancakes_parameters(k: int, d: int, separation: float, signal_std: float, nuisance_std: float) -> GMMParameters:
    """The "parallel pancakes": K equally weighted means at the vertices of a regular simplex of edge
    ``separation`` × ``signal_std`` in the first K−1 coordinates (standard deviation ``signal_std``), under d−K+1
    nuisance coordinates of standard deviation ``nuisance_std``; Σ diagonal [d, d]."""
    signal = k - 1
    means = np.zeros((k, d))
    means[:, :signal] = regular_simplex(k, separation * signal_std)
    variances = np.full(d, nuisance_std**2)
    variances[:signal] = signal_std**2
    return GMMParameters(np.full(k, 1.0 / k), means, np.diag(variances))


def random_parameters(k: int, d: int, separation: float, signal_std: float, nuisance_std: float,
                      rng: np.random.Generator) -> GMMParameters:
    """K equally weighted Gaussian means and a random SPD Σ [d, d] whose eigenvalues are log-uniform in
    [signal_std², nuisance_std²]; the means are rescaled so their mean pairwise Mahalanobis distance is
    ``separation``."""
    eigenvalues = np.exp(rng.uniform(2 * np.log(signal_std), 2 * np.log(nuisance_std), d))
    basis = ortho_group.rvs(d, random_state=rng) if d > 1 else np.ones((1, 1))
    covariance = (basis * eigenvalues) @ basis.T
    means = rng.standard_normal((k, d))
    whitened = means @ (basis / np.sqrt(eigenvalues))
    pairwise = np.sqrt(((whitened[:, None] - whitened[None]) ** 2).sum(-1))
    mean_distance = pairwise[np.triu_indices(k, 1)].mean()
    return GMMParameters(np.full(k, 1.0 / k), means * (separation / mean_distance), covariance)


def spectrum_parameters(k: int, d: int, separation: float, alpha: float, rng: np.random.Generator) -> GMMParameters:
    """A mixture with a real-feature-like spectrum whose Fisher subspace is neither the top nor the bottom of it:
    Σ = V diag(i^(−α)) Vᵀ, i = 1..d (V random orthogonal: a power-law spectrum like natural-image features'), and
    K equally weighted means μ_k = Σ^(1/2) m_k with m_k a regular simplex of edge ``separation`` in a random
    (K − 1)-dim subspace W of the whitened space. Every pair of means is then at Mahalanobis distance
    ``separation``, the Fisher subspace is Σ^(−1/2) W, and its directions spread over the whole spectrum instead of
    sitting at its top or bottom (d = 512, K = 10: cos² 0.00–0.01 with both the top and the bottom K − 1
    eigenvectors of Σ_T). Needs d ≥ K − 1 (ValueError) and α > 0."""
    if k < 2 or d < k - 1:
        raise ValueError(f"spectrum needs k ≥ 2 and d ≥ k − 1, got k={k}, d={d}")
    if alpha <= 0 or separation <= 0:
        raise ValueError(f"spectrum needs alpha > 0 and separation > 0, got {alpha}, {separation}")
    eigenvalues = np.arange(1, d + 1, dtype=np.float64) ** -alpha
    basis = np.linalg.qr(rng.standard_normal((d, d)))[0] if d > 1 else np.ones((1, 1))
    covariance = (basis * eigenvalues) @ basis.T
    root = (basis * np.sqrt(eigenvalues)) @ basis.T
    directions = np.linalg.qr(rng.standard_normal((d, k - 1)))[0]
    whitened_means = regular_simplex(k, separation) @ directions.T
    return GMMParameters(np.full(k, 1.0 / k), whitened_means @ root, (covariance + covariance.T) / 2)


def hierarchy_parameters(k_fine: int, k_coarse: int, d: int, separation: float, alpha: float, nesting: str,
                         rng: np.random.Generator) -> GMMParameters:
    """Points with two labels, a coarse class k_c and a fine class k_f, whose means add up from orthogonal blocks:
    μ = Σ^(1/2)(W_c a_{k_c} + W_f b_{k_f}), a and b regular simplices of Mahalanobis edge ``separation``, W_c
    [d, K_c − 1] and W_f [d, K_f − 1] orthonormal and orthogonal to each other in the whitened space, under the
    ``spectrum`` preset's power-law Σ = V diag(i^(−α)) Vᵀ (so neither block is the top or the bottom of the
    variance). ``nested``: the components are the fine classes, fine class k_f inside coarse class ⌊k_f K_c / K_f⌋
    (K_f a multiple of K_c); ``crossed``: the components are every (k_c, k_f), the two labels independent. Labels
    ``fine`` (primary) and ``coarse`` (``GMMParameters.labels``; their true subspaces: ``label_view``)."""
    if k_coarse < 2 or k_fine < 2:
        raise ValueError(f"hierarchy needs k ≥ 2 fine and k_coarse ≥ 2 coarse classes, got {k_fine}, {k_coarse}")
    if d < (k_coarse - 1) + (k_fine - 1):
        raise ValueError(f"hierarchy needs d ≥ (k_coarse − 1) + (k − 1) = {k_coarse + k_fine - 2}, got {d}")
    eigenvalues = np.arange(1, d + 1, dtype=np.float64) ** -alpha
    basis = np.linalg.qr(rng.standard_normal((d, d)))[0]
    covariance = (basis * eigenvalues) @ basis.T
    root = (basis * np.sqrt(eigenvalues)) @ basis.T
    blocks = np.linalg.qr(rng.standard_normal((d, k_coarse + k_fine - 2)))[0]
    coarse_block, fine_block = blocks[:, : k_coarse - 1], blocks[:, k_coarse - 1 :]
    a = regular_simplex(k_coarse, separation) @ coarse_block.T  # [K_c, d] whitened
    b = regular_simplex(k_fine, separation) @ fine_block.T  # [K_f, d]
    if nesting == "nested":
        fine = np.arange(k_fine)
        coarse = fine * k_coarse // k_fine
    else:
        coarse, fine = (grid.ravel() for grid in np.meshgrid(np.arange(k_coarse), np.arange(k_fine), indexing="ij"))
    means = (a[coarse] + b[fine]) @ root
    return GMMParameters(np.full(len(fine), 1.0 / len(fine)), means, (covariance + covariance.T) / 2,
                         {"fine": fine, "coarse": coarse})


def label_hidden_parameters(d: int, separation: float, hidden_separation: float, signal_std: float) -> GMMParameters:
    """A binary label y and an independent binary hidden feature h (docs/theory.md, "One-hidden-layer heads"):
    x = (s_y/2)(2y − 1)σ e₁ + (s_h/2)(2h − 1)σ e₂ + σ n, n ~ N(0, I_d), s_y = ``separation``, s_h =
    ``hidden_separation``, σ = ``signal_std``: four equally likely components (y, h), index 2y + h. Labels
    ``label`` (y, primary), ``hidden`` (h) and ``combined`` ((y, h): what pairs that an augmentation preserving both
    share); their Fisher subspaces are e₁, e₂ and span(e₁, e₂) (``label_view``)."""
    if d < 2:
        raise ValueError(f"label_hidden needs d ≥ 2 (e₁ and e₂), got {d}")
    y, h = np.repeat([0, 1], 2), np.tile([0, 1], 2)
    means = np.zeros((4, d))
    means[:, 0] = separation / 2 * (2 * y - 1) * signal_std
    means[:, 1] = hidden_separation / 2 * (2 * h - 1) * signal_std
    return GMMParameters(np.full(4, 0.25), means, signal_std**2 * np.eye(d),
                         {"label": y, "hidden": h, "combined": np.arange(4)})


def preset_parameters(preset: str, k: int, d: int, separation: float, signal_std: float, nuisance_std: float,
                      alpha: float, rng: np.random.Generator, k_coarse: int = 2,
                      nesting: str = "nested", hidden_separation: float = 3.0) -> GMMParameters:
    """The mixture of one preset of the lab (``pancakes``, ``fisher_vs_means``, ``spectrum``, ``random`` or
    ``hierarchy`` with ``k_coarse`` coarse classes, ``nesting``), before quiet directions and rotation, drawing what
    it needs from ``rng``."""
    shape = dict(k=k, d=d, separation=separation, signal_std=signal_std, nuisance_std=nuisance_std)
    if preset == "hierarchy":
        return hierarchy_parameters(k, k_coarse, d, separation, alpha, nesting, rng)
    if preset == "label_hidden":
        return label_hidden_parameters(d, separation, hidden_separation, signal_std)
    if preset == "pancakes":
        return pancakes_parameters(**shape)
    if preset == "fisher_vs_means":
        return fisher_vs_means_parameters(**shape, rng=rng)
    if preset == "spectrum":
        return spectrum_parameters(k, d, separation, alpha, rng)
    if preset == "random":
        return random_parameters(**shape, rng=rng)
    raise ValueError(f"unknown preset {preset!r}")


def total_covariance_of(params: GMMParameters) -> np.ndarray:
    """Σ_T = Σ + Σ_k π_k (μ_k − μ̄)(μ_k − μ̄)ᵀ [d, d] of a mixture."""
    weights = np.asarray(params.weights, dtype=np.float64) / np.sum(params.weights)
    centred = params.means - weights @ params.means
    return params.covariance + (centred.T * weights) @ centred


def with_quiet_dims(params: GMMParameters, count: int, std: float) -> GMMParameters:
    """The mixture with ``count`` class-free coordinates of standard deviation ``std`` appended (means 0 there, Σ
    block-diagonal): directions whose variance lies below every eigenvalue of the original Σ_T when ``std`` is in
    ``quiet_std_range(params)`` (ValueError otherwise), so the bottom of Σ_T's spectrum is no longer the Fisher
    subspace: a head biased toward low variance finds them, a head that learned the pairs does not."""
    if count == 0:
        return params
    low, high = quiet_std_range(params)
    if not low < std < high:
        raise ValueError(f"quiet_std must be in ({low:.4g}, {high:.4g}) (below every total variance of the signal "
                         f"block, above the eigenvalue floor), got {std}")
    k, d = params.means.shape
    means = np.concatenate([params.means, np.zeros((k, count))], axis=1)
    covariance = np.zeros((d + count, d + count))
    covariance[:d, :d] = params.covariance
    covariance[d:, d:] = np.eye(count) * std**2
    return GMMParameters(params.weights, means, covariance, params.labels)


def quiet_std_range(params: GMMParameters) -> tuple[float, float]:
    """The open interval of standard deviations quiet directions may have: above the relative eigenvalue floor
    (√``FEATURE_FLOOR`` × the largest std of Σ_T, so the span the heads are optimised in keeps them) and below
    √(smallest eigenvalue of Σ_T) (so they are the bottom of its spectrum)."""
    eigenvalues = np.linalg.eigvalsh(total_covariance_of(params))
    return float(np.sqrt(FEATURE_FLOOR * eigenvalues[-1])), float(np.sqrt(max(eigenvalues[0], 0.0)))


# ---------------------------------------------------------------------------------------------------------------------
# "fisher_vs_means": the Fisher subspace, the class-mean subspace and the PCA subspace pairwise far apart.

FISHER_VS_MEANS_COS2 = 0.15
"""cos² between each class-mean direction and its Fisher direction in ``fisher_vs_means_parameters`` (so the
``fisher_cos2`` of S_M against S_F is exactly this)."""
FISHER_VS_MEANS_PCA_GAP = 0.8
"""Every eigenvalue of the total covariance Σ_T inside the signal block is at most this fraction of nuisance_std²,
so the top-(K−1) PCA subspace is made of nuisance directions with a margin for sampling noise."""
FISHER_VS_MEANS_EIGENVALUE_RATIO = 3.0
"""Largest / smallest Fisher eigenvalue of ``fisher_vs_means_parameters`` (K ≥ 3)."""


def _fisher_vs_means_shapes(peak_fisher_eigenvalue: float, cos2: float) -> dict[str, np.ndarray]:
    """Candidate shapes of one signal plane (e, f), in units of signal_std² (λ_v = 1).

    Σ_plane = κ u uᵀ + v vᵀ with e = cos θ u − sin θ v. For each κ on a log grid, the angles θ (p = sin²θ) solving
    cos²(e, Σ⁻¹e) = ``cos2`` are the roots of a quadratic (with x = 1/λ over e's spectral weights,
    cos² = (E x)² / E x²; a root exists iff 4κ/(1+κ)² ≤ cos2, the Kantorovich bound). Along e the mean
    coordinates get the between-class variance b = γ / m, m = eᵀΣ⁻¹e, so the plane's Fisher eigenvalue is
    γ = ``peak_fisher_eigenvalue``. Returns, per candidate: ``kappa``, ``p``, ``m``, ``top`` (the largest
    eigenvalue of the plane's total covariance Σ_plane + b e eᵀ) and ``blur`` = (eᵀΣe)(eᵀΣ⁻¹e), the factor by
    which projecting onto e (instead of whitening) shrinks the squared separation along e."""
    kappa = np.geomspace(1.0 + 1e-6, 1e5, 6000)
    y = 1.0 / kappa
    q = 1.0 - y
    a, b, c = q * q, q * (2 * y - cos2 * (1 + y)), (1 - cos2) * y * y
    disc = b * b - 4 * a * c
    ok = disc >= 0
    kappa, a, b, root = kappa[ok], a[ok], b[ok], np.sqrt(disc[ok])
    kappa = np.concatenate([kappa, kappa])
    p = np.concatenate([(-b - root) / (2 * a), (-b + root) / (2 * a)])
    valid = (p > 0) & (p < 1)
    kappa, p = kappa[valid], p[valid]
    if kappa.size == 0:
        raise ValueError(f"no plane shape reaches cos² = {cos2} between a mean direction and its Fisher direction")
    m = (1 - p) / kappa + p
    between = peak_fisher_eigenvalue / m
    # The plane's total covariance in the (e, f) basis: u = (cos θ, sin θ), v = (−sin θ, cos θ), e = (1, 0).
    t11 = kappa * (1 - p) + p + between
    t22 = kappa * p + 1 - p
    t12 = (kappa - 1) * np.sqrt(p * (1 - p))
    top = (t11 + t22) / 2 + np.sqrt(((t11 - t22) / 2) ** 2 + t12**2)
    blur = (kappa * (1 - p) + p) * m
    return {"kappa": kappa, "p": p, "m": m, "top": top, "blur": blur}


def _fisher_vs_means_stretch(k: int, eigenvalue_ratio: float) -> np.ndarray:
    """Stretch factors t_j ≥ 1, j = 0..K−2, geometric from 1 to √eigenvalue_ratio (all 1 for K = 2)."""
    q = k - 1
    if q == 1:
        return np.ones(1)
    return np.sqrt(eigenvalue_ratio) ** (np.arange(q) / (q - 1))


def fisher_vs_means_min_nuisance_std(k: int, separation: float, signal_std: float,
                                     eigenvalue_ratio: float = FISHER_VS_MEANS_EIGENVALUE_RATIO,
                                     cos2: float = FISHER_VS_MEANS_COS2) -> float:
    """The smallest ``nuisance_std`` for which ``fisher_vs_means_parameters`` can keep PCA on the nuisance
    directions (every signal-block eigenvalue of Σ_T ≤ FISHER_VS_MEANS_PCA_GAP × nuisance_std²)."""
    peak = separation**2 * _fisher_vs_means_stretch(k, eigenvalue_ratio)[-1] ** 2 / (2 * k)
    top = _fisher_vs_means_shapes(peak, cos2)["top"].min()
    return float(signal_std * np.sqrt(top / FISHER_VS_MEANS_PCA_GAP))


def fisher_vs_means_parameters(k: int, d: int, separation: float, signal_std: float, nuisance_std: float,
                               rng: np.random.Generator, *,
                               eigenvalue_ratio: float = FISHER_VS_MEANS_EIGENVALUE_RATIO,
                               cos2: float = FISHER_VS_MEANS_COS2) -> GMMParameters:
    """A shared-covariance GMM whose Fisher subspace S_F = span{Σ⁻¹(μ_k − μ̄)}, class-mean subspace
    S_M = span{μ_k − μ̄} and top-(K−1) PCA subspace of the total covariance Σ_T = Σ + Σ_k π_k (μ_k − μ̄)(μ_k − μ̄)ᵀ
    are pairwise far apart, with unequal Fisher eigenvalues.

    Construction (q = K − 1, equal weights). Coordinates: q mean axes e_1..e_q, q partner axes f_1..f_q, and
    d − 2q ≥ q nuisance axes (so d ≥ 3(K − 1), else ValueError).

    - In each plane (e_i, f_i), Σ has a small-variance eigenvector v_i (variance ``signal_std``²) and a
      large-variance one u_i (variance κ·signal_std², κ ≫ 1), with e_i = cos θ u_i − sin θ v_i: the mean axis lies
      mostly along the noisy direction. Then Σ⁻¹e_i points mostly along v_i, and θ is set so that
      cos²(e_i, Σ⁻¹e_i) = ``cos2`` exactly. The planes are Σ-orthogonal, so the principal angles between S_M and
      S_F are these per-plane angles: ``fisher_cos2`` of S_M against S_F is exactly ``cos2``. (By the
      Kantorovich inequality cos² ≥ 4κ/(1+κ)², so a small cos² needs κ ≳ 4/cos2: a large-variance direction of
      only (0.6·nuisance_std)² with nuisance_std = 5·signal_std cannot go below cos² = 0.36.)
      Among the shapes (κ, θ) with that cos² (``_fisher_vs_means_shapes``), the one chosen keeps the signal block
      under the nuisance variance (below) and, within that room, maximises (e_iᵀΣe_i)(e_iᵀΣ⁻¹e_i): the factor by
      which projecting onto S_M, instead of whitening, shrinks the squared separation along e_i. It grows with
      κ, so a larger ``nuisance_std`` makes S_M a worse place to cluster (S_F, S_M and PCA stay as far apart).
    - Means: a regular simplex of edge ``separation`` in Mahalanobis units (the coordinates of the whitened
      mixture along the Fisher directions), rotated at random (``rng``) and then stretched along its q axes by
      t_j = eigenvalue_ratio^(j/(2(q−1))) ≥ 1, placed on the e_i. So **every pair of means is at Mahalanobis
      distance ≥ ``separation``** (the pancakes' convention: there, every pair is at exactly ``separation``),
      and the generalised eigenvalues of (Σ_B, Σ) are exactly separation²·t_j²/(2K): they span a ratio
      ``eigenvalue_ratio`` (3 by default; a single one for K = 2).
    - Nuisance axes have variance ``nuisance_std``². Every eigenvalue of Σ_T inside the signal block is kept
      ≤ FISHER_VS_MEANS_PCA_GAP·nuisance_std², so the top-(K−1) PCA subspace lies in the nuisance block and is
      orthogonal to S_M and S_F (cos² 0). This needs ``nuisance_std ≥ fisher_vs_means_min_nuisance_std(k,
      separation, signal_std)`` (≈ 12.5·signal_std for K = 5, separation 6); else ValueError.
    - ``rng`` draws the simplex's orientation and one random rotation of the 2q signal axes (neither changes any
      cos² or Fisher eigenvalue); ``data.synthetic.gmm_parameters`` may rotate all d axes afterwards.

    Projected onto S_M alone (centred, not whitened) the classes are much less separated than in the Mahalanobis
    metric: each mean axis carries within-class variance eᵀΣe, inflated by the noisy direction it lies along
    (measured, K = 5, d = 100, separation 6, nuisance_std 15, seed 0, 5000 train and 5000 test points: k-means
    NMI 0.33 on S_M against 0.996 on LDA's coordinates, LDA accuracy 0.999; tests/test_fisher_vs_means.py).
    """
    q = k - 1
    if k < 2:
        raise ValueError(f"fisher_vs_means needs k ≥ 2 classes, got k={k}")
    if d < 3 * q:
        raise ValueError(
            f"fisher_vs_means needs d ≥ 3(k−1) = {3 * q} for k={k} (k−1 mean axes, k−1 partner axes in which the "
            f"Fisher directions turn away from the means, and ≥ k−1 nuisance axes for PCA to pick), got d={d}")
    if not 0 < cos2 < 1:
        raise ValueError(f"cos2 must be in (0, 1), got {cos2}")
    if eigenvalue_ratio < 1:
        raise ValueError(f"eigenvalue_ratio must be ≥ 1, got {eigenvalue_ratio}")
    if separation <= 0 or signal_std <= 0 or nuisance_std <= 0:
        raise ValueError(f"fisher_vs_means needs separation, signal_std and nuisance_std > 0, got {separation}, "
                         f"{signal_std}, {nuisance_std}")
    stretch = _fisher_vs_means_stretch(k, eigenvalue_ratio)
    peak = separation**2 * stretch[-1] ** 2 / (2 * k)
    shapes = _fisher_vs_means_shapes(peak, cos2)
    room = FISHER_VS_MEANS_PCA_GAP * (nuisance_std / signal_std) ** 2
    fits = shapes["top"] <= room
    if not fits.any():
        needed = signal_std * np.sqrt(shapes["top"].min() / FISHER_VS_MEANS_PCA_GAP)
        raise ValueError(
            f"fisher_vs_means with k={k}, separation={separation}, signal_std={signal_std} needs "
            f"nuisance_std ≥ {needed:.3g} (got {nuisance_std}) so that PCA still picks the nuisance directions: "
            "raise nuisance_std or lower separation")
    best = int(np.argmax(np.where(fits, shapes["blur"], -np.inf)))
    kappa, p, m_units = shapes["kappa"][best], shapes["p"][best], shapes["m"][best]

    # Σ in the (e, f, nuisance) axes.
    cos_t, sin_t = np.sqrt(1 - p), np.sqrt(p)
    plane = signal_std**2 * (kappa * np.outer([cos_t, sin_t], [cos_t, sin_t])
                             + np.outer([-sin_t, cos_t], [-sin_t, cos_t]))
    covariance = np.zeros((d, d))
    for i in range(q):
        idx = np.array([i, q + i])
        covariance[np.ix_(idx, idx)] = plane
    covariance[2 * q:, 2 * q:] = np.eye(d - 2 * q) * nuisance_std**2

    # Means: Mahalanobis coordinates A [K, q]; along e_i the Euclidean coordinate is A / √m, m = e_iᵀΣ⁻¹e_i.
    simplex = regular_simplex(k, separation)
    orientation = ortho_group.rvs(q, random_state=rng) if q > 1 else np.ones((1, 1))
    mahalanobis = simplex @ orientation * stretch
    means = np.zeros((k, d))
    means[:, :q] = mahalanobis * (signal_std / np.sqrt(m_units))

    rotation = ortho_group.rvs(2 * q, random_state=rng)
    means[:, : 2 * q] = means[:, : 2 * q] @ rotation.T
    covariance[: 2 * q, : 2 * q] = rotation @ covariance[: 2 * q, : 2 * q] @ rotation.T
    covariance = (covariance + covariance.T) / 2
    return GMMParameters(np.full(k, 1.0 / k), means, covariance)


def subspace_report(params: GMMParameters, r: int | None = None) -> dict[str, float | list[float]]:
    """Population geometry of a mixture: the ``fisher_cos2`` (Σ cos²θ_i / min of the dimensions, principal angles)
    between each pair of the Fisher subspace S_F, the class-mean subspace S_M = span{μ_k − μ̄}, the top-r PCA
    subspace of the total covariance Σ_T = Σ + Σ_k π_k (μ_k − μ̄)(μ_k − μ̄)ᵀ and its **minor** subspace (the r
    eigenvectors of Σ_T with the smallest eigenvalues: what a head biased toward low variance finds) (r = K − 1 by
    default), and the Fisher eigenvalues: the generalised eigenvalues of (Σ_B, Σ) on S_F,
    Σ_B = Σ_k π_k (μ_k − μ̄)(μ_k − μ̄)ᵀ, descending.

    Keys: ``fisher_vs_means``, ``fisher_vs_pca``, ``means_vs_pca``, ``fisher_vs_minor``, ``means_vs_minor``,
    ``pca_vs_minor`` (floats), ``fisher_eigenvalues`` (list) and ``fisher_eigenvalue_ratio`` (largest / smallest)."""
    weights = np.asarray(params.weights, dtype=np.float64) / np.sum(params.weights)
    centred = params.means - weights @ params.means
    between = (centred.T * weights) @ centred
    total = params.covariance + between
    q = len(weights) - 1
    r = q if r is None else r
    fisher = params.fisher_basis()
    means = params.mean_basis()
    vectors = np.linalg.eigh(total)[1]
    pca, minor = vectors[:, ::-1][:, :r], vectors[:, :r]
    eigenvalues = eigh(fisher.T @ between @ fisher, fisher.T @ params.covariance @ fisher, eigvals_only=True)[::-1]
    eigenvalues = [float(v) for v in eigenvalues]
    return {
        "fisher_vs_means": fisher_cos2(means, fisher),
        "fisher_vs_pca": fisher_cos2(pca, fisher),
        "means_vs_pca": fisher_cos2(pca, means),
        "fisher_vs_minor": fisher_cos2(minor, fisher),
        "means_vs_minor": fisher_cos2(minor, means),
        "pca_vs_minor": fisher_cos2(minor, pca),
        "fisher_eigenvalues": eigenvalues,
        "fisher_eigenvalue_ratio": eigenvalues[0] / eigenvalues[-1] if eigenvalues and eigenvalues[-1] > 0 else
        float("inf"),
    }
