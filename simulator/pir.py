"""A simulated PIR module (HC-SR501 behaviour) as the GPIO the driver sees: value() and irq().

Ground truth is `motion` (someone moving in the field of view), set with set_motion(). The
output follows the datasheet's timing (sensors.md §6): 0-3 spurious pulses during the
warm-up after power-on; high while motion lasts and for hold_ms after it stops (repeatable
trigger, jumper H) or exactly hold_ms per trigger (single, jumper L); then blind for block_ms.
Every output change calls the handler registered with irq(), with the pin as argument, like
machine.Pin.

Time comes from the shared clock. advance(ms) moves a SimClock edge by edge, so the handler
runs at the exact edge time. When something else moves the clock, update() (also run by
value()) catches up and fires the missed edges at the current time: call it at least every
few hundred ms so pulse widths stay right.

    pin = SimPIR(clock, seed=3)
    pir = PIR(pin, clock)
    pin.advance(61000); pin.set_motion(True); pin.advance(5000)
"""

from simulator.prng import Prng

_WARMUP = "warmup"
_IDLE = "idle"
_HIGH = "high"
_BLOCKED = "blocked"


class SimPIR:
    IRQ_RISING = 1  # machine.Pin's values on the ESP32 port
    IRQ_FALLING = 2

    def __init__(
        self,
        clock,
        seed=0,
        warmup_ms=60000,
        hold_ms=2500,
        block_ms=2500,
        retrigger=True,
        spurious_pulses=None,
    ):
        if warmup_ms < 0 or hold_ms <= 0 or block_ms < 0:
            raise ValueError("warmup_ms, block_ms >= 0 and hold_ms > 0 required")
        self._clock = clock
        self._prng = Prng(seed)
        self.warmup_ms = warmup_ms
        self.hold_ms = hold_ms
        self.block_ms = block_ms
        self.retrigger = retrigger
        self._t0 = clock.ticks_ms()  # power-on
        self._now = self._t0  # the model has been brought up to here
        self._out = 0
        self._state = _WARMUP if warmup_ms > 0 else _IDLE
        self._motion = False
        self._last_trigger = self._t0  # last instant motion was seen while high
        self._rise_t = self._t0
        self._fall_t = self._t0
        self._handler = None
        self._trigger = 0
        self._updating = False
        self.edges = 0  # output changes so far (spurious ones included)
        self._pulses = self._spurious(spurious_pulses)
        self._pulse = 0  # index of the next spurious pulse
        self._pulse_high = False

    def _spurious(self, count):
        """(start, end) offsets of the warm-up pulses, in order, inside the warm-up window."""
        prng = self._prng
        if count is None:
            count = prng.randint(0, 3)
        pulses = []
        slot = self.warmup_ms // (count + 1) if count else 0
        for k in range(count):
            length = prng.randint(200, 1500)
            start = k * slot + prng.randint(0, max(slot - length - 1, 0))
            pulses.append((start, start + min(length, max(slot - 1, 1))))
        return pulses

    # --- machine.Pin surface ---------------------------------------------------------------

    def value(self, *args):
        """The output level (0/1) now; catches the model up to the clock first.

        The module drives the line: writing to it is a wiring bug.
        """
        if args:
            raise ValueError("SimPIR is an input: the PIR module drives this line")
        if not self._updating:  # a handler reading the pin must not start a nested update
            self.update()
        return self._out

    def irq(self, handler=None, trigger=3, **_kw):
        self._handler = handler
        self._trigger = trigger

    # --- ground truth ------------------------------------------------------------------------

    @property
    def motion(self):
        return self._motion

    def set_motion(self, moving):
        """Someone starts or stops moving at the clock's current time."""
        self.update()
        moving = bool(moving)
        if self._motion and not moving and self._state == _HIGH:
            self._last_trigger = self._now
        self._motion = moving
        self.update()

    def next_edge_ms(self):
        """Ticks of the next model transition (edge or state change), or None."""
        nxt = self._next()
        return None if nxt is None else nxt[0]

    def update(self):
        """Bring the model to the clock's time, firing the handler for every edge."""
        if self._updating:
            return
        self._updating = True
        try:
            target = self._clock.ticks_ms()
            diff = self._clock.ticks_diff
            while True:
                nxt = self._next()
                if nxt is None or diff(nxt[0], target) > 0:
                    break
                self._apply(*nxt)
            if diff(target, self._now) > 0:
                self._now = target
        finally:
            self._updating = False

    def advance(self, ms):
        """Move the (Sim)clock by ms, stopping at each transition so edges get exact times."""
        clock = self._clock
        end = clock.ticks_add(clock.ticks_ms(), ms)
        while True:
            self.update()
            t = self.next_edge_ms()
            now = clock.ticks_ms()
            if t is None or clock.ticks_diff(t, end) > 0:
                clock.advance(clock.ticks_diff(end, now))
                self.update()
                return
            clock.advance(max(clock.ticks_diff(t, now), 0))

    # --- the model ---------------------------------------------------------------------------

    def _next(self):
        """(time, state, output) of the next transition from the current state."""
        add = self._clock.ticks_add
        state = self._state
        if state == _WARMUP:
            warm_end = add(self._t0, self.warmup_ms)
            if self._pulse < len(self._pulses):
                start, end = self._pulses[self._pulse]
                if self._pulse_high:
                    return (add(self._t0, end), _WARMUP, 0)
                return (add(self._t0, start), _WARMUP, 1)
            return (warm_end, _IDLE, 0)
        if state == _IDLE:
            return (self._now, _HIGH, 1) if self._motion else None
        if state == _HIGH:
            if self.retrigger:
                if self._motion:
                    return None  # motion keeps retriggering the delay timer
                return (add(self._last_trigger, self.hold_ms), _BLOCKED, 0)
            return (add(self._rise_t, self.hold_ms), _BLOCKED, 0)
        return (add(self._fall_t, self.block_ms), _IDLE, 0)  # _BLOCKED

    def _apply(self, t, state, out):
        self._now = t
        if self._state == _WARMUP and state == _WARMUP:
            if self._pulse_high:
                self._pulse += 1
            self._pulse_high = not self._pulse_high
        self._state = state
        if state == _HIGH:
            self._rise_t = t
            self._last_trigger = t
        elif state == _BLOCKED:
            self._fall_t = t
        if out != self._out:
            self._out = out
            self.edges += 1
            mask = self.IRQ_RISING if out else self.IRQ_FALLING
            if self._handler is not None and self._trigger & mask:
                self._handler(self)
