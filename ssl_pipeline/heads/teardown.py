"""Destroy the torch.distributed process group a DDP fit leaves behind, before its process exits.

Lightning initialises the default process group when a DDP fit starts and never destroys it for gloo (its atexit
hook is for NCCL only). A rank that returns with the group alive exits with Gloo's worker threads still running and
possibly still holding work (tensors); the interpreter's finalisation then races them, and a thread that drops a
tensor after finalisation began cannot take the GIL: the process dies in ``std::terminate`` ("terminate called
without an active exception", SIGABRT; pytorch/pytorch#179291 describes the same race). Under ``ddp_spawn`` the
rank processes exit right after the fit, so a two-rank fit failed now and then with "process 1 terminated with
signal SIGABRT". ``destroy_process_group`` shuts the backend down and joins its threads while the interpreter is
whole. ``scripts/ddp_abort_repro.py`` counts the aborts with and without it (benchmarks/README.md, "DDP teardown").
"""

from __future__ import annotations

import atexit

import pytorch_lightning as pl
import torch.distributed as dist
from pytorch_lightning.strategies.launchers import _MultiProcessingLauncher

_exit_hook_registered = False


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def destroy_process_group_at_exit() -> None:
    """Destroy the default process group, if one is still initialised, when the interpreter exits (atexit runs
    before finalisation). Registered once per process."""
    global _exit_hook_registered
    if not _exit_hook_registered:
        atexit.register(lambda: dist.destroy_process_group() if _distributed() else None)
        _exit_hook_registered = True


def end_process_group() -> None:
    """Meet the other ranks at a barrier, so that no rank closes its connections while another still has a
    collective in flight, then destroy the default process group (joins Gloo's threads). No-op without one."""
    if _distributed():
        dist.barrier()
        dist.destroy_process_group()


class EndProcessGroup(pl.Callback):
    """At the end of a fit, end the process group the fit's DDP strategy created.

    * Rank processes started for this fit (``ddp_spawn``, ``ddp_fork``, ``ddp_notebook``: Lightning's
      multiprocessing launcher) exit as soon as the fit returns, so they end the group here
      (:func:`end_process_group`). Nothing collective runs after ``teardown``: the launcher only sends rank 0's
      weights back to the parent.
    * Processes that outlive the fit (``ddp`` re-launching the script, torchrun, SLURM) keep the group: the next
      fit of ``fit_heads`` reuses it, and re-initialising it per fit would race the ranks for the same store port.
      It is destroyed when the process exits instead.
    """

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not _distributed():
            return
        if isinstance(trainer.strategy.launcher, _MultiProcessingLauncher):
            end_process_group()
        else:
            destroy_process_group_at_exit()
