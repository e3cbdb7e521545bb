"""Augmentation-enabled pairs with parameter δ (docs/theory.md, "Augmentation-enabled pairs").

On labelled features the "component" is the class: with probability δ the positive is another sample of the
anchor's class (never the anchor itself), otherwise a uniformly random sample. Sampling is vectorised over a
whole epoch; a batch is a slice of index tensors, never a Python loop over samples.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from ssl_pipeline.theory.spectral import PairMoments, pair_moments


class ClassIndex:
    """Class layout of a label vector [N] for O(1) same-class draws: samples sorted by class, each class's
    start and count, and each sample's position inside its class."""

    def __init__(self, labels: Tensor) -> None:
        labels = labels.long()
        self.labels = labels
        self.order = torch.argsort(labels, stable=True)
        self.counts = torch.bincount(labels)
        self.starts = torch.cumsum(self.counts, 0) - self.counts
        self.position = torch.empty_like(labels)
        self.position[self.order] = torch.arange(len(labels)) - self.starts[labels[self.order]]

    def __len__(self) -> int:
        return len(self.labels)


def class_candidates(index: ClassIndex, classes: Tensor, generator: torch.Generator,
                     skip: Optional[Tensor] = None) -> tuple[Tensor, Tensor, Tensor]:
    """The three draws behind a pair's second member, none of which depends on δ: a uniformly random item of
    ``index`` with the label ``classes`` [B], a uniformly random item of ``index`` [B], and the coin [B] (float32
    in [0, 1)); indices into ``index``'s items. ``skip`` [B]: the anchors' own positions inside their class when
    anchors and candidates are the same items (unimodal δ-pairs never pair an item with itself), else None (the
    partners of CLIP pairs live in the other modality). The generator is consumed in the same order whatever δ is,
    so heads of one seed with different δ share all three (grid fitting, ``heads.grid``). ValueError if a class of
    ``classes`` has no candidate."""
    classes = classes.long()
    counts = torch.zeros(max(int(classes.max()) + 1 if len(classes) else 0, len(index.counts)), dtype=torch.long)
    counts[: len(index.counts)] = index.counts
    room = counts[classes] - (0 if skip is None else 1)
    if len(classes) and int(room.min()) <= 0:
        missing = int(classes[room <= 0][0])
        raise ValueError(f"class {missing} has no other item to pair with" if skip is not None
                         else f"shared class {missing} has no item in the partner modality")
    draw = torch.floor(torch.rand(len(classes), generator=generator) * room).long()
    draw = torch.minimum(draw, room - 1)  # rand · n < n in exact arithmetic; guard float32 rounding
    if skip is not None:
        draw += (draw >= skip).long()  # skip the anchor itself
    same_class = index.order[index.starts[classes] + draw]
    uniform = torch.randint(len(index), (len(classes),), generator=generator)
    coin = torch.rand(len(classes), generator=generator)
    return same_class, uniform, coin


