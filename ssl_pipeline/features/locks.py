"""Record locks on a cache entry's ``.lock`` file: one writer per entry, or one rank per block of shards.

Byte 0 of the lock file stands for the entry, byte 1 + i for shard i. A single-process writer (and ``cache clean``)
locks the whole file, [0, ∞); each rank of a multi-process extraction locks the bytes of its own shards, rank 0
byte 0 as well. Ranges conflict only where they overlap: the ranks of one job never refuse each other, any other
writer of the entry is refused, whatever the two jobs' rank counts.

The locks are POSIX record locks (``fcntl.lockf``), not flocks: a flock belongs to the open file description,
which fork shares, so the DataLoader workers an extraction forks held a SIGKILLed writer's lock until they noticed
their parent was gone (seconds: the rerun of a preempted job was refused). A record lock belongs to the process
that took it: forked children never hold it, and the kernel drops it the moment that process dies, however it
dies (on NFS through its lock manager, NLM or NFSv4's own). Its trap: closing *any* descriptor of the file drops
the process's locks. So each lock file is opened at most once per process while locked (``_HELD``), which also
refuses a second writer within the process.

Every holder leaves ``.lock-<host>-<pid>.json`` beside the lock (what it holds, since when), so a refused writer
can name the holder; a record whose process is gone is stale and is ignored, and removed by the next holder.
Where a file system does not enforce the locks (some NFS and Lustre mounts keep them per node),
``locks_enforced`` finds out by taking a held lock from another process, and ``node_local_locks`` reads the
mount options.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Optional

from ssl_pipeline.atomic import atomic_write
from ssl_pipeline.errors import DataError

Range = tuple[int, Optional[int]]
"""[start, stop) bytes of the lock file; stop None: to the end of the file and beyond."""
ENTRY: Range = (0, 1)
WHOLE: Range = (0, None)

_HELD: dict[str, IO[bytes]] = {}
_RECORDS: dict[str, tuple[list[Range], str]] = {}
_HELD_GUARD = threading.Lock()
_UNSUPPORTED = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL, errno.EBADF)


def shard_range(first: int, last: int) -> Range:
    """The bytes standing for shards first..last (inclusive)."""
    return 1 + first, 2 + last


def _lockf(handle: IO[bytes], command: int, span: Range) -> bool:
    """Apply ``command`` (LOCK_EX | LOCK_NB or LOCK_UN) to ``span``; False when another process holds part of it."""
    start, stop = span
    try:
        fcntl.lockf(handle, command, 0 if stop is None else stop - start, start, os.SEEK_SET)
    except OSError as error:
        if error.errno in (errno.EACCES, errno.EAGAIN):
            return False
        if error.errno in _UNSUPPORTED:
            raise DataError(
                f"cannot lock {handle.name} ({error.strerror}): the file system of the cache root does not support "
                "POSIX record locks (NFS mounted with nolock, Lustre without -o flock); set data.extract.cache_root "
                "to a file system with working locks"
            ) from None
        raise
    return True


def lock_entry(directory: Path, span: Range = WHOLE, holder: str = "writer") -> IO[bytes] | None:
    """Open ``<directory>/.lock`` and lock ``span`` (default: the whole entry) exclusively without waiting; None
    if another process, or this one, holds part of it. ``holder`` says in the holder record what holds it
    (``rank 1 of 2``). Release with ``unlock_entry``."""
    path = str((directory / ".lock").resolve())
    with _HELD_GUARD:
        if path in _HELD:
            return None
        handle = open(path, "ab")  # noqa: SIM115 -- held open for as long as the lock is
        try:
            if not _lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB, span):
                handle.close()
                return None
        except BaseException:
            handle.close()
            raise
        _HELD[path] = handle
    _record(handle, [span], holder)
    return handle


def extend_lock(handle: IO[bytes], span: Range) -> bool:
    """Add ``span`` to the ranges ``handle`` holds; False (nothing added) when another process holds part of it."""
    if not _lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB, span):
        return False
    ranges, holder = _RECORDS.get(handle.name, ([], "writer"))
    _record(handle, [*ranges, span], holder)
    return True


def keep_only(handle: IO[bytes], spans: list[Range]) -> None:
    """Release everything ``handle`` holds outside ``spans`` (bounded, disjoint, held already): the gaps between
    them are unlocked, the spans themselves never are, so no other process can slip in."""
    start = 0
    for a, b in sorted(spans):
        if a > start:
            _lockf(handle, fcntl.LOCK_UN, (start, a))
        start = max(start, b)
    _lockf(handle, fcntl.LOCK_UN, (start, None))
    _record(handle, spans, _RECORDS.get(handle.name, ([], "writer"))[1])


def unlock_entry(handle: IO[bytes]) -> None:
    """Release every lock of ``handle`` (closing its one descriptor) and its holder record; a second call does
    nothing."""
    with _HELD_GUARD:
        if _HELD.get(handle.name) is handle:
            del _HELD[handle.name]
            _RECORDS.pop(handle.name, None)
            _record_path(handle.name).unlink(missing_ok=True)
        handle.close()


def _record_path(lock_path: str, host: Optional[str] = None, pid: Optional[int] = None) -> Path:
    return Path(f"{lock_path}-{host or socket.gethostname()}-{pid or os.getpid()}.json")


def _record(handle: IO[bytes], ranges: list[Range], holder: str) -> None:
    """Write this process's holder record, and remove the stale records of others whose ranges it now holds."""
    _RECORDS[handle.name] = (ranges, holder)
    own = _record_path(handle.name)
    for other, record in _records(handle.name):
        if other != own and _overlap(record.get("ranges", []), ranges):
            other.unlink(missing_ok=True)
    since = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    record = {"pid": os.getpid(), "host": socket.gethostname(), "holder": holder, "ranges": ranges, "since": since}
    atomic_write(own, lambda f: f.write(json.dumps(record).encode()))


