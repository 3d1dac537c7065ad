"""simulator.board.VirtualClock: tasks sleep in virtual time, which jumps to the next wake-up;
on MicroPython a sleep parks the task on the clock itself and allocates nothing."""

import asyncio
import gc

from simulator.board import VirtualClock
from tests.support.mptest import IS_MICROPYTHON

RUN_ON_MICROPYTHON = True


def _run(clock, main, until_ms):
    async def outer():
        runner = asyncio.create_task(clock.run(until_ms=until_ms))
        await main()
        await runner

    asyncio.run(outer())


def test_tasks_wake_in_virtual_time_order():
    clock = VirtualClock()
    woke = []

    async def sleeper(name, ms, times):
        for _ in range(times):
            await clock.sleep_ms_async(ms)
            woke.append((clock.ticks_ms(), name))

    async def main():
        a = asyncio.create_task(sleeper("a", 300, 3))
        b = asyncio.create_task(sleeper("b", 500, 2))
        await a
        await b

    _run(clock, main, 1000)
    assert woke == [(300, "a"), (500, "b"), (600, "a"), (900, "a"), (1000, "b")], woke
    assert clock.ticks_ms() == 1000 and clock.jumps == 5, (clock.ticks_ms(), clock.jumps)


def test_a_cancelled_sleeper_leaves_the_clock_and_time_goes_on():
    clock = VirtualClock()
    woke = []

    async def sleeper(name, ms):
        try:
            await clock.sleep_ms_async(ms)
            woke.append((clock.ticks_ms(), name))
        except asyncio.CancelledError:
            woke.append((clock.ticks_ms(), name + " cancelled"))
            raise

    async def main():
        long = asyncio.create_task(sleeper("long", 5000))
        await sleeper("main", 200)  # woken by the clock: time stands still until it sleeps again
        long.cancel()
        try:
            await long
        except asyncio.CancelledError:
            pass
        await sleeper("after", 100)

    _run(clock, main, 300)
    assert woke == [(200, "main"), (200, "long cancelled"), (300, "after")], woke


def test_sleeping_allocates_nothing_on_micropython():
    """A board's asyncio.sleep_ms allocates nothing; the simulation's clock must not charge the
    firmware's heap more than that (a traceback kept growing once: 15 KiB in ten minutes)."""
    clock = VirtualClock()
    marks = []

    async def main():
        for i in range(3000):
            await clock.sleep_ms_async(10)
            if i in (500, 2999) and IS_MICROPYTHON:
                gc.collect()
                marks.append(gc.mem_alloc())  # pyright: ignore  (MicroPython's gc)

    _run(clock, main, 30000)
    assert clock.ticks_ms() == 30000
    if IS_MICROPYTHON:
        assert marks[1] - marks[0] <= 256, marks
