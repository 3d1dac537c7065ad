"""One virtual node: the real firmware App alone in its heap, its parts simulated in another
process and reached over simulator.bridge, in paced simulated time.

Device end (MicroPython; simulator.demo starts it through simulator.unixport, the application in
ROMFS and the heap bounded, as on a board). `main([spec.json])` boots the App from its flash
directory `spec["fs"]` as the device does (firmware.app.prepare: boot record, config.json),
board.json (nbk.boards' to_device_dict) as the board's info, so the MQ-134 driver is told the
circuit the host simulates. Its UART, I2C bus, PIR pin and ADC are proxies to the BridgeHost at
`spec["bridge"]`. A simulator.board.VirtualClock is held to `speed` times real time, so the
uplink, the broker and whoever watches it see readings arrive at a steady pace.

    micropython ... spec.json     # spec: fs, bridge, seed, speed, duration_s, tuning

Console output is the firmware's `@nbk {...}` lines and a final `node finished` line with the
counts.

Host end (CPython only; on MicroPython its tables and classes would cost the heap the bridge
exists to spare): the world script that sets the ground truth the parts report, people walking
in, sitting, leaving (radar targets, PIR motion) and the air (temperature, humidity, pressure,
gas) following keyframes; `host_parts()`, the node's simulated parts with its board's MQ-134
circuit; `script_world()`, which schedules the world on the BridgeHost serving them, each change
at its exact simulated tick while the device waits.
"""

import gc
import json
import sys

try:
    import asyncio
except ImportError:  # pragma: no cover
    asyncio = None

from drivers.compat import ticks_diff, ticks_ms
from firmware.app import prepare
from firmware.log import Log
from simulator.board import VirtualClock, bridged_board
from simulator.prng import Prng

PACE_MS = 20  # real ms between catch-ups of the simulated clock with the real one
DRAIN_MS = 60000  # simulated ms allowed, after the run, to deliver what is still buffered


async def pace(clock, speed):
    """Move the simulated clock to `speed` x the real time elapsed, forever (run as a task)."""
    start_sim = clock.ticks_ms()
    start = ticks_ms()
    while True:
        target = start_sim + int(ticks_diff(ticks_ms(), start) * speed)
        if target > clock.ticks_ms():
            await clock.run(until_ms=target, settle_ms=0)
        await _real_sleep_ms(PACE_MS)


async def _real_sleep_ms(ms):
    if hasattr(asyncio, "sleep_ms"):
        await asyncio.sleep_ms(ms)
    else:
        await asyncio.sleep(ms / 1000)


class RandBits:
    """getrandbits(k) over a seeded Prng: the uplink's backoff jitter, replayable per seed."""

    def __init__(self, prng):
        self._prng = prng

    def getrandbits(self, k):
        if not 0 < k <= 32:
            raise ValueError("getrandbits(%r): 1..32 bits" % (k,))
        return self._prng.next_u32() >> (32 - k)


def check_spec(spec):
    """The node spec with defaults; ValueError naming the bad key."""
    out = {"fs": "node", "bridge": None, "seed": 1, "speed": 10, "duration_s": 60, "tuning": {}}
    for key in spec:
        if key not in out:
            raise ValueError("node spec: unknown key %r; known: %s" % (key, sorted(out)))
        out[key] = spec[key]
    bridge = out["bridge"]
    if not isinstance(bridge, str) or ":" not in bridge:
        raise ValueError('node spec bridge %r: the bridge host\'s "host:port"' % (bridge,))
    speed = out["speed"]
    if isinstance(speed, bool) or not isinstance(speed, (int, float)) or speed <= 0:
        raise ValueError("node spec speed %r: a number > 0 (1 = real time)" % (speed,))
    dur = out["duration_s"]
    if isinstance(dur, bool) or not isinstance(dur, (int, float)) or dur <= 0:
        raise ValueError("node spec duration_s %r: a number of seconds > 0" % (dur,))
    if isinstance(out["seed"], bool) or not isinstance(out["seed"], int):
        raise ValueError("node spec seed %r: an int" % (out["seed"],))
    return out


