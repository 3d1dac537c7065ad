"""The application on simulated sensors and a virtual clock: windows, delivery, watchdog, crashes,
plus the wall clock and the log line format it relies on."""

import asyncio
import json
import os

from drivers.sensor import BAD, GOOD, SUSPECT
from firmware.app import App, EncodingTransport, MqttTransport
from firmware.board import Board
from firmware.bootrecord import BootRecord
from firmware.clock import MIN_VALID_EPOCH_MS, WallClock
from firmware.fs import OsFs
from firmware.log import Log, format_line, read_crash
from firmware.settings import resolve
from firmware.uplink.link import ACKED, FAILED, REJECTED
from simulator.board import VirtualClock
from simulator.clock import SimClock
from simulator.parts import set_environment, sim_board
from tests.support.mptest import raises

RUN_ON_MICROPYTHON = True
# Compiling the application, drivers and simulators from source needs room; the bounded-heap
# figure for the firmware itself comes from tests/firmware/test_e2e.py (bytecode in ROMFS).
MICROPYTHON_HEAP = "384K"

CONFIG = {
    "device_id": "app-test",
    "uplink": {"transport": "mqtt"},
    "intervals": {"sampling_s": 10, "transmission_s": 5, "status_s": 60},
}
TUNING = {"gas_warmup_s": 20, "pir_warmup_s": 20}


class FakeTransport:
    """Stands in for MQTT/HTTP: records payloads; `down` makes every send fail."""

    def __init__(self):
        self.payloads = []
        self.down = False
        self.calls = 0

    async def send(self, items):
        self.calls += 1
        if self.down:
            raise OSError(111, "connection refused")
        for _, payload in items:
            self.payloads.append(json.loads(payload))
        return [(ACKED, None)] * len(items)


def _fresh_dir(name):
    os.mkdir(name)
    return name


def _node(name, transport, log_lines=None, boot=None, tuning=TUNING):
    clock = VirtualClock()
    board = sim_board(clock, _fresh_dir(name))
    board.radar.set_targets([(150, "moving", 60)])
    board.pir.set_motion(True)
    set_environment(board, 21.0, 40.0, 1010.0)
    board.gas.ppm = 30.0
    write = log_lines.append if log_lines is not None else (lambda line: None)
    log = Log(clock, write=write, fs=board.fs, level="D")
    app = App(board, CONFIG, log, boot=boot, tuning=tuning, transport=transport)
    return clock, board, app


def _run(clock, app, duration_ms, before=None):
    async def main():
        tasks = [asyncio.create_task(clock.run())]
        if before is not None:
            tasks.append(asyncio.create_task(before()))
        await app.run(duration_ms)
        await app.uplink.drain(app.buffer, 60000)

    asyncio.run(main())


def test_one_reading_per_window_with_the_simulated_truth():
    fake = FakeTransport()
    clock, board, app = _node("n1", fake)
    _run(clock, app, 120000)
    assert app.readings == 12
    assert [p["seq"] for p in fake.payloads] == list(range(1, 13))
    last = fake.payloads[-1]
    assert last["sensors"]["ld2410"] == {"presence": True, "distance": 150, "energy": 60}
    assert last["sensors"]["pir"] == {"motion_detected": True}
    assert abs(last["environment"]["temperature_c"] - 21.0) <= 0.02
    assert abs(last["sensors"]["mq134"]["gas_concentration"] - 30.0) <= 0.9
    assert last["quality"]["gas_ppm"] == GOOD and last["quality"]["presence"] == GOOD
    assert fake.payloads[0]["quality"]["gas_ppm"] == "warming_up"
    stamps = [p["timestamp"] for p in fake.payloads]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert board.wdt.feeds >= 118  # fed every second while all tasks were alive


