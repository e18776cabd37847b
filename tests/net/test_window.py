"""``net.window.Outstanding``: at most ``size`` awaited responses, collected as they finish."""

from __future__ import annotations

import asyncio

import pytest

from hpacs.net.window import Outstanding


def test_full_wait_done_and_cancel() -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        window = Outstanding(2)
        first, second = loop.create_future(), loop.create_future()
        window.add("a", first)
        assert not window.full and window.done() == []
        window.add("b", second)
        assert window.full and len(window) == 2
        loop.call_soon(second.set_result, "ok-b")  # answered out of order
        (key, task), = await window.wait()
        assert (key, task.result(), len(window), window.full) == ("b", "ok-b", 1, False)
        first.set_exception(ConnectionError("gone"))
        (key, task), = await window.wait()
        assert key == "a" and isinstance(task.exception(), ConnectionError)
        assert await window.wait() == []  # nothing outstanding: returns at once
        third = loop.create_future()
        window.add("c", third)
        window.cancel()
        await asyncio.sleep(0)
        assert len(window) == 0 and third.cancelled()

    asyncio.run(run())


@pytest.mark.parametrize("size", [0, -1])
def test_zero_is_unlimited(size: int) -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        window = Outstanding(size)
        for i in range(100):
            window.add(i, loop.create_future())
        assert not window.full and len(window) == 100
        window.cancel()

    asyncio.run(run())


def test_wait_times_out_and_expire_gives_up():
    async def main():
        loop = asyncio.get_running_loop()
        window = Outstanding(2)
        late, never = loop.create_future(), loop.create_future()
        window.add("late", late)
        window.add("never", never)
        assert await window.wait(0.01) == [] and len(window) == 2
        late.set_result("ok")
        assert [(k, f.result()) for k, f in await window.wait(5)] == [("late", "ok")]
        expired = window.expire()
        assert [k for k, _ in expired] == ["never"] and never.cancelled() and not len(window)

    asyncio.run(main())
