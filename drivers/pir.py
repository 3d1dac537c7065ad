"""PIR motion sensor (HC-SR501, AM312) on one GPIO: interrupt-driven, debounced motion events.

The pin interrupt only writes the edge's ticks and level into a ring made in __init__ (and, if
a `schedule` function is given, asks it to run the bound method cached in __init__), as
MicroPython's isr_rules.rst requires: no allocation, no floats. Edges are turned into events
outside the interrupt, by the scheduled callback or by read():

- warm-up: the sensor pulses 0-3 times in its first ~60 s (sensors.md §6); those edges are
  counted as `ignored`, never as motion, and quality is WARMING_UP;
- debounce: a high pulse shorter than debounce_ms is a glitch, not motion;
- hold: motion stays true for hold_ms after the output falls, and a rising edge inside that
  window [fall, fall + hold_ms) (the sensor's ~2.5-3 s blocking time) continues the same
  event instead of counting a new one.

    from machine import Pin
    import micropython
    pir = PIR(Pin(14, Pin.IN), schedule=micropython.schedule)

On the ESP32 port pin IRQs are soft unless hard=True (they already run from the scheduler);
the handler keeps to the hard-IRQ rules anyway, so either works.
    r = pir.read()      # r.motion, r.events, r.events_total, r.last_motion_ms, r.quality
"""

from drivers.compat import SYSTEM_CLOCK, const
from drivers.sensor import GOOD, SUSPECT, WARMING_UP

_COUNT_MASK = const(0x3FFFFFFF)  # edge counters wrap like ticks: always small ints on the ESP32


class PIRReading:
    """The state at one read(). The driver refills the same object: copy what you keep."""

    def __init__(self):
        self.motion = False  # output high, or fell less than hold_ms ago
        self.level = 0  # raw pin level now
        self.events = 0  # motion events since the previous read()
        self.events_total = 0
        self.last_motion_ms = None  # type: int | None  # ticks of the last motion seen
        self.ignored = 0  # edges ignored during warm-up, total
        self.glitches = 0  # pulses shorter than debounce_ms, total
        self.lost_edges = 0  # edges overwritten before they were processed, total
        self.quality = WARMING_UP
        self.reason = None  # type: str | None


