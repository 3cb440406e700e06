"""Heartbeats that arrive together at ``pbtkit serve``, written in one transaction."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.concurrency import run_in_threadpool

from pbtkit.controller import Controller
from pbtkit.controller._beats import Beat, record_beats

__all__ = ["GroupCommit"]


class GroupCommit:
    """Heartbeats that arrive together are written in one transaction.

    Each request waits for the transaction that holds its heartbeat, so an answer still
    means the reports are stored; but a busy server commits once for many requests
    instead of once each (reports from many workers, or glass-box clients, per second).
    """

    LARGEST = 512

    def __init__(self, controller: Controller) -> None:
        self._controller = controller
        self._queue: asyncio.Queue[tuple[Beat, asyncio.Future[Any]]] | None = None
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, beat: Beat) -> float:
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._writer = asyncio.get_running_loop().create_task(self._write())
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((beat, done))
        outcome = await done
        if isinstance(outcome, BaseException):
            raise outcome
        return float(outcome)

    async def _write(self) -> None:
        assert self._queue is not None
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.LARGEST and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            outcomes: list[Any]
            try:
                outcomes = await run_in_threadpool(
                    record_beats, self._controller, [beat for beat, _ in batch]
                )
            except Exception as exc:  # the whole transaction failed: every waiter learns why
                outcomes = [exc] * len(batch)
            for (_, done), outcome in zip(batch, outcomes, strict=True):
                if not done.done():
                    done.set_result(outcome)
