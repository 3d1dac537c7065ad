"""On-device validation: a quality for every value (range, timestamp, stuck, spike, warm-up).

No I/O. A value that fails keeps its value and gets a worse quality (`suspect`, `warming_up`,
`bad`): it is reported, never dropped in silence (issue 4). Per-quantity history lives on a
`Validator` instance, one per device, so a fleet in one process shares nothing.

    v = Validator(clock)
    values = {"temperature_c": [21.5, "good"], "gas_ppm": [3.2, "warming_up"]}
    v.check_values(values)                 # qualities updated in place
    q = v.check_time(ts_ms, wall.now_ms(), wall.synced)

Quantity names are those of a reading's "values" (firmware.window, firmware.telemetry).
"""

from drivers.sensor import BAD, GOOD, SUSPECT, WARMING_UP

# 2024-01-01T00:00:00Z: a timestamp before this comes from an RTC that was never set (an ESP32
# RTC starts in 2000 after power loss).
MIN_EPOCH_MS = 1704067200000
MAX_AHEAD_MS = 3600000  # downstream rejects timestamps > 1 h in the future (contracts.md §2)

# Physical limits: outside them the value cannot be right -> BAD.
LIMITS = {
    "distance_cm": (0, 600),  # LD2410 range, 8 gates of 75 cm; contracts.md §1 distance 0..600
    "energy": (0, 100),  # LD2410 energy is a percentage (contracts.md §1)
    "occupancy": (0, 1),  # fraction of the window
    "motion_events": (0, 100000),
    "gas_ppm": (0, 10000),  # MQ-134 datasheet detection range is 1..1000 ppm SO2; x10 = broken
    "gas_rs_ohm": (1, 1e9),  # 0 = shorted sensor; open circuit reads near-infinite
    "temperature_c": (-40, 85),  # BME280 operating range (datasheet §1)
    "humidity_pct": (0, 100),
    "pressure_hpa": (300, 1100),  # BME280 operating range (datasheet §1)
    "battery_pct": (0, 100),
    "rssi_dbm": (-127, 0),
}
BOOLEANS = ("presence", "motion")

# Largest believable change between two consecutive samples; a bigger jump is suspect until
# the next sample confirms the new level (then it was a step, not a spike).
SPIKE_STEP = {
    "temperature_c": 5.0,
    "humidity_pct": 20.0,
    "pressure_hpa": 10.0,
    "gas_ppm": 500.0,
}

# This many identical consecutive samples of a noisy analog value mean a stuck sensor or bus
# (a BME280 returning the same register bytes, a disconnected ADC pin).
STUCK_COUNT = {
    "temperature_c": 30,
    "humidity_pct": 30,
    "pressure_hpa": 30,
    "gas_rs_ohm": 30,
}

_RANK = {GOOD: 0, SUSPECT: 1, WARMING_UP: 2, BAD: 3}


def worse(a, b):
    """The worse of two qualities (good < suspect < warming_up < bad); unknown counts as bad."""
    ra = _RANK.get(a, 3)
    rb = _RANK.get(b, 3)
    if ra >= rb:
        return a if a in _RANK else BAD
    return b if b in _RANK else BAD


def check_range(name, value, limits=LIMITS):
    """BAD for a missing, non-numeric, NaN or out-of-limit value; GOOD otherwise."""
    if name in BOOLEANS:
        return GOOD if isinstance(value, bool) else BAD
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return BAD
    if value != value:  # NaN
        return BAD
    lim = limits.get(name)
    if lim is not None and not lim[0] <= value <= lim[1]:
        return BAD
    return GOOD


def check_timestamp(ts_ms, now_ms, synced, last_ms=None):
    """Quality of a reading's epoch-ms timestamp.

    BAD: not an int, before MIN_EPOCH_MS, more than MAX_AHEAD_MS ahead of a synced clock, or
    not after `last_ms` (the platform de-duplicates by device and millisecond). SUSPECT: the
    clock was never synced by NTP. GOOD otherwise.
    """
    if isinstance(ts_ms, bool) or not isinstance(ts_ms, int) or ts_ms < MIN_EPOCH_MS:
        return BAD
    if synced and ts_ms - now_ms > MAX_AHEAD_MS:
        return BAD
    if last_ms is not None and ts_ms <= last_ms:
        return BAD
    return GOOD if synced else SUSPECT


class Validator:
    """Per-device history for stuck/spike detection, warm-up timing and timestamp order.

    `warmup_ms` maps a quantity to how long after `start` (construction, or `restart_warmup`)
    its values are WARMING_UP. Tables default to the module's; pass dicts to override.
    """

    def __init__(self, clock, limits=None, spike=None, stuck=None, warmup_ms=None):
        self._clock = clock
        self._limits = LIMITS if limits is None else limits
        self._spike = SPIKE_STEP if spike is None else spike
        self._stuck = STUCK_COUNT if stuck is None else stuck
        self._warmup = {} if warmup_ms is None else warmup_ms
        self._started = clock.ticks_ms()
        self._state = {}  # name -> [reference, spike candidate or None, last, repeats]
        self._last_ts = None

    def restart_warmup(self):
        """The sensors were powered again (deep sleep, heater restart): warm-up starts over."""
        self._started = self._clock.ticks_ms()

    def check(self, name, value, quality=GOOD):
        """The quality of one value, given the driver's own quality for it."""
        if value is None:  # no value: a warming-up driver may say so; otherwise it is bad
            return WARMING_UP if quality == WARMING_UP else BAD
        q = worse(quality, check_range(name, value, self._limits))
        if q == BAD or name in BOOLEANS:
            return q  # a bad value must not become the reference for the next ones
        warm = self._warmup.get(name)
        if warm:
            age = self._clock.ticks_diff(self._clock.ticks_ms(), self._started)
            if age < warm:
                q = worse(q, WARMING_UP)
        st = self._state.get(name)
        if st is None:
            self._state[name] = [value, None, value, 1]
            return q
        step = self._spike.get(name)
        if step is not None and abs(value - st[0]) > step:
            cand = st[1]
            if cand is not None and abs(value - cand) <= step:
                st[0] = value  # two samples agree on the new level: a step, not a spike
                st[1] = None
            else:
                st[1] = value
                q = worse(q, SUSPECT)
        else:
            st[0] = value
            st[1] = None
        if value == st[2]:
            st[3] += 1
        else:
            st[2] = value
            st[3] = 1
        n = self._stuck.get(name)
        if n and st[3] >= n:
            q = worse(q, SUSPECT)
        return q

    def check_values(self, values):
        """Update a reading's {name: [value, quality]} in place; -> the worst quality seen."""
        worst = GOOD
        for name in values:
            pair = values[name]
            pair[1] = self.check(name, pair[0], pair[1])
            worst = worse(worst, pair[1])
        return worst

    def check_time(self, ts_ms, now_ms, synced):
        """check_timestamp against the previous timestamp accepted by this validator."""
        q = check_timestamp(ts_ms, now_ms, synced, self._last_ts)
        if q != BAD:
            self._last_ts = ts_ms
        return q
