"""How busy the rest of the machine was while a benchmark ran (timings on a shared box are only as good as that).

``LoadMeter`` reads the machine's busy CPU time (``/proc/stat``: everything but idle and iowait, steal included)
and this process's own CPU time (``os.times``); the difference is what other processes took.
``other_share`` = that time / (wall × cores): 0 on a quiet machine, 0.5 when others kept one of two cores busy.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Optional


def _machine_busy_seconds() -> Optional[float]:
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")  # user … steal; guest time is inside user


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class LoadMeter:
    """``load = LoadMeter().start()`` … ``load.stop()``, then ``load.summary()`` / ``load.line()``."""

    def start(self) -> "LoadMeter":
        self.begin = (time.perf_counter(), _machine_busy_seconds(), _own_cpu_seconds())
        return self

    def stop(self) -> None:
        self.end = (time.perf_counter(), _machine_busy_seconds(), _own_cpu_seconds())

    def summary(self) -> dict[str, Optional[float]]:
        wall = self.end[0] - self.begin[0]
        own = self.end[2] - self.begin[2]
        cores = os.cpu_count() or 1
        if self.begin[1] is None or self.end[1] is None:
            return {"wall_s": wall, "own_cpu_s": own, "other_cpu_s": None, "other_share": None, "cores": cores}
        other = max(0.0, (self.end[1] - self.begin[1]) - own)
        return {"wall_s": wall, "own_cpu_s": own, "other_cpu_s": other, "other_share": other / (wall * cores), "cores": cores}

    def line(self) -> str:
        s = self.summary()
        if s["other_share"] is None:
            return "load from other processes: unknown (no /proc/stat)"
        verdict = "quiet" if s["other_share"] < 0.05 else "SHARED — timings inflated; re-run when the machine is idle"
        return f"load from other processes during the run: {s['other_share']:.0%} of {s['cores']} cores ({verdict})"


def write_results(path: Path, payload: dict) -> None:
    """Write a benchmark's numbers as JSON (``--out``) and say where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"wrote {path}")
