"""Keep idle OpenBLAS threads from spinning while the other libraries work (issue 22).

numpy's and scipy's OpenBLAS (pthreads build) keeps its worker threads busy-waiting for 2^28 cycles (≈ 0.1 s)
after every call before they sleep. Scoring alternates many small numpy products and decompositions (projections,
subspace cosines, class statistics) with torch's probe (MKL, libgomp) and FAISS's k-means (its own OpenBLAS and
libgomp): on 2 cores the spinning workers took a core from every one of them. Measured on the digits main job with
cached features (2 cores): scoring 18 s → 8–10 s, the probe 7.3 s → 3.3 s over 61 fits, k-means 3.6 s → 0.6 s
over 69, the whole run 50 s → 33 s, fitting unchanged (torch does not use OpenBLAS); timeouts 2^4, 2^10, 2^16 and
2^20 cycles gave the same times within the noise.

``configure_blas_threads()`` (called first thing by ``ssl-pipeline``, beside ``allocator.configure_malloc``) sets
``OPENBLAS_THREAD_TIMEOUT`` = ``THREAD_TIMEOUT`` (OpenBLAS reads it when the library loads: 2^value cycles of
spinning, clamped to [4, 30]) unless the variable is set already; the child processes (spawned DDP ranks,
DataLoader workers) inherit it. It changes no result, only when idle threads sleep. It has no effect once numpy is
imported (a library user's own process): then it changes nothing and says so (``None``).
"""

from __future__ import annotations

import os
import sys
from typing import Optional

VARIABLE = "OPENBLAS_THREAD_TIMEOUT"
THREAD_TIMEOUT = 16
"""2^16 cycles (tens of µs) of spinning: back-to-back calls still find their threads awake."""


def configure_blas_threads() -> Optional[str]:
    """Set ``OPENBLAS_THREAD_TIMEOUT`` before any OpenBLAS loads (see the module doc); returns the value in effect
    for this process, or None when numpy was imported before (too late to change it)."""
    if "numpy" in sys.modules:
        return None
    return os.environ.setdefault(VARIABLE, str(THREAD_TIMEOUT))
