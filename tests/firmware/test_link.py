"""Link policy: backoff with jitter, the breaker's states, dead letters, the Uplink sender."""

try:
    import asyncio
except ImportError:
    import uasyncio as asyncio

from firmware.uplink import ACKED, DUPLICATE, FAILED, REJECTED, UNSENT
from firmware.uplink.link import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    Backoff,
    CircuitBreaker,
    DeadLetter,
    Uplink,
)
from simulator.clock import SimClock
from tests.support.mptest import raises

RUN_ON_MICROPYTHON = True


class Bits:
    """getrandbits returning a fixed fraction of the range: makes jitter predictable."""

    def __init__(self, fraction_num, fraction_den):
        self.num = fraction_num
        self.den = fraction_den
        self.calls = 0

    def getrandbits(self, k):
        self.calls += 1
        return ((1 << k) - 1) * self.num // self.den


class Buffer:
    """The firmware buffer's uplink-facing surface: pending(n) in seq order, ack(seq)."""

    def __init__(self, count):
        self.items = {}
        for seq in range(1, count + 1):
            self.items[seq] = b"r%d" % seq

    def pending(self, n):
        return [(s, self.items[s]) for s in sorted(self.items)[:n]]

    def ack(self, seq):
        del self.items[seq]


class Transport:
    """Scripted peer: `down` raises, `per_seq` gives an outcome per reading, else acked."""

    def __init__(self):
        self.down = None
        self.per_seq = {}
        self.calls = 0
        self.delivered = []

    async def send(self, items):
        self.calls += 1
        if self.down is not None:
            raise self.down
        out = []
        for seq, _ in items:
            outcome = self.per_seq.get(seq, (ACKED, None))
            if outcome[0] in (ACKED, DUPLICATE):
                self.delivered.append(seq)
            out.append(outcome)
        return out


def step(uplink, buffer):
    return asyncio.run(uplink.step(buffer))


def make(transport=None, **kw):
    log = []
    clock = SimClock(1000)
    uplink = Uplink(
        transport or Transport(),
        clock,
        Bits(1, 2),
        log=lambda mod, msg: log.append(msg),
        **kw,
    )
    return uplink, clock, log


def test_backoff_doubles_to_the_cap_with_full_jitter():
    top = Backoff(Bits(1, 1), base_ms=500, cap_ms=4000)
    # the largest draw lands just under each ceiling: 500, 1000, 2000, 4000, 4000
    assert [top.next_ms() for _ in range(5)] == [499, 999, 1999, 3999, 3999]
    low = Backoff(Bits(0, 1), base_ms=500, cap_ms=4000)
    assert low.next_ms() == 0  # full jitter reaches down to zero
    top.reset()
    assert top.ceiling_ms() == 500
    assert "base_ms" in str(raises(ValueError, Backoff, Bits(1, 1), 0, 10))


def test_breaker_opens_after_five_failures_and_probes_once_half_open():
    clock = SimClock(1000)
    log = []
    b = CircuitBreaker(clock, failures=5, open_ms=60000, log=lambda m, s: log.append(s))
    for _ in range(4):
        assert b.allow()
        b.failure("HTTP 503")
    assert b.state == CLOSED
    b.failure("HTTP 503")
    assert b.state == OPEN and b.opened == 1 and not b.allow()
    clock.advance(59999)
    assert not b.allow() and b.remaining_ms() == 1
    clock.advance(1)
    assert b.allow() and b.state == HALF_OPEN
    assert not b.allow()  # only one probe in flight
    b.failure("still down")
    assert b.state == OPEN and b.opened == 2  # a failed probe re-opens at once
    clock.advance(60000)
    assert b.allow()
    b.success()
    assert b.state == CLOSED and b.failures == 0
    assert log == [
        "breaker closed -> open: 5 failure(s), last: HTTP 503",
        "breaker open -> half_open: 60000 ms passed, probing",
        "breaker half_open -> open: 6 failure(s), last: still down",
        "breaker open -> half_open: 60000 ms passed, probing",
        "breaker half_open -> closed: request succeeded",
    ]


def test_success_resets_the_failure_count():
    b = CircuitBreaker(SimClock(1000), failures=3)
    b.failure()
    b.failure()
    b.success()
    b.failure()
    b.failure()
    assert b.state == CLOSED


