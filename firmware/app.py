# pyright: reportOptionalMemberAccess=false
"""The node application: asyncio tasks that sample, fold, validate, store and send readings.

One task per sensor at its own cadence (radar ~10 Hz, PIR, gas, environment), one that closes
a window every sampling interval into a reading (validated, timestamped, appended to the flash
buffer), one that moves the buffer to the uplink, one for status, one for NTP, one for remote
config, and a supervisor that feeds the hardware watchdog only while every task is alive.

    app = App(board, config, log)
    asyncio.run(app.run())               # mains build: runs until stopped or a task crashes
    asyncio.run(app.run_cycle())         # battery build: one wake-up, then board.deep_sleep

Time comes only from board.clock (`sleep_ms_async`), so a simulated clock can run it fast.
"""

import asyncio
import json

from drivers.sensor import BAD, GOOD, SensorError
from firmware import telemetry
from firmware.buffer import Buffer
from firmware.clock import WallClock
from firmware.log import Log
from firmware.status import FIRMWARE_VERSION, snapshot
from firmware.uplink.link import ACKED, FAILED, REJECTED
from firmware.validate import Validator
from firmware.window import Window

RADAR_PERIOD_MS = 100  # the LD2410 reports about every 100 ms (ld2410.md)
WDT_CHECK_MS = 1000
NTP_RETRY_MS = 60000
NTP_PERIOD_MS = 6 * 3600000


class EncodingTransport:
    """Turns buffered readings (canonical JSON) into profile bytes for the real transport.

    A reading the profile cannot carry becomes a REJECTED outcome (dead-lettered by the
    Uplink), never an exception that would stall the queue.
    """

    def __init__(self, inner, profile, device):
        self.inner = inner
        self.profile = profile
        self.device = device

    async def send(self, items):
        ready = []
        where = []  # index in items of each ready payload, or the rejection
        out = [(FAILED, "not sent")] * len(items)
        for i in range(len(items)):
            seq, stored = items[i]
            try:
                reading = json.loads(stored)
                ready.append((seq, telemetry.encode(reading, self.profile, self.device)))
                where.append(i)
            except (ValueError, KeyError) as exc:  # TelemetryError is a ValueError
                out[i] = (REJECTED, "cannot encode reading %d: %s" % (seq, exc))
        if ready:
            results = await self.inner.send(ready)
            for k in range(len(where)):
                out[where[k]] = results[k]
        return out


class MqttTransport:
    """Publishes each reading with QoS 1 on the data topic; the PUBACK is the acknowledgement.

    Connects lazily; a failure before the first PUBACK raises OSError (the Uplink backs off);
    a failure after some went through reports those as acked and the rest as failed.
    """

    def __init__(self, client, topic, on_connect=None):
        self.client = client
        self.topic = topic
        self._on_connect = on_connect

    async def ensure_connected(self):
        if not self.client.connected:
            await self.client.connect()
            if self._on_connect is not None:
                await self._on_connect()

    async def send(self, items):
        await self.ensure_connected()
        out = []
        for i in range(len(items)):
            try:
                await self.client.publish(self.topic, items[i][1], 1)
            except OSError as exc:
                if not out:
                    raise
                return out + [(FAILED, str(exc))] * (len(items) - i)
            out.append((ACKED, None))
        return out


