"""The few names that differ between MicroPython and CPython, so drivers run on both.

On the board `const` and the `ticks_*` functions come from MicroPython itself; under CPython
(the fleet simulator, host tests) they are emulated here with the same semantics.
"""

try:
    from time import sleep_ms, ticks_add, ticks_diff, ticks_ms

    from micropython import const
except ImportError:  # CPython
    from drivers._cpython import (  # pyright: ignore  # noqa: F401
        const,
        sleep_ms,
        ticks_add,
        ticks_diff,
        ticks_ms,
    )


class SystemClock:
    """The interpreter's own monotonic clock, for drivers used outside a simulation.

    Drivers take any object with these four methods, so the simulator can pass a clock whose
    time advances only when told to (simulated time faster than real time).
    """

    def ticks_ms(self):
        return ticks_ms()

    def ticks_diff(self, end, start):
        return ticks_diff(end, start)

    def ticks_add(self, ticks, delta):
        return ticks_add(ticks, delta)

    def sleep_ms(self, ms):
        sleep_ms(ms)


SYSTEM_CLOCK = SystemClock()  # stateless: sharing it between instances shares nothing
