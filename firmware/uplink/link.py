"""Link policy for the uplinks: backoff, circuit breaker, dead letter, and the Uplink sender.

contracts.md §6 asks for exponential backoff with jitter, a breaker (5 failures, 60 s open,
then half-open) and a dead letter for what cannot be processed; §1 adds that a 5xx is not always
transient, so a reading that keeps failing while others pass is set aside, not retried forever.
"""

from firmware.uplink import (  # noqa: F401  (re-exported for callers of the policy)
    ACKED,
    DUPLICATE,
    FAILED,
    REJECTED,
    UNSENT,
    sleep_ms,
    wait_for_ms,
)

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"
# After a MemoryError halved the step, this many good steps double it again (up to `batch`).
_STEPS_BEFORE_GROWING = 8


class Backoff:
    """Exponential backoff with full jitter: delay = random in [0, min(cap, base * 2**n)).

    "Full jitter" (AWS architecture blog, "Exponential Backoff and Jitter") spreads a fleet's
    retries so a recovering server is not hit by every node at once. `rand` is any object with
    getrandbits(k) (the `random` module, or a seeded generator in tests).
    """

    def __init__(self, rand, base_ms=500, cap_ms=60000):
        if base_ms <= 0 or cap_ms < base_ms:
            raise ValueError("backoff needs 0 < base_ms <= cap_ms, got %r, %r" % (base_ms, cap_ms))
        self._rand = rand
        self.base_ms = base_ms
        self.cap_ms = cap_ms
        self.attempt = 0

    def ceiling_ms(self):
        """The upper bound of the next delay."""
        ceiling = self.base_ms
        for _ in range(self.attempt):
            ceiling *= 2
            if ceiling >= self.cap_ms:
                return self.cap_ms
        return ceiling

    def next_ms(self):
        """The delay before the next attempt; each call doubles the ceiling up to the cap."""
        ceiling = self.ceiling_ms()
        self.attempt += 1
        # getrandbits(30) / 2**30 in integers: no float rounding differences between runtimes
        return (self._rand.getrandbits(30) * ceiling) >> 30

    def reset(self):
        self.attempt = 0


class CircuitBreaker:
    """closed -> (failures in a row) -> open -> (open_ms) -> half_open -> one probe decides.

    `allow()` says whether a request may go out now; report each result with `success()` or
    `failure()`. In half-open only one probe is let through until its result is reported.
    Transitions are logged through `log(module, message)`.
    """

    def __init__(self, clock, failures=5, open_ms=60000, log=None, name="uplink"):
        if failures < 1 or open_ms < 0:
            raise ValueError("breaker needs failures >= 1 and open_ms >= 0")
        self._clock = clock
        self.threshold = failures
        self.open_ms = open_ms
        self._log = log
        self.name = name
        self.state = CLOSED
        self.failures = 0
        self.opened = 0  # how many times it opened: observable in status
        self._opened_at = 0
        self._probing = False

    def _set(self, state, why):
        if state != self.state:
            if self._log is not None:
                self._log(self.name, "breaker %s -> %s: %s" % (self.state, state, why))
            self.state = state

    def allow(self):
        """True if a request may be sent now (moves open -> half_open when open_ms passed)."""
        if self.state == OPEN:
            if self.remaining_ms() > 0:
                return False
            self._set(HALF_OPEN, "%d ms passed, probing" % self.open_ms)
            self._probing = False
        if self.state == HALF_OPEN:
            if self._probing:
                return False
            self._probing = True
        return True

    def remaining_ms(self):
        """How long an open breaker stays open (0 when not open)."""
        if self.state != OPEN:
            return 0
        waited = self._clock.ticks_diff(self._clock.ticks_ms(), self._opened_at)
        return max(0, self.open_ms - waited)

    def success(self):
        self.failures = 0
        self._probing = False
        self._set(CLOSED, "request succeeded")

    def release(self):
        """The request allow() let through was not made: a half-open probe is free again."""
        self._probing = False

    def failure(self, why="request failed"):
        self.failures += 1
        self._probing = False
        if self.state == HALF_OPEN or self.failures >= self.threshold:
            self._opened_at = self._clock.ticks_ms()
            if self.state != OPEN:
                self.opened += 1
            self._set(OPEN, "%d failure(s), last: %s" % (self.failures, why))


