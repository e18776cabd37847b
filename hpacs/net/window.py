"""Sub-operations outstanding under an asynchronous operations window (PS3.7 D.3.3.3).

A C-GET SCP, a C-MOVE's storage SCU and ``hpacs send`` invoke C-STOREs without waiting for the
previous response while fewer than the window are outstanding; responses come back in any order
(matched by Message ID by the caller) and are collected here as they complete. With a window of
1 this is the synchronous exchange every peer that negotiates nothing gets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any


class Outstanding:
    """Up to ``size`` awaited responses (0 = unlimited), each keyed by what it answers."""

    def __init__(self, size: int) -> None:
        self.size = max(0, size)
        self._tasks: dict[asyncio.Future, Any] = {}

    def __len__(self) -> int:
        return len(self._tasks)

    @property
    def full(self) -> bool:
        return bool(self.size) and len(self._tasks) >= self.size

    def add(self, key: Any, response: Awaitable) -> None:
        """Track ``response`` (a coroutine or future giving the sub-operation's outcome; a
        future is tracked as it is, no task per sub-operation)."""
        self._tasks[asyncio.ensure_future(response)] = key

    def done(self) -> list[tuple[Any, asyncio.Future]]:
        """The finished ones, taken out, in no particular order: (key, finished future)."""
        finished = [(key, task) for task, key in self._tasks.items() if task.done()]
        for _, task in finished:
            del self._tasks[task]
        return finished

    async def wait(self, timeout: float | None = None) -> list[tuple[Any, asyncio.Future]]:
        """At least one finished response (none if nothing is outstanding, or when none
        finished within ``timeout`` seconds)."""
        if self._tasks and not any(task.done() for task in self._tasks):
            await asyncio.wait(list(self._tasks), timeout=timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        return self.done()

    def expire(self) -> list[tuple[Any, asyncio.Future]]:
        """Give up on every outstanding response (cancelled, taken out): (key, future)."""
        expired = list(self._tasks.items())
        self.cancel()
        return [(key, task) for task, key in expired]

    def cancel(self) -> None:
        """Stop awaiting whatever is left (the caller gave up on the association)."""
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