def test_readings_wait_in_flash_while_the_link_is_down_then_all_arrive():
    fake = FakeTransport()
    fake.down = True
    lines = []
    clock, _, app = _node("n2", fake, lines)

    async def heal():
        await clock.sleep_ms_async(90000)
        fake.down = False

    _run(clock, app, 120000, heal)
    assert [p["seq"] for p in fake.payloads] == list(range(1, 13))
    assert app.buffer.stats()["depth"] == 0
    text = "\n".join(lines)
    assert "breaker closed -> open" in text and "half_open -> closed" in text


def test_watchdog_starves_when_a_task_stalls():
    fake = FakeTransport()
    lines = []
    clock, board, app = _node("n3", fake, lines, tuning={"task_stall_s": 5})

    async def radar_stuck_on_a_lock():
        app._beat("radar")
        await asyncio.Event().wait()  # never set: the task is alive but never loops again

    app._radar_loop = radar_stuck_on_a_lock
    _run(clock, app, 30000)
    assert 4 <= board.wdt.feeds <= 7, board.wdt.feeds  # fed for the first 5 s only
    stalls = [ln for ln in lines if '"msg":"task stalled' in ln]
    assert len(stalls) == 1 and '"task":"radar"' in stalls[0], stalls


def test_a_task_crash_is_recorded_in_flash_and_in_the_boot_record():
    fake = FakeTransport()
    fs_dir = "n4"
    clock, board, app = _node(fs_dir, fake)
    boot = BootRecord(board.fs)
    boot.begin("power_on")
    app.boot = boot
    app.setup_sensors()

    def broken_read():
        raise ZeroDivisionError("bug in window code")

    app.pir.read = broken_read
    err = raises(ZeroDivisionError, _run, clock, app, 30000)
    assert "bug in window code" in str(err)
    crash = read_crash(board.fs)
    assert crash["where"] == "pir" and "ZeroDivisionError" in crash["trace"]
    assert "ZeroDivisionError" in boot.record["last_crash"]
    assert BootRecord(board.fs).begin().unhealthy == 1  # the boot never got healthy


def test_encoding_transport_rejects_a_reading_the_profile_cannot_carry():
    fake = FakeTransport()
    good = {"seq": 1, "ts_ms": 1795341600000, "values": {"motion": [True, "good"]}}
    empty = {"seq": 2, "ts_ms": 1795341600000, "values": {"temperature_c": [20.0, "good"]}}
    t = EncodingTransport(fake, "neurobuild", {"device_id": "n5"})
    items = [(1, json.dumps(good).encode()), (2, json.dumps(empty).encode())]
    out = asyncio.run(t.send(items))
    assert out[0] == (ACKED, None)
    assert out[1][0] == REJECTED and "no ld2410, pir or mq134" in out[1][1]
    assert fake.payloads == [
        {"device_id": "n5", "timestamp": "2026-11-22T10:00:00.000Z", "seq": 1,
         "sensors": {"pir": {"motion_detected": True}}, "quality": {"motion": "good"}}
    ]  # fmt: skip


class FlakyClient:
    connected = True

    def __init__(self, fail_at):
        self.fail_at = fail_at
        self.published = []

    async def publish(self, topic, payload, qos=1, retain=False):
        if len(self.published) == self.fail_at:
            raise OSError(104, "connection reset")
        self.published.append((topic, payload, qos))


def test_mqtt_transport_acks_what_went_through_and_fails_the_rest():
    client = FlakyClient(fail_at=2)
    t = MqttTransport(client, "neurobuild/sensors/x/data")
    items = [(1, b"a"), (2, b"b"), (3, b"c"), (4, b"d")]
    out = asyncio.run(t.send(items))
    assert out[:2] == [(ACKED, None), (ACKED, None)]
    assert [o[0] for o in out[2:]] == [FAILED, FAILED]
    assert client.published[1] == ("neurobuild/sensors/x/data", b"b", 1)
    first_fails = MqttTransport(FlakyClient(fail_at=0), "t")
    assert "reset" in str(raises(OSError, asyncio.run, first_fails.send(items)))


