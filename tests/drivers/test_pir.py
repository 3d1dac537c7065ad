"""PIR driver against a hand-driven pin: warm-up, debounce, hold/merge, counting, ISR rules."""

from drivers.pir import PIR
from drivers.sensor import GOOD, SUSPECT, WARMING_UP
from simulator.clock import SimClock
from simulator.prng import Prng
from tests.support.mptest import IS_MICROPYTHON, raises

RUN_ON_MICROPYTHON = True


class FakePin:
    """A GPIO input whose level the test sets; irq handlers run like the port's."""

    IRQ_RISING = 1
    IRQ_FALLING = 2

    def __init__(self, level=0):
        self.level = level
        self.handler = None
        self.trigger = 0

    def value(self):
        return self.level

    def irq(self, trigger=0, handler=None):
        self.trigger = trigger
        self.handler = handler

    def set(self, level):
        if level != self.level:
            self.level = level
            mask = self.IRQ_RISING if level else self.IRQ_FALLING
            if self.trigger & mask:
                self.handler(self)


class WrapClock(SimClock):
    """MicroPython's ticks: wrap at 2**30, ticks_diff signed modulo (time.ticks_diff docs)."""

    def ticks_ms(self):
        return self._now_ms & 0x3FFFFFFF

    def ticks_add(self, ticks, delta):
        return (ticks + delta) & 0x3FFFFFFF

    def ticks_diff(self, end, start):
        d = (end - start) & 0x3FFFFFFF
        return d - 0x40000000 if d >= 0x20000000 else d


def _pulse(clock, pin, high_ms):
    pin.set(1)
    clock.advance(high_ms)
    pin.set(0)


def _ready(**kw):
    """A PIR past its warm-up."""
    clock = kw.pop("clock", None) or SimClock()
    pin = FakePin()
    kw.setdefault("warmup_ms", 1000)
    pir = PIR(pin, clock, **kw)
    clock.advance(kw["warmup_ms"])
    return clock, pin, pir


def test_irq_registered_for_both_edges():
    pin = FakePin()
    PIR(pin, SimClock())
    assert pin.trigger == FakePin.IRQ_RISING | FakePin.IRQ_FALLING
    assert pin.handler is not None


def test_warm_up_pulses_are_ignored():
    clock = SimClock()
    pin = FakePin()
    pir = PIR(pin, clock, warmup_ms=60000)
    clock.advance(5000)
    _pulse(clock, pin, 800)
    clock.advance(20000)
    _pulse(clock, pin, 1500)
    r = pir.read()
    assert (r.quality, r.reason, r.motion) == (WARMING_UP, "warming_up", False)
    assert (r.events, r.events_total, r.ignored) == (0, 0, 2)
    assert r.last_motion_ms is None
    clock.advance(40000)
    assert pir.read().quality == GOOD


def test_motion_event_counted_and_held_after_fall():
    clock, pin, pir = _ready(hold_ms=3000)
    t_rise = clock.ticks_ms()
    pin.set(1)
    clock.advance(100)
    r = pir.read()
    assert (r.motion, r.events, r.events_total, r.level) == (True, 1, 1, 1)
    clock.advance(2400)  # output high 2.5 s, as an HC-SR501 at minimum delay
    pin.set(0)
    t_fall = clock.ticks_ms()
    r = pir.read()
    assert r.motion and r.events == 0  # the event was reported by the previous read
    assert r.last_motion_ms == t_fall and t_fall - t_rise == 2500
    clock.advance(2999)
    assert pir.read().motion
    clock.advance(1)
    r = pir.read()
    assert (r.motion, r.events_total, r.quality) == (False, 1, GOOD)


def test_retrigger_inside_hold_is_the_same_event():
    clock, pin, pir = _ready(hold_ms=3000)
    _pulse(clock, pin, 2500)
    clock.advance(2600)  # the sensor's blocking time, then it sees the person again
    _pulse(clock, pin, 2500)
    r = pir.read()
    assert (r.events, r.events_total, r.motion) == (1, 1, True)


def test_motion_after_the_hold_window_is_a_new_event():
    clock, pin, pir = _ready(hold_ms=3000)
    _pulse(clock, pin, 2500)
    clock.advance(3001)
    _pulse(clock, pin, 2500)
    clock.advance(10)
    _pulse(clock, pin, 2500)  # merges into the second
    r = pir.read()
    assert (r.events, r.events_total) == (2, 2)
    clock.advance(2999)
    _pulse(clock, pin, 400)
    r = pir.read()
    assert (r.events, r.events_total) == (0, 2)  # 2999 ms gap is still inside the hold
    clock.advance(3000)
    _pulse(clock, pin, 400)
    assert pir.read().events == 1  # the window is [fall, fall + hold_ms)


def test_events_since_last_read_reset():
    clock, pin, pir = _ready(hold_ms=100)
    for _ in range(3):
        _pulse(clock, pin, 500)
        clock.advance(1000)
    assert pir.read().events == 3
    assert pir.read().events == 0
    assert pir.read().events_total == 3


def test_short_pulses_are_glitches():
    clock, pin, pir = _ready(debounce_ms=50)
    _pulse(clock, pin, 10)
    clock.advance(5000)
    r = pir.read()
    assert (r.events, r.motion, r.glitches) == (0, False, 1)
    _pulse(clock, pin, 50)  # exactly the debounce time: real
    assert pir.read().events == 1


