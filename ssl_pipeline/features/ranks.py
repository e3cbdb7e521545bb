"""The processes of a multi-device extraction, started and joined by Lightning.

``data.extract.devices N`` (with ``num_nodes`` and ``strategy: ddp``) goes through Lightning Fabric's DDP
strategy: its launcher re-runs the command once per further device of the node (``LOCAL_RANK=1 … ssl-pipeline
extract …``), or — under torchrun, SLURM's srun, or a user's ``NODE_RANK``/``MASTER_ADDR`` — its cluster
environments read the processes that were started. No launcher of this project's own: Fabric only starts the
processes and the process group (NCCL on GPUs, gloo on CPUs), it wraps no model. Extraction needs no sampler
either: rank 0 hands each rank whole shards (``features.extract``), so DistributedSampler's padding (repeated
items) cannot arise.

The process group lives as long as the process: the image splits and the text prompts of one command are
extracted by the same ranks, in the same order on every rank. It is destroyed when the process exits
(Gloo's threads must be joined before the interpreter finalises; ``heads.teardown`` tells the story).
"""

from __future__ import annotations

import atexit
import datetime
import os
import socket
import sys
from dataclasses import dataclass
from typing import Any, Callable, Optional, TypeVar

from rich.console import Console

from ssl_pipeline.config import ExtractConfig
from ssl_pipeline.errors import ConfigError, DataError, PipelineError

T = TypeVar("T")
_RANKS: Optional[Ranks] = None


@dataclass
class Ranks:
    """This process's place among the extraction's processes."""

    rank: int
    world: int
    hosts: list[str]
    """Host name of every rank, by rank."""
    environment: str
    """Lightning's cluster environment: ``LightningEnvironment``, ``TorchElasticEnvironment``, ``SLURMEnvironment``."""
    device: str
    group: Any = None
    """The gloo group of the extraction's collectives (``extraction_ranks``)."""

    def gather(self, value: T) -> list[T]:
        """``value`` of every rank, by rank (a collective: every rank calls it)."""
        import torch.distributed as dist

        values: list[Any] = [None] * self.world
        try:
            dist.all_gather_object(values, value, group=self.group)
        except RuntimeError as error:  # a rank died and its connection closed (DistBackendError included)
            first_line = (str(error).splitlines() or [""])[0]
            raise DataError(f"rank {self.rank} of {self.world}: another rank of the extraction stopped ({first_line}); "
                            "finished shards are kept: run the same command again, with any number of devices, to "
                            "complete the entry") from None
        return values

    def all_ok(self, work: Callable[[], T]) -> list[T]:
        """Run ``work`` on this rank and return every rank's result, by rank; when any rank failed, every rank
        raises: the failed one its own error, the others a DataError with the first failure's line."""
        own: Optional[BaseException] = None
        try:
            value, error = work(), None
        except PipelineError as failure:
            value, error, own = None, str(failure), failure
        except Exception as failure:  # a bug or a device error: still one line on the other ranks
            first_line = (str(failure).splitlines() or [""])[0]
            value, own = None, failure
            error = (f"rank {self.rank} of {self.world} stopped ({type(failure).__name__}: {first_line}); finished "
                     "shards are kept: run the same command again to complete the entry")
        results = self.gather((value, error))
        failures = [message for _, message in results if message is not None]
        if own is not None:
            raise own
        if failures:
            raise DataError(failures[0])
        return [result for result, _ in results]


def wants_ranks(cfg: ExtractConfig) -> bool:
    """Whether extraction runs as ranks of a process group: ``strategy: ddp``, more than one device in all, or a
    launcher (torchrun, srun, Lightning's re-launch) that started several processes."""
    if cfg.strategy == "ddp" or cfg.devices * cfg.num_nodes > 1:
        return True
    srun = "SLURM_NTASKS" in os.environ and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive")
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 or (srun and int(os.environ["SLURM_NTASKS"]) > 1)


