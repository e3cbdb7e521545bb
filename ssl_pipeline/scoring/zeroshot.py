"""CLIP's zero-shot classifier from the text tower's prompt embeddings, the baseline a CLIP backbone's heads are
compared with (method ``zeroshot`` in ``results.json``)."""

from __future__ import annotations

import numpy as np


def zeroshot_classifier(text_features: np.ndarray, num_classes: int) -> np.ndarray:
    """CLIP's zero-shot classifier [K, D]: per class, the mean of its L2-normalised template embeddings,
    normalised again (rows of ``text_features`` are ordered template-major, as ``features.extract.extract_text``
    writes them)."""
    t = text_features.reshape(-1, num_classes, text_features.shape[1]).astype(np.float64)
    t /= np.linalg.norm(t, axis=2, keepdims=True)
    w = t.mean(axis=0)
    return (w / np.linalg.norm(w, axis=1, keepdims=True)).astype(np.float32)


def zeroshot_accuracy(x: np.ndarray, y: np.ndarray, classifier: np.ndarray) -> float:
    """Accuracy of argmax_k cos(x, w_k) — the text-prompt classifier CLIP users compare against; x [N, D] (an
    ndarray or ``data.rows.FeatureRows``) is read in float32 chunks."""
    from ssl_pipeline.theory.chunks import row_chunks

    if len(y) == 0:
        return float("nan")
    predicted = np.concatenate([np.argmax(block @ classifier.T, axis=1) for _, block in row_chunks(x, np.float32)])
    return float(np.mean(predicted == np.asarray(y)))
