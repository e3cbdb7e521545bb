"""Linear probe: multinomial logistic regression on projected features, its L2 strength chosen on val.

A full-batch L-BFGS softmax regression in torch, warm-started along the regularisation path (strong to
weak): at CIFAR-100 scale (45k × 512, 100 classes) one path takes seconds where scikit-learn's lbfgs takes
minutes. The objective is scikit-learn's: mean cross-entropy + λ‖W‖² (bias unpenalised), on features
standardised with training statistics.

At scale the probe is trained on a subsample (``probe_rows``): when N·K > ``PROBE_MAX_CELLS`` (2·10⁷: 200k
training points at K = 100, 20k at K = 1000), a seeded ⌊PROBE_MAX_CELLS/K²⌋ rows of each class (every row of a
smaller class), so one full-batch evaluation costs at most ~PROBE_MAX_CELLS·r multiply-adds and its logits
PROBE_MAX_CELLS floats (80 MB); at 1.28M × K = 1000 that is 20 images per class. Below the threshold (CIFAR-100's
45k × 100 = 4.5·10⁶) every training point is used, as before. Val and test are always scored in full, in chunks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ssl_pipeline.config import ProbeConfig


PROBE_BLOCK_BYTES = 8 * 2**20
"""The loss and accuracy are computed over equal blocks of rows whose float32 logits take at most this (2,097 rows
at K = 1000, 20,971 at K = 100; a training split that fits in one block gets the plain full-batch objective). On
20k × 64 → K = 1000 the probe's peak RssAnon rose by 232 MB with 8 MiB blocks and 408 MB with 32 MiB, in the same
time (6 s, one thread)."""
PROBE_MAX_CELLS = 20_000_000
"""Training points × classes above which the probe is trained on a per-class subsample (``probe_rows``)."""
_PROBE_STREAM = 0x9B0E


def probe_rows(y_train: np.ndarray, num_classes: int) -> Optional[np.ndarray]:
    """The training rows of the probe: None (all) when N·K ≤ ``PROBE_MAX_CELLS``, else a seeded (fixed stream,
    independent of the run's seeds) ⌊PROBE_MAX_CELLS/K²⌋ (at least 1) rows of each class, sorted."""
    from ssl_pipeline.data.labelled import stratified_subsample

    if len(y_train) * num_classes <= PROBE_MAX_CELLS:
        return None
    per_class = max(1, PROBE_MAX_CELLS // num_classes**2)
    return stratified_subsample(np.asarray(y_train), per_class, _PROBE_STREAM)


@dataclass
class ProbeResult:
    test_accuracy: float
    val_accuracy: float
    l2: float


def linear_probe(
    z_train: np.ndarray, y_train: np.ndarray, z_val: np.ndarray, y_val: np.ndarray,
    z_test: np.ndarray, y_test: np.ndarray, num_classes: int, cfg: ProbeConfig,
) -> ProbeResult:
    """Fit on train for every λ in ``cfg.l2_grid``, keep the λ with the best val accuracy, report test. The loss and
    its gradient are accumulated over blocks of training rows whose logits take at most ``PROBE_BLOCK_BYTES``
    (one block, the plain objective, up to 20,971 rows at K = 100), and accuracy is evaluated in blocks, so no
    [N, K] matrix is held."""
    import torch
    import torch.nn.functional as F

    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          "cpu" if cfg.device == "auto" else cfg.device)
    mean, std = z_train.mean(axis=0), z_train.std(axis=0) + 1e-8

    def tensor(z: np.ndarray) -> "torch.Tensor":
        return torch.from_numpy(((z - mean) / std).astype(np.float32)).to(device)

    x_train, x_val, x_test = tensor(z_train), tensor(z_val), tensor(z_test)
    t_train = torch.from_numpy(y_train.astype(np.int64)).to(device)
    weight = torch.zeros(x_train.shape[1], num_classes, device=device, requires_grad=True)
    bias = torch.zeros(num_classes, device=device, requires_grad=True)

    most = max(1, PROBE_BLOCK_BYTES // (4 * num_classes))  # logits of at most PROBE_BLOCK_BYTES per block
    rows = -(-len(x_train) // -(-len(x_train) // most)) if len(x_train) else most  # blocks of equal size

    def accuracy(x: "torch.Tensor", y: np.ndarray) -> float:
        with torch.no_grad():
            predicted = np.concatenate([(x[start : start + rows] @ weight + bias).argmax(1).cpu().numpy()
                                        for start in range(0, len(x), rows)]) if len(x) else np.zeros(0)
            return float((predicted == y).mean())

    best: ProbeResult | None = None
    for l2 in sorted(cfg.l2_grid, reverse=True):
        optimizer = torch.optim.LBFGS(
            [weight, bias], max_iter=cfg.max_iter, history_size=20, line_search_fn="strong_wolfe",
            tolerance_grad=cfg.tolerance, tolerance_change=cfg.tolerance,
        )

        def closure() -> "torch.Tensor":
            optimizer.zero_grad()
            if len(x_train) <= rows:  # one block: the plain full-batch objective
                loss = F.cross_entropy(x_train @ weight + bias, t_train) + l2 * (weight**2).sum()
                loss.backward()
                return loss
            total = torch.zeros((), device=device)
            for start in range(0, len(x_train), rows):  # the same objective, its logits a block at a time
                part = F.cross_entropy(x_train[start : start + rows] @ weight + bias, t_train[start : start + rows],
                                       reduction="sum") / len(x_train)
                part.backward()
                total += part.detach()
            penalty = l2 * (weight**2).sum()
            penalty.backward()
            return total + penalty.detach()

        optimizer.step(closure)
        val_accuracy = accuracy(x_val, y_val)
        if best is None or val_accuracy > best.val_accuracy:
            best = ProbeResult(accuracy(x_test, y_test), val_accuracy, l2)
    assert best is not None
    return best