def test_dead_letter_only_when_others_pass():
    d = DeadLetter(max_failures=3, reject_limit=2)
    for _ in range(10):  # everyone failing is an outage, not a bad reading
        assert not d.failed(1)
        assert not d.failed(2)
    d.passed(3)
    assert d.failed(1)  # others pass now: reading 1 is set aside
    assert d.count == 1
    assert not d.failed(5, rejected=True)
    assert d.failed(5, rejected=True)  # two 400s: the reading itself is wrong


def test_uplink_delivers_and_acks():
    uplink, _, _ = make(batch=3)
    buffer = Buffer(5)
    assert step(uplink, buffer) == 0
    assert step(uplink, buffer) == 0
    assert buffer.items == {} and uplink.sent == 5
    assert uplink.transport.delivered == [1, 2, 3, 4, 5]


class ShortOfMemory(Transport):
    """A heap with room for `fits` readings per send: more raise MemoryError."""

    def __init__(self, fits):
        super().__init__()
        self.fits = fits
        self.sizes = []

    async def send(self, items):
        self.sizes.append(len(items))
        if len(items) > self.fits:
            raise MemoryError("memory allocation failed, allocating 613 bytes")
        return await super().send(items)


class ShortBuffer(Buffer):
    """Reading more than `fits` readings from flash runs out of memory."""

    def __init__(self, count, fits):
        super().__init__(count)
        self.fits = fits

    def pending(self, n):
        if n > self.fits:
            raise MemoryError("memory allocation failed, allocating 1024 bytes")
        return super().pending(n)


def test_out_of_memory_halves_the_step_instead_of_failing_the_batch_forever():
    transport = ShortOfMemory(fits=1)
    uplink, _, log = make(transport, batch=4)
    buffer = Buffer(20)
    for _ in range(40):
        assert step(uplink, buffer) == 0  # no backoff: the peer did nothing wrong
        if not buffer.items:
            break
    assert buffer.items == {} and transport.delivered == list(range(1, 21))
    # 4 failed, 2 failed, then one at a time; after 8 good steps it tries 2 again and fails
    assert transport.sizes[:3] == [4, 2, 1], transport.sizes
    assert uplink.breaker.state == CLOSED and uplink.breaker.failures == 0
    assert uplink.failures == 0 and uplink.step_size == 1
    assert "out of memory for 4 reading(s) to send; 2 per step now" in log, log
    assert "out of memory for 2 reading(s) to send; 1 per step now" in log, log


def test_step_grows_back_once_memory_allows():
    transport = ShortOfMemory(fits=1)
    uplink, _, _ = make(transport, batch=4)
    buffer = Buffer(40)
    for _ in range(3):
        step(uplink, buffer)
    assert uplink.step_size == 1
    transport.fits = 4
    while buffer.items:
        step(uplink, buffer)
    assert uplink.step_size == 4, transport.sizes
    assert transport.delivered == list(range(1, 41))
    assert transport.sizes.count(2) >= 1 and transport.sizes[-1] <= 4


def test_out_of_memory_reading_flash_also_shrinks_the_step_and_one_is_a_crash():
    uplink, _, log = make(batch=4)
    buffer = ShortBuffer(6, fits=2)
    assert step(uplink, buffer) == 0 and uplink.step_size == 2
    assert "out of memory for 4 reading(s) from flash; 2 per step now" in log, log
    while buffer.items:
        step(uplink, buffer)
    buffer = ShortBuffer(3, fits=0)
    while uplink.step_size > 1:
        assert step(uplink, buffer) == 0
    raises(MemoryError, step, uplink, buffer)  # not even one: the node reboots clean


def test_out_of_memory_for_a_single_reading_counts_as_a_failure():
    transport = ShortOfMemory(fits=0)
    uplink, _, log = make(transport, batch=1)
    buffer = Buffer(2)
    assert step(uplink, buffer) > 0  # backoff: retried later, not forever at once
    assert uplink.failures == 1 and uplink.breaker.failures == 1
    assert any("MemoryError" in line for line in log), log


def test_a_half_open_probe_that_ran_out_of_memory_is_not_lost():
    transport = ShortOfMemory(fits=2)
    uplink, clock, _ = make(transport, batch=2)
    transport.down = OSError(111)
    buffer = Buffer(4)
    while uplink.breaker.state != OPEN:
        clock.advance(step(uplink, buffer))
    transport.down = None
    transport.fits = 1
    clock.advance(uplink.hold_ms())
    assert step(uplink, buffer) == 0  # the probe of 2 ran out of memory: no verdict
    assert uplink.breaker.state == HALF_OPEN and uplink.step_size == 1
    assert step(uplink, buffer) == 0  # the next, smaller probe is allowed and succeeds
    assert uplink.breaker.state == CLOSED


