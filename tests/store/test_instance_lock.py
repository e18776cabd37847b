"""The per-SOP-Instance-UID lock of the ingest path."""

from __future__ import annotations

import asyncio

from hpacs.store.ingest import InstanceLock


async def _user(locks: dict, uid: str, inside: list, order: list, name: str) -> None:
    async with InstanceLock(locks, uid):
        inside.append(name)
        assert len(inside) == 1, inside
        order.append(name)
        await asyncio.sleep(0.001)
        inside.remove(name)


async def test_one_holder_at_a_time_in_arrival_order_and_nothing_left():
    locks: dict = {}
    inside: list = []
    order: list = []
    await asyncio.gather(*(_user(locks, "1.2.3", inside, order, str(i)) for i in range(4)),
                         _user(locks, "other", [], [], "x"))
    assert order == ["0", "1", "2", "3"]
    assert locks == {}


async def test_an_arrival_after_a_release_waits_for_the_woken_waiter():
    """A release wakes the next waiter before it runs: a newcomer in between must still wait
    for that same lock, never get a fresh one for the same UID."""
    locks: dict = {}
    inside: list = []
    order: list = []
    first = InstanceLock(locks, "u")
    await first.__aenter__()
    waiter = asyncio.ensure_future(_user(locks, "u", inside, order, "waiter"))
    await asyncio.sleep(0)  # the waiter now waits on the lock
    await first.__aexit__(None, None, None)  # wakes it; it has not run yet
    newcomer = asyncio.ensure_future(_user(locks, "u", inside, order, "newcomer"))
    await asyncio.gather(waiter, newcomer)
    assert order == ["waiter", "newcomer"] and locks == {}


async def test_a_cancelled_waiter_leaves_no_entry():
    locks: dict = {}
    holder = InstanceLock(locks, "u")
    await holder.__aenter__()
    task = asyncio.ensure_future(InstanceLock(locks, "u").__aenter__())
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await holder.__aexit__(None, None, None)
    assert locks == {}
