"""The progress display of the long stages (extraction, fitting, scoring, GMM checks).

On a terminal (and in Jupyter) it is a rich bar. Where stdout is not a terminal (CI, SLURM ``--output`` files,
``nohup``) a live bar cannot redraw, so :class:`PlainProgress` takes its place behind the same
``add_task``/``update``/``advance`` calls and prints one plain line at a bounded rate: whenever another tenth of
the total is done or ``every_seconds`` (30 s) have passed since the last line, whichever comes first, and a final
line when the stage ends::

    fitting heads 4/18 (22%) | 19.8 s/head | elapsed 1:19 | ETA 4:37 | infonce_delta0_5_seed0 (19.6 s, 30 epochs)
    extracting cifar100/train 25000/50000 (50%) | 503 img/s | elapsed 0:49 | ETA 0:49
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

from rich.console import Console
from rich.progress import (
    BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
)

EVERY_FRACTION = 0.1
EVERY_SECONDS = 30.0


def live_display(console: Console) -> bool:
    """Whether ``console`` can redraw a live bar (a terminal that is not ``TERM=dumb``, or Jupyter)."""
    return console.is_jupyter or (console.is_terminal and not console.is_dumb_terminal)


def progress_bar(
    console: Console, unit: str = "item", *, clock: Optional[Callable[[], float]] = None,
    every_fraction: float = EVERY_FRACTION, every_seconds: float = EVERY_SECONDS,
) -> Union[Progress, "PlainProgress"]:
    """Description, bar, done/total, elapsed time and the item at work (the task's ``current`` field); plain
    lines (rate in ``unit``/s) where ``console`` is not a terminal."""
    if not live_display(console):
        return PlainProgress(console, unit, clock=clock, every_fraction=every_fraction, every_seconds=every_seconds)
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.fields[current]}"), console=console, transient=False,
    )


def rate_progress(
    console: Console, unit: str = "img", *, clock: Optional[Callable[[], float]] = None,
    every_fraction: float = EVERY_FRACTION, every_seconds: float = EVERY_SECONDS,
) -> Union[Progress, "PlainProgress"]:
    """The extraction bar: done of the total, the rate (the task's ``rate`` field), elapsed and remaining time;
    plain lines where ``console`` is not a terminal."""
    if not live_display(console):
        return PlainProgress(console, unit, clock=clock, every_fraction=every_fraction, every_seconds=every_seconds)
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
    )


@dataclass
class _Task:
    description: str
    total: Optional[float]
    started: float
    completed: float = 0.0
    fields: dict[str, Any] = field(default_factory=dict)
    printed: Optional[float] = None
    """``completed`` at the last line printed (None: no line yet)."""
    printed_at: float = 0.0


class PlainProgress:
    """rich's ``Progress`` API as far as the pipeline uses it (``add_task``, ``update``, ``advance``, context
    manager), printing plain lines through ``console`` instead of a live bar.

    A line is printed when progress moves and either crosses another ``every_fraction`` of the total or comes
    ``every_seconds`` after the last line; the line at the total, or the last state when the block exits, is
    always printed. Each line: description, done/total (percent), rate (``unit``/s, or s/``unit`` below one a
    second) averaged since the task was added, elapsed time, ETA, then the task's ``note`` field if set (a summary
    of what just finished, e.g. a head's tag and loss) or else its ``current`` field. ``clock`` (default
    ``time.monotonic``) is injectable for tests."""

    def __init__(
        self, console: Console, unit: str = "item", *, clock: Optional[Callable[[], float]] = None,
        every_fraction: float = EVERY_FRACTION, every_seconds: float = EVERY_SECONDS,
    ) -> None:
        self.console = console
        self.unit = unit
        self.clock = clock or time.monotonic
        self.every_fraction = every_fraction
        self.every_seconds = every_seconds
        self._tasks: dict[int, _Task] = {}

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.stop(stopped=exc_type is not None)

    def start(self) -> None:
        pass

    def stop(self, stopped: bool = False) -> None:
        """Print each task's last state unless its last line already showed it."""
        for task in self._tasks.values():
            if task.printed != task.completed:
                unfinished = task.total is not None and task.completed < task.total
                self._print(task, suffix=" | stopped" if stopped and unfinished else "")

    def add_task(self, description: str, total: Optional[float] = 100.0, completed: float = 0, **fields: Any) -> int:
        task_id = len(self._tasks)
        self._tasks[task_id] = _Task(description, total, self.clock(), completed, dict(fields))
        return task_id

    def update(
        self, task_id: int, *, total: Optional[float] = None, completed: Optional[float] = None,
        advance: Optional[float] = None, description: Optional[str] = None, **fields: Any,
    ) -> None:
        task = self._tasks[task_id]
        before = task.completed
        if total is not None:
            task.total = total
        if completed is not None:
            task.completed = completed
        if advance is not None:
            task.completed += advance
        if description is not None:
            task.description = description
        for rich_only in ("visible", "refresh"):
            fields.pop(rich_only, None)
        task.fields.update(fields)
        if task.completed != before:
            self._maybe_print(task)

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def _maybe_print(self, task: _Task) -> None:
        if task.printed == task.completed:
            return
        now = self.clock()
        at_end = task.total is not None and task.completed >= task.total
        late = now - (task.printed_at if task.printed is not None else task.started) >= self.every_seconds
        if at_end or late or self._step(task, task.completed) > self._step(task, task.printed or 0):
            self._print(task, now=now)

    def _step(self, task: _Task, completed: float) -> int:
        """How many ``every_fraction``s of the total ``completed`` is (0 without a total)."""
        if not task.total or self.every_fraction <= 0:
            return 0
        return int(completed / task.total / self.every_fraction + 1e-9)

    def _print(self, task: _Task, now: Optional[float] = None, suffix: str = "") -> None:
        now = self.clock() if now is None else now
        task.printed, task.printed_at = task.completed, now
        self.console.print(self.line(task, now) + suffix, markup=False, highlight=False, soft_wrap=True)

    def line(self, task: _Task, now: float) -> str:
        elapsed = max(now - task.started, 0.0)
        done = _count(task.completed)
        rate = task.completed / elapsed if elapsed > 0 and task.completed > 0 else None
        if task.total:
            remaining = max(task.total - task.completed, 0)
            counts = f"{done}/{_count(task.total)} ({100 * task.completed / task.total:.0f}%)"
            eta = format_seconds(remaining / rate) if rate else ("0:00" if remaining == 0 else "?")
        else:
            counts, eta = done, "?"
        parts = [f"{task.description} {counts}", format_rate(rate, self.unit), f"elapsed {format_seconds(elapsed)}",
                 f"ETA {eta}"]
        note = task.fields.get("note") or task.fields.get("current")
        if note:
            parts.append(str(note))
        return " | ".join(parts)


def _count(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def format_rate(rate: Optional[float], unit: str) -> str:
    """``503 img/s``, ``2.4 item/s``, ``19.8 s/head``; ``? unit/s`` before anything is done."""
    if not rate:
        return f"? {unit}/s"
    if rate >= 100:
        return f"{rate:.0f} {unit}/s"
    if rate >= 1:
        return f"{rate:.1f} {unit}/s"
    return f"{1 / rate:.1f} s/{unit}"


def format_seconds(seconds: float) -> str:
    """``0:07``, ``4:37``, ``1:02:03``."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