def accelerator(cfg: ExtractConfig, device: str) -> str:
    """Lightning's accelerator for the backbone's ``data.backbone.device``; ConfigError, before any process is
    started, when the devices asked for are not there."""
    import torch

    where = f"data.extract.devices={cfg.devices}"
    if device.startswith("cuda:"):
        raise ConfigError(f"data.backbone.device={device} names one GPU, but {where} with ranks gives each rank "
                          "the GPU of its local rank; set data.backbone.device to cuda or auto")
    if device == "mps":
        raise ConfigError(f"data.backbone.device=mps has one device, so extraction cannot run as ranks ({where}, "
                          f"strategy {cfg.strategy}); set data.extract.devices 1 and strategy auto")
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device == "cpu" or (device == "auto" and visible == 0):
        return "cpu"
    if visible == 0:
        raise ConfigError(f"data.backbone.device={device} but no CUDA device is visible on this node; use auto or cpu")
    if cfg.devices > visible:
        raise ConfigError(f"{where} but only {visible} CUDA device{'s are' if visible > 1 else ' is'} visible on this "
                          f"node (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); set "
                          f"data.extract.devices to at most {visible}")
    return "cuda"


def extraction_ranks(cfg: ExtractConfig, device: str, console: Console, key: str,
                     relaunch: bool = False) -> Optional[Ranks]:
    """The ranks of this command's extraction, started on first call (Lightning re-launches the command on the
    node's other devices then); None when extraction runs as one process (``wants_ranks``). ``key`` is the cache
    entry this process found missing: every rank must have found the same one. ``relaunch``: whether the command
    may be re-run whole by Lightning's launcher, which only the CLI knows (true for ``ssl-pipeline extract``);
    otherwise a launch that would re-run it is refused (``refuse_relaunch``)."""
    global _RANKS
    if _RANKS is not None or not wants_ranks(cfg):
        return _RANKS
    kind = accelerator(cfg, device)
    import torch.distributed as dist
    from lightning_fabric import Fabric
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    try:
        fabric = Fabric(accelerator=kind, devices=cfg.devices, num_nodes=cfg.num_nodes, strategy="ddp")
        if not fabric.strategy.cluster_environment.creates_processes_externally and cfg.devices > 1 and not relaunch:
            refuse_relaunch(cfg)
        fabric.launch()
    except (ValueError, RuntimeError, MisconfigurationException) as error:
        detail = " ".join(str(error).split())
        raise ConfigError(f"cannot start the extraction's processes (data.extract.devices={cfg.devices}, "
                          f"num_nodes={cfg.num_nodes}): {detail}") from None
    _destroy_process_group_at_exit()
    environment = type(fabric.strategy.cluster_environment).__name__
    # The collectives carry small Python objects, and one of them waits for every rank to finish its shards (hours
    # on ImageNet; a rank without pending shards waits all along): a gloo group on the CPU with a timeout of days,
    # not the default group's 30 minutes. A rank that dies closes its connections, which fails the others at once.
    group = dist.new_group(backend="gloo", timeout=datetime.timedelta(days=7))
    ranks = Ranks(fabric.global_rank, fabric.world_size, [], environment, str(fabric.device), group)
    found = ranks.gather((socket.gethostname(), key))
    ranks.hosts = [host for host, _ in found]
    if any(other != key for _, other in found):
        rank, other = next((r, k) for r, (_, k) in enumerate(found) if k != key)
        raise DataError(f"the ranks disagree on the cache entries still to extract (rank {ranks.rank} starts with "
                        f"{key}, rank {rank} with {other}): every node must see data.extract.cache_root as one shared "
                        "file system, in the same state")
    if ranks.rank == 0:
        processes = f"{ranks.world} process{'es' if ranks.world > 1 else ''}"
        console.print(f"extracting with {processes} on {len(set(ranks.hosts))} node(s) ({environment}, {kind})")
    _RANKS = ranks
    return ranks


def refuse_relaunch(cfg: ExtractConfig) -> None:
    """Lightning's launcher starts the node's further ranks by re-running ``sys.argv``: the whole command. That is
    the extraction for ``ssl-pipeline extract`` (which says so with ``relaunch``), but ``run`` or ``fit`` would go
    on to fit heads in every copy (and under pytest it would re-run pytest). Refused in one line, before any
    process is started."""
    shown = " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:3]])
    raise ConfigError(
        f"data.extract.devices={cfg.devices} makes Lightning start {cfg.devices - 1} more process(es) that re-run "
        f"this whole command ({shown} …), not only its extraction; extract first with `ssl-pipeline extract` "
        "and the same config, then run this command (it reuses the cache), or start every process yourself "
        "with torchrun or srun"
    )


def current_ranks() -> Optional[Ranks]:
    """The ranks started by ``extraction_ranks`` in this process, if any."""
    return _RANKS


def _destroy_process_group_at_exit() -> None:
    import torch.distributed as dist

    atexit.register(lambda: dist.destroy_process_group() if dist.is_initialized() else None)