class DeadLetter:
    """Decides when a reading stops being retried.

    A reading is set aside after `reject_limit` 4xx rejections (the peer said the reading
    itself is wrong), or after `max_failures` other failures *while other readings pass*: a
    peer that fails everything is an outage (the breaker's job), not a bad reading.
    """

    def __init__(self, max_failures=5, reject_limit=2, track=64):
        self.max_failures = max_failures
        self.reject_limit = reject_limit
        self._track = track
        self._fails = {}  # seq -> [failures, rejections, passes seen since first failure]
        self.count = 0  # readings set aside

    def suspects(self):
        """How many readings have failed often enough to be suspected (see Uplink.step)."""
        n = 0
        for entry in self._fails.values():
            if entry[0] >= self.max_failures:
                n += 1
        return n

    def passed(self, seq):
        """A reading was delivered: forget it, and count a pass for every failing one."""
        self._fails.pop(seq, None)
        for entry in self._fails.values():
            entry[2] += 1

    def failed(self, seq, rejected=False):
        """Record a failure; True when the reading should now be set aside."""
        entry = self._fails.get(seq)
        if entry is None:
            if len(self._fails) >= self._track:  # bounded: forget the oldest-tracked
                for key in self._fails:
                    del self._fails[key]
                    break
            entry = [0, 0, 0]
            self._fails[seq] = entry
        if rejected:
            entry[1] += 1
        else:
            entry[0] += 1
        if entry[1] >= self.reject_limit or (entry[0] >= self.max_failures and entry[2] > 0):
            del self._fails[seq]
            self.count += 1
            return True
        return False