class PIR:
    """A PIR output on `pin` (an input with value() and irq(trigger=, handler=)).

    hold_ms: how long motion lasts after the output falls, and the window in which a new
    rising edge continues the same event. schedule: micropython.schedule on a board, or any
    function(callback, arg); None = edges wait in the ring until read(). ring: edges kept
    between two processings (a power of two).
    """

    def __init__(
        self,
        pin,
        clock=SYSTEM_CLOCK,
        warmup_ms=60000,
        hold_ms=3000,
        debounce_ms=50,
        schedule=None,
        ring=16,
    ):
        if ring < 2 or ring & (ring - 1):
            raise ValueError("ring %r: use a power of two >= 2" % (ring,))
        if warmup_ms < 0 or hold_ms < 0 or debounce_ms < 0:
            raise ValueError(
                "warmup_ms, hold_ms and debounce_ms must be >= 0: %r, %r, %r"
                % (warmup_ms, hold_ms, debounce_ms)
            )
        self._pin = pin
        self._clock = clock
        self._warmup_ms = warmup_ms
        self._hold_ms = hold_ms
        self._debounce_ms = debounce_ms
        self._schedule = schedule
        # The ring: the ISR is the only writer of _edge_t/_edge_v/_written, processing the
        # only writer of _taken, so neither needs a lock.
        self._ring_mask = ring - 1
        self._edge_t = [0] * ring
        self._edge_v = [0] * ring
        self._written = 0
        self._taken = 0
        self._busy = False
        # Bound methods made once: creating one inside the ISR would allocate.
        self._process_cb = self._process
        self._irq_cb = self._irq
        # Event state (outside the ISR only).
        self._level = 0  # level after the last processed edge
        self._rise_pending = False
        self._rise_t = 0
        self._high = False  # a confirmed detection whose output has not fallen yet
        self._in_event = False
        self._fall_t = 0
        self._events = 0
        self._reading = PIRReading()
        self._started = clock.ticks_ms()
        self._lost_seen = 0
        pin.irq(trigger=pin.IRQ_RISING | pin.IRQ_FALLING, handler=self._irq_cb)
        if pin.value():  # already high at power-on: treat like a rising edge now
            self._irq(pin)

    def _irq(self, pin):
        """Pin interrupt: record when and which level; allocate nothing."""
        w = self._written
        i = w & self._ring_mask
        self._edge_t[i] = self._clock.ticks_ms()
        self._edge_v[i] = pin.value()
        self._written = (w + 1) & _COUNT_MASK
        if self._schedule is not None:
            try:
                self._schedule(self._process_cb, 0)
            except RuntimeError:  # schedule queue full: read() drains the ring anyway
                pass

    def _process(self, _arg):
        """Scheduled callback: turn recorded edges into events, unless read() is running."""
        if self._busy:  # we interrupted read(); its edges wait for the next edge or read()
            return
        self._busy = True
        try:
            self._drain()
        finally:
            self._busy = False

    def _drain(self):
        n = (self._written - self._taken) & _COUNT_MASK
        size = self._ring_mask + 1
        if n > size:  # the ISR lapped us: the oldest edges are gone
            self._reading.lost_edges += n - size
            self._taken = (self._taken + n - size) & _COUNT_MASK
        while self._taken != self._written:
            i = self._taken & self._ring_mask
            self._edge(self._edge_t[i], self._edge_v[i])
            self._taken = (self._taken + 1) & _COUNT_MASK

    def _edge(self, t, level):
        if level == self._level:  # the opposite edge was lost in a bounce: nothing changed
            return
        self._level = level
        if level:
            self._rise_t = t
            self._rise_pending = True
            return
        if self._rise_pending:
            self._rise_pending = False
            if self._clock.ticks_diff(t, self._rise_t) < self._debounce_ms:
                self._reading.glitches += 1
                return
            self._confirm(self._rise_t)
        if self._high:
            self._high = False
            self._fall_t = t
            self._reading.last_motion_ms = t

    def _confirm(self, t):
        """A rising edge that lasted debounce_ms: motion, unless the sensor is warming up."""
        clock = self._clock
        if clock.ticks_diff(t, self._started) < self._warmup_ms:
            self._reading.ignored += 1
            return
        merged = self._in_event and (
            self._high or clock.ticks_diff(t, self._fall_t) < self._hold_ms
        )
        if not merged:
            self._events += 1
            self._reading.events_total += 1
        self._in_event = True
        self._high = True
        self._reading.last_motion_ms = t

    def warming_up(self):
        clock = self._clock
        return clock.ticks_diff(clock.ticks_ms(), self._started) < self._warmup_ms

    def read(self):
        """Process pending edges and return the PIRReading (refilled in place).

        `events` counts motion events since the previous read(). Quality is WARMING_UP
        during warm-up, SUSPECT when edges were lost since the previous read, else GOOD.
        """
        # Scheduled callbacks run between bytecodes: keep them out while we read and reset.
        self._busy = True
        try:
            return self._read()
        finally:
            self._busy = False

    def _read(self):
        self._drain()
        clock = self._clock
        now = clock.ticks_ms()
        if self._rise_pending and clock.ticks_diff(now, self._rise_t) >= self._debounce_ms:
            self._rise_pending = False
            self._confirm(self._rise_t)
        r = self._reading
        if self._high:
            # The output is still high: motion is being seen now.
            r.last_motion_ms = now  # pyright: ignore[reportAttributeAccessIssue]
            r.motion = True
        elif self._in_event and clock.ticks_diff(now, self._fall_t) < self._hold_ms:
            r.motion = True
        else:
            self._in_event = False
            r.motion = False
        r.level = self._pin.value()
        r.events = self._events
        self._events = 0
        if self.warming_up():
            r.quality = WARMING_UP
            r.reason = "warming_up"
        elif r.lost_edges != self._lost_seen:
            self._lost_seen = r.lost_edges
            r.quality = SUSPECT
            r.reason = "edges_lost"
        else:
            r.quality = GOOD
            r.reason = None
        return r
