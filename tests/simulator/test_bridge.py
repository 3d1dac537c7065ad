"""The peripheral bridge: drivers on the device end see the same bytes, values, errors and PIR
edge times as on the simulated parts in-process, and the parts move to the device's time.

CPython-only module (the host end serves from a thread); the device end on MicroPython is
exercised by test_device_end_on_micropython here and by tests/firmware/test_e2e.py.
"""

import asyncio
import json
import socket
import threading

import pytest

from drivers.bme280 import BME280
from drivers.ld2410 import LD2410
from drivers.pir import PIR
from simulator.board import VirtualClock, bridged_board
from simulator.bridge import Bridge
from simulator.bridge_host import BridgeHost
from simulator.clock import SimClock
from simulator.parts import set_environment, sim_board
from tests.support.micropython import run_micropython


def parts(tmp_path, pir=True):
    """A host board: the reference node's simulated parts on their own SimClock."""
    board = sim_board(SimClock(), str(tmp_path), pir=pir)
    board.radar.set_targets([(150, "moving", 60)])
    set_environment(board, 22.0, 45.0, 1005.0)
    board.gas.ppm = 50.0
    return board


@pytest.fixture
def connect(tmp_path):
    """connect(h, clock=None) -> a bridged board on host `h`; every one is closed afterwards."""
    made = []

    def make(h, clock=None):
        board = bridged_board(clock or SimClock(), str(tmp_path), h.address)
        made.append(board.bridge)
        return board

    yield make
    for bridge in made:
        bridge.close()


@pytest.fixture
def host(tmp_path):
    with BridgeHost(parts(tmp_path)) as h:
        yield h
    assert not h.errors, "\n".join(h.errors)


def test_hello_reports_the_parts_the_host_has(tmp_path, connect):
    with BridgeHost(parts(tmp_path, pir=False)) as h:
        board = connect(h)
        assert board.pir_pin is None and board.uart is not None
        assert board.i2c is not None and board.gas_adc is not None
        assert h.calls == {"H": 1}


def test_radar_bytes_and_acks_equal_the_part_in_process(host, tmp_path, connect):
    twin_clock = SimClock()
    twin = sim_board(twin_clock, str(tmp_path), pir=False).radar  # same seed, same truth
    twin.set_targets([(150, "moving", 60)])
    clock = SimClock()
    uart = connect(host, clock).uart
    assert uart.any() == twin.any() == 0  # nothing before the first 100 ms report
    buf, twin_buf = bytearray(256), bytearray(256)
    total = 0
    for step in (150, 250, 30, 1000):
        clock.advance(step)
        twin_clock.advance(step)
        n = uart.any()
        assert n == twin.any()
        if n:
            assert uart.readinto(buf, n) == twin.readinto(twin_buf, n) == n
            assert buf[:n] == twin_buf[:n]
        total += n
    assert total > 100  # reports came
    enable_config = b"\xfd\xfc\xfb\xfa\x04\x00\xff\x00\x01\x00\x04\x03\x02\x01"
    assert uart.write(enable_config) == twin.write(enable_config) == len(enable_config)
    assert uart.read() == twin.read()  # the ACK, byte for byte
    assert uart.readinto(buf) is None and uart.read() is None  # empty reads as on the ESP32


def test_ld2410_driver_over_the_bridge_reads_the_targets(host, connect):
    clock = SimClock()
    radar = LD2410(connect(host, clock).uart, clock)
    clock.advance(350)
    assert radar.poll() == 3
    report = radar.read()
    assert report.moving_distance_cm == 150 and report.moving_energy == 60
    host.board.radar.set_targets([(320, "stationary", 50)])
    clock.advance(200)
    radar.poll()
    assert radar.read().stationary_distance_cm == 320


def test_bme280_over_the_bridge_reads_the_truth(host, connect):
    clock = SimClock()
    i2c = connect(host, clock).i2c
    assert i2c.scan() == [0x76]
    env = BME280(i2c, address=0x76, clock=clock)
    clock.advance(env.start_measurement())
    r = env.read_measurement()
    assert abs(r.temperature_c - 22.0) < 0.02 and abs(r.humidity_pct - 45.0) < 0.1
    assert abs(r.pressure_hpa - 1005.0) < 0.1