class Uplink:
    """Moves buffered readings to the peer: breaker, backoff, Retry-After, dead letter.

    `transport.send(items)` takes [(seq, payload)] and returns [(outcome, reason)] in the same
    order (outcomes in firmware.uplink: ACKED, DUPLICATE, REJECTED, FAILED, UNSENT), or raises
    OSError when nothing could be sent (its optional `retry_after_ms` is honoured, and `busy`
    marks a 429: wait without counting a failure).
    `buffer` needs `pending(n) -> [(seq, payload)]` and `ack(seq)`.
    """

    def __init__(
        self,
        transport,
        clock,
        rand,
        log=None,
        breaker=None,
        backoff=None,
        dead=None,
        batch=10,
        on_dead=None,
    ):
        self.transport = transport
        self._clock = clock
        self._log = log
        self.breaker = breaker or CircuitBreaker(clock, log=log)
        self.backoff = backoff or Backoff(rand)
        self.dead = dead or DeadLetter()
        self.batch = batch
        self.step_size = batch  # readings per step now: fewer while memory is short
        self._steps_ok = 0
        self._on_dead = on_dead
        self._hold_until = None
        self.sent = 0
        self.duplicates = 0
        self.failures = 0
        self.last_error = None

    def _note(self, message):
        self.last_error = message
        if self._log is not None:
            self._log("uplink", message)

    def hold_ms(self):
        """How long to wait before the next send is allowed (Retry-After, open breaker)."""
        wait = self.breaker.remaining_ms()
        if self._hold_until is not None:
            left = self._clock.ticks_diff(self._hold_until, self._clock.ticks_ms())
            if left <= 0:
                self._hold_until = None
            elif left > wait:
                wait = left
        return wait

    def _hold(self, ms):
        if ms:
            until = self._clock.ticks_add(self._clock.ticks_ms(), ms)
            if self._hold_until is None or self._clock.ticks_diff(until, self._hold_until) > 0:
                self._hold_until = until

    async def step(self, buffer):
        """Send one batch if allowed; return ms to wait before the next step (0: go on)."""
        wait = self.hold_ms()
        if wait:
            return wait
        # A suspected reading at the head would hide whether others pass: look past it.
        try:
            items = buffer.pending(self.step_size + self.dead.suspects())
        except MemoryError:
            if self.step_size == 1:
                raise  # not even one reading fits: a crash and a clean boot is the way out
            return self._smaller("for %d reading(s) from flash" % self.step_size)
        if not items:
            return 0
        if not self.breaker.allow():
            return self.hold_ms() or 1
        try:
            outcomes = await self.transport.send(items)
        except Exception as exc:  # OSError is the link; anything else (MemoryError, a bug)
            if isinstance(exc, MemoryError) and len(items) > 1:
                self.breaker.release()  # not the peer's doing: no verdict on the link
                return self._smaller("for %d reading(s) to send" % len(items))
            reason = _reason(exc)  # must not leave the breaker's half-open probe unanswered
            retry = getattr(exc, "retry_after_ms", None)
            if getattr(exc, "busy", False):  # 429: the peer is up and asks for a pause
                self.breaker.success()
                delay = retry if retry is not None else self.backoff.next_ms()
                self._hold(delay)
                self._note("peer busy: %s; waiting %d ms" % (reason, delay))
                return delay
            self.failures += 1
            self.breaker.failure(reason)
            delay = self.backoff.next_ms()
            if retry is not None:
                delay = max(delay, retry)
            self._hold(delay)
            # not counted against the readings: the peer failed them all alike (an outage)
            self._note(
                "send of %d reading(s) failed: %s; next try in %d ms" % (len(items), reason, delay)
            )
            return delay
        passed = 0
        failed_reason = None
        if len(outcomes) != len(items):  # a transport bug: answer the probe, then say so
            self.breaker.failure("transport outcome count")
            raise ValueError(
                "transport gave %d outcomes for %d items" % (len(outcomes), len(items))
            )
        for i in range(len(items)):
            seq, payload = items[i]
            outcome, reason = outcomes[i]
            if outcome in (ACKED, DUPLICATE):
                buffer.ack(seq)
                self.dead.passed(seq)
                passed += 1
                if outcome == DUPLICATE:
                    self.duplicates += 1
                else:
                    self.sent += 1
            elif outcome == REJECTED:
                self._note("reading %d rejected: %s" % (seq, reason))
                self._give_up_if(buffer, seq, True, reason, payload)
            elif outcome == UNSENT:
                failed_reason = failed_reason or reason
            else:
                failed_reason = reason
                self._note("reading %d failed: %s" % (seq, reason))
                self._give_up_if(buffer, seq, False, reason, payload)
        if passed or failed_reason is None:
            self.breaker.success()
            self.backoff.reset()
            if self.step_size < self.batch:  # memory was short: grow back slowly
                self._steps_ok += 1
                if self._steps_ok >= _STEPS_BEFORE_GROWING:
                    self._steps_ok = 0
                    self.step_size = min(self.batch, self.step_size * 2)
            return 0
        self.failures += 1
        self.breaker.failure(failed_reason)
        delay = self.backoff.next_ms()
        self._hold(delay)
        self._note("no reading delivered: %s; next try in %d ms" % (failed_reason, delay))
        return delay

    def _smaller(self, what):
        """Out of memory {what}: halve the step and go on at once. A heap
        too fragmented for a batch still moves readings one at a time, instead of failing
        the same batch forever."""
        self.step_size = max(1, self.step_size // 2)
        self._steps_ok = 0
        self._note("out of memory %s; %d per step now" % (what, self.step_size))
        return 0

    def _give_up_if(self, buffer, seq, rejected, reason, payload=None):
        if self.dead.failed(seq, rejected):
            buffer.ack(seq)  # set aside: counted in dead.count, never retried
            self._note("reading %d set aside (dead letter): %s" % (seq, reason))
            if self._on_dead is not None:
                self._on_dead(seq, payload, reason)

    async def drain(self, buffer, deadline_ms):
        """Step until the buffer is empty or deadline_ms (on the clock) passes; True if empty."""
        clock = self._clock
        start = clock.ticks_ms()
        while buffer.pending(1):
            if clock.ticks_diff(clock.ticks_ms(), start) >= deadline_ms:
                return False
            wait = await self.step(buffer)
            if wait:
                await sleep_ms(clock, min(wait, 200))
        return True


def _reason(exc):
    text = " ".join(str(a) for a in exc.args) if exc.args else ""
    return "%s: %s" % (type(exc).__name__, text) if text else type(exc).__name__