def _records(lock_path: str) -> list[tuple[Path, dict]]:
    lock = Path(lock_path)
    found = []
    for path in sorted(lock.parent.glob(f"{lock.name}-*.json")):
        try:
            found.append((path, json.loads(path.read_text())))
        except (OSError, ValueError):  # removed or being replaced meanwhile
            continue
    return found


def _overlap(ranges: list, others: list) -> bool:
    def inf(stop: Optional[int]) -> float:
        return float("inf") if stop is None else stop

    return any(a < inf(d) and c < inf(b) for a, b in ranges for c, d in others)


def _alive(record: dict) -> bool:
    """False only for a record of this host whose process is gone (a pid on another host cannot be checked)."""
    if record.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(record["pid"]), 0)
    except ProcessLookupError:
        return False
    except (OSError, KeyError, ValueError):
        return True
    return True


def holders(directory: Path, span: Range = WHOLE) -> str:
    """Who holds ``span`` of ``<directory>/.lock``, from the holder records: ``pid 4242 on host node7 (rank 1 of
    2, since …)``."""
    lock = str((directory / ".lock").resolve())
    own = _record_path(lock)
    found = [
        f"pid {r.get('pid')} on host {r.get('host')} ({r.get('holder')}, since {r.get('since')})"
        for path, r in _records(lock)
        if (path != own or lock in _HELD) and _overlap(r.get("ranges", []), [span]) and _alive(r)
    ]
    return "; ".join(found) if found else "a process that left no holder record (an older ssl-pipeline?)"


_PROBE = """
import errno, fcntl, os, sys
with open(sys.argv[1], "ab") as handle:
    try:
        fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0, os.SEEK_SET)
    except OSError as error:
        sys.exit(0 if error.errno in (errno.EACCES, errno.EAGAIN) else 4)
sys.exit(3)
"""
_ENFORCED: dict[str, bool] = {}


def locks_enforced(handle: IO[bytes]) -> bool:
    """Whether another process is refused byte 0 of the lock ``handle`` holds (asked once per directory and
    process, from a child process: a file system that accepts locks without enforcing them fails this)."""
    directory = str(Path(handle.name).parent.parent)
    if directory not in _ENFORCED:
        probe = subprocess.run([sys.executable, "-I", "-c", _PROBE, handle.name], check=False, capture_output=True)
        _ENFORCED[directory] = probe.returncode != 3
    return _ENFORCED[directory]


def node_local_locks(path: Path, mountinfo: Optional[str] = None) -> Optional[str]:
    """Why the locks of the file system holding ``path`` work within one node only, from its mount options (NFS
    ``local_lock=all|posix`` or ``nolock``, Lustre ``localflock``); None when they are not known to be local.
    ``mountinfo`` is the text of ``/proc/self/mountinfo`` (read when None; None off Linux)."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return None
    target, best = os.path.realpath(path), None
    for line in mountinfo.splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 6:
            continue
        mount_point = fields[4].replace("\\040", " ")
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and (best is None or len(mount_point) > len(best[0])):
            fs_type, *rest = line.split(" - ", 1)[1].split()
            options = set(fields[5].split(",")) | set(rest[1].split(",") if len(rest) > 1 else [])
            best = (mount_point, fs_type, options)
    if best is None:
        return None
    mount_point, fs_type, options = best
    if fs_type.startswith("nfs"):
        local = sorted(options & {"local_lock=all", "local_lock=posix", "nolock"})
    elif fs_type == "lustre":
        local = sorted(options & {"localflock"})
    else:
        local = []
    return f"{fs_type} mount {mount_point} with {','.join(local)}" if local else None
