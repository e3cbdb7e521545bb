"""Keep glibc's allocator from handing every large tensor's memory back to the kernel (issue 12, item 7).

With glibc's defaults, an allocation above the (dynamic) mmap threshold is its own ``mmap`` and its ``free`` an
``munmap``, and free space at the top of the heap above the trim threshold is returned with ``brk``. Batches of
activations (EfficientNet-Lite0 at 128 px, batch 128: tens to hundreds of MiB per tensor) are allocated and freed
every batch, so every batch faults its pages in again: 9.4 M page faults and 15.3 s of system time against 18.9 s
of user time for 3,000 JPEGs on 2 cores, 192 img/s; with the three settings below, 0.35 M faults, 1.0 s system
time, 503 img/s (measured with the equivalent environment variables; see ``benchmarks/bench_allocator.py``).

``configure_malloc()`` (called first thing by ``ssl-pipeline``) sets, through ``mallopt``:

* ``M_MMAP_THRESHOLD`` = 2**31 − 1 (``MMAP_THRESHOLD``): allocations below 2 GiB come from the heap and are reused
  instead of being mapped and unmapped. ``mallopt`` takes an ``int``, so this is the largest value it can carry.
  ``man mallopt`` gives 32 MiB (``HEAP_MAX_SIZE / 2`` on 64-bit) as the upper limit, and glibc releases that
  check it refuse more; glibc 2.36 (Debian 12) accepts any value. Where the larger value is refused, 32 MiB
  (that documented maximum) is applied instead, and the heap is *primed*: one allocation just below 32 MiB
  grows it with the 1 GiB top pad, so tensors up to about 1 GiB are then cut from the top of the heap even
  though they are above the threshold (glibc serves a request from the top chunk before it considers ``mmap``).
* ``M_TRIM_THRESHOLD`` = 2**31 − 1 (``TRIM_THRESHOLD``): free space at the top of the heap is returned to the
  kernel only above 2 GiB. The issue measured 4 GiB (``MALLOC_TRIM_THRESHOLD_``); an ``int`` cannot carry it, and
  2 GiB halves the memory that can stay resident unused.
* ``M_TOP_PAD`` = 1 GiB (``TOP_PAD``): each time the heap grows it grows by 1 GiB more than asked (address space;
  pages cost memory only once touched), so growth is rare.

Cost: memory the process freed stays resident for reuse instead of going back to the kernel — at most
``TRIM_THRESHOLD`` (2 GiB) at the top of the heap, plus any free holes inside it (each smaller than the mmap
threshold). A workload that reuses the same sizes peaks where it did; ``tests/test_allocator.py`` checks the peak
RSS of an alternating-size loop against glibc's default, ``benchmarks/bench_allocator.py`` reports it for
extraction and head fitting.

Precedence and switch: a parameter the user set for glibc itself (``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_`` or the matching ``glibc.malloc.*`` entry of ``GLIBC_TUNABLES``,
read by glibc at start-up) is left alone; ``SSL_PIPELINE_MALLOC=off`` turns the whole thing off. Nothing happens
(no error) on other C libraries (macOS, musl: no ``gnu_get_libc_version``) or under a preloaded allocator
(jemalloc, tcmalloc, mimalloc in ``LD_PRELOAD``). The values applied are exported as those environment variables
(where unset), so child processes — spawned DDP ranks, DataLoader workers of a ``spawn``/``forkserver`` context —
start with the same setting (forked ones inherit it anyway). ``malloc_settings()`` is the record of what this
process applied; run provenance stores it under ``cpu.allocator``.
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Mapping, MutableMapping, Optional

from ssl_pipeline.errors import ConfigError

SWITCH = "SSL_PIPELINE_MALLOC"
"""Environment variable: ``off`` (or 0/false/no) leaves glibc's defaults; unset, ``on`` (1/true/yes) tunes."""

INT_MAX = 2**31 - 1
MMAP_THRESHOLD = INT_MAX
TRIM_THRESHOLD = INT_MAX
TOP_PAD = 1 << 30
DOCUMENTED_MAX_MMAP_THRESHOLD = 32 << 20
"""``man mallopt``: M_MMAP_THRESHOLD's upper limit on 64-bit (HEAP_MAX_SIZE / 2), enforced by some glibc releases."""

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # <malloc.h>