def sample_delta_candidates(index: ClassIndex, anchors: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """``class_candidates`` of anchor indices [B] among the same items: another sample of the anchor's class, a
    uniformly random sample and the coin. Every class must have at least 2 samples."""
    return class_candidates(index, index.labels[anchors], generator, skip=index.position[anchors])


def cross_modal_candidates(anchor_shared: Tensor, partner_index: ClassIndex,
                           generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """``class_candidates`` of anchors whose shared labels are ``anchor_shared`` [B] among the partner modality's
    items (whose k_s ``partner_index`` holds): an item with the anchor's k_s, a uniformly random item, the coin.
    ValueError if an anchor's k_s has no item in the partner modality."""
    return class_candidates(partner_index, anchor_shared, generator)


def delta_choice(coin: Tensor, delta: float) -> Tensor:
    """Where the positive is the same-class candidate: coin < δ, compared in float32 as the sampler draws it."""
    return coin.float() < delta


def sample_delta_positives(index: ClassIndex, anchors: Tensor, delta: float, generator: torch.Generator) -> Tensor:
    """Positives [B] for anchor indices [B]: with probability δ another sample of the anchor's class, else a
    uniformly random sample. Every class must have at least 2 samples."""
    same_class, uniform, coin = sample_delta_candidates(index, anchors, generator)
    return torch.where(delta_choice(coin, delta), same_class, uniform)


def sample_cross_modal_partners(shared_1, shared_2, delta: float, generator: torch.Generator) -> Tensor:
    """One partner in modality 2 for every item of modality 1, indices [N1] into modality 2 (docs/theory.md,
    "CLIP-GMM"): with probability δ a uniformly random modality-2 item with the same k_s, else a uniformly random
    modality-2 item (its k_s redrawn from the modality's class shares, so it may equal the anchor's by chance:
    P(same k_s) = δ + (1 − δ) π_{k_s}). ``shared_1`` [N1] and ``shared_2`` [N2] are the k_s labels (tensors or
    arrays). Private labels play no part: k₁ and k₂ of a pair are independent. The CLIP heads draw the same pairs
    batch by batch (``CrossModalSampler``); this whole-epoch form is what tests check the distribution on."""
    shared_1, shared_2 = torch.as_tensor(shared_1).long(), torch.as_tensor(shared_2).long()
    same_class, uniform, coin = cross_modal_candidates(shared_1, ClassIndex(shared_2), generator)
    return torch.where(delta_choice(coin, delta), same_class, uniform)


class DeltaPairSampler(Sampler[Tensor]):
    """Yields index pairs [2, B] (anchor, positive): each epoch is a seeded permutation of the anchors, split
    into global batches of ``batch_size × world_size``; rank ``rank`` takes its slice of each.

    The draw depends only on (seed, epoch), so every rank sees the same epoch and resuming is reproducible.
    """

    def __init__(self, labels: Tensor, delta: float, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        self.index = ClassIndex(labels)
        self.delta = delta
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.batch_size = min(batch_size, len(labels) // world_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return max(1, len(self.index) // (self.batch_size * self.world_size))

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        anchors = torch.randperm(len(self.index), generator=generator)
        positives = sample_delta_positives(self.index, anchors, self.delta, generator)
        pairs = torch.stack([anchors, positives])
        step = self.batch_size * self.world_size
        for start in range(0, len(self) * step, step):
            offset = start + self.rank * self.batch_size
            yield pairs[:, offset : offset + self.batch_size]


class CandidateSampler(Sampler[tuple[Tensor, Tensor]]):
    """``DeltaPairSampler`` for every seed of a grid at once, before δ is applied: each step yields index sets
    [S, 3, B] (anchor, same-class candidate, uniform candidate) and coins [S, B] for the S ``seeds``; a head of seed
    s and parameter δ takes positive = same-class where ``delta_choice(coin, δ)``, else uniform — exactly the pairs
    ``DeltaPairSampler(labels, δ, batch_size, s)`` yields, batch by batch and rank by rank. ``fixed``: the same
    draw every epoch (``HeldOutPairSampler``)."""

    def __init__(self, labels: Tensor, seeds: list[int], batch_size: int, rank: int = 0, world_size: int = 1,
                 fixed: bool = False):
        self.index = ClassIndex(labels)
        self.seeds = list(seeds)
        self.rank = rank
        self.world_size = world_size
        self.batch_size = min(batch_size, len(labels) // world_size)
        self.fixed = fixed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        if not self.fixed:
            self.epoch = epoch

    def __len__(self) -> int:
        return max(1, len(self.index) // (self.batch_size * self.world_size))

    def candidates(self, anchors: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """Same-class candidate, uniform candidate and coin of each anchor (``sample_delta_candidates``)."""
        return sample_delta_candidates(self.index, anchors, generator)

    def draw(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """One seed's epoch: index sets [3, N] (a permutation of the anchors, their same-class and uniform
        candidates) and coins [N]."""
        anchors = torch.randperm(len(self.index), generator=generator)
        same_class, uniform, coin = self.candidates(anchors, generator)
        return torch.stack([anchors, same_class, uniform]), coin

    def __iter__(self):
        indices, coins = [], []
        for seed in self.seeds:
            drawn, coin = self.draw(torch.Generator().manual_seed(seed * 1_000_003 + self.epoch))
            indices.append(drawn)
            coins.append(coin)
        indices, coins = torch.stack(indices), torch.stack(coins)
        step = self.batch_size * self.world_size
        for start in range(0, len(self) * step, step):
            offset = start + self.rank * self.batch_size
            yield indices[..., offset : offset + self.batch_size], coins[:, offset : offset + self.batch_size]


class ViewPairSampler(CandidateSampler):
    """Pairs of two different augmented views of one image (``heads.pairs: views``) for every seed of a grid, as
    ``CandidateSampler`` steps over a view table [N_all·V, d] (``data.views.ViewTable``): index sets [S, 3, B] of
    table rows — the anchor's view, the other view, the other view again — and coins [S, B] of zeros, so a head of
    δ = 1 (every view head) takes the other view as its positive. Each seed and epoch draws a permutation of the
    split's images (``image_rows``: their rows in the whole train split) and, per image, an ordered pair of
    different views uniformly among the V(V − 1). ``labels`` (the images' classes) are only counted."""

    def __init__(self, labels: Tensor, image_rows: Tensor, num_views: int, seeds: list[int], batch_size: int,
                 rank: int = 0, world_size: int = 1, fixed: bool = False):
        super().__init__(labels, seeds, batch_size, rank, world_size, fixed)
        self.image_rows, self.num_views = image_rows.long(), num_views

    def draw(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        n, v = len(self.index), self.num_views
        anchors = torch.randperm(n, generator=generator)
        first = torch.randint(v, (n,), generator=generator)
        second = (first + 1 + torch.randint(v - 1, (n,), generator=generator)) % v
        base = self.image_rows[anchors] * v
        return torch.stack([base + first, base + second, base + second]), torch.zeros(n)


class LabelSampler(CandidateSampler):
    """Labelled batches for every seed of a grid of ``supervised`` heads, as ``CandidateSampler`` steps: index sets
    [S, 1, B] (each seed's permutation of the split, batch by batch and rank by rank) and, in the coins' place,
    their labels [S, B]."""

    def draw(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        anchors = torch.randperm(len(self.index), generator=generator)
        return anchors[None], self.index.labels[anchors]


class CandidateFeatures(Dataset):
    """Maps (index sets [S, 3, B], coins [S, B]) to (features [S, 3, B, d], coins): one gather per step."""

    def __init__(self, features: Tensor, rows: Optional[Tensor] = None) -> None:
        self.features = features
        self.rows = rows

    def __getitem__(self, item: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        indices, coins = item
        return gather_candidates(self.features, indices, self.rows), coins

    def __len__(self) -> int:
        return len(self.features)


class _InMemoryDataModule(pl.LightningDataModule):
    """In-memory training features [N, d] with labels [N] and optional val features/labels; the trainer's rank."""

    def __init__(self, features: Tensor, labels: Tensor, batch_size: int,
                 val_features: Optional[Tensor] = None, val_labels: Optional[Tensor] = None) -> None:
        super().__init__()
        self.features = features
        self.labels = labels
        self.batch_size = batch_size
        self.val_features = val_features
        self.val_labels = val_labels

    def _rank(self) -> tuple[int, int]:
        return (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)

    @property
    def has_val(self) -> bool:
        return self.val_features is not None and self.val_labels is not None


class CrossModalSampler(CandidateSampler):
    """``CandidateSampler`` across two modalities (CLIP heads, ``heads.clip``): the anchors are a seeded permutation
    of modality 1's items (``labels``: their shared labels k_s) and the candidates are modality-2 items (``partner``:
    their k_s) — one of the anchor's k_s and a uniform one (``cross_modal_candidates``) — with the
    coin; a CLIP head of parameter δ takes the same-k_s candidate where coin < δ."""

    def __init__(self, labels: Tensor, partner: Tensor, seeds: list[int], batch_size: int, rank: int = 0,
                 world_size: int = 1, fixed: bool = False):
        super().__init__(labels, seeds, batch_size, rank, world_size, fixed)
        self.partner_index = ClassIndex(partner)

    def candidates(self, anchors: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        return cross_modal_candidates(self.index.labels[anchors], self.partner_index, generator)


class CrossModalFeatures(Dataset):
    """Maps (index sets [S, 3, B], coins [S, B]) to the anchors' modality-1 blocks [S, B, d₁], the candidates'
    modality-2 blocks [S, 2, B, d₂] and the coins."""

    def __init__(self, features1: Tensor, features2: Tensor) -> None:
        self.features1, self.features2 = features1, features2

    def __getitem__(self, item: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        indices, coins = item
        return gather_candidates(self.features1, indices[:, 0]), gather_candidates(self.features2, indices[:, 1:]), coins

    def __len__(self) -> int:
        return len(self.features1)


class CrossModalDataModule(pl.LightningDataModule):
    """Serves ``CrossModalSampler`` steps of paired in-memory features for the seeds of a grid of CLIP heads:
    modality 1 (x₁ [N₁, d₁], shared labels [N₁]) and modality 2 (x₂ [N₂, d₂], shared labels [N₂]); with ``val``
    (the same four tensors of the val split), the fixed held-out draw of seed + 1 for early stopping. Features are
    gathered on the host (CLIP grids do not use the device-resident path yet)."""

    def __init__(self, x1: Tensor, labels1: Tensor, x2: Tensor, labels2: Tensor, seeds: list[int], batch_size: int,
                 val: Optional[tuple[Tensor, Tensor, Tensor, Tensor]] = None) -> None:
        super().__init__()
        self.train = (x1, labels1, x2, labels2)
        self.val = val
        self.seeds = list(seeds)
        self.batch_size = batch_size

    def _loader(self, tensors, seeds: list[int], fixed: bool) -> DataLoader:
        x1, labels1, x2, labels2 = tensors
        rank = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        sampler = CrossModalSampler(labels1, labels2, seeds, self.batch_size, *rank, fixed=fixed)
        return DataLoader(CrossModalFeatures(x1, x2), sampler=sampler, batch_size=None)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train, self.seeds, fixed=False)

    def val_dataloader(self) -> DataLoader:
        if self.val is None:
            return []
        return self._loader(self.val, [seed + 1 for seed in self.seeds], fixed=True)


class CandidateIndices(Dataset):
    """The steps of a ``CandidateSampler`` as they are, (index sets [S, 3, B], coins [S, B]): the features are
    gathered after the indices reach the device (``CandidateDataModule`` with device-resident features)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __getitem__(self, item: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        return item

    def __len__(self) -> int:
        return self.size


def gather_candidates(features: Tensor, indices: Tensor, rows: Optional[Tensor] = None) -> Tensor:
    """Feature blocks [S, 3, B, d] of index sets [S, 3, B], in float32 whatever the stored dtype (float16 caches are
    kept as float16 and widened per batch). ``rows``: the split's rows of a larger table (a memory-mapped cache:
    ``heads.inputs.feature_table``), so index i is ``features[rows[i]]``."""
    flat = indices.reshape(-1)
    if rows is not None:
        flat = rows[flat]
    return features[flat].view(*indices.shape, -1).float()


def features_fit_on(device: torch.device, nbytes: int, share: float) -> bool:
    """Whether ``nbytes`` of features take at most ``share`` of ``device``'s memory (CUDA: the device's total
    memory; MPS: the recommended working set). CPU: False (nothing to move)."""
    if device.type == "cuda":
        return nbytes <= share * torch.cuda.get_device_properties(device).total_memory
    if device.type == "mps":
        return nbytes <= share * torch.mps.recommended_max_memory()
    return False


class CandidateDataModule(_InMemoryDataModule):
    """Serves ``CandidateSampler`` steps of in-memory features [N, d] for the seeds of a grid; with val features,
    the fixed held-out draw of seed + 1 for each (``HeldOutPairSampler``'s pairs).

    Where the features live (docs/theory.md, "Grid fitting"): on CPU the batches are gathered from the host
    tensors, as always. On CUDA or MPS the training and val features (in their stored dtype) and labels are moved to
    the device once, in ``setup``, when they take at most ``device_share`` of its memory; the loaders then yield
    only index sets and the gather runs on the device (``on_after_batch_transfer``): no feature batch crosses the
    bus. Larger features stay on the host, gathered there into pinned batches that are copied asynchronously.
    ``resident`` forces the device-side path (tests run it on CPU)."""

    def __init__(
        self, features: Tensor, labels: Tensor, seeds: list[int], batch_size: int,
        val_features: Optional[Tensor] = None, val_labels: Optional[Tensor] = None,
        device_share: float = 0.5, resident: Optional[bool] = None, rows: Optional[Tensor] = None,
        sampler: type[CandidateSampler] = CandidateSampler,
    ) -> None:
        """``sampler``: ``CandidateSampler`` (δ-pair candidates) or ``LabelSampler`` (labelled batches of
        ``supervised`` heads)."""
        super().__init__(features, labels, batch_size, val_features, val_labels)
        self.sampler = sampler
        self.rows = rows  # the training split's rows of ``features`` (a memory-mapped cache), or None: every row
        self.seeds = list(seeds)
        self.device_share = device_share
        self.resident = resident
        self._stores: dict[str, Tensor] = {}
        self._pin = False

    def setup(self, stage: str) -> None:
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        count = len(self.features) if self.rows is None else len(self.rows)  # the split only goes to the device
        nbytes = count * self.features[:1].nbytes + (self.val_features.nbytes if self.has_val else 0)
        if self.resident is None:
            self.resident = features_fit_on(device, nbytes, self.device_share)
        self._pin = device.type == "cuda" and not self.resident
        if self.resident:
            self._stores = {"train": (self.features if self.rows is None else self.features[self.rows]).to(device)}
            if self.has_val:
                self._stores["val"] = self.val_features.to(device)

    def _loader(self, features: Tensor, sampler: CandidateSampler, rows: Optional[Tensor] = None) -> DataLoader:
        dataset = CandidateIndices(len(sampler.index)) if self.resident else CandidateFeatures(features, rows)
        return DataLoader(dataset, sampler=sampler, batch_size=None, pin_memory=self._pin)

    def train_dataloader(self) -> DataLoader:
        sampler = self.sampler(self.labels, self.seeds, self.batch_size, *self._rank())
        return self._loader(self.features, sampler, self.rows)

    def val_dataloader(self) -> DataLoader:
        if not self.has_val:
            return []
        seeds = [seed + 1 for seed in self.seeds]
        sampler = self.sampler(self.val_labels, seeds, self.batch_size, *self._rank(), fixed=True)
        return self._loader(self.val_features, sampler)

    def on_after_batch_transfer(self, batch: tuple[Tensor, Tensor], dataloader_idx: int) -> tuple[Tensor, Tensor]:
        if not self.resident:
            return batch
        indices, coins = batch
        store = self._stores["train" if self.trainer is None or self.trainer.training else "val"]
        return gather_candidates(store, indices), coins


class ViewPairDataModule(CandidateDataModule):
    """``CandidateDataModule`` over a view table [N_all·V, d] (``data.views.ViewTable.table``): training steps of
    ``ViewPairSampler`` over the train images' views, and with ``val_labels``/``val_rows`` the fixed held-out view
    pairs of the val images (seed + 1) for label-free stopping. Batches are gathered from the table as the
    δ-pair grid gathers from its split (a memory map stays one)."""

    def __init__(self, table: Tensor, labels: Tensor, image_rows: Tensor, num_views: int, seeds: list[int],
                 batch_size: int, val_labels: Optional[Tensor] = None, val_rows: Optional[Tensor] = None,
                 device_share: float = 0.5, resident: Optional[bool] = None) -> None:
        held_out = {} if val_labels is None else {"val_features": table, "val_labels": val_labels}
        super().__init__(table, labels, seeds, batch_size, **held_out, device_share=device_share, resident=resident)
        self.image_rows, self.val_rows, self.num_views = image_rows, val_rows, num_views

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if self.resident and self.has_val:
            self._stores["val"] = self._stores["train"]  # one table holds both splits' views

    def train_dataloader(self) -> DataLoader:
        sampler = ViewPairSampler(self.labels, self.image_rows, self.num_views, self.seeds, self.batch_size,
                                  *self._rank())
        return self._loader(self.features, sampler)

    def val_dataloader(self) -> DataLoader:
        if not self.has_val:
            return []
        sampler = ViewPairSampler(self.val_labels, self.val_rows, self.num_views, [seed + 1 for seed in self.seeds],
                                  self.batch_size, *self._rank(), fixed=True)
        return self._loader(self.features, sampler)


class PairFeatures(Dataset):
    """Maps an index pair [2, B] to the feature batch (x [B, d], x⁺ [B, d])."""

    def __init__(self, features: Tensor) -> None:
        self.features = features

    def __getitem__(self, pairs: Tensor) -> tuple[Tensor, Tensor]:
        return self.features[pairs[0]], self.features[pairs[1]]

    def __len__(self) -> int:
        return len(self.features)


class HeldOutPairSampler(DeltaPairSampler):
    """The same pairs every epoch: a fixed held-out set whose loss is a label-free stopping signal."""

    def set_epoch(self, epoch: int) -> None:
        pass


class DeltaPairDataModule(_InMemoryDataModule):
    """Serves δ-pairs of in-memory features [N, d] with labels [N]; DDP-aware through the trainer's rank.

    With ``val_features``/``val_labels``, also a fixed set of held-out δ-pairs for the validation loss.

    The solo path's data (``heads.fit.fit_head``): the grid's **reference**. Runs train on ``CandidateDataModule``,
    whose batches the tests hold equal to this module's for every head of a grid.
    """

    def __init__(
        self, features: Tensor, labels: Tensor, delta: float, batch_size: int, seed: int,
        val_features: Optional[Tensor] = None, val_labels: Optional[Tensor] = None,
    ) -> None:
        super().__init__(features, labels, batch_size, val_features, val_labels)
        self.delta = delta
        self.seed = seed

    def train_dataloader(self) -> DataLoader:
        sampler = DeltaPairSampler(self.labels, self.delta, self.batch_size, self.seed, *self._rank())
        return DataLoader(PairFeatures(self.features), sampler=sampler, batch_size=None)

    def val_dataloader(self) -> DataLoader:
        if not self.has_val:
            return []
        sampler = HeldOutPairSampler(self.val_labels, self.delta, self.batch_size, self.seed + 1, *self._rank())
        return DataLoader(PairFeatures(self.val_features), sampler=sampler, batch_size=None)


def sampled_pair_moments(
    x: np.ndarray, y: np.ndarray, delta: float, batch_size: int, seed: int, epochs: int,
    total: Optional[np.ndarray] = None,
) -> PairMoments:
    """Σ_T and Σ_Δ (``theory.spectral.pair_moments``) over every pair that ``epochs`` epochs of
    ``DeltaPairSampler(y, delta, batch_size, seed)`` draw: the pairs a head with these settings trains on (the
    union of the DDP ranks' slices of a global batch is the single-process draw at that batch). ``total``: Σ_T of
    x, if already computed (it does not depend on δ or the seed)."""
    sampler = DeltaPairSampler(torch.from_numpy(np.asarray(y, dtype=np.int64)), delta, batch_size, seed)
    drawn = []
    for epoch in range(epochs):  # every epoch's pairs in one [2, P] array: few, large GEMMs (P·2 integers)
        sampler.set_epoch(epoch)
        drawn.extend(sampler)
    return pair_moments(x, y, [torch.cat(drawn, dim=1).numpy()], total=total)
