"""Linear heads as LightningModules: f(x) = Aᵀ D^(−1/2)(x − x̄_train), weights held as a stack [G, d, r].

With ``settings.hidden`` (``heads.trunk``) the same classes are one-hidden-layer heads f(x) = Aᵀσ(Wᵀ D^(−1/2)(x − x̄))
(docs/theory.md, "One-hidden-layer heads"): ``weight`` is then the first layer (W [G, d, w] in the basis, as A is
for a linear head) and ``readout`` the output layer A [G, w, r]; every loss acts on the outputs only, so each
method's loss is unchanged.

Features are centred (and optionally standardised, D = per-feature variances) inside the module with
statistics of the training split, so a saved head carries them; ``feature_space_weight`` is Ã = D^(−1/2) A,
the matrix whose column space is compared with the Fisher subspace (docs/theory.md, "Coordinates").

A head given a ``basis`` [d, m] (``fit.head_module`` always gives one: the span the training inputs occupy, in the
coordinates of ``heads.parametrization``) is optimised inside it: A = basis·B with B [G, m, r] the parameter, so no
weight can sit in directions the training data never move in (they get no gradient and would keep their random
initial values, which test points do see; docs/theory.md, "Linear heads").
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Optional, Union

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from ssl_pipeline.heads.distributed import gather_with_gradient
from ssl_pipeline.heads.losses import info_nce_loss, orthogonality_penalty, simsiam_loss
from ssl_pipeline.heads.parametrization import orthonormal_init
from ssl_pipeline.heads.settings import HeadSettings


class LinearHead(pl.LightningModule):
    """Base class: G stacked linear heads on centred (optionally standardised) features."""

    def __init__(
        self, settings: dict, dim: int, mean: Tensor, scale: Tensor, num_heads: int = 1,
        basis: Optional[Tensor] = None, basis_variances: Optional[Tensor] = None,
    ) -> None:
        """``basis`` [d, m]: optimise A = basis·B inside its column span; ``basis_variances`` [m]: the inputs'
        variances in its coordinates (``heads.parametrization.HeadBasis``)."""
        super().__init__()
        # The per-head settings are kept with the module but not sent to a logger: one W&B run holds many fits,
        # and its config is the experiment's (each head's settings are in the results table).
        self.save_hyperparameters(ignore=["mean", "scale", "basis", "basis_variances", "mean2", "scale2", "basis2"], logger=False)
        self.settings = HeadSettings(**settings)
        inner = dim if basis is None else basis.shape[1]
        self.weight = nn.Parameter(orthonormal_init(num_heads, inner, self.settings.width, self.settings.seed))
        hidden = self.settings.hidden
        # the output layer of a one-hidden-layer head: its own seeded stream, orthonormal columns
        self.readout = None if hidden is None else nn.Parameter(
            orthonormal_init(num_heads, hidden, self.settings.r, self.settings.seed + 7_919))
        self.register_buffer("mean", mean.float())
        self.register_buffer("scale", scale.float())
        # not persistent: recomputed from the training data, and a grid's checkpoint and best-epoch copies would
        # otherwise hold a d × m matrix per head (118 MB for 18 heads at d = 1,280)
        self.register_buffer("basis", None if basis is None else basis.float(), persistent=False)
        variances = None if basis_variances is None else basis_variances.float()
        self.register_buffer("basis_variances", variances, persistent=False)

    @classmethod
    def from_settings(cls, settings: HeadSettings, dim: int, mean: Tensor, scale: Tensor, num_heads: int = 1,
                      basis: Optional[Tensor] = None, **extra):
        return cls(asdict(settings), dim, mean, scale, num_heads, basis, **extra)

    def head_weight(self) -> Tensor:
        """A [G, d, r] acting on the module's (centred, scaled) input: U·B with a basis, else the parameter."""
        return self.weight if self.basis is None else self.basis @ self.weight

    def forward(self, x: Tensor) -> Tensor:
        """x [B, d] → z [G, B, r]."""
        return self.outputs(((x - self.mean) * self.scale) @ self.head_weight())

    def outputs(self, projected: Tensor) -> Tensor:
        """The outputs [G, B, r] of the first layer's values [G, B, width]: themselves for a linear head, σ(·)A for
        a one-hidden-layer head (a grid projects many heads' first layers at once and hands each head its own)."""
        if self.readout is None:
            return projected
        return activation(self.settings.activation)(projected) @ self.readout

    def feature_space_weight(self) -> Tensor:
        """Ã = D^(−1/2) A [G, d, r], the head acting on centred, unscaled features."""
        return self.scale[None, :, None] * self.head_weight()

    def head_losses(self, x: Tensor, x_positive: Tensor) -> Tensor:
        """One loss per head, [G], of the feature batches x, x⁺ [B, d]."""
        return self.output_losses(self(x), self(x_positive))

    def output_losses(self, z: Tensor, z_positive: Tensor) -> Tensor:
        """One loss per head, [G], of the outputs z = f(x), z⁺ = f(x⁺) [G, B, r] (a grid projects the features of
        many heads at once, ``heads.grid``, and hands each head its own outputs)."""
        raise NotImplementedError

    def batched_loss_key(self) -> Optional[tuple]:
        """Heads whose keys are equal (not None) can share one ``batched_losses`` call in a grid."""
        return None

    def batched_losses(self, z: Tensor, z_positive: Tensor, heads: list["LinearHead"]) -> Tensor:
        """The losses [G] of several heads of equal ``batched_loss_key`` (``heads``, this one among them) from their
        outputs stacked [G, B, r], each with its own settings."""
        raise NotImplementedError

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        losses = self.head_losses(*batch)
        self.log("train/loss", losses.mean(), prog_bar=True, on_step=True, on_epoch=True, sync_dist=True)
        return losses.sum()

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self.log("val/loss", self.head_losses(*batch).mean(), prog_bar=True, sync_dist=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        s = self.settings
        optimizers = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
        return optimizers[s.optimizer](self.parameter_groups(), lr=s.lr, weight_decay=s.weight_decay)

    def head_parameters(self) -> list[nn.Parameter]:
        """The network's own weights (the first layer, and the output layer of a one-hidden-layer head)."""
        return [self.weight] if self.readout is None else [self.weight, self.readout]

    def parameter_groups(self) -> list[dict]:
        return [{"params": self.head_parameters()}]


def activation(name: Optional[str]):
    """σ of ``heads.trunk.activation``."""
    return {"relu": torch.relu, "tanh": torch.tanh}[name]


class InfoNCEHead(LinearHead):
    """Linear InfoNCE head (docs/theory.md, "InfoNCE"); negatives are every rank's positives under DDP."""

    def output_losses(self, z: Tensor, z_positive: Tensor, tau: Union[float, Tensor, None] = None) -> Tensor:
        """``tau`` [G]: one temperature per stacked head (``batched_losses``); default the settings' τ."""
        s = self.settings
        tau = s.tau if tau is None else tau
        all_positive, offset = gather_with_gradient(z_positive)
        targets = torch.arange(z.shape[1], device=z.device) + offset
        loss = info_nce_loss(z, all_positive, targets, tau, s.similarity)
        if s.symmetric:
            all_anchors, _ = gather_with_gradient(z)
            loss = 0.5 * (loss + info_nce_loss(z_positive, all_anchors, targets, tau, s.similarity))
        return loss

    def batched_loss_key(self) -> Optional[tuple]:
        s = self.settings
        return ("infonce", s.r, s.similarity, s.symmetric)

    def batched_losses(self, z: Tensor, z_positive: Tensor, heads: list[LinearHead]) -> Tensor:
        tau = torch.tensor([h.settings.tau for h in heads], dtype=torch.float64)  # 1/τ in float64, then cast (MPS has no float64)
        return self.output_losses(z, z_positive, tau)


class SimSiamHead(LinearHead):
    """Linear SimSiam head with a linear predictor P [G, r, r] (docs/theory.md, "SimSiam"), initialised at I.

    The collapse guard (``settings.regularizer``): ``covariance`` ξ‖AᵀΣ̂A − I‖²_F in the data's metric, or
    ``euclidean`` ξ‖AᵀA − I‖²_F. Σ̂ is the covariance of the head's input on the whole training split, computed
    **once** before training (``fit_head``), not per batch: the guard asks the head's outputs to be decorrelated
    with unit variance on the data, and the full-train covariance is that constraint exactly, where a batch
    estimate (1,024 pairs in 1,280 dimensions) is rank-deficient and noisy. Every rank holds the same training
    features, so under DDP every rank computes the same Σ̂ and the guard needs no communication. The head is
    optimised in Σ̂'s eigenbasis above the floor, A = basis·B with basisᵀΣ̂ basis = diag(v)
    (``heads.parametrization``): the guard is ξ‖Bᵀdiag(v)B − I‖²_F, and no weight is left in the span Σ̂ discards.
    """

    def __init__(
        self, settings: dict, dim: int, mean: Tensor, scale: Tensor, num_heads: int = 1,
        basis: Optional[Tensor] = None, basis_variances: Optional[Tensor] = None,
    ) -> None:
        super().__init__(settings, dim, mean, scale, num_heads, basis, basis_variances)
        if self.settings.regularizer == "covariance" and basis_variances is None:
            raise ValueError("the covariance guard needs the basis of the training inputs and their variances in it")
        r = self.settings.r
        self.predictor = nn.Parameter(torch.eye(r).repeat(num_heads, 1, 1))

    def parameter_groups(self) -> list[dict]:
        # A predictor as fast as the head learns to zero one output direction first; the head's column behind
        # it then gets no gradient and stays in a nuisance direction (cos² 0.75 of 1 on pancakes for 2 of 4
        # seeds at equal rates, ≥ 0.99 for all with the predictor 10× slower).
        predictor_lr = self.settings.lr * self.settings.predictor_lr_scale
        return [{"params": self.head_parameters()}, {"params": [self.predictor], "lr": predictor_lr}]

    def output_losses(self, z: Tensor, z_positive: Tensor) -> Tensor:
        loss = simsiam_loss(z @ self.predictor, z_positive @ self.predictor, z, z_positive)
        if self.settings.xi:
            loss = loss + self.settings.xi * self.collapse_guard(z)
        return loss

    def collapse_guard(self, z: Optional[Tensor] = None) -> Tensor:
        """‖AᵀΣ̂A − I‖²_F = ‖Bᵀdiag(v)B − I‖²_F (covariance), or ‖AᵀA − I‖²_F (euclidean), [G]. A one-hidden-layer
        head's outputs are not linear in x: its covariance guard is ‖Ĉov(z) − I‖²_F of the batch's outputs ``z``
        [G, B, r], its Euclidean guard ‖AᵀA − I‖²_F of the output layer."""
        if self.readout is not None:
            if self.settings.regularizer == "covariance":
                centred = z - z.mean(dim=1, keepdim=True)
                covariance = centred.transpose(-1, -2) @ centred / max(z.shape[1] - 1, 1)
                eye = torch.eye(z.shape[-1], dtype=z.dtype, device=z.device)
                return ((covariance - eye) ** 2).sum(dim=(-1, -2))
            return orthogonality_penalty(self.readout)
        if self.settings.regularizer == "covariance":
            return orthogonality_penalty(self.weight, self.basis_variances)
        return orthogonality_penalty(self.head_weight())

    def batched_loss_key(self) -> Optional[tuple]:
        """SimSiam heads of one r and guard share one loss call in a grid (each keeps its predictor, ξ and basis
        variances, stacked): per-head loss calls were the grid's largest remaining per-head cost."""
        s = self.settings
        if self.readout is not None:
            return None  # its guard reads the outputs: one loss call per head
        variances = None if self.basis_variances is None else tuple(self.basis_variances.shape)
        return ("simsiam", s.r, s.regularizer, variances)

    def batched_losses(self, z: Tensor, z_positive: Tensor, heads: list[LinearHead]) -> Tensor:
        """``output_losses`` of several heads from their stacked outputs [G, B, r]: predictors [G, r, r] in one
        batched product, each head's guard weighted by its own ξ (0: no guard, exactly)."""
        predictor = torch.cat([h.predictor for h in heads])
        loss = simsiam_loss(z @ predictor, z_positive @ predictor, z, z_positive)
        xi = [float(h.settings.xi or 0.0) for h in heads]
        if not any(xi):
            return loss
        if self.settings.regularizer == "covariance":
            guard = orthogonality_penalty(torch.cat([h.weight for h in heads]),
                                          torch.stack([h.basis_variances for h in heads]))
        else:
            guard = orthogonality_penalty(torch.cat([h.head_weight() for h in heads]))
        return loss + torch.tensor(xi, dtype=loss.dtype, device=loss.device) * guard


class SupervisedHead(LinearHead):
    """The supervised counterpart of the SSL heads: the same network (linear, or one hidden layer with
    ``heads.trunk``) trained with cross-entropy on the score label through a linear classifier C [G, r, K] on its r
    outputs (discarded after training, like SimSiam's predictor: the outputs are what is scored). Its batches are
    (features, labels), not pairs (``data.pairs.LabelSampler``)."""

    def __init__(
        self, settings: dict, dim: int, mean: Tensor, scale: Tensor, num_heads: int = 1,
        basis: Optional[Tensor] = None, basis_variances: Optional[Tensor] = None, num_classes: int = 2,
    ) -> None:
        super().__init__(settings, dim, mean, scale, num_heads, basis, basis_variances)
        generator = torch.Generator().manual_seed(self.settings.seed + 104_729)
        self.classifier = nn.Parameter(
            torch.randn(num_heads, self.settings.r, num_classes, generator=generator) / self.settings.r**0.5)
        self.classifier_bias = nn.Parameter(torch.zeros(num_heads, 1, num_classes))

    def label_losses(self, z: Tensor, labels: Tensor) -> Tensor:
        """Cross-entropy [G] of the outputs z [G, B, r] against ``labels`` [B]."""
        logits = z @ self.classifier + self.classifier_bias  # [G, B, K]
        return torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), labels[None].expand(len(logits), -1), reduction="none").mean(dim=1)

    def head_losses(self, x: Tensor, labels: Tensor) -> Tensor:
        """One loss per head of a labelled batch: ``x`` [B, d] (or a grid sampler's [1, 1, B, d]), ``labels`` [B]
        (or [1, B])."""
        x = x.reshape(-1, x.shape[-1])
        return self.label_losses(self(x), labels.reshape(-1).long())

    def parameter_groups(self) -> list[dict]:
        return [{"params": [*self.head_parameters(), self.classifier, self.classifier_bias]}]