PARAMETERS = {  # name: (mallopt number, glibc's environment variable, glibc's tunable)
    "mmap_threshold": (M_MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_", "glibc.malloc.mmap_threshold"),
    "trim_threshold": (M_TRIM_THRESHOLD, "MALLOC_TRIM_THRESHOLD_", "glibc.malloc.trim_threshold"),
    "top_pad": (M_TOP_PAD, "MALLOC_TOP_PAD_", "glibc.malloc.top_pad"),
}
OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc", "hoard", "tbbmalloc", "snmalloc")
OFF, ON = ("off", "0", "false", "no"), ("", "on", "1", "true", "yes")

_record: Optional[dict] = None


def configure_malloc() -> dict:
    """Tune this process's allocator once (later calls return the first call's record); see the module doc."""
    global _record
    if _record is None:
        _record = tune_malloc()
    return _record


def malloc_settings() -> dict:
    """What ``configure_malloc`` applied in this process (``status: not configured`` if it was not called)."""
    return dict(_record) if _record is not None else {"status": "not configured"}


def tune_malloc(
    environ: Optional[MutableMapping[str, str]] = None, *, mmap_threshold: int = MMAP_THRESHOLD,
    trim_threshold: int = TRIM_THRESHOLD, top_pad: int = TOP_PAD, export: bool = True,
) -> dict:
    """Apply the settings now (every call) and return the record: ``status`` (applied | environment: the user
    set every parameter | off | unsupported | other allocator | refused), ``libc``, ``applied`` {parameter:
    value} (``mallopt`` returned 1), ``mallopt_returned`` {parameter: return value}, ``from_environment``
    {parameter: the user's setting, left alone}, ``refused`` {parameter: value} (``mallopt`` returned 0),
    ``primed`` and ``note``. ``environ`` defaults to ``os.environ``; ``export`` writes the applied values into it
    (where unset) for child processes."""
    environ = os.environ if environ is None else environ
    raw = environ.get(SWITCH, "")
    if raw.strip().lower() in OFF:
        return {"status": "off", "note": f"{SWITCH}={raw}: glibc's defaults"}
    if raw.strip().lower() not in ON:
        raise ConfigError(f"{SWITCH}={raw!r} is not one of on, off")
    libc, version = _glibc()
    if libc is None:
        return {"status": "unsupported", "note": "not glibc: nothing to tune"}
    preload = environ.get("LD_PRELOAD", "")
    if any(name in preload.lower() for name in OTHER_ALLOCATORS):
        return {"status": "other allocator", "libc": version, "note": f"LD_PRELOAD={preload} replaces malloc"}

    wanted = {"mmap_threshold": mmap_threshold, "trim_threshold": trim_threshold, "top_pad": top_pad}
    user = user_settings(environ)
    record: dict = {"status": "applied", "libc": version, "applied": {}, "mallopt_returned": {},
                    "from_environment": user, "refused": {}, "primed": False}
    for name in ("trim_threshold", "top_pad", "mmap_threshold"):  # the mmap threshold last: priming needs the pad
        if name in user:
            continue
        number, _, _ = PARAMETERS[name]
        value = wanted[name]
        if not 0 <= value <= INT_MAX:
            raise ValueError(f"{name}={value}: mallopt takes an int (0 … {INT_MAX})")
        returned = libc.mallopt(ctypes.c_int(number), ctypes.c_int(value))
        if returned == 0 and name == "mmap_threshold" and value > DOCUMENTED_MAX_MMAP_THRESHOLD:
            record["note"] = f"glibc refused mmap_threshold={value}; its documented maximum applied instead"
            value = DOCUMENTED_MAX_MMAP_THRESHOLD
            returned = libc.mallopt(ctypes.c_int(number), ctypes.c_int(value))
        record["mallopt_returned"][name] = int(returned)
        if returned == 1:
            record["applied"][name] = value
        else:
            record["refused"][name] = value
    applied = record["applied"]
    if "mmap_threshold" in applied and applied["mmap_threshold"] < applied.get("top_pad", 0):
        record["primed"] = _prime_heap(libc, applied["mmap_threshold"])
    if export:
        for name, value in applied.items():
            environ.setdefault(PARAMETERS[name][1], str(value))
    if not applied:
        record["status"] = "environment" if user and not record["refused"] else "refused"
    return record


def user_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """The parameters the user set for glibc itself: ``MALLOC_*_`` variables and ``GLIBC_TUNABLES`` entries."""
    tunables = dict(
        item.partition("=")[::2] for item in environ.get("GLIBC_TUNABLES", "").split(":") if "=" in item
    )
    found = {}
    for name, (_, variable, tunable) in PARAMETERS.items():
        if environ.get(variable, "") != "":
            found[name] = f"{variable}={environ[variable]}"
        elif tunable in tunables:
            found[name] = f"GLIBC_TUNABLES {tunable}={tunables[tunable]}"
    return found


def _glibc() -> tuple[Optional[ctypes.CDLL], Optional[str]]:
    """(the C library, "glibc X.Y") when this process runs on glibc; (None, None) otherwise."""
    if not sys.platform.startswith("linux"):
        return None, None
    try:
        libc = ctypes.CDLL(None)
        version = libc.gnu_get_libc_version
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
    except (OSError, AttributeError, TypeError):
        return None, None
    version.restype = ctypes.c_char_p
    return libc, f"glibc {version().decode()}"


def _prime_heap(libc: ctypes.CDLL, mmap_threshold: int) -> bool:
    """Grow the heap by the top pad now: one allocation just below the mmap threshold, freed at once (it returns
    to the top of the heap, which is not trimmed below the trim threshold). Only address space is taken."""
    try:
        libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
        libc.free.restype, libc.free.argtypes = None, [ctypes.c_void_p]
    except AttributeError:
        return False
    pointer = libc.malloc(max(mmap_threshold - (64 << 10), 1 << 20))
    if not pointer:
        return False
    libc.free(pointer)
    return True
