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

The host end, the world the node lives in, is simulator.world (CPython only).
"""

import gc
import json

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
