"""CPython stand-ins for MicroPython's `const` and `time.ticks_*` (never imported on a board).

Kept apart from `drivers.compat` so the firmware type check (against the ESP32 stubs) never
sees CPython-only names such as `time.monotonic_ns`.
"""

import time


def const(value):
    return value


def ticks_ms():
    """Monotonic milliseconds; CPython ints never wrap, so no wrap is emulated."""
    return time.monotonic_ns() // 1_000_000


def ticks_add(ticks, delta):
    return ticks + delta


def ticks_diff(end, start):
    return end - start


def sleep_ms(ms):
    time.sleep(ms / 1000)