def test_settings_name_what_is_wrong():
    err = raises(ValueError, resolve, CONFIG, {"gas_warmup": 1})
    assert "gas_warmup" in str(err) and "gas_warmup_s" in str(err)
    bad = {"uplink": {"transport": "carrier-pigeon"}}
    assert "carrier-pigeon" in str(raises(ValueError, resolve, bad))
    s = resolve({"uplink": {"transport": "http", "port": 0, "api_key": ""}})
    assert (s.port, s.api_key, s.http_batch_path) == (80, None, "/api/v1/sensor-data/batch")


def test_empty_board_still_runs_and_reports_nothing_it_does_not_have():
    clock = VirtualClock()
    board = Board(clock, OsFs(_fresh_dir("n6")))
    fake = FakeTransport()
    app = App(board, CONFIG, Log(clock, write=lambda line: None), transport=fake)
    _run(clock, app, 30000)
    assert app.readings == 0 and fake.payloads == []  # no sensor: no empty readings either


def test_wall_clock_stamps_increase_and_never_lead_by_an_hour():
    clock = SimClock(1000)
    wall = WallClock(clock)
    assert not wall.synced and wall.stamp() == 0 and wall.stamp() == 1
    assert not wall.sync(12345)  # an RTC-in-2000 answer is refused
    t0 = MIN_VALID_EPOCH_MS + 10**9
    assert wall.sync(t0)
    a = wall.stamp()
    b = wall.stamp()  # same millisecond: still strictly later
    assert (a, b) == (t0, t0 + 1)
    clock.advance(500)
    assert wall.sync(t0 - 120000)  # NTP stepped the clock back 2 min: stamps keep increasing
    assert wall.stamp() == t0 + 2 and wall.steps == 1
    wall.sync(t0 - 2 * 3600000)  # two hours back: leading by more than 1 h is not allowed
    assert wall.stamp() == t0 - 2 * 3600000 and wall.resets == 1
    state = wall.state()
    other = WallClock(SimClock(0))
    other.restore(state, slept_ms=60000)
    assert other.synced and other.now_ms() == state[0] + 60000


def test_log_line_is_exactly_the_monitor_format():
    line = format_line(12345, "I", "mqtt", 'say "hi"', {"port": 1883})
    assert line == (
        '@nbk {"t":12345,"lvl":"I","mod":"mqtt","msg":"say \\"hi\\"","kv":{"port":1883}}'
    )
    out = []
    # room for the last two lines (58 and 55 bytes, each with its newline), not three
    log = Log(SimClock(7), write=out.append, ring_bytes=140, level="W")
    assert log.info("app", "dropped by the level") is None
    log.warn("a", "one")
    log.error("b", "two", {"n": 2})
    log.warn("c", "three")
    assert len(out) == 3 and log.counts == [0, 1, 2, 1]
    assert [len(x) + 1 for x in out] == [53, 58, 55]
    assert [json.loads(x[5:])["msg"] for x in log.recent()] == ["two", "three"]
    assert json.loads(out[1][5:]) == {"t": 7, "lvl": "E", "mod": "b", "msg": "two", "kv": {"n": 2}}
    assert "use one of" in str(raises(ValueError, log.log, "X", "m", "x"))


def test_log_ring_keeps_the_newest_whole_lines_that_fit_as_it_wraps():
    for size in (64, 97, 300):
        out = []
        log = Log(SimClock(0), write=out.append, ring_bytes=size, level="D")
        for i in range(60):
            # lengths vary so that lines wrap around the end of the ring at every offset;
            # "é" is two bytes: the ring counts bytes, and never keeps half a character
            log.info("m", "x" * ((i * 7) % 23) + "é" * (i % 3))
            kept = []
            room = size
            for line in reversed(out):
                if len(line.encode()) + 1 > size:
                    continue  # longer than the ring: never kept
                room -= len(line.encode()) + 1
                if room < 0:
                    break
                kept.insert(0, line)
            assert log.recent() == kept, (size, i)
    log = Log(SimClock(0), write=out.append, ring_bytes=64)
    log.info("m", "y" * 80)  # longer than the ring: printed, not kept
    log.info("m", "z")
    assert out[-2].endswith('"' + "y" * 80 + '","kv":{}}')
    assert [json.loads(x[5:])["msg"] for x in log.recent()] == ["z"]
    assert "ring_bytes" in str(raises(ValueError, Log, SimClock(0), ring_bytes=1))


