"""Grid fitting: many heads of a run trained by one LightningModule and one ``Trainer.fit`` (docs/theory.md,
"Grid fitting"), each head with exactly the result of its solo ``fit_head``.

A grid holds every head as its own solo module (``head_module``: own parameters, basis, settings and loss), in
``HeadGrid.members``. One ``CandidateSampler`` step gives, for every seed of the grid, the anchors, the
same-class and the uniform candidates and the coins of that seed's ``DeltaPairSampler`` batch: the three index
sets do not depend on δ, so the heads of one seed gather each block once and project it once with their
concatenated weights; each head then picks its positives' outputs with its own δ (``delta_choice``) and computes
its own loss (``LinearHead.output_losses``). One backward of the summed losses updates every head; each head's
parameters are their own optimiser parameter groups with the head's lr and weight decay, so Adam's state of a
parameter is the solo fit's. A head past its epochs or whose early stopping fired is frozen: its gradients are
set to None before the step (torch's optimisers skip such parameters: no moment update, no weight decay), and at
the end it holds the weights of its best validation epoch when it stops early (``KeepBestWeights``' rule).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, ClassVar, Optional

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Checkpoint
import torch
import torch.distributed as dist
from torch import Tensor, nn

from ssl_pipeline.data.pairs import delta_choice
from ssl_pipeline.heads.fitted import FittedHead
from ssl_pipeline.heads.modules import LinearHead
from ssl_pipeline.heads.settings import HeadSettings


def grid_key(settings: HeadSettings) -> tuple:
    """Heads with the same key share a grid: the same batches (batch size), the same input centring and scaling
    (standardize), the same optimiser class, and the same data (CLIP heads train on paired features, the others
    on one modality). Methods, δ, seeds, r, τ, ξ, lr, weight decay, epochs and early stopping may differ inside a
    grid. View heads (``HeadSettings.views``) train on their recipe's view table: one grid per recipe; ``supervised``
    heads on labelled batches: one grid of their own."""
    return (settings.batch_size, settings.standardize, settings.optimizer, settings.method == "clip", settings.views,
            settings.method == "supervised")


def step_bytes(settings: HeadSettings, world_size: int = 1) -> int:
    """The per-step memory one head adds to a grid, estimated from its largest tensors: InfoNCE's B × M similarity
    matrix (M = B × world size) with its softmax and their gradients (4 float32 copies; twice when symmetric); the
    other losses hold B × r tensors only (B × w more for a one-hidden-layer head's hidden layer)."""
    b = settings.batch_size
    hidden = 0 if settings.hidden is None else 32 * b * settings.hidden * world_size
    if settings.method == "infonce":
        return 16 * b * b * world_size * (2 if settings.symmetric else 1) + hidden
    return 32 * b * settings.r * world_size + hidden


def grid_groups(jobs: list[HeadSettings], step_budget: Optional[int] = None, world_size: int = 1) -> list[list[int]]:
    """Indices of ``jobs`` by grid, grids in the order of their first head, heads in job order. With
    ``step_budget`` (bytes), a grid whose heads' ``step_bytes`` add up to more is split into consecutive chunks
    that each stay under it (a chunk holds at least one head), heads of one seed kept together where possible
    (they share their gathered feature blocks)."""
    groups: dict[tuple, list[int]] = {}
    for i, settings in enumerate(jobs):
        groups.setdefault(grid_key(settings), []).append(i)
    if step_budget is None:
        return list(groups.values())
    chunks = []
    for group in groups.values():
        chunk: list[int] = []
        used = 0
        for i in sorted(group, key=lambda i: jobs[i].seed):
            cost = step_bytes(jobs[i], world_size)
            if chunk and used + cost > step_budget:
                chunks.append(sorted(chunk))
                chunk, used = [], 0
            chunk.append(i)
            used += cost
        chunks.append(sorted(chunk))
    return chunks


def metric_tag(tag: str) -> str:
    """A head tag as a logger metric prefix (``.`` and ``-`` → ``_``, as ``WandbRun.fit_logger`` does)."""
    return tag.replace(".", "_").replace("-", "_")


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@dataclass
class EpochReport:
    """One finished epoch of a grid, for progress lines: the epoch (1-based) of ``epochs``, each trained head's mean
    training loss over the epoch by tag, and how many head-epochs it completed (with those that early-stopped heads
    will no longer train)."""

    epoch: int
    epochs: int
    losses: dict[str, float]
    done: int

    def summary(self) -> str:
        """``epoch 3/10 · infonce 5.12–5.31 (12 heads) · simsiam −0.93 (1 head)``: the losses by method, compactly."""
        by_method: dict[str, list[float]] = {}
        for tag, loss in self.losses.items():
            # spectral_contrastive, simsiam-euclidean; view heads by method and recipe: "infonce views-crop"
            method = tag.split("_delta", 1)[0] if "_delta" in tag else tag.split("_seed", 1)[0].replace("_", " ")
            by_method.setdefault(method, []).append(loss)
        parts = [f"epoch {self.epoch}/{self.epochs}"]
        for method, losses in by_method.items():
            low, high = min(losses), max(losses)
            value = f"{low:.3g}" if math.isclose(low, high, rel_tol=5e-3) else f"{low:.3g}–{high:.3g}"
            parts.append(f"{method} {value} ({len(losses)} head{'s' if len(losses) > 1 else ''})")
        return " · ".join(parts)


def project_heads(x: Tensor, weights: dict[int, Tensor], group: list[int]) -> dict[int, Tensor]:
    """x [..., B, d] through the weights A_h [d, r_h] of every head of ``group`` at once (one GEMM with the weights
    concatenated) → each head's outputs [..., B, r_h]."""
    z = x @ torch.cat([weights[h] for h in group], dim=1)
    return dict(zip(group, z.split([weights[h].shape[1] for h in group], dim=-1)))


SELECT_INPUTS_MIN_WIDTH = 48
"""Output columns per input-side ``where`` above which choosing a grid's positives on the inputs pays
(``select_inputs``). Measured on 2 CPU cores: 6 InfoNCE heads per seed at r = 9, d = 1,280 with four distinct
mixed δ (Σr = 54) ran 75 ms a step choosing on the outputs against 100 ms on the inputs; 24 heads at r = 99, d = 512
(Σr = 594 a seed) 216 ms against 193 ms."""


def centred(x: Tensor, mean: Tensor, scale: Optional[Tensor]) -> Tensor:
    """(x − x̄)·D^(−1/2), the head's input; ``scale`` None when every scale is 1 (``unit_scale``: ``heads.standardize``
    false, the default): no product, which is exact (x·1 = x) and saves a pass over the [3, B, d] blocks,
    bandwidth-bound on 2 cores (a sixth of a holdout-shaped grid step)."""
    return x - mean if scale is None else (x - mean) * scale


def unit_scale(scale: Tensor) -> bool:
    """Whether every per-feature scale is 1 (checked once, when a grid is built, not per step)."""
    return bool(torch.all(scale == 1))


def select_inputs(width: int, by_delta: dict[float, list[int]]) -> bool:
    """Whether a seed's heads (``width`` = Σr, grouped ``by_delta``) choose their positives on the inputs: saving
    B·d·Σr multiply-adds (forward, and again for the weights' gradient) against one [B, d] ``where`` and one more
    skinny GEMM per δ strictly between 0 and 1 (``HeadGrid.grid_losses``)."""
    mixed = sum(1 for delta in by_delta if 0.0 < delta < 1.0)
    return width >= SELECT_INPUTS_MIN_WIDTH * max(mixed, 1)


def first_equal_basis(members: list[LinearHead], h: int, attribute: str = "basis") -> int:
    """The first member whose basis (``attribute``) equals member h's (the same span, orthonormal or whitened),
    compared by value so that the grouping survives ``.to()``/``.double()``, which copy every member's buffers
    apart."""
    basis = getattr(members[h], attribute)
    for other in range(h):
        candidate = getattr(members[other], attribute)
        if basis is None and candidate is None:
            return other
        if basis is not None and candidate is not None and basis.shape == candidate.shape and torch.equal(basis, candidate):
            return other
    return h


@dataclass
class HeadStopping:
    """One head's stopping state in a grid: whether it is ``frozen`` (past its epochs, or stopped early), and early
    stopping's record — the ``best`` held-out loss, the epoch that reached it (``best_epoch``, 1-based), the
    epochs since (``wait``) and the weights of that epoch (``best_state``, until the head finishes)."""

    frozen: bool = False
    best: float = math.inf
    best_epoch: int = 0
    wait: int = 0
    best_state: Optional[dict[str, Tensor]] = None
    FIELDS: ClassVar[tuple[str, ...]] = ("frozen", "best", "best_epoch", "wait", "best_state")

    def observe(self, value: float, epoch: int, patience: int, member: nn.Module) -> None:
        """The held-out loss ``value`` of epoch ``epoch``: the rule of the solo fit's ``KeepBestWeights`` (keep
        ``member``'s weights of the best epoch) then ``EarlyStopping(patience, mode="min")`` (freeze after
        ``patience`` epochs without improvement, or at once on a non-finite loss)."""
        if value < self.best:
            self.best, self.best_epoch, self.wait = value, epoch, 0
            self.best_state = {k: v.detach().clone() for k, v in member.state_dict().items()}
        else:
            self.wait += 1
            if self.wait >= patience or not math.isfinite(value):
                self.frozen = True


class HeadGrid(pl.LightningModule):
    """G heads (``members``, each a solo head module of one grid) trained together; see the module docstring."""

    def __init__(
        self, members: list[LinearHead], features_key: Optional[str] = None,
        on_finished: Optional[Callable[["FittedHead"], None]] = None,
        on_epoch: Optional[Callable[["EpochReport"], None]] = None,
    ) -> None:
        """``on_finished`` (picklable for ``ddp_spawn``) receives each head on global rank 0 as soon as it is frozen,
        with its final weights: a run saves it there, so an interrupted grid keeps its finished heads. ``on_epoch``
        receives an ``EpochReport`` on global rank 0 after every epoch (progress lines)."""
        super().__init__()
        if len({m.settings.optimizer for m in members}) > 1:
            raise ValueError("the heads of a grid share one optimiser class")
        self.members = nn.ModuleList(members)
        self.seeds = sorted({m.settings.seed for m in members})
        self.by_seed = [[h for h, m in enumerate(members) if m.settings.seed == seed] for seed in self.seeds]
        self.epochs = [m.settings.epochs for m in members]
        self.patience = [m.settings.early_stopping_patience for m in members]
        self.tags = [metric_tag(m.settings.tag) for m in members]
        self.basis_owner = [first_equal_basis(members, h) for h in range(len(members))]
        self.unit_scale = unit_scale(members[0].scale)
        self.trunks = any(m.settings.hidden is not None for m in members)
        self.supervised = members[0].settings.method == "supervised"
        if any((m.settings.method == "supervised") != self.supervised for m in members):
            raise ValueError("supervised heads train on labelled batches: they form their own grid (grid_key)")
        g = len(members)
        self.stopping = [HeadStopping() for _ in range(g)]
        self._val_sum: Optional[Tensor] = None
        self._val_batches = 0
        self._epoch_start = 0.0
        self.features_key = features_key
        self.on_finished = on_finished
        self.on_epoch = on_epoch
        self._loss_sum: Optional[Tensor] = None
        self._loss_steps = 0
        self._step_losses: tuple[list[int], Optional[Tensor]] = ([], None)
        # Results as buffers: ``ddp_spawn`` hands rank 0's state_dict back to the main process, not attributes.
        self.register_buffer("head_epochs", torch.zeros(g, dtype=torch.long))
        self.register_buffer("head_seconds", torch.zeros(g, dtype=torch.float64))

    # --- the grid's forward -------------------------------------------------------------------------------------
    def grid_losses(self, blocks: Tensor, coins: Tensor, heads: list[int]) -> dict[int, Tensor]:
        """Each listed head's loss (a scalar) on one step: blocks [S, 3, B, d] (anchors, same-class and uniform
        candidates of each seed), coins [S, B].

        Per seed, the anchors are projected once with every head's weights concatenated. Each head's positives are
        its δ's choice between the two candidates, made either on the outputs (both candidate blocks projected with
        all the seed's weights, then one ``where`` on [B, r] per head: 2·B·d·Σr multiply-adds) or on the inputs
        (one ``where`` on [B, d] per distinct δ strictly between 0 and 1, then one GEMM per δ: B·d·Σr) —
        ``select_inputs`` picks the cheaper. InfoNCE heads of a seed with one r, similarity and symmetry then share
        one batched loss (their B × B similarities as one ``bmm``, each with its own τ)."""
        first = self.members[0]
        head_weights = self.head_weights(heads)
        if self.supervised:
            return self.label_losses(blocks, coins, heads, head_weights)
        losses = {}
        for s, seed_heads in enumerate(self.by_seed):
            active = [h for h in seed_heads if h in heads]
            if not active:
                continue
            x = centred(blocks[s], first.mean, None if self.unit_scale else first.scale)  # [3, B, d]
            by_delta: dict[float, list[int]] = {}
            for h in active:
                by_delta.setdefault(float(self.members[h].settings.delta), []).append(h)
            if select_inputs(sum(head_weights[h].shape[1] for h in active), by_delta):
                anchors = project_heads(x[0], head_weights, active)
                positives = {}
                for delta, group in by_delta.items():
                    x_positive = x[1] if delta >= 1.0 else x[2] if delta <= 0.0 else torch.where(
                        delta_choice(coins[s], delta)[:, None], x[1], x[2])
                    positives.update(project_heads(x_positive, head_weights, group))
            else:
                projected = project_heads(x, head_weights, active)  # each [3, B, r_h]
                anchors = {h: z[0] for h, z in projected.items()}
                positives = {h: torch.where(delta_choice(coins[s], self.members[h].settings.delta)[:, None],
                                            z[1], z[2]) for h, z in projected.items()}
            if self.trunks:  # one-hidden-layer heads: σ and the output layer after the positives are chosen
                anchors, positives = ({h: self.members[h].outputs(z[None])[0] for h, z in values.items()}
                                      for values in (anchors, positives))
            by_loss: dict[tuple, list[int]] = {}
            for h in active:
                by_loss.setdefault(self.members[h].batched_loss_key(), []).append(h)
            for key, group in by_loss.items():
                if key is None or len(group) == 1:
                    for h in group:
                        losses[h] = self.members[h].output_losses(anchors[h][None], positives[h][None])[0]
                    continue
                values = self.members[group[0]].batched_losses(
                    torch.stack([anchors[h] for h in group]), torch.stack([positives[h] for h in group]),
                    [self.members[h] for h in group])
                losses.update(zip(group, values))
        return losses

    def label_losses(self, blocks: Tensor, labels: Tensor, heads: list[int],
                     head_weights: dict[int, Tensor]) -> dict[int, Tensor]:
        """The cross-entropy of each listed ``supervised`` head on one step of ``LabelSampler``: blocks [S, 1, B, d]
        (each seed's batch) and their labels [S, B]; the heads of a seed project the batch at once."""
        first = self.members[0]
        losses = {}
        for s, seed_heads in enumerate(self.by_seed):
            active = [h for h in seed_heads if h in heads]
            if not active:
                continue
            x = centred(blocks[s, 0], first.mean, None if self.unit_scale else first.scale)  # [B, d]
            for h, projected in project_heads(x, head_weights, active).items():
                member = self.members[h]
                losses[h] = member.label_losses(member.outputs(projected[None]), labels[s].long())[0]
        return losses

    def head_weights(self, heads: list[int], tower: int = 1) -> dict[int, Tensor]:
        """A_h = U·B_h [d, r_h] of the listed heads, one GEMM per distinct basis U (``basis_owner``): the heads'
        B are concatenated, so a d × m basis is read once per step instead of once per head (18 skinny products
        U·B_h, with their backward, were a fifth of an 18-head InfoNCE step on 45k × 1280). ``tower`` 2: the
        second tower of CLIP heads (``basis2``, ``weight2``)."""
        suffix = "" if tower == 1 else str(tower)
        owners = getattr(self, f"basis{suffix}_owner")
        by_basis: dict[int, list[int]] = {}
        for h in heads:
            by_basis.setdefault(owners[h], []).append(h)
        weights = {}
        for owner, group in by_basis.items():
            basis = getattr(self.members[owner], f"basis{suffix}")
            stacked = torch.cat([getattr(self.members[h], f"weight{suffix}")[0] for h in group], dim=1)  # [m, Σ r_h]
            product = stacked if basis is None else basis @ stacked
            widths = [getattr(self.members[h], f"weight{suffix}").shape[-1] for h in group]  # r, or w (trunk)
            for h, weight in zip(group, product.split(widths, dim=1)):
                weights[h] = weight
        return weights

    def _computed_heads(self) -> list[int]:
        """Frozen heads are skipped on one process; under DDP every head is computed (DDP expects a gradient for
        every parameter) and a frozen head's gradients are dropped before the step."""
        if _distributed():
            return list(range(len(self.members)))
        return [h for h in range(len(self.members)) if not self.stopping[h].frozen]

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Optional[Tensor]:
        losses = self.grid_losses(*batch, self._computed_heads())
        if not losses:
            return None
        active = [h for h in losses if not self.stopping[h].frozen]
        values = torch.stack([losses[h].detach() for h in active]) if active else None
        if values is not None and _distributed():
            values = values.clone()
            dist.all_reduce(values)
            values /= dist.get_world_size()
        if values is not None:
            epoch_sum = torch.zeros(len(self.members), dtype=torch.float64, device=values.device)
            epoch_sum[active] = values.double()
            self._loss_sum = epoch_sum if self._loss_sum is None else self._loss_sum + epoch_sum
            self._loss_steps += 1
            # the mean over heads for Lightning's progress bar only (a run shows its own: ``EpochReport``), so it
            # is logged only when that bar is on: ``self.log``'s bookkeeping was a fifth of a 45-head digits fit
            if self.trainer.progress_bar_callback is not None:
                self.log("train/loss", values.mean(), prog_bar=True, logger=False, on_step=True, on_epoch=True)
            self._step_losses = (active, values)
        return torch.stack(list(losses.values())).sum()

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        """Each head's loss of the step to the loggers as ``<tag>/train/loss_step`` every
        ``log_every_n_steps`` optimiser steps (against ``trainer/global_step``), written directly: ``self.log`` per
        head and step (45 heads on the digits) spent a sixth of the fit in Lightning's metric bookkeeping."""
        active, values = self._step_losses
        self._step_losses = ([], None)
        if values is None or not self.trainer.loggers or self.global_step % self.trainer.log_every_n_steps:
            return
        metrics = {f"{self.tags[h]}/train/loss_step": float(value) for h, value in zip(active, values.tolist())}
        for logger in self.trainer.loggers:
            logger.log_metrics(metrics, step=self.global_step)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        for h, stopping in enumerate(self.stopping):
            if stopping.frozen:
                for p in self.members[h].parameters():
                    p.grad = None

    # --- validation: per-head early stopping and best weights ---------------------------------------------------
    def _stopping_heads(self) -> list[int]:
        return [h for h, patience in enumerate(self.patience) if patience is not None and not self.stopping[h].frozen]

    def on_validation_epoch_start(self) -> None:
        self._val_sum = None
        self._val_batches = 0

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        heads = self._stopping_heads()
        if not heads:
            return
        losses = self.grid_losses(*batch, heads)
        values = torch.zeros(len(self.members), dtype=torch.float64, device=batch[0].device)
        for h, loss in losses.items():
            values[h] = loss.detach().double()
        self._val_sum = values if self._val_sum is None else self._val_sum + values
        self._val_batches += 1

    def on_validation_epoch_end(self) -> None:
        """The rule of the solo fit's ``KeepBestWeights`` then ``EarlyStopping(patience, mode="min")`` per head, on
        the mean over val batches (and ranks) of its held-out loss."""
        if self.trainer.sanity_checking or self._val_sum is None:
            return
        mean = self._val_sum / self._val_batches
        if _distributed():
            dist.all_reduce(mean)
            mean /= dist.get_world_size()
        for h in self._stopping_heads():
            value = float(mean[h])
            if self.trainer.loggers:
                self.log(f"{self.tags[h]}/val/loss", value)
            self.stopping[h].observe(value, self.current_epoch + 1, self.patience[h], self.members[h])

    def on_train_epoch_start(self) -> None:
        self._epoch_start = time.perf_counter()
        self._epoch_heads = [h for h, stopping in enumerate(self.stopping) if not stopping.frozen]
        self._loss_sum, self._loss_steps = None, 0

    def on_train_epoch_end(self) -> None:
        """Share the epoch's wall time among the heads it trained; freeze the heads past their epochs and finish
        every head frozen in this epoch (by its epochs or its early stopping)."""
        seconds = (time.perf_counter() - self._epoch_start) / max(1, len(self._epoch_heads))
        for h in self._epoch_heads:
            self.head_seconds[h] += seconds
            if self.current_epoch + 1 >= self.epochs[h]:
                self.stopping[h].frozen = True
            if self.stopping[h].frozen:
                self.finish(h)
        means = (self._loss_sum / max(1, self._loss_steps)).tolist() if self._loss_sum is not None else []
        if self.trainer.loggers and means and self._epoch_heads:  # each head's ``<tag>/train/loss_epoch``
            epoch = {f"{self.tags[h]}/train/loss_epoch": means[h] for h in self._epoch_heads}
            for logger in self.trainer.loggers:
                logger.log_metrics(epoch, step=self.global_step)
        if self.on_epoch is not None and self.trainer.is_global_zero and self._epoch_heads:
            self.on_epoch(EpochReport(
                epoch=self.current_epoch + 1,
                epochs=max(self.epochs),
                losses={self.members[h].settings.tag: means[h] for h in self._epoch_heads if means},
                # head-epochs done: this epoch's heads, plus the epochs a head stopped early will not train
                done=sum(1 + (self.epochs[h] - self.current_epoch - 1 if self.stopping[h].frozen else 0)
                         for h in self._epoch_heads),
            ))
        if all(stopping.frozen for stopping in self.stopping):
            self.trainer.should_stop = True

    def finish(self, h: int) -> None:
        """A head's last epoch is over: an early-stopping head takes back the weights of its best validation epoch
        (as ``KeepBestWeights`` does), and ``on_finished`` receives it."""
        stopping = self.stopping[h]
        if stopping.best_state is not None:
            self.members[h].load_state_dict(stopping.best_state)
            stopping.best_state = None
        self.head_epochs[h] = stopping.best_epoch if self.patience[h] is not None else self.epochs[h]
        if self.on_finished is not None and self.trainer.is_global_zero:
            self.on_finished(self.fitted_head(h))

    def fitted_head(self, h: int) -> "FittedHead":
        """Head ``h`` as its solo ``fit_head`` returns it; ``fit_seconds``: its share of the grid's epochs (each
        epoch's wall time split equally among the heads it trained)."""
        member = self.members[h]
        return FittedHead.of_module(member, float(self.head_seconds[h]), self.features_key, int(self.head_epochs[h]))

    # --- checkpoints (resumable sweeps) ------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """The per-head state Lightning does not know (frozen, early stopping, best weights), and the heads'
        settings, so a resume can check it continues the same grid. Plain types and tensors only: the checkpoint
        is read back with ``weights_only=True``."""
        checkpoint["grid"] = {"settings": [asdict(m.settings) for m in self.members]}
        for name in HeadStopping.FIELDS:  # one list per field, as before the state was an object per head
            checkpoint["grid"][name] = [getattr(stopping, name) for stopping in self.stopping]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["grid"]
        if state["settings"] != [asdict(m.settings) for m in self.members]:
            raise ValueError("the checkpoint holds another grid (other heads or settings)")
        self.stopping = [HeadStopping(**{name: state[name][h] for name in HeadStopping.FIELDS})
                         for h in range(len(self.members))]

    # --- optimiser ------------------------------------------------------------------------------------------------
    def configure_optimizers(self) -> torch.optim.Optimizer:
        """One parameter group per head parameter group, with the head's lr (× the predictor's scale) and weight
        decay: per-parameter state as in the head's solo optimiser."""
        groups = []
        for member in self.members:
            s = member.settings
            for group in member.parameter_groups():
                groups.append({"lr": s.lr, "weight_decay": s.weight_decay, **group})
        optimizers = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
        s = self.members[0].settings
        return optimizers[s.optimizer](groups, lr=s.lr, weight_decay=s.weight_decay)


