"""A live progress display for a run: steps done, best score, exploits, failures."""

from __future__ import annotations

import html
import math
import sys
import time
from typing import Any

from pbtkit.controller import Summary

__all__ = ["ProgressDisplay", "in_notebook", "steps_text"]

_NOTEBOOK_EVERY = 0.5  # seconds between two redraws of a notebook's display
#: Outside a terminal, the longest silence between two plain lines (seconds).
PLAIN_EVERY = 30.0


def open_ended(summary: Summary) -> bool:
    """Whether the run has no step budget (``total_steps`` not given)."""
    from pbtkit.core.policy import MAX_STEPS

    return summary.steps_total >= summary.population * MAX_STEPS


def steps_text(summary: Summary) -> str:
    """``120/800 steps``, or ``120 steps (open-ended)`` for a run without a step budget."""
    if open_ended(summary):
        return f"{summary.steps_done} steps (open-ended)"
    return f"{summary.steps_done}/{summary.steps_total} steps"


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (a notebook, JupyterLab, VS Code's)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:
        return False
    return shell is not None and getattr(shell, "kernel", None) is not None


class ProgressDisplay:
    """Shows a :class:`~pbtkit.controller.Summary` as it changes.

    On a terminal it is a rich progress bar; in a Jupyter notebook, an HTML progress bar
    in the cell's output, redrawn in place; elsewhere (CI logs, ``nohup``, batch jobs) a
    plain line on stderr at each tenth of the way, at least every :data:`PLAIN_EVERY`
    seconds while the run goes on, and at the end. It shows by default; ``enabled=False``
    shows nothing.
    """

    def __init__(self, name: str, enabled: bool | None = None) -> None:
        notebook = in_notebook()
        self.enabled = True if enabled is None else enabled
        self._live = self.enabled and sys.stderr.isatty() and not notebook
        self._notebook: Any = None
        self._drawn = 0.0
        self._latest: Summary | None = None
        if self.enabled and notebook:
            shown = _ipython_display()
            self._notebook = shown.display(shown.HTML(_bar(name, None, 0.0)), display_id=True)
        self._name = name
        self._bar: Any = None
        self._task: Any = None
        self._last_tenth = -1
        self._start = time.monotonic()
        self._printed = self._start  # when the last plain line was written
        self._unprinted: Summary | None = None
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
        if self._notebook is not None:
            self._latest = summary
            if time.monotonic() - self._drawn >= _NOTEBOOK_EVERY:
                self._draw()
            return
        best = _best(summary)
        if self._live:
            self._bar.update(
                self._task,
                total=None if open_ended(summary) else summary.steps_total,
                completed=summary.steps_done,
                best=best,
                exploits=summary.exploits,
                failed=summary.members_failed,
            )
            return
        tenth = (
            0  # no tenths without a budget: the first look, then every PLAIN_EVERY
            if open_ended(summary)
            else int(10 * summary.steps_done / max(summary.steps_total, 1))
        )
        now = time.monotonic()
        if tenth != self._last_tenth or now - self._printed >= PLAIN_EVERY:
            self._last_tenth = tenth
            self._plain(summary, best, now)
        else:
            self._unprinted = summary

    def _plain(self, summary: Summary, best: str, now: float) -> None:
        self._printed = now
        self._unprinted = None
        print(
            f"[{self._name}] {steps_text(summary)}, best {best}, {summary.exploits} exploits, "
            f"{summary.members_failed} failed, {now - self._start:.1f}s",
            file=sys.stderr,
            flush=True,
        )

    def _draw(self) -> None:
        self._drawn = time.monotonic()
        elapsed = self._drawn - self._start
        self._notebook.update(_ipython_display().HTML(_bar(self._name, self._latest, elapsed)))

    def close(self) -> None:
        """Stop the display (a notebook's shows where the run ended)."""
        if self._notebook is not None and self._latest is not None:
            self._draw()
            self._latest = None
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        if self._unprinted is not None:  # the plain lines end with where the run ended
            last = self._unprinted
            best = (
                "-"
                if math.isnan(last.best_score)
                else f"{last.best_score:.4g} (m{last.best_member})"
            )
            self._plain(last, best, time.monotonic())


def _best(summary: Summary) -> str:
    if math.isnan(summary.best_score):
        return "-"
    return f"{summary.best_score:.4g} (m{summary.best_member})"


def _ipython_display() -> Any:
    import importlib

    return importlib.import_module("IPython.display")


def _bar(name: str, summary: Summary | None, elapsed: float) -> str:
    """The notebook's progress bar: an HTML ``<progress>`` and one line of text."""
    if summary is None:
        done, total, text = 0, 1, "starting"
    else:
        done, total = summary.steps_done, max(summary.steps_total, 1)
        best = (
            "-"
            if math.isnan(summary.best_score)
            else f"{summary.best_score:.4g} (member {summary.best_member})"
        )
        text = (
            f"{summary.steps_done}/{summary.steps_total} steps, best {best}, "
            f"{summary.exploits} exploits, {summary.members_failed} failed, {elapsed:.1f}s"
            + (" - finished" if summary.status == "finished" else "")
        )
    return (
        f'<div class="pbtkit-progress"><b>{html.escape(name)}</b> '
        f'<progress value="{done}" max="{total}" style="width: 40%"></progress> '
        f"<span>{html.escape(text)}</span></div>"
    )