def test_log_keeps_its_ring_and_last_crash_in_flash():
    fs = OsFs(_fresh_dir("n7"))
    log = Log(SimClock(5), write=lambda line: None, fs=fs)
    log.info("app", "started")
    log.save()
    with fs.open("log_ring.txt") as f:
        assert f.read().startswith('@nbk {"t":5,"lvl":"I","mod":"app","msg":"started"')
    try:
        raise MemoryError("allocating 1024 bytes")
    except MemoryError as exc:
        log.record_crash(exc, "uplink")
    crash = read_crash(fs)
    assert crash["where"] == "uplink" and "MemoryError" in crash["trace"]
    assert crash["recent"][-1].startswith('@nbk {"t":5,"lvl":"E","mod":"uplink","msg":"crash"')
    assert read_crash(OsFs(_fresh_dir("n8"))) is None


def test_qualities_from_validation_reach_the_reading():
    fake = FakeTransport()
    _, board, app = _node("n9", fake)
    app.setup_sensors()
    app.wall.sync(board.ntp_epoch_ms())
    app.window.add_env(21.0, 40.0, 1010.0, GOOD)
    app.close_window(0)
    app.window.add_env(90.0, 40.0, 1010.0, GOOD)  # beyond the BME280's range: bad, still sent
    reading = app.close_window(0)
    assert reading["values"]["temperature_c"] == [90.0, BAD]
    app.window.add_env(21.0, 40.0, 1010.0, GOOD)
    app.close_window(0)
    app.window.add_env(35.0, 40.0, 1010.0, GOOD)  # a 14 °C jump in one window: a spike
    assert app.close_window(0)["values"]["temperature_c"] == [35.0, SUSPECT]
    assert "ts_quality" not in reading  # synced clock, increasing stamps


def _write_config(fs, config):
    from firmware.config import save_config

    save_config(fs, config)


def test_start_goes_to_safe_mode_after_three_crashed_boots_and_on_a_broken_config():
    from firmware.app import start

    clock = VirtualClock()
    board = sim_board(clock, _fresh_dir("s1"))
    lines = []
    log = Log(clock, write=lines.append, fs=board.fs)
    reason = start(board, log)  # no /config.json at all: safe mode with the reason
    assert reason and "config" in reason
    with board.fs.open("config.json", "w") as f:
        f.write('{"device_id": "s1", "uplink": {"transport": "mqtt"}}')
    for _ in range(2):  # boots that never got healthy (here: crashed during setup)
        BootRecord(board.fs).begin("watchdog")
    reason = start(board, log)
    assert "3 boots in a row crashed" in reason
    assert any('"msg":"safe mode' in ln for ln in lines)


def test_battery_cycle_sleeps_and_keeps_clock_and_seq_across_wakes():
    fake = FakeTransport()
    clock = VirtualClock()
    board = sim_board(clock, _fresh_dir("b1"))
    board.radar.set_targets([(200, "stationary", 50)])
    config = dict(CONFIG)
    config["power"] = {"sleep_mode": "enabled", "wake_interval_s": 300}
    for cycle in (1, 2):
        log = Log(clock, write=lambda line: None, fs=board.fs)
        app = App(board, config, log, tuning=TUNING, transport=fake)

        async def main(app=app):
            t = asyncio.create_task(clock.run())
            n = await app.run_cycle()
            t.cancel()
            return n

        assert asyncio.run(main()) == cycle
        board.ntp_ok = False  # from now on only RTC memory knows the time
    assert board.slept_ms == [300000, 300000]
    assert [p["seq"] for p in fake.payloads] == [1, 2]
    first, second = [p["timestamp"] for p in fake.payloads]
    # Woke 300 s later, closed one 10 s window: the wall clock restored from RTC memory says so
    # (without it, an unsynced clock would stamp 1970).
    # (The few ms after the second: the BME280's soft reset wait during sensor setup.)
    assert first.startswith("2026-11-22T10:00:10.00"), first
    assert second.startswith("2026-11-22T10:05:20.00"), second
    assert board.reset_cause == "deep_sleep"
    assert json.loads(board.rtc_memory.read())["cycles"] == 2


