"""Lightning callbacks of the solo head fit (``heads.fit.fit_head``), the grid's reference path: a grid applies
the same rule per head itself (``heads.grid.HeadStopping``)."""

from __future__ import annotations

from typing import Optional

import pytorch_lightning as pl


class KeepBestWeights(pl.Callback):
    """Remember the weights of the epoch with the lowest ``monitor`` and restore them when fitting ends
    (EarlyStopping alone would leave the last epoch's weights, ``patience`` epochs past the best). The solo fit's
    rule, which ``heads.grid.HeadStopping`` reproduces per head of a grid."""

    def __init__(self, monitor: str) -> None:
        self.monitor = monitor
        self.best = float("inf")
        self.best_epoch = 0
        self.state: Optional[dict] = None

    def on_validation_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if value is not None and float(value) < self.best:
            self.best = float(value)
            self.best_epoch = trainer.current_epoch + 1
            self.state = {k: v.detach().clone() for k, v in module.state_dict().items()}

    def on_fit_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if self.state is not None:
            module.load_state_dict(self.state)
