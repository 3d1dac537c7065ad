"""SHT3x driver against the simulated part: CRC, conversions, commands on the wire, faults."""

from drivers.env import EnvReading, crc8, detect
from drivers.sensor import BAD, GOOD, SUSPECT, SensorError
from drivers.sht3x import SHT3x, SHT3xError
from simulator.clock import SimClock
from simulator.i2c import SimI2C
from simulator.sht3x import SimSHT3x, humidity_code, temperature_code
from tests.support.mptest import close_to, raises

RUN_ON_MICROPYTHON = True


def _rig(address=0x44):
    clock = SimClock(500)
    bus = SimI2C()
    sim = bus.add(address, SimSHT3x(clock))
    return clock, bus, sim


def test_crc8_datasheet_and_computed_vectors():
    assert crc8(b"\xbe\xef") == 0x92  # SHT3x datasheet 4.12
    assert crc8(b"\x00\x00") == 0x81
    assert crc8(b"\x66\x66") == 0x93
    assert crc8(b"\x80\x00") == 0xA2
    assert crc8(b"\x80\x10") == 0xE1  # status word after reset
    assert crc8(b"\x11\xbe\xef\x22", 1, 3) == 0x92  # a slice without slicing


def test_inverse_conversion_vectors():
    assert temperature_code(25.0) == 0x6666
    assert humidity_code(50.0) == 0x8000
    assert temperature_code(200.0) == 0xFFFF and humidity_code(-3.0) == 0


def test_init_breaks_resets_and_reads_status():
    clock, bus, sim = _rig()
    sensor = SHT3x(bus, clock=clock)
    assert sim.commands == [0x3093, 0x30A2, 0xF32D]
    assert sensor.status() == 0x8010


def test_read_returns_the_truth_within_quantisation():
    clock, bus, sim = _rig()
    sensor = SHT3x(bus, clock=clock)
    sim.set_truth(22.5, 48.0)
    r = sensor.read()
    assert isinstance(r, EnvReading) and r is sensor.reading
    assert r.quality == GOOD and r.pressure_hpa is None
    assert close_to(r.temperature_c, 22.5, 175 / 65535 / 2 + 1e-9), r.temperature_c
    assert close_to(r.humidity_pct, 48.0, 100 / 65535 / 2 + 1e-9), r.humidity_pct
    assert r.raw_temperature == temperature_code(22.5)


def test_repeatability_picks_command_and_wait():
    for name, command, wait in (("high", 0x2400, 16), ("medium", 0x240B, 7), ("low", 0x2416, 5)):
        clock, bus, sim = _rig()
        sensor = SHT3x(bus, clock=clock, repeatability=name)
        before = clock.ticks_ms()
        sensor.read()
        assert sim.commands[-1] == command
        assert clock.ticks_ms() - before == wait
    clock, bus, _ = _rig()
    assert "'ultra'" in str(raises(ValueError, SHT3x, bus, clock=clock, repeatability="ultra"))


def test_read_before_the_result_is_ready_is_a_nack():
    clock, bus, _ = _rig()
    sensor = SHT3x(bus, clock=clock)
    sensor.start_measurement()
    clock.advance(3)
    exc = raises(SHT3xError, sensor.read_measurement)
    assert exc.cause.args[0] == 19
    clock.advance(13)
    assert sensor.read_measurement().quality == GOOD


def test_crc_mismatch_makes_the_reading_bad():
    clock, bus, sim = _rig()
    sensor = SHT3x(bus, clock=clock)
    sim.corrupt_crc = True
    r = sensor.read()
    assert r.quality == BAD and r.temperature_c is None and r.humidity_pct is None
    assert r.raw_temperature == temperature_code(25.0)  # raw kept for diagnosis


def test_status_with_bad_crc_refuses_the_part():
    clock, bus, sim = _rig()
    sim.corrupt_crc = True
    exc = raises(SHT3xError, SHT3x, bus, clock=clock)
    assert "CRC" in str(exc) and "0x44" in str(exc)


def test_above_rated_range_is_suspect():
    clock, bus, sim = _rig()
    sensor = SHT3x(bus, clock=clock)
    sim.set_truth(128.0, 5.0)
    assert sensor.read().quality == SUSPECT


def test_stuck_sensor_repeats_codes():
    clock, bus, sim = _rig()
    sensor = SHT3x(bus, clock=clock)
    sim.set_truth(10.0, 30.0)
    first = sensor.read().raw_temperature
    sim.stuck = True
    sim.set_truth(30.0, 70.0)
    assert sensor.read().raw_temperature == first


def test_heater_sets_status_bit_13_and_clear_status_drops_reset_bit():
    clock, bus, _ = _rig()
    sensor = SHT3x(bus, clock=clock)
    sensor.heater(True)
    assert sensor.status() & 0x2000
    sensor.heater(False)
    sensor.clear_status()
    assert sensor.status() == 0x0000


def test_missing_part_and_intermittent_nack():
    clock, bus, sim = _rig()
    exc = raises(SHT3xError, SHT3x, bus, address=0x45, clock=clock)
    assert exc.cause.args[0] == 19 and isinstance(exc, SensorError)
    sensor = SHT3x(bus, clock=clock)
    sim.nack_next(1)
    raises(SHT3xError, sensor.read)
    assert sensor.read().quality == GOOD


def test_clock_stretching_command_holds_the_read():
    clock, bus, _sim = _rig()
    bus.writeto(0x44, b"\x2c\x06")  # high repeatability, stretching: no NACK, the bus waits
    before = clock.ticks_ms()
    data = bus.readfrom(0x44, 6)
    assert clock.ticks_ms() - before == 15
    assert crc8(data, 0, 2) == data[2] and crc8(data, 3, 5) == data[5]


def test_unknown_command_sets_not_processed_bit():
    _clock, bus, sim = _rig()
    bus.writeto(0x44, b"\x21\x30")  # periodic mode: not modelled
    assert sim.status & 0x0002


def test_detect_finds_an_sht3x_at_0x45():
    clock, bus, _ = _rig(address=0x45)
    sensor = detect(bus, clock=clock)
    assert isinstance(sensor, SHT3x) and sensor.address == 0x45
