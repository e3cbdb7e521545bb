"""Scores of a CLIP head's two towers (docs/theory.md, "Scores for two towers").

Each tower gets the unimodal scores on its own modality labelled by the shared label k_s (clustering, probe,
`fisher_cos2` and the other subspace scores, effective rank; ``scoring.score``), plus: its ``fisher_energy`` in
its modality's shared block, private subspace and noise block where the data carry them (synthetic CLIP-GMM:
``energy_shared`` + ``energy_private`` + ``energy_noise`` = 1, the blocks being orthogonal and spanning R^d);
class-level cross-modal retrieval of its test items among the other modality's test items
(``retrieval_p1``/``retrieval_p10``: the share of the top 1/10 with the query's k_s; ``retrieval_map``); the head's
``logit_scale``; and ``zeroshot_acc``: tower-1 test items classified by the nearest class prototype of tower 2 (the
mean of the normalised tower-2 outputs of modality 2's training items of each class — for text, the class-prompt
mean, CLIP's zero-shot rule in the head space). Real paired data with a text side (K × T prompts, no held-out
split and no usable Fisher subspace) score tower 1 only.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Optional

import numpy as np

from ssl_pipeline.scoring.multimodal import block_energies, class_retrieval
from ssl_pipeline.scoring.projections import Projection
from ssl_pipeline.scoring.score import l2_normalize, reference_subspaces, score_projection

if TYPE_CHECKING:
    from ssl_pipeline.config import ExperimentConfig
    from ssl_pipeline.data.labelled import LabelledFeatures
    from ssl_pipeline.data.multimodal import PairedFeatures
    from ssl_pipeline.heads.fitted import FittedHead
    from ssl_pipeline.scoring.score import ReferenceSubspaces


def tower_projection(head: "FittedHead", tower: int) -> Projection:
    """Tower ``tower`` of a CLIP head as a projection (cosine: L2-normalised for clustering)."""
    return Projection("clip", partial(head.project, tower=tower), head.feature_space_weight(0, tower), True,
                      head.settings.r)


def scored_towers(paired: "PairedFeatures") -> tuple[int, ...]:
    """Both towers on synthetic pairs (each modality has its own held-out items and ground truth); tower 1 only on
    real pairs whose modality 2 has no held-out split of its own (class prompts)."""
    return (1, 2) if paired.modality2.held_out else (1,)


def prototype_accuracy(head: "FittedHead", paired: "PairedFeatures") -> float:
    """``zeroshot_acc`` of a CLIP head: tower-1 test items assigned to the class whose tower-2 prototype (mean of the
    normalised tower-2 outputs of modality 2's training items of that class) is most cosine-similar."""
    first, second = paired.modality1, paired.modality2
    z2 = l2_normalize(head.project(second.x_train, tower=2))
    classes = np.unique(second.shared_train)
    prototypes = l2_normalize(np.stack([z2[second.shared_train == c].mean(axis=0) for c in classes]))
    z1 = l2_normalize(head.project(first.x_test, tower=1))
    return float(np.mean(classes[np.argmax(z1 @ prototypes.T, axis=1)] == first.shared_test))


def clip_metrics(
    cfg: "ExperimentConfig", head: "FittedHead", paired: "PairedFeatures", views: dict[int, "LabelledFeatures"],
    references: dict[int, "ReferenceSubspaces"],
) -> dict[int, dict[str, Optional[float]]]:
    """The metric fields of each scored tower's record (``scored_towers``)."""
    r = head.settings.r
    towers = scored_towers(paired)
    tests = {m: head.project(paired.modality(m).x_test, tower=m) for m in (1, 2)}
    labels = {m: paired.modality(m).shared_test for m in (1, 2)}
    out = {}
    for m in towers:
        other = 3 - m
        projection = tower_projection(head, m)
        metrics = score_projection(projection, views[m], references[m].at(r), cfg.score, head.settings.seed)
        ks = tuple(k for k in (1, 10) if k <= len(labels[other]))
        retrieval = class_retrieval(tests[m], labels[m], tests[other], labels[other], ks=ks)
        blocks = paired.modality(m).energy_blocks
        energies = block_energies(head.feature_space_weight(0, m), blocks) if blocks else {}
        metrics.update(
            retrieval_p1=retrieval.get("class_precision@1"), retrieval_p10=retrieval.get("class_precision@10"),
            retrieval_map=retrieval["map"], logit_scale=head.logit_scale,
            energy_shared=(energies["shared_fisher"] + energies["shared_rest"]) if energies else None,
            energy_private=energies.get("private"), energy_noise=energies.get("noise"),
            zeroshot_acc=prototype_accuracy(head, paired) if m == 1 else None,
        )
        out[m] = metrics
    return out


class ClipScoring:
    """What scoring the CLIP heads of a run needs once: each modality's view labelled by k_s and its reference
    subspaces (modality 1's are the run's own)."""

    def __init__(self, cfg: "ExperimentConfig", view: "LabelledFeatures", references: "ReferenceSubspaces") -> None:
        self.cfg = cfg
        self.paired = view.paired
        self.views = {1: view, 2: self.paired.view(2)}
        self.references = {1: references}
        if 2 in scored_towers(self.paired):
            r = max(cfg.heads.axis("r"))
            self.references[2] = reference_subspaces(self.views[2], min(r, self.views[2].dim), cfg.score.lda_shrinkage)

    def metrics(self, head: "FittedHead") -> dict[int, dict[str, Optional[float]]]:
        return clip_metrics(self.cfg, head, self.paired, self.views, self.references)