async def run(spec, log_level="I"):
    """Boot the node from its flash directory and run it for the spec's simulated duration.

    Returns the counts printed in the final `node finished` line.
    """
    spec = check_spec(spec)
    clock = VirtualClock()
    log = Log(clock, level=log_level)
    board = _board(clock, spec["fs"], spec["bridge"])
    # The device's boot: boot record, config.json through firmware.config (then let go), the App.
    app, reason = prepare(board, log, spec["tuning"])
    if app is None:
        raise SystemExit("node config unusable, safe mode: %s" % reason)
    app.rand = RandBits(Prng(spec["seed"] + 200))  # read when run() builds the uplink
    period_ms = app.s.sampling_ms
    sim_ms = end_ms(spec["duration_s"] * spec["speed"] * 1000, period_ms)
    log.info("node", "starting", {"speed": spec["speed"], "sim_s": sim_ms // 1000})
    pacer = asyncio.create_task(pace(clock, spec["speed"]))
    heap = HeapWatch()
    watcher = asyncio.create_task(heap.run(clock))
    try:
        await app.run(sim_ms)
        drained = await app.uplink.drain(app.buffer, DRAIN_MS)
    finally:
        watcher.cancel()
        pacer.cancel()
    stats = app.buffer.stats()
    result = {
        "readings": app.readings,
        "next_seq": stats["next_seq"],
        "dropped": stats["dropped"],
        "drained": drained,
        "sim_ms": clock.ticks_ms(),
    }
    if heap.max_alloc is not None:
        result["heap_max_alloc"] = heap.max_alloc
        result["heap_free"] = gc.mem_free()
    log.info("node", "finished", result)
    board.bridge.close()
    return result


def _board(clock, root, address):
    """The device's Board: proxies to the parts at `address`; its info from board.json in its
    flash (nbk.boards' to_device_dict) when there is one, as firmware/esp32_board.py reads it."""
    board = bridged_board(clock, root, address)
    try:
        with board.fs.open("board.json") as f:
            board.info = json.loads(f.read())
    except OSError:
        pass
    return board


def end_ms(wanted_ms, period_ms):
    """When to stop: half a window past the last whole window within `wanted_ms` (at least one).

    Simulated time stands still while a reading is on the wire, so a stop at mid-window never
    cuts a send; a send cut at the stop would be sent again by the drain (a duplicate).
    """
    n = int(wanted_ms // period_ms)
    return (n if n > 0 else 1) * period_ms + period_ms // 2


class HeapWatch:
    """The most heap in use after a collection, sampled every simulated `period_ms`.

    gc.mem_alloc() after gc.collect() is live data only: what the node needs, not garbage.
    None on CPython, which has no bounded heap.
    """

    def __init__(self, period_ms=10000):
        self.period_ms = period_ms
        self.max_alloc = None

    def sample(self):
        if not hasattr(gc, "mem_alloc"):
            return
        gc.collect()
        used = gc.mem_alloc()
        if self.max_alloc is None or used > self.max_alloc:
            self.max_alloc = used

    async def run(self, clock):
        while True:
            self.sample()
            await clock.sleep_ms_async(self.period_ms)


def main(argv):
    """Entry: argv = [spec.json path]."""
    if len(argv) != 1:
        raise SystemExit("usage: node.py SPEC.json")
    with open(argv[0]) as f:
        spec = json.loads(f.read())
    asyncio.run(run(spec))


# ---- host end (CPython) --------------------------------------------------------------------
# Not built on MicroPython: the world's tables and classes would cost the device heap.

if sys.implementation.name != "micropython":
    from simulator.clock import SimClock
    from simulator.mq134 import SimMQ134
    from simulator.parts import set_environment, sim_board

    # The air is re-applied this often (simulated ms); the BME280 samples every 10 s.
    WORLD_STEP_MS = 5000

    # Worlds: a period (simulated s) after which the script repeats, and moments sorted by time:
    # (t_s, label, people, air). `people` = radar targets from then on [(distance_cm, "moving" |
    # "stationary", energy 0-100)], None = unchanged. `air` = (°C, %RH, hPa, gas ppm) keyframe,
    # None = none here; between keyframes the air changes linearly, and after the last it moves
    # back towards the first, so the script loops without a jump. An empty label is not logged.
    WORLDS = {
        "busy": (
            600,
            (
                (0, "morning: the office is empty", [], (21.0, 45.0, 1013.0, 4.0)),
                (40, "someone walks in", [(450, "moving", 75)], None),
                (55, "walks to the desk", [(220, "moving", 65)], None),
                (70, "sits down at the desk", [(160, "stationary", 55)], None),
                (120, "the sun comes round: a warm afternoon", None, (21.4, 44.5, 1012.9, 4.0)),
                (220, "gas event: a solvent bottle left open", None, (23.6, 41.5, 1012.6, 5.0)),
                (250, "gas near 160 ppm", None, (24.0, 41.0, 1012.5, 160.0)),
                (300, "window opened: the gas clears", None, (24.8, 40.0, 1012.4, 150.0)),
                (360, "", None, (25.8, 38.0, 1012.2, 8.0)),
                (380, "a visitor walks in", [(160, "stationary", 55), (380, "moving", 70)], None),
                (420, "both leave", [(300, "moving", 60)], None),
                (435, "the room is empty", [], None),
                (450, "afternoon peak", None, (26.5, 36.5, 1012.0, 6.0)),
            ),
        ),
        "quiet": (
            600,
            (
                (0, "night: the room is empty", [], (19.5, 50.0, 1015.0, 3.0)),
                (300, "a guard walks past", [(350, "moving", 60)], (19.2, 51.0, 1015.2, 3.2)),
                (320, "the room is empty", [], None),
            ),
        ),
    }

    def _check_world(name):
        """(period_ms, moments) of a named world; ValueError naming the problem."""
        if name not in WORLDS:
            raise ValueError(
                "unknown world %r; choose one of %s" % (name, ", ".join(sorted(WORLDS)))
            )
        period_s, moments = WORLDS[name]
        if not moments or moments[0][0] != 0 or moments[0][2] is None or moments[0][3] is None:
            raise ValueError("world %r must start at 0 s with people and air" % name)
        for i in range(1, len(moments)):
            if not moments[i - 1][0] < moments[i][0] < period_s:
                raise ValueError("world %r: moment at %r s is out of order" % (name, moments[i][0]))
        return period_s * 1000, moments

    class World:
        """The ground truth of one scripted world at any simulated time (pure; no I/O).

        `noise` (a simulator.prng.Prng, optional) adds the small jitter real air has, so the
        firmware's stuck-value check sees a live sensor.
        """

        def __init__(self, name, noise=None):
            self.name = name
            self.period_ms, self.moments = _check_world(name)
            self._keys = []  # (t_ms, air) keyframes, plus the first again at the period
            for m in self.moments:
                if m[3] is not None:
                    self._keys.append((m[0] * 1000, m[3]))
            self._keys.append((self.period_ms, self._keys[0][1]))
            self._noise = noise

        def people_at(self, t_ms):
            """Radar targets in the room at `t_ms`."""
            t = t_ms % self.period_ms
            people = self.moments[0][2]
            for m in self.moments:
                if m[0] * 1000 > t:
                    break
                if m[2] is not None:
                    people = m[2]
            return people

        def air_at(self, t_ms):
            """(°C, %RH, hPa, ppm) at `t_ms`, linear between keyframes, jittered with `noise`."""
            t = t_ms % self.period_ms
            keys = self._keys
            i = 0
            while keys[i + 1][0] <= t:
                i += 1
            t0, a = keys[i]
            t1, b = keys[i + 1]
            f = (t - t0) / (t1 - t0)
            air = [a[k] + (b[k] - a[k]) * f for k in range(4)]
            r = self._noise
            if r is not None:
                air[0] += (r.random() - 0.5) * 0.06
                air[1] += (r.random() - 0.5) * 0.4
                air[2] += (r.random() - 0.5) * 0.1
                air[3] *= 1 + (r.random() - 0.5) * 0.04
            return air[0], air[1], air[2], air[3]

        def labels_between(self, after_ms, until_ms):
            """Labels of the moments in (after_ms, until_ms], in order (across repeats)."""
            out = []
            for m in self.moments:
                if not m[1]:
                    continue
                at = m[0] * 1000
                # first repeat of this moment after `after_ms`
                n = (after_ms - at) // self.period_ms + 1
                when = at + n * self.period_ms
                while when <= until_ms:
                    out.append((when, m[1]))
                    when += self.period_ms
            out.sort()
            return out

    def apply(board, world, t_ms):
        """Set the simulated parts to the world's truth at `t_ms`."""
        people = world.people_at(t_ms)
        board.radar.set_targets(people)
        if board.pir is not None:
            board.pir.set_motion(any(p[1] == "moving" for p in people))
        t, h, p, ppm = world.air_at(t_ms)
        set_environment(board, t, h, p)
        board.gas.ppm = ppm

    def host_parts(root, seed=1, info=None):
        """The reference node's simulated parts on a host SimClock, for a BridgeHost; with board
        `info` (nbk.boards' to_device_dict) the MQ-134 circuit simulated is that board's."""
        board = sim_board(SimClock(), str(root), seed=seed)
        mq = (info or {}).get("mq134") or {}
        kw = {}
        for key in ("divider_ratio", "load_ohm", "supply_v", "atten"):
            if key in mq:
                kw[key] = mq[key]
        if kw:
            board.gas = board.gas_adc = SimMQ134(seed=seed + 1, **kw)
        if info:
            board.info = info
        return board

    def script_world(host, world, on_label=None):
        """Play `world` on the parts a simulator.bridge_host.BridgeHost serves: its truth from
        tick 0, again every WORLD_STEP_MS and at each scripted moment, each at its exact
        simulated tick while the device waits; `on_label(t_ms, label, people)` for each
        labelled moment."""
        board = host.board

        def step(t_ms, after_ms):
            apply(board, world, t_ms)
            if on_label is not None:
                people = len(world.people_at(t_ms))
                for when, label in world.labels_between(after_ms, t_ms):
                    on_label(when, label, people)
            nxt = t_ms + WORLD_STEP_MS
            due = world.labels_between(t_ms, nxt)
            if due:
                nxt = due[0][0]
            host.at(nxt, lambda: step(nxt, t_ms))

        host.at(0, lambda: step(0, -1))
