"""A clock whose time moves only when the simulation says so.

It has the methods drivers and firmware take from an injected clock (`ticks_ms`, `ticks_diff`,
`ticks_add`, `sleep_ms`), so simulated time can run faster than real time and tests are exact.
"""


class SimClock:
    def __init__(self, start_ms=0):
        self._now_ms = start_ms

    def ticks_ms(self):
        return self._now_ms

    def ticks_diff(self, end, start):
        return end - start

    def ticks_add(self, ticks, delta):
        return ticks + delta

    def sleep_ms(self, ms):
        """Blocking sleep in simulated time: just advances the clock."""
        self.advance(ms)

    def advance(self, ms):
        if ms < 0:
            raise ValueError("time cannot go backwards: advance(%d)" % ms)
        self._now_ms += ms