def test_i2c_nack_arrives_as_oserror_19_and_bad_arguments_as_valueerror(host, connect):
    i2c = connect(host).i2c
    with pytest.raises(OSError) as exc:
        i2c.readfrom_mem(0x50, 0xD0, 1)
    assert exc.value.args[0] == 19  # ENODEV, as SimI2C and the ESP32 port raise it
    host.board.env.nack = True
    with pytest.raises(OSError) as exc:
        i2c.writeto_mem(0x76, 0xF4, b"\x01")
    assert exc.value.args[0] == 19
    host.board.env.nack = False
    assert i2c.readfrom_mem(0x76, 0xD0, 1) == b"\x60"  # the chip id again
    with pytest.raises(ValueError, match="addrsize 16"):
        i2c.readfrom_mem_into(0x76, 0xD0, bytearray(1), addrsize=16)
    with pytest.raises(ValueError, match="limit is 255"):
        i2c.writeto(0x76, bytes(300))


def test_adc_counts_equal_the_part_in_process(host, connect):
    adc = connect(host).gas_adc
    sim = host.board.gas
    reads = sim.reads
    assert (adc.read(), adc.read_u16(), adc.read_uv()) == (
        sim.read(),
        sim.read_u16(),
        sim.read_uv(),
    )
    assert sim.reads == reads + 6  # each proxy call was one conversion on the part
    sim.set_fault("saturated")
    assert adc.read() == 4095


def test_the_part_moves_to_the_time_in_each_request_and_never_back(host, connect):
    clock = SimClock()
    board = connect(host, clock)
    clock.advance(12345)
    board.gas_adc.read_u16()
    assert host.clock.ticks_ms() == 12345
    clock._now_ms = 100  # a device clock that went backwards is a bug, said out loud
    with pytest.raises(RuntimeError, match="went backwards: 100 ms after 12345 ms"):
        board.gas_adc.read_u16()
    host.errors.clear()


def test_a_host_without_the_part_is_a_loud_error(tmp_path, connect):
    with BridgeHost(parts(tmp_path)) as h:
        board = connect(h)
        h.board.gas_adc = None  # unplugged after the hello: a wiring bug, not a sensor fault
        with pytest.raises(RuntimeError, match="host board has no ADC"):
            board.gas_adc.read_u16()
        assert h.errors and "has no ADC" in h.errors[0]


def _record_pir(board, clock):
    """A PIR driver on the board's pin, its IRQ wrapped to log (ticks, level) of each edge."""
    edges = []
    pir = PIR(board.pir_pin, clock, warmup_ms=60000)
    handler = pir._irq_cb

    def record(p):
        edges.append((clock.ticks_ms(), p.value()))
        handler(p)

    board.pir_pin.irq(handler=record, trigger=3)
    return edges, pir


def _run(clock, until_ms, director=None):
    """Let a VirtualClock run to `until_ms` (with a task asleep on it, so it has a reason to)."""

    async def sleeper():
        await clock.sleep_ms_async(until_ms - clock.ticks_ms())

    async def main():
        tasks = [asyncio.ensure_future(sleeper())]
        if director is not None:
            tasks.append(asyncio.ensure_future(director()))
        await clock.run(until_ms=until_ms)
        for t in tasks:
            await t

    asyncio.run(main())


def in_process_pir_edges(tmp_path):
    """Warm-up pulses, then motion from 65 s to 70 s, all parts in this process."""
    clock = VirtualClock()
    board = sim_board(clock, str(tmp_path))
    edges, pir = _record_pir(board, clock)

    async def director():
        await clock.sleep_ms_async(65000)
        board.pir.set_motion(True)
        await clock.sleep_ms_async(5000)
        board.pir.set_motion(False)

    _run(clock, 80000, director)
    return edges, pir.read()


def motion_host(tmp_path):
    """The same parts and motion on a bridge host, the changes as scheduled events."""
    h = BridgeHost(parts(tmp_path))
    h.at(65000, lambda: h.board.pir.set_motion(True))
    h.at(70000, lambda: h.board.pir.set_motion(False))
    return h


def test_pir_edges_fire_at_the_same_ticks_as_in_process(tmp_path, connect):
    """The IRQ handler runs at each edge's exact tick, as with the part in-process."""
    want, want_r = in_process_pir_edges(tmp_path)
    with motion_host(tmp_path) as h:
        clock = VirtualClock()
        board = connect(h, clock)
        got, pir = _record_pir(board, clock)
        _run(clock, 80000)
        got_r = pir.read()
    assert not h.errors, h.errors
    assert got == want, (got, want)
    assert (65000, 1) in got and (72500, 0) in got  # rise at the event; fall hold_ms later
    assert (got_r.events_total, got_r.ignored) == (want_r.events_total, want_r.ignored)
    assert got_r.events_total == 1


