"""Scores per label of data with several labels (docs/theory.md, "One-hidden-layer heads"): how much of a head's
weight lies in each label's Fisher subspace (``label_energy_<label>``), and in the part of it the score label's
does not cover (``beyond_energy_<label>``), and, for a one-hidden-layer head, how well a linear probe reads each
label from its hidden layer (``hidden_probe_<label>``) against its untrained first layer's
(``init_hidden_probe_<label>``): what the pairs taught the network about the labels it is not scored on."""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from ssl_pipeline.config import ProbeConfig
from ssl_pipeline.data.labelled import LabelledFeatures
from ssl_pipeline.data.rows import row_chunks
from ssl_pipeline.heads.fitted import FittedHead
from ssl_pipeline.scoring.probe import linear_probe, probe_rows
from ssl_pipeline.theory.subspaces import class_statistics, fisher_energy, fisher_estimate_from_statistics

SPLITS = ("train", "val", "test")


def label_values(features: LabelledFeatures) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Every label of ``features`` by name, each (train, val, test) [N]; the score label first."""
    return {features.label: (features.y_train, features.y_val, features.y_test), **features.other_labels}


def label_subspaces(features: LabelledFeatures, lda_shrinkage: Optional[float]) -> dict[str, np.ndarray]:
    """Each label's Fisher subspace [d, q_l]: the true one where the data carry it (synthetic), else estimated on
    train from that label's class statistics (``fisher_estimate_from_statistics``); computed once per features."""
    def compute() -> dict[str, np.ndarray]:
        bases = {}
        for name, (train, _, _) in label_values(features).items():
            known = features.fisher_basis if name == features.label else features.label_references.get(name, (None,))[0]
            if known is None:
                stats = class_statistics(features.x_train, train, int(train.max()) + 1)
                known = fisher_estimate_from_statistics(stats, lda_shrinkage).basis
            bases[name] = known
        return bases

    return features.remember(("label_subspaces", id(features.x_train), lda_shrinkage), compute)


def beyond_subspaces(features: LabelledFeatures, lda_shrinkage: Optional[float]) -> dict[str, np.ndarray]:
    """Each other label's Fisher subspace with the score label's projected out, orthonormal [d, ≤ q_l]: what
    that label separates beyond the score label (for nested labels, the fine directions within the coarse
    classes; for independent ones, all of it)."""
    def compute() -> dict[str, np.ndarray]:
        bases = label_subspaces(features, lda_shrinkage)
        score = np.linalg.qr(bases[features.label])[0]
        beyond = {}
        for name, basis in bases.items():
            if name == features.label:
                continue
            rest = basis - score @ (score.T @ basis)
            u, singular, _ = np.linalg.svd(rest, full_matrices=False)
            beyond[name] = u[:, singular > 1e-6 * max(float(singular.max(initial=0.0)), 1e-300)]
        return beyond

    return features.remember(("beyond_subspaces", id(features.x_train), lda_shrinkage), compute)


def label_fields(features: LabelledFeatures, subspace: Optional[np.ndarray], lda_shrinkage: Optional[float],
                 head: Optional[FittedHead] = None, probe: Optional[ProbeConfig] = None,
                 initial: Optional[np.ndarray] = None) -> dict[str, float]:
    """``label_energy_<label>`` of ``subspace`` [d, m] for every label and ``beyond_energy_<label>`` for the labels
    other than the score label; with a one-hidden-layer ``head`` (and ``probe``) ``hidden_probe_<label>``, and with
    its untrained first layer ``initial`` W̃₀ [d, w] ``init_hidden_probe_<label>`` (what random ReLU/tanh features of
    the input already give); nothing on data with one label."""
    if len(features.label_names) < 2:
        return {}
    fields: dict[str, float] = {}
    if subspace is not None:
        for name, basis in label_subspaces(features, lda_shrinkage).items():
            fields[f"label_energy_{name}"] = fisher_energy(subspace, basis)
        for name, basis in beyond_subspaces(features, lda_shrinkage).items():
            fields[f"beyond_energy_{name}"] = fisher_energy(subspace, basis) if basis.shape[1] else 0.0
    if head is not None and head.readout is not None and probe is not None:
        for name, accuracy in hidden_probes(features, head.hidden_layer, probe).items():
            fields[f"hidden_probe_{name}"] = accuracy
        if initial is not None:
            def untrained(x: np.ndarray) -> np.ndarray:
                return head.hidden_layer(x, first_layer=initial)

            for name, accuracy in hidden_probes(features, untrained, probe).items():
                fields[f"init_hidden_probe_{name}"] = accuracy
    return fields


def hidden_probes(features: LabelledFeatures, hidden_layer: Callable[[np.ndarray], np.ndarray],
                  probe: ProbeConfig) -> dict[str, float]:
    """The linear probe's test accuracy on every label from a hidden layer x ↦ σ(W̃ᵀ(x − x̄)) [N, w] (trained on
    train — a per-class subsample of each label when N·K is large, ``probe_rows`` —, its L2 strength chosen on
    val)."""
    hidden = {split: _hidden(hidden_layer, getattr(features, f"x_{split}")) for split in SPLITS}
    accuracies = {}
    for name, (train, val, test) in label_values(features).items():
        classes = int(max(train.max(), val.max(), test.max())) + 1
        rows = probe_rows(train, classes)
        z_train, y_train = (hidden["train"], train) if rows is None else (hidden["train"][rows], train[rows])
        accuracies[name] = linear_probe(z_train, y_train, hidden["val"], val, hidden["test"], test, classes,
                                        probe).test_accuracy
    return accuracies


def _hidden(hidden_layer: Callable[[np.ndarray], np.ndarray], x) -> np.ndarray:
    """The hidden layer of a split, chunk by chunk (float32)."""
    blocks = [np.asarray(hidden_layer(block), dtype=np.float32) for _, block in row_chunks(x, np.float32)]
    return np.concatenate(blocks)