class GridCheckpoint(Checkpoint):
    """Writes the grid's whole training state (heads, Adam's moments, the loops' epoch — which fixes the samplers'
    draws —, the per-head stopping state and best weights) to ``path`` after the first epoch and then after an
    epoch whenever ``every_seconds`` have passed since the last write, atomically (temporary file, then rename), so
    a killed fit resumes from its last saved epoch (``fit_grid``) and loses at most ``every_seconds`` of work.
    Writing after every epoch cost 6 % of the digits main job's fitting (60 short epochs). Rank 0's clock decides,
    broadcast to every rank (the save synchronises them)."""

    every_seconds: float = 10.0

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.last_write: Optional[float] = None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        due = self.last_write is None or time.monotonic() - self.last_write >= self.every_seconds
        if not trainer.strategy.broadcast(due, src=0):
            return
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        trainer.save_checkpoint(temporary)  # every rank calls it (it synchronises); rank 0 writes
        if trainer.is_global_zero:
            os.replace(temporary, self.path)
        self.last_write = time.monotonic()


def checkpoint_settings(path: Path) -> list[HeadSettings]:
    """The heads of the grid a checkpoint (``GridCheckpoint``) holds, read without pickle."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    return [HeadSettings(**settings) for settings in state["grid"]["settings"]]