def test_scheduled_events_run_at_their_tick_while_the_device_waits(tmp_path, connect):
    seen = []
    with BridgeHost(parts(tmp_path, pir=False)) as h:
        clock = VirtualClock()
        h.at(1234, lambda: seen.append(("a", h.clock.ticks_ms())))
        h.at(1234, lambda: seen.append(("b", h.clock.ticks_ms())))
        h.at(5000, lambda: seen.append(("c", h.clock.ticks_ms())))
        assert h.pending() == 3
        connect(h, clock)  # it learns the next event from every answer, the hello included

        _run(clock, 9000)
    assert seen == [("a", 1234), ("b", 1234), ("c", 5000)] and h.pending() == 0
    assert h.calls["S"] == 2  # the clock stopped at each event's tick to ask, nothing else


def test_a_failing_event_fails_the_device_call_and_is_kept(tmp_path, connect):
    with BridgeHost(parts(tmp_path)) as h:
        clock = SimClock()
        board = connect(h, clock)
        h.at(10, lambda: 1 / 0)
        clock.advance(20)
        with pytest.raises(RuntimeError, match="ZeroDivisionError"):
            board.uart.any()
        assert "ZeroDivisionError" in h.errors[0]


def _fake_host(answer):
    """A one-shot server that reads one request and sends `answer` (then closes)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def serve():
        conn, _ = srv.accept()
        conn.recv(8)
        conn.sendall(answer)
        conn.close()
        srv.close()

    threading.Thread(target=serve, daemon=True).start()
    return "127.0.0.1:%d" % srv.getsockname()[1]


def test_version_mismatch_names_both_versions():
    hello = bytes((0, 0, 2, 0, 0xFF, 0xFF, 0xFF, 0xFF, 9, 15))
    with pytest.raises(ValueError, match="version 9, this device 1"):
        Bridge(SimClock(), _fake_host(hello))


def test_a_host_that_hangs_up_mid_answer_is_a_loud_error():
    with pytest.raises(RuntimeError, match="closed the connection"):
        Bridge(SimClock(), _fake_host(bytes((0, 0, 2))))


DEVICE = """
import asyncio, json
from simulator.board import VirtualClock, bridged_board
from drivers.bme280 import BME280
from drivers.ld2410 import LD2410
from drivers.pir import PIR
from drivers.mq134 import MQ134

clock = VirtualClock()
board = bridged_board(clock, "", ADDRESS)
env = BME280(board.i2c, address=0x76, clock=clock)
radar = LD2410(board.uart, clock)
pir = PIR(board.pir_pin, clock, warmup_ms=60000)
gas = MQ134(board.gas_adc, clock, warmup_ms=0, divider_ratio=2.0)
edges = []
handler = pir._irq_cb


def record(p):
    edges.append((clock.ticks_ms(), p.value()))
    handler(p)


board.pir_pin.irq(handler=record, trigger=3)


async def sleep():
    await clock.sleep_ms_async(80000 - clock.ticks_ms())


async def main():
    sleeper = asyncio.create_task(sleep())
    await clock.run(until_ms=80000)
    await sleeper


asyncio.run(main())
radar.poll()
clock.advance(env.start_measurement())
r = env.read_measurement()
gas.set_environment(r.temperature_c, r.humidity_pct)  # as the app does
g = gas.read()
# A bus call allocates nothing on the device (the firmware's hot-path rule): heap locked.
import micropython
buf = bytearray(8)
micropython.heap_lock()
try:
    board.uart.any()
    board.i2c.readfrom_mem_into(0x76, 0xD0, buf)
    board.gas_adc.read_u16()
    board.pir_pin.value()
finally:
    micropython.heap_unlock()
print(json.dumps({"edges": edges, "t": r.temperature_c, "p": r.pressure_hpa,
                  "moving_cm": radar.read().moving_distance_cm, "ppm": g.ppm,
                  "events": pir.read().events_total}))
"""


def test_device_end_on_micropython(tmp_path):
    """The drivers on MicroPython, the parts here: truth read back, PIR edges at exact ticks.
    (The heap is generous: the drivers are compiled from source here, not run from ROMFS.)"""
    want, _ = in_process_pir_edges(tmp_path)
    with motion_host(tmp_path) as h:
        out = run_micropython("ADDRESS = %r\n" % h.address + DEVICE, heap="512K", timeout=60)
    assert not h.errors, h.errors
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert [tuple(e) for e in got["edges"]] == want
    assert got["events"] == 1 and got["moving_cm"] == 150
    assert abs(got["t"] - 22.0) < 0.02 and abs(got["p"] - 1005.0) < 0.1
    assert abs(got["ppm"] - 50.0) < 1.5
