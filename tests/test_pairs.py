"""δ-pair sampling (docs/theory.md, "Augmentation-enabled pairs")."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssl_pipeline.data.pairs import ClassIndex, DeltaPairDataModule, DeltaPairSampler, sample_delta_positives


def labels_with_sizes(sizes: list[int]) -> torch.Tensor:
    labels = torch.cat([torch.full((n,), k) for k, n in enumerate(sizes)])
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]


def same_class_rate(labels: torch.Tensor, delta: float, seed: int = 0) -> tuple[float, torch.Tensor, torch.Tensor]:
    index = ClassIndex(labels)
    anchors = torch.arange(len(labels)).repeat(20)
    positives = sample_delta_positives(index, anchors, delta, torch.Generator().manual_seed(seed))
    return float((labels[anchors] == labels[positives]).float().mean()), anchors, positives


def test_delta_one_positives_share_the_class_and_are_never_the_anchor():
    labels = labels_with_sizes([2, 5, 40, 3])
    rate, anchors, positives = same_class_rate(labels, 1.0)
    assert rate == 1.0
    assert not torch.any(anchors == positives)
    # a class of 2: the positive of each member is the other member
    pair = torch.nonzero(labels == 0).flatten()
    chosen = positives[anchors == pair[0]]
    assert torch.all(chosen == pair[1])


@pytest.mark.parametrize("delta", [0.0, 0.3, 0.5, 0.8])
def test_same_class_rate_is_delta_plus_chance(delta):
    sizes = [100, 300, 600]
    labels = labels_with_sizes(sizes)
    pi = np.array(sizes) / sum(sizes)
    chance = float(np.sum(pi**2))
    rate, _, _ = same_class_rate(labels, delta)
    # anchors are every sample, so class k anchors with probability π_k
    assert rate == pytest.approx(delta + (1 - delta) * chance, abs=0.01)


def test_same_class_positives_are_uniform_over_the_class():
    labels = labels_with_sizes([4, 4])
    index = ClassIndex(labels)
    anchor = torch.nonzero(labels == 0).flatten()[0]
    positives = sample_delta_positives(index, anchor.repeat(30000), 1.0, torch.Generator().manual_seed(1))
    counts = torch.bincount(positives, minlength=len(labels))[labels == 0]
    counts = counts[counts > 0]
    assert len(counts) == 3
    assert counts.min() / counts.max() > 0.9


def test_sampler_is_seeded_and_changes_with_epoch():
    labels = labels_with_sizes([50, 50, 50])
    first = list(DeltaPairSampler(labels, 0.5, 32, seed=3))
    again = list(DeltaPairSampler(labels, 0.5, 32, seed=3))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    sampler = DeltaPairSampler(labels, 0.5, 32, seed=3)
    sampler.set_epoch(1)
    assert not torch.equal(first[0], next(iter(sampler)))


def test_ranks_take_disjoint_slices_of_one_global_permutation():
    labels = labels_with_sizes([60, 60])
    batches = [list(DeltaPairSampler(labels, 1.0, 16, seed=0, rank=r, world_size=3)) for r in range(3)]
    assert len({len(b) for b in batches}) == 1 and len(batches[0]) == 120 // 48
    anchors = torch.cat([pair[0] for rank in batches for pair in rank])
    assert len(anchors) == len(torch.unique(anchors)) == 2 * 48
    single = torch.cat([pair for pair in DeltaPairSampler(labels, 1.0, 48, seed=0)], dim=1)
    assert torch.equal(torch.sort(anchors).values, torch.sort(single[0]).values)


def test_datamodule_serves_feature_batches():
    labels = labels_with_sizes([30, 30])
    features = torch.randn(60, 5)
    loader = DeltaPairDataModule(features, labels, 1.0, 16, seed=0).train_dataloader()
    x, x_positive = next(iter(loader))
    assert x.shape == x_positive.shape == (16, 5)
    rows = [int(torch.nonzero((features == row).all(dim=1))[0]) for row in x_positive]
    anchors = [int(torch.nonzero((features == row).all(dim=1))[0]) for row in x]
    assert all(labels[a] == labels[p] and a != p for a, p in zip(anchors, rows))
    assert len(loader) == 60 // 16
