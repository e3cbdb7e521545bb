"""A fitted head as a file: its weights, training mean and scale, and settings, saved and loaded as safetensors
(no pickle)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ssl_pipeline.atomic import atomic_write_bytes
from ssl_pipeline.errors import DataError
from ssl_pipeline.heads.settings import HeadSettings, constrains_output_moments


@dataclass
class FittedHead:
    """A trained head: A [G, d, r] in training coordinates, the training mean [d] and scale D^(−1/2) [d]."""

    settings: HeadSettings
    weight: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    fit_seconds: float
    features_key: Optional[str] = None
    epochs_trained: Optional[int] = None
    """Epochs behind the kept weights (fewer than configured when early stopping kept an earlier epoch)."""
    weight2: Optional[np.ndarray] = None
    """CLIP heads: the second tower A₂ [G, d₂, r] on modality 2 (with ``mean2``, ``scale2``); None otherwise."""
    mean2: Optional[np.ndarray] = None
    scale2: Optional[np.ndarray] = None
    logit_scale: Optional[float] = None
    """CLIP heads: the logit scale at the end of training (1/τ when fixed, the learned value otherwise)."""
    readout: Optional[np.ndarray] = None
    """One-hidden-layer heads (``settings.hidden``): the output layer A [G, w, r]; ``weight`` is then the first
    layer W [G, d, w] (in training coordinates) and f(x) = Aᵀσ(Wᵀ D^(−1/2)(x − x̄))."""

    @classmethod
    def of_module(cls, module, fit_seconds: float, features_key: Optional[str],
                  epochs_trained: Optional[int]) -> "FittedHead":
        """A trained unimodal head module (``heads.modules.LinearHead``) as a file's contents: weights in float32,
        or float64 at precision 64-true."""
        readout = getattr(module, "readout", None)
        return cls(
            settings=module.settings,
            weight=module.head_weight().detach().cpu().numpy(),
            mean=module.mean.cpu().numpy(),
            scale=module.scale.cpu().numpy(),
            fit_seconds=fit_seconds,
            features_key=features_key,
            epochs_trained=epochs_trained,
            readout=None if readout is None else readout.detach().cpu().numpy(),
        )

    def feature_space_weight(self, head: int = 0, tower: int = 1) -> np.ndarray:
        """Ã = D^(−1/2) A [d, r] for head ``head`` of the stack (``tower`` 2: a CLIP head's second tower); for a
        one-hidden-layer head its first layer W̃ = D^(−1/2) W [d, w]: the row space span(Wᵀ) its scores read."""
        if tower == 2:
            return self.scale2[:, None] * self.weight2[head]
        return self.scale[:, None] * self.weight[head]

    def project(self, x: np.ndarray, head: int = 0, tower: int = 1) -> np.ndarray:
        """z = Ãᵀ(x − x̄_train) → [N, r] (``tower`` 2: modality-2 features through a CLIP head's second tower);
        a one-hidden-layer head's outputs Aᵀσ(W̃ᵀ(x − x̄_train))."""
        if self.readout is not None:
            return self.hidden_layer(x, head) @ self.readout[head]
        mean = self.mean2 if tower == 2 else self.mean
        return (x - mean) @ self.feature_space_weight(head, tower)

    def hidden_layer(self, x: np.ndarray, head: int = 0, first_layer: Optional[np.ndarray] = None) -> np.ndarray:
        """σ(W̃ᵀ(x − x̄_train)) [N, w] of a one-hidden-layer head (W̃ = D^(−1/2)W, ``feature_space_weight``), or of
        another ``first_layer`` W̃ [d, w] (the untrained one: ``heads.inputs.initial_weight``)."""
        weight = self.feature_space_weight(head) if first_layer is None else first_layer
        return activate(self.settings.activation, (x - self.mean) @ weight)

    def save(self, path: Path) -> None:
        """Write atomically (temp file + rename) as safetensors, settings in the metadata."""
        from safetensors.numpy import save

        tensors = {"weight": self.weight, "mean": self.mean, "scale": self.scale}
        if self.weight2 is not None:
            tensors.update(weight2=self.weight2, mean2=self.mean2, scale2=self.scale2)
        if self.readout is not None:
            tensors["readout"] = self.readout
        metadata = {
            "settings": json.dumps(asdict(self.settings)),
            "fit_seconds": repr(self.fit_seconds),
            "features_key": self.features_key or "",
            "epochs_trained": str(self.epochs_trained or ""),
            "logit_scale": "" if self.logit_scale is None else repr(self.logit_scale),
        }
        arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
        atomic_write_bytes(path, save(arrays, metadata))

    @classmethod
    def load(cls, path: Path) -> "FittedHead":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="numpy") as f:
                metadata = f.metadata()
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as error:  # safetensors raises several types for corrupt files
            raise DataError(f"cannot read head file {path} ({error}); re-run `ssl-pipeline fit`") from error
        settings = json.loads(metadata["settings"])
        if settings["method"] == "simsiam" and settings.get("regularizer") is None:
            settings["regularizer"] = "euclidean"  # heads saved before the covariance guard existed (schema 1)
        return cls(
            settings=HeadSettings(**settings),
            fit_seconds=float(metadata["fit_seconds"]),
            features_key=metadata["features_key"] or None,
            epochs_trained=int(metadata["epochs_trained"]) if metadata.get("epochs_trained") else None,
            logit_scale=float(metadata["logit_scale"]) if metadata.get("logit_scale") else None,
            **tensors,
        )


def activate(name: str, z: np.ndarray) -> np.ndarray:
    """σ of ``heads.trunk.activation`` (``relu``, ``tanh``) on numpy values (``heads.modules.activation``'s twin)."""
    return np.maximum(z, 0) if name == "relu" else np.tanh(z)


def legacy_parametrization(settings: HeadSettings) -> str:
    """The parametrization of a head saved before ``heads.parametrization`` existed: whitened for SimSiam with the
    covariance guard and the spectral heads, orthonormal otherwise."""
    return "whitened" if constrains_output_moments(settings.method, settings.regularizer) else "orthonormal"