def test_rise_confirmed_at_read_once_debounce_has_passed():
    clock, pin, pir = _ready(debounce_ms=50)
    pin.set(1)
    clock.advance(20)
    r = pir.read()
    assert (r.motion, r.events) == (False, 0)  # not yet 50 ms: could still be a glitch
    clock.advance(30)
    r = pir.read()
    assert (r.motion, r.events, r.last_motion_ms) == (True, 1, clock.ticks_ms())


def test_output_high_keeps_last_motion_current():
    clock, pin, pir = _ready()
    pin.set(1)
    clock.advance(60000)  # someone keeps moving: repeatable trigger holds the output high
    r = pir.read()
    assert r.motion and r.last_motion_ms == clock.ticks_ms() and r.events_total == 1


def test_lost_edges_are_counted_and_suspect():
    clock, pin, pir = _ready(ring=4, hold_ms=0, debounce_ms=0)
    for _ in range(5):  # 10 edges into a ring of 4 with no read in between
        _pulse(clock, pin, 100)
        clock.advance(100)
    r = pir.read()
    assert r.lost_edges == 6 and (r.quality, r.reason) == (SUSPECT, "edges_lost")
    assert r.events == 2  # the 4 newest edges: two pulses
    assert pir.read().quality == GOOD  # lost edges make only the read that saw them suspect


def test_isr_defers_work_to_the_scheduled_callback():
    queue = []
    clock, pin, pir = _ready(schedule=lambda fn, arg: queue.append((fn, arg)))
    pin.set(1)
    assert len(queue) == 1  # the ISR asked for processing and did nothing else
    fn, arg = queue.pop()
    assert fn == pir._process_cb
    fn(arg)
    clock.advance(100)
    pin.set(0)
    queue.pop()[0](0)
    assert pir._taken == pir._written == 2  # both edges processed by the callback
    r = pir.read()
    assert (r.events, r.motion) == (1, True)


def test_full_schedule_queue_is_survived():
    def full(fn, arg):
        raise RuntimeError("schedule queue full")

    clock, pin, pir = _ready(schedule=full)
    _pulse(clock, pin, 200)
    assert pir.read().events == 1


def test_scheduled_callback_during_read_is_skipped():
    clock, pin, pir = _ready()
    pir._busy = True  # as if read() were running when the callback fires
    pin.set(1)
    pir._process(0)
    assert pir._taken == 0  # left for read()
    pir._busy = False
    clock.advance(100)
    assert pir.read().events == 1


def test_pin_high_at_start_counts_once_warm():
    clock = SimClock()
    pin = FakePin(level=1)
    pir = PIR(pin, clock, warmup_ms=0)
    clock.advance(100)
    r = pir.read()
    assert (r.motion, r.events) == (True, 1)


def test_works_across_the_ticks_wrap():
    clock = WrapClock(start_ms=0x3FFFFFFF - 1500)
    clock, pin, pir = _ready(clock=clock, hold_ms=3000)  # warm-up ends just before the wrap
    _pulse(clock, pin, 2500)  # crosses the wrap
    clock.advance(2000)
    r = pir.read()
    assert clock.ticks_ms() < 5000  # wrapped
    assert (r.events, r.motion) == (1, True)
    clock.advance(1000)
    assert not pir.read().motion


def test_bad_parameters():
    assert "power of two" in str(raises(ValueError, PIR, FakePin(), SimClock(), ring=6))
    raises(ValueError, PIR, FakePin(), SimClock(), hold_ms=-1)


def test_isr_allocates_nothing():
    if not IS_MICROPYTHON:
        return  # heap_lock is MicroPython's; CPython runs the same path unlocked above
    import micropython

    queue = [None, None]

    def schedule(fn, arg):
        queue[0] = fn

    clock, pin, pir = _ready(schedule=schedule)
    pin.set(1)  # warm every path once
    pin.set(0)
    micropython.heap_lock()
    try:
        pin.set(1)
        clock.advance(300)
        pin.set(0)
    finally:
        micropython.heap_unlock()
    assert pir._written == 4 and queue[0] == pir._process_cb


def _reference_events(pulses, debounce_ms, hold_ms):
    """The spec as plain list code: pulses shorter than debounce vanish; a pulse rising less
    than hold_ms after the previous real pulse fell is the same event."""
    events = 0
    last_fall = None
    for rise, fall in pulses:
        if fall - rise < debounce_ms:
            continue
        if last_fall is None or rise - last_fall >= hold_ms:
            events += 1
        last_fall = fall
    return events


def test_random_pulse_trains_match_the_reference():
    for seed in range(25):
        prng = Prng(seed)
        clock, pin, pir = _ready(hold_ms=3000, debounce_ms=50)
        pulses = []
        counted = 0
        for k in range(40):
            clock.advance(prng.randint(1, 6000))
            rise = clock.ticks_ms()
            width = prng.randint(1, 4000)
            pin.set(1)
            if prng.chance(0.3):  # a read in mid-pulse confirms (or not) the rise early
                part = prng.randint(0, width)
                clock.advance(part)
                counted += pir.read().events
                width -= part
            clock.advance(width)
            pin.set(0)
            pulses.append((rise, clock.ticks_ms()))
            if k % 5 == 4 or prng.chance(0.3):  # read often enough for the 16-edge ring
                r = pir.read()
                assert r.lost_edges == 0
                counted += r.events
        clock.advance(100)
        r = pir.read()
        counted += r.events
        expected = _reference_events(pulses, 50, 3000)
        assert counted == r.events_total == expected, (seed, counted, expected)
        clock.advance(3000)
        assert not pir.read().motion