class App:
    """The firmware on one Board with one config dict (firmware.settings lists the keys it
    reads)."""

    def __init__(self, board, config, log=None, boot=None, rand=None, tuning=None, transport=None):
        self.board = board
        self.clock = board.clock
        self.config = config  # None once run() let go of a config read from flash
        from firmware.settings import resolve

        self.s = resolve(config, tuning)
        self.log = log or Log(self.clock, fs=board.fs)
        self.boot = boot  # firmware.bootrecord.BootRecord, told when the app is healthy
        self._boot_released = False  # True once healthy: the record was let go (RAM)
        self.started = self.clock.ticks_ms()
        self.run_started = self.started
        self.wall = WallClock(self.clock)
        self.window = Window()
        self.validator = Validator(self.clock)
        self.buffer = Buffer(
            board.fs,
            capacity_records=self.s.buffer_records,
            flush_every=self.s.flush_every,
            # A battery node reboots every wake-up and each boot skips the rest of its
            # reserved seq block: reserve one at a time there (one small write per wake).
            seq_block=1 if self.s.sleep_mode else 64,
            clock=self.clock,
        )
        self.tuning = tuning
        if rand is None:
            import random

            rand = random
        self.rand = rand
        self.device = {"device_id": self.s.device_id, "firmware_version": FIRMWARE_VERSION}
        self.device.update(self.s.device_extra)
        self.running = False
        self.healthy = False
        self.crash = None
        self.readings = 0
        self.config_version = self.s.config_version
        self.stalled = None  # the task that stopped the watchdog feed, if any
        self.alive = {}  # task name -> ticks by which it promised to loop again
        self.radar = self.pir = self.gas = self.env = None
        self._sensors_ready = False
        self.uplink = None
        self.transport = transport  # given: used instead of building MQTT/HTTP (simulations)
        self._env_t = None  # last compensated environment (°C, %RH), fed to the gas sensor
        self._env_h = None

    # ---- setup -----------------------------------------------------------------------------

    def setup_sensors(self):
        """Build a driver per sensor the board has (firmware.parts); a failure marks it
        missing, logged once. Does nothing the second time (run() calls it; a test may first).
        """
        if not self._sensors_ready:
            self._sensors_ready = True
            from firmware.parts import build_sensors

            self.radar, self.pir, self.gas, self.env = build_sensors(self)

    def setup_uplink(self):
        """Build the uplink the settings name (firmware.parts), unless one exists."""
        if self.uplink is None:
            from firmware.parts import build_uplink

            self.transport, self.uplink = build_uplink(self)

    # ---- running ---------------------------------------------------------------------------

    async def run(self, duration_ms=None):
        """Start every task; return after `duration_ms` (tests) or when stopped; re-raise a
        task's crash after recording it."""
        self.setup_sensors()
        self.setup_uplink()
        # Boot-only code goes: the builders, the settings resolver, the environment probe.
        for name in ("firmware.parts", "firmware.settings", "drivers.env"):
            unload(name)
        config = self.config
        if isinstance(config, dict) and config.get("source") in ("config.json", "config.bak"):
            # Loaded from flash (prepare): Settings holds what the tasks read, and a remote
            # config reads the file again; the whole dict with its defaults costs ~2 KiB.
            self.config = None
        config = None  # this frame lives as long as the node: it must not hold the dict
        self.log.info("app", "started", {"device": self.s.device_id, "uplink": self.s.uplink})
        self.running = True
        self.run_started = self.clock.ticks_ms()
        tasks = [
            self._spawn("ntp", self._ntp_loop),
            self._spawn("assemble", self._assemble_loop),
            self._spawn("uplink", self._uplink_loop),
            self._spawn("status", self._status_loop),
            self._spawn("wdt", self._watchdog_loop),
        ]
        if self.radar is not None:
            tasks.append(self._spawn("radar", self._radar_loop))
        if self.pir is not None:
            tasks.append(self._spawn("pir", self._pir_loop))
        if self.gas is not None:
            tasks.append(self._spawn("gas", self._gas_loop))
        if self.env is not None:
            tasks.append(self._spawn("env", self._env_loop))
        if self.s.config_url is not None:
            tasks.append(self._spawn("config", self._config_loop))
        clock = self.clock
        start = clock.ticks_ms()
        try:
            while self.running and self.crash is None:
                if duration_ms is not None:
                    left = duration_ms - clock.ticks_diff(clock.ticks_ms(), start)
                    if left <= 0:
                        break
                    await clock.sleep_ms_async(min(left, 1000))
                else:
                    await clock.sleep_ms_async(1000)
        finally:
            self.running = False
            for t in tasks:
                t.cancel()
            self.buffer.flush()
        if self.crash is not None:
            raise self.crash

    def stop(self):
        self.running = False

    async def run_cycle(self, drain_ms=30000):
        """Battery build: one window of sampling, send what waits, then deep sleep.

        The wall clock (and whether it was synced) survives in RTC memory; seqs and unsent
        readings survive in flash. Sensors warm up again after every wake, which the
        qualities say (an MQ-134 heater needs minutes: gas stays warming_up in this build).
        """
        state = _rtc_load(self.board.rtc_memory)
        if state is not None:
            self.wall.restore(state["wall"], state.get("slept_ms", 0))
        cycles = (state or {}).get("cycles", 0) + 1
        await self.run(self.s.sampling_ms + 1)  # the window closes at sampling_ms
        self.uplink.breaker.success()  # a fresh wake-up: give the link one honest chance
        await self.uplink.drain(self.buffer, drain_ms)
        self.buffer.flush()
        self.log.info("app", "sleeping", {"ms": self.s.wake_ms, "cycle": cycles})
        self.log.save()
        wall = self.wall.state()
        self.board.rtc_memory.write(
            json.dumps({"wall": wall, "slept_ms": self.s.wake_ms, "cycles": cycles}).encode()
        )
        self.board.deep_sleep(self.s.wake_ms)
        return cycles

    def _spawn(self, name, loop):
        self.alive[name] = self.clock.ticks_ms()
        return asyncio.create_task(loop())

    def _crashed(self, name, exc):
        """Task `name` ended with a bug: keep the evidence, then let the node restart.

        Each task's loop catches its own exceptions and calls this, rather than running inside
        a wrapper coroutine: a wrapper is one more frame per task for the node's whole life
        (about 2 KiB for ten tasks on the 64-bit Unix port). CancelledError is not an
        Exception on either runtime, so cancelling a task still ends it.
        """
        self.crash = exc
        self.running = False
        trace = self.log.record_crash(exc, name)
        self._note_crash("%s: %s" % (name, trace.strip().split("\n")[-1]))

    def _note_crash(self, text):
        """One line about the crash ending this boot, in the boot record when there is one."""
        boot = self.boot
        if boot is None and self._boot_released:
            from firmware.bootrecord import BootRecord

            boot = BootRecord(self.board.fs)
        if boot is not None:
            boot.note_crash(text)

    def _beat(self, name, next_ms=0):
        """`name` is alive and will loop again within `next_ms` (plus the stall allowance)."""
        self.alive[name] = self.clock.ticks_add(self.clock.ticks_ms(), next_ms)

    async def _radar_loop(self):
        try:
            radar = self.radar
            window = self.window
            while self.running:
                self._beat("radar")
                try:
                    n = radar.poll()
                except SensorError as exc:
                    n = 0
                    self.log.debug("ld2410", "read failed", {"err": str(exc)})
                if n:
                    report = radar.read()
                    if report.quality == BAD:
                        window.radar_missed()
                    else:
                        for _ in range(n):  # several reports since the last poll: the latest counts
                            window.add_radar(report)
                else:
                    window.radar_missed()
                await self.clock.sleep_ms_async(RADAR_PERIOD_MS)
        except Exception as exc:  # a bug: see _crashed
            self._crashed("radar", exc)

    async def _pir_loop(self):
        try:
            while self.running:
                self._beat("pir", self.s.pir_ms)
                r = self.pir.read()
                self.window.add_pir(r.motion, r.events, r.quality)
                await self.clock.sleep_ms_async(self.s.pir_ms)
        except Exception as exc:  # a bug: see _crashed
            self._crashed("pir", exc)

    async def _gas_loop(self):
        try:
            while self.running:
                self._beat("gas", self.s.gas_ms)
                # Sample at the end of each period: the first one then has the environment reading
                # its compensation needs.
                await self.clock.sleep_ms_async(self.s.gas_ms)
                try:
                    self.gas.set_environment(self._env_t, self._env_h)
                    r = self.gas.read()
                    if r.ppm is None:
                        self.window.add_gas(None, None, BAD)
                    else:
                        self.window.add_gas(r.ppm, r.rs_ohm, r.quality)
                except SensorError as exc:
                    self.window.add_gas(None, None, BAD)
                    self.log.debug("mq134", "read failed", {"err": str(exc)})
        except Exception as exc:  # a bug: see _crashed
            self._crashed("gas", exc)

    async def _env_loop(self):
        try:
            while self.running:
                s = self.s  # read every loop: a remote config may change the offsets
                self._beat("env", s.env_ms)
                try:
                    wait_ms = self.env.start_measurement()
                    await self.clock.sleep_ms_async(wait_ms)
                    r = self.env.read_measurement()
                    while r is None:  # still converting
                        await self.clock.sleep_ms_async(2)
                        r = self.env.read_measurement()
                    t = _offset(r.temperature_c, s.temperature_offset)
                    h = _offset(r.humidity_pct, s.humidity_offset)
                    p = _offset(r.pressure_hpa, s.pressure_offset)
                    if t is None:
                        self.window.env_failed()
                    else:
                        self.window.add_env(t, h, p, r.quality)
                        if r.quality == GOOD:
                            self._env_t, self._env_h = t, h
                except SensorError as exc:
                    self.window.env_failed()
                    self.log.debug("env", "read failed", {"err": str(exc)})
                await self.clock.sleep_ms_async(s.env_ms)
        except Exception as exc:  # a bug: see _crashed
            self._crashed("env", exc)

    async def _assemble_loop(self):
        try:
            clock = self.clock
            period = self.s.sampling_ms
            opened = self.run_started
            next_close = clock.ticks_add(opened, period)  # windows align to the start
            while self.running:
                wait = clock.ticks_diff(next_close, clock.ticks_ms())
                self._beat("assemble", wait)
                if wait > 0:
                    await clock.sleep_ms_async(wait)
                    if self.s.sampling_ms != period:  # a remote config changed the interval
                        period = self.s.sampling_ms
                        next_close = clock.ticks_add(opened, period)
                    continue
                self.close_window(clock.ticks_diff(next_close, opened) // RADAR_PERIOD_MS)
                opened = next_close
                next_close = clock.ticks_add(next_close, period)
        except Exception as exc:  # a bug: see _crashed
            self._crashed("assemble", exc)

    def close_window(self, expected_radar):
        """Fold the current window into a reading and store it; returns the reading."""
        values = self.window.close(expected_radar)
        if not values:
            return None
        self.validator.check_values(values)  # range, spike, stuck: qualities updated in place
        ts = self.wall.stamp()
        reading = {"ts_ms": ts, "values": values}
        tq = self.validator.check_time(ts, self.wall.now_ms(), self.wall.synced)
        if tq != GOOD:  # never synced by NTP (suspect) or impossible (bad): said, not hidden
            reading["ts_quality"] = tq
        seq = self.buffer.append(reading)
        self.buffer.flush_if_due()
        self.readings += 1
        self.log.debug("app", "reading", {"seq": seq})
        if not self.healthy:
            self.healthy = True
            self.buffer.flush()
            if self.boot is not None:
                self.boot.mark_healthy()
                # Until a crash nothing needs the record: free it and its module (RAM);
                # _note_crash reads it from flash again.
                self.boot = None
                self._boot_released = True
                unload("firmware.bootrecord")
            self.log.info("app", "healthy", {"seq": seq})
        return reading

    async def _uplink_loop(self):
        try:
            clock = self.clock
            up = self.uplink
            while self.running:
                s = self.s
                if not self.buffer.pending(1):
                    self._beat("uplink", s.transmission_ms)
                    await clock.sleep_ms_async(s.transmission_ms)
                    continue
                self._beat("uplink")
                wait = await up.step(self.buffer)
                if wait:
                    self._beat("uplink", wait)
                    await clock.sleep_ms_async(wait)
        except Exception as exc:  # a bug: see _crashed
            self._crashed("uplink", exc)

    async def _on_connect(self):
        self.log.info("uplink", "connected", {"host": self.s.host, "port": self.s.port})
        await self.publish_status()

    async def publish_status(self):
        """Status on the retained status topic (MQTT only; HTTP has no status endpoint)."""
        client = getattr(self.transport, "client", None)
        if client is None or not hasattr(client, "publish") or not client.connected:
            return False
        payload = telemetry.status_payload(self.s.device_id, self.status())
        topic = telemetry.status_topic(self.s.topic_prefix, self.s.device_id)
        try:
            await client.publish(topic, payload, 1, True)
        except OSError as exc:
            self.log.warn("status", "publish failed", {"err": str(exc)})
            return False
        return True

    def status(self):
        up = self.uplink
        counters = {"duplicates": up.duplicates, "dead_letters": up.dead.count}
        return snapshot(
            self.board,
            self.started,
            self.wall.now_ms(),
            self.buffer.stats(),
            counters,
            self.config_version,
            self.s.uplink,
            up.breaker.state,
        )

    async def _status_loop(self):
        try:
            while self.running:
                self._beat("status", self.s.status_ms)
                await self.clock.sleep_ms_async(self.s.status_ms)
                await self.publish_status()
        except Exception as exc:  # a bug: see _crashed
            self._crashed("status", exc)

    async def _config_loop(self):
        try:
            while self.running:
                self._beat("config", self.s.config_poll_ms)
                await self.clock.sleep_ms_async(self.s.config_poll_ms)
                try:
                    remote = await self.fetch_remote_config()
                except (OSError, ValueError) as exc:
                    self.log.warn("config", "remote config not fetched", {"err": str(exc)})
                    continue
                if remote is not None:
                    await self.apply_remote_config(remote)
        except Exception as exc:  # a bug: see _crashed
            self._crashed("config", exc)

    async def fetch_remote_config(self):
        """GET /v1/devices/{id}/config (contracts.md §3) -> dict, or None when there is none."""
        from firmware.remote_config import fetch

        try:
            return await fetch(self)
        finally:
            self._drop_remote_config()

    async def apply_remote_config(self, remote):
        """Validate, persist and apply a remote config (firmware.remote_config.apply); True
        when something changed. The module and firmware.config are dropped afterwards (RAM)."""
        from firmware.remote_config import apply

        try:
            return await apply(self, remote)
        finally:
            self._drop_remote_config()

    def _drop_remote_config(self):
        """Modules a remote config needs, dropped between polls (RAM). The HTTP client stays
        when it is also the uplink: a second import would make a second HttpError class."""
        for name in ("remote_config", "config", "settings"):
            unload("firmware." + name)
        if self.s.uplink != "http":
            unload("firmware.uplink.http")

    async def _ntp_loop(self):
        try:
            while self.running:
                try:
                    ok = self.wall.sync(self.board.ntp_epoch_ms())
                    if not ok:
                        self.log.warn("clock", "NTP answer rejected as impossible")
                except OSError as exc:
                    ok = False
                    self.log.warn("clock", "NTP failed", {"err": str(exc)})
                wait = NTP_PERIOD_MS if ok else NTP_RETRY_MS
                self._beat("ntp", wait)
                await self.clock.sleep_ms_async(wait)
        except Exception as exc:  # a bug: see _crashed
            self._crashed("ntp", exc)

    async def _watchdog_loop(self):
        """Feed the hardware watchdog only while every task has looped recently."""
        try:
            clock = self.clock
            limit = self.s.task_stall_ms
            while self.running:
                now = clock.ticks_ms()
                stalled = None
                for name in self.alive:
                    if name != "wdt" and clock.ticks_diff(now, self.alive[name]) > limit:
                        stalled = name
                if stalled is None:
                    self.board.wdt.feed()
                elif stalled != self.stalled:  # once per stall: the reset follows anyway
                    self.log.error(
                        "wdt", "task stalled; not feeding the watchdog", {"task": stalled}
                    )
                self.stalled = stalled
                self._beat("wdt")
                await clock.sleep_ms_async(WDT_CHECK_MS)
        except Exception as exc:  # a bug: see _crashed
            self._crashed("wdt", exc)


def _rtc_load(rtc):
    """The state run_cycle left in RTC memory, or None (power-on, or unreadable)."""
    try:
        data = rtc.read()
        return json.loads(data) if data else None
    except (ValueError, OSError):
        return None


def _offset(value, offset):
    if value is None:
        return None
    return value + offset if offset else value


def prepare(board, log=None, tuning=None):
    """Boot record and config: -> (App, None), or (None, reason) for a safe-mode boot.

    Never raises on bad stored data: a corrupt boot record or config gives safe mode with the
    reason logged, never a boot loop.
    """
    from firmware.bootrecord import BootRecord
    from firmware.config import load_config

    log = log or Log(board.clock, fs=board.fs)
    boot = BootRecord(board.fs)
    decision = boot.begin(board.reset_cause)
    if decision.problem:
        log.warn("boot", decision.problem)
    log.info(
        "boot",
        "booting",
        {"slot": decision.slot, "boots": decision.boots, "reset_cause": board.reset_cause},
    )
    config, problems = load_config(board.fs)
    unload("firmware.config")  # ~11 KiB of schema and functions; back only for a remote config
    for problem in problems:
        log.warn("config", problem)
    reason = decision.reason or config.get("safe_mode")
    if reason:
        log.error("boot", "safe mode: console, provisioning and OTA only", {"reason": reason})
        log.save()
        return None, reason
    return App(board, config, log, boot=boot, tuning=tuning), None


def start(board, log=None):
    """The boot sequence on any Board: prepare, then run the application.

    Returns the reason in safe mode (the caller drops to the REPL); otherwise runs the app
    forever (mains) or one cycle ending in deep sleep (battery). A crash is kept in flash (log
    and boot record) and the board is reset.
    """
    app, reason = prepare(board, log)
    if app is None:
        return reason
    log = app.log
    if not board.connect_network(app.config):
        log.warn("net", "network is down; readings wait in flash")
    try:
        if app.s.sleep_mode:
            asyncio.run(app.run_cycle())
        else:
            asyncio.run(app.run())
    except Exception as exc:
        if app.crash is None:  # not from a task (setup, the loop itself): record it here
            trace = log.record_crash(exc, "app")
            app._note_crash(trace.strip().split("\n")[-1])
        log.save()
        board.reset()
    return None


def unload(name):
    """Drop module `name` ("firmware.config") so its functions and constants can be collected
    once nothing else holds them (RAM, not flash). Only for modules whose classes no live
    object needs to match again: a later import makes new ones."""
    import sys

    sys.modules.pop(name, None)
    package, _, leaf = name.rpartition(".")
    parent = sys.modules.get(package)
    if parent is not None and leaf in parent.__dict__:
        del parent.__dict__[leaf]