def test_remote_config_is_validated_persisted_applied_and_acknowledged():
    from firmware.config import load_config, save_config

    fake = FakeTransport()
    lines = []
    clock = VirtualClock()
    board = sim_board(clock, _fresh_dir("rc"))
    board.radar.set_targets([(150, "moving", 60)])
    config = dict(CONFIG)
    config["uplink"] = {"transport": "mqtt", "host": "127.0.0.1"}  # not used: fake transport
    config["registration"] = {"config_url": "http://127.0.0.1:9"}
    config["intervals"] = {"sampling_s": 10, "transmission_s": 10, "config_poll_s": 60}
    config = save_config(board.fs, config)
    app = App(board, config, Log(clock, write=lines.append), tuning=TUNING, transport=fake)
    answers = [
        {"sampling_interval": 0, "config_version": 8},  # out of range: refused, named
        {"sampling_interval": 30, "transmission_interval": 60, "config_version": 9,
         "sensor_calibration": {"temperature_offset": 0.5}},
    ]  # fmt: skip

    async def fetch():
        return answers.pop(0) if answers else None

    app.fetch_remote_config = fetch
    _run(clock, app, 300000)
    refused = [ln for ln in lines if "remote config refused" in ln]
    assert len(refused) == 1 and "sampling_interval" in refused[0], refused
    assert app.config_version == 9 and app.status()["config_version"] == 9
    assert app.s.sampling_ms == 30000 and app.s.temperature_offset == 0.5
    saved, problems = load_config(board.fs)
    assert saved["version"] == 9 and saved["intervals"]["sampling_s"] == 30, problems
    # 10 s windows until the change at 120 s, 30 s windows after: fewer readings than 30.
    stamps = [p["timestamp"] for p in fake.payloads]
    assert 12 + 5 <= len(stamps) <= 12 + 7, len(stamps)


def test_virtual_clock_jumps_only_while_every_task_sleeps_on_it():
    clock = VirtualClock()
    seen = []

    async def waits_on_the_network():
        await clock.sleep_ms_async(100)
        t0 = clock.ticks_ms()
        await asyncio.sleep(0.02)  # real time: a round trip; simulated time must stand still
        seen.append((t0, clock.ticks_ms()))
        await clock.sleep_ms_async(5)
        seen.append(clock.ticks_ms())

    async def ticks():
        for _ in range(150):  # beyond until_ms: run() stops at 1000 with this one still asleep
            await clock.sleep_ms_async(10)

    async def main():
        tasks = [asyncio.create_task(waits_on_the_network()), asyncio.create_task(ticks())]
        await clock.run(until_ms=1000)
        return tasks

    asyncio.run(main())
    assert seen == [(100, 100), 105]
    assert clock.ticks_ms() == 1000 and clock.jumps >= 100


def test_gas_circuit_comes_from_the_board_and_chemistry_from_config():
    clock = VirtualClock()
    board = sim_board(clock, _fresh_dir("g1"))
    board.info["mq134"]["load_ohm"] = 4700.0
    config = dict(CONFIG)
    config["calibration"] = {"gas": {"load_ohm": 10000.0, "r0_ohm": 50000.0, "a": None}}
    app = App(board, config, Log(clock, write=lambda line: None), transport=FakeTransport())
    app.setup_sensors()
    assert app.gas._load_ohm == 4700.0 and app.gas.r0_ohm == 50000.0
    assert app.env is not None and type(app.env).__name__ == "BME280"
