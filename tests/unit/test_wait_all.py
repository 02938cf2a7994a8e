"""``wait_all``: what drains wait on (in-flight publishes, closing connections)."""

from __future__ import annotations

import asyncio

from roomcast.node.connection import wait_all


async def test_done_futures_that_stay_in_the_set_do_not_hold_it_up():
    # A copy of the tasks (nothing removes done ones from it): returns at once, not after
    # the whole budget (a drain used to wait its full timeout this way).
    loop = asyncio.get_running_loop()
    futs = {loop.create_future() for _ in range(3)}
    for f in futs:
        f.set_result(None)
    async with asyncio.timeout(1.0):
        await wait_all(futs, 30.0)


async def test_a_future_added_by_a_done_callback_is_waited_for():
    loop = asyncio.get_running_loop()
    first, retry = loop.create_future(), loop.create_future()
    live = {first}

    def hand_over(f):
        live.discard(f)
        live.add(retry)

    first.add_done_callback(hand_over)
    waiter = asyncio.create_task(wait_all(live, 30.0))
    first.set_result(None)
    await asyncio.sleep(0.05)
    assert not waiter.done()  # the retry is still out
    retry.set_result(None)
    async with asyncio.timeout(1.0):
        await waiter


async def test_gives_up_after_the_budget():
    never = asyncio.get_running_loop().create_future()
    async with asyncio.timeout(1.0):
        await wait_all({never}, 0.05)
    assert not never.done()
