"""Time for the firmware: a tick clock with an async sleep, and the wall clock built on it.

Everything that waits goes through `clock.sleep_ms_async(ms)`, so a simulation can pass a clock
whose time jumps (simulator.board.VirtualClock) and run minutes of firmware in seconds.

The wall clock gives epoch milliseconds (UTC) for reading timestamps. It is "synced" once NTP
answered; before that it runs from a fallback epoch (the RTC's idea, possibly 2000-01-01) and
says so. Timestamps it hands out strictly increase (the platform de-duplicates by device and
millisecond, contracts.md §1) and never run more than `max_ahead_ms` ahead of the synced time
(downstream rejects timestamps more than 1 h in the future, contracts.md §2).
"""

import asyncio

from drivers.compat import SystemClock

# 2024-01-01T00:00:00Z: an NTP answer before this is wrong (a fresh RTC starts in 2000).
MIN_VALID_EPOCH_MS = 1704067200000
HOUR_MS = 3600000


class TickClock(SystemClock):
    """The interpreter's monotonic ms ticks (drivers.compat.SystemClock, the clock drivers
    use), plus `sleep_ms_async` for asyncio tasks."""

    def sleep_ms_async(self, ms):
        """Awaitable sleep. On MicroPython it is asyncio's own sleep_ms object: no coroutine
        frame per sleeping task (each costs heap for as long as the task sleeps)."""
        if hasattr(asyncio, "sleep_ms"):
            return asyncio.sleep_ms(ms)
        return asyncio.sleep(ms / 1000)  # CPython


class WallClock:
    """Epoch ms (UTC) from a tick clock plus an offset learnt from NTP.

    `stamp()` is what readings use: strictly increasing, at most `max_ahead_ms` ahead of `now_ms()`.
    """

    def __init__(self, clock, fallback_epoch_ms=0, max_ahead_ms=HOUR_MS):
        self._clock = clock
        self._base_ticks = clock.ticks_ms()
        self._base_epoch = fallback_epoch_ms
        self._last_stamp = -1
        self.max_ahead_ms = max_ahead_ms
        self.synced = False
        self.last_sync_ticks = None
        self.steps = 0  # NTP corrections that moved the clock backwards
        self.resets = 0  # times stamps had to jump back to stay within max_ahead_ms

    def now_ms(self):
        """The current epoch ms estimate (may step backwards after an NTP correction)."""
        elapsed = self._clock.ticks_diff(self._clock.ticks_ms(), self._base_ticks)
        return self._base_epoch + elapsed

    def sync(self, epoch_ms):
        """Take an NTP answer; returns False (and changes nothing) for an impossible one."""
        if not isinstance(epoch_ms, int) or epoch_ms < MIN_VALID_EPOCH_MS:
            return False
        if self.synced and epoch_ms < self.now_ms():
            self.steps += 1
        self._base_ticks = self._clock.ticks_ms()
        self._base_epoch = epoch_ms
        self.synced = True
        self.last_sync_ticks = self._base_ticks
        return True

    def stamp(self):
        """A reading timestamp: > every earlier stamp, never > now + max_ahead_ms."""
        now = self.now_ms()
        t = self._last_stamp + 1
        if t < now:
            t = now
        elif t - now > self.max_ahead_ms:  # the clock stepped back more than we may lead it
            self.resets += 1
            t = now
        self._last_stamp = t
        return t

    def state(self):
        """What must survive deep sleep (RTC memory): [epoch at the tick base, synced, last]."""
        return [self.now_ms(), 1 if self.synced else 0, self._last_stamp]

    def restore(self, state, slept_ms=0):
        """Resume from `state()` taken `slept_ms` before this clock's current tick."""
        self._base_ticks = self._clock.ticks_ms()
        self._base_epoch = state[0] + slept_ms
        self.synced = bool(state[1])
        self._last_stamp = state[2]