def test_outage_opens_breaker_then_recovery_delivers_everything():
    transport = Transport()
    transport.down = OSError(111)
    uplink, clock, log = make(transport, batch=10)
    buffer = Buffer(4)
    for _ in range(5):
        wait = step(uplink, buffer)
        assert wait > 0
        clock.advance(wait)
    assert uplink.breaker.state == OPEN and uplink.breaker.opened == 1
    calls = transport.calls
    assert step(uplink, buffer) > 0 and transport.calls == calls  # open: nothing sent
    transport.down = None
    clock.advance(60000)
    assert step(uplink, buffer) == 0
    assert uplink.breaker.state == CLOSED and buffer.items == {}
    assert transport.delivered == [1, 2, 3, 4]  # nothing lost, nothing set aside
    assert uplink.dead.count == 0
    assert "breaker closed -> open: 5 failure(s), last: OSError: 111" in log
    assert "breaker half_open -> closed: request succeeded" in log


class Busy(OSError):
    def __init__(self, ms):
        super().__init__("HTTP 429")
        self.retry_after_ms = ms
        self.busy = True


def test_retry_after_is_honoured_without_tripping_the_breaker():
    transport = Transport()
    transport.down = Busy(7000)
    uplink, clock, log = make(transport)
    buffer = Buffer(1)
    assert step(uplink, buffer) == 7000
    assert uplink.breaker.state == CLOSED and uplink.breaker.failures == 0
    transport.down = None
    clock.advance(6999)
    assert step(uplink, buffer) == 1 and transport.calls == 1  # still holding
    clock.advance(1)
    assert step(uplink, buffer) == 0 and buffer.items == {}
    assert "peer busy: Busy: HTTP 429; waiting 7000 ms" in log


def test_retry_after_on_503_extends_the_backoff():
    class Unavailable(OSError):
        retry_after_ms = 30000

    transport = Transport()
    transport.down = Unavailable("HTTP 503")
    uplink, _, _ = make(transport)
    assert step(uplink, Buffer(1)) == 30000
    assert uplink.breaker.failures == 1


def test_poison_reading_is_set_aside_while_others_pass():
    transport = Transport()
    transport.per_seq[2] = (FAILED, "HTTP 500: Internal server error")
    dead = []
    uplink, clock, log = make(
        transport, batch=1, on_dead=lambda seq, payload, why: dead.append((seq, payload))
    )
    buffer = Buffer(3)
    step(uplink, buffer)  # 1 passes
    for _ in range(10):
        clock.advance(step(uplink, buffer))
        if 2 not in buffer.items:
            break
    assert dead == [(2, b"r2")] and uplink.dead.count == 1
    clock.advance(step(uplink, buffer))
    assert buffer.items == {} and transport.delivered == [1, 3]
    assert "reading 2 set aside (dead letter): HTTP 500: Internal server error" in log


def test_rejected_and_duplicate_outcomes():
    transport = Transport()
    transport.per_seq[1] = (DUPLICATE, None)
    transport.per_seq[2] = (REJECTED, "HTTP 400: Validation failed")
    uplink, _, log = make(transport, batch=3)
    buffer = Buffer(3)
    assert step(uplink, buffer) == 0  # the peer answered: not a link failure
    assert uplink.duplicates == 1 and uplink.sent == 1 and list(buffer.items) == [2]
    step(uplink, buffer)
    assert buffer.items == {} and uplink.dead.count == 1
    assert "reading 2 rejected: HTTP 400: Validation failed" in log


def test_unsent_readings_are_not_held_against_them():
    transport = Transport()
    for seq in (2, 3):
        transport.per_seq[seq] = (UNSENT, "HTTP 503 after reading 1")
    uplink, _, _ = make(transport, batch=3, dead=DeadLetter(max_failures=1))
    buffer = Buffer(3)
    for _ in range(5):  # reading 1 passes each time, 2 and 3 never go out
        assert step(uplink, buffer) == 0
        buffer.items[1] = b"r1"
    assert uplink.dead.count == 0 and sorted(buffer.items) == [1, 2, 3]
    transport.per_seq = {}
    step(uplink, buffer)
    assert buffer.items == {}
