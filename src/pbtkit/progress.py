"""A live progress display for a run: steps done, best score, exploits, failures."""

from __future__ import annotations

import math
import sys
import time
from typing import Any

from pbtkit.controller import Summary

__all__ = ["ProgressDisplay"]


class ProgressDisplay:
    """Shows a :class:`~pbtkit.controller.Summary` as it changes.

    On a terminal it is a rich progress bar; elsewhere (CI logs) a plain line at each
    tenth of the way and at the end. ``enabled=False`` shows nothing.
    """

    def __init__(self, name: str, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._live = self.enabled and sys.stderr.isatty()
        self._name = name
        self._bar: Any = None
        self._task: Any = None
        self._last_tenth = -1
        self._start = time.monotonic()
        if self._live:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(
                    "steps  best {task.fields[best]}  exploits {task.fields[exploits]}"
                    "  failed {task.fields[failed]}"
                ),
                TimeElapsedColumn(),
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(name, total=None, best="-", exploits=0, failed=0)

    def update(self, summary: Summary) -> None:
        """Show the latest summary."""
        if not self.enabled:
            return
        best = (
            "-"
            if math.isnan(summary.best_score)
            else f"{summary.best_score:.4g} (m{summary.best_member})"
        )
        if self._live:
            self._bar.update(
                self._task,
                total=summary.steps_total,
                completed=summary.steps_done,
                best=best,
                exploits=summary.exploits,
                failed=summary.members_failed,
            )
            return
        tenth = int(10 * summary.steps_done / max(summary.steps_total, 1))
        if tenth != self._last_tenth:
            self._last_tenth = tenth
            print(
                f"[{self._name}] {summary.steps_done}/{summary.steps_total} steps, best {best}, "
                f"{summary.exploits} exploits, {summary.members_failed} failed, "
                f"{time.monotonic() - self._start:.1f}s",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        """Stop the display."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
