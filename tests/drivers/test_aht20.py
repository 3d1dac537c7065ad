"""AHT20 driver against the simulated part: frame decoding, CRC, init, busy polling, faults."""

from drivers.aht20 import AHT20, AHT20Error
from drivers.env import crc8, detect
from drivers.sensor import BAD, GOOD, SUSPECT, SensorError
from simulator.aht20 import SimAHT20, humidity_code, temperature_code
from simulator.clock import SimClock
from simulator.i2c import SimI2C
from tests.support.mptest import close_to, raises

RUN_ON_MICROPYTHON = True


class FrameBus:
    """A bus that answers every read with one captured frame (to decode real bytes)."""

    def __init__(self, frame):
        self.frame = frame

    def writeto(self, addr, buf):
        return len(buf)

    def readfrom_into(self, addr, buf):
        for i in range(len(buf)):
            buf[i] = self.frame[i]


def _rig(calibrated=True):
    clock = SimClock(40)
    bus = SimI2C()
    sim = bus.add(0x38, SimAHT20(clock, calibrated=calibrated))
    return clock, bus, sim


def test_crc_of_captured_frames():
    assert crc8(bytes.fromhex("1C269A7642E7")) == 0x76
    assert crc8(bytes.fromhex("1893AC952AC5")) == 0xB3


def test_captured_frame_decodes_to_its_published_values():
    sensor = AHT20(FrameBus(bytes.fromhex("1893AC952AC5B3")), clock=SimClock())
    r = sensor.read()
    assert r.quality == GOOD
    assert close_to(r.humidity_pct, 57.69, 0.005), r.humidity_pct
    assert close_to(r.temperature_c, 14.59, 0.005), r.temperature_c
    assert r.raw_humidity == 0x93AC9 and r.raw_temperature == 0x52AC5


def test_captured_frame_with_a_flipped_bit_is_bad():
    sensor = AHT20(FrameBus(bytes.fromhex("1893AC952AC4B3")), clock=SimClock())
    r = sensor.read()
    assert r.quality == BAD and r.temperature_c is None and r.humidity_pct is None


def test_busy_frame_is_polled_until_it_clears():
    clock, bus, sim = _rig()
    sensor = AHT20(bus, clock=clock)
    sim.set_truth(19.0, 61.5)
    assert sensor.start_measurement() == 80
    clock.advance(40)
    assert sensor.read_measurement() is None
    clock.advance(40)
    r = sensor.read_measurement()
    assert close_to(r.temperature_c, 19.0, 200 / 2**20), r.temperature_c
    assert close_to(r.humidity_pct, 61.5, 100 / 2**20), r.humidity_pct
    assert r.raw_humidity == humidity_code(61.5) and r.raw_temperature == temperature_code(19.0)


def test_read_sends_trigger_and_waits_80_ms():
    clock, bus, sim = _rig()
    sensor = AHT20(bus, clock=clock)
    before = clock.ticks_ms()
    sensor.read()
    assert sim.commands == [b"\xac\x33\x00"]
    assert clock.ticks_ms() - before == 80


def test_uncalibrated_part_gets_the_init_command():
    clock, bus, sim = _rig(calibrated=False)
    AHT20(bus, clock=clock)
    assert sim.commands == [b"\xbe\x08\x00"] and sim.calibrated


def test_part_that_never_calibrates_is_refused():
    class Stubborn(SimAHT20):
        def write(self, data):
            self.commands.append(bytes(data))  # ignores 0xBE, like an AHT10

    clock = SimClock()
    bus = SimI2C()
    bus.add(0x38, Stubborn(clock, calibrated=False))
    exc = raises(AHT20Error, AHT20, bus, clock=clock)
    assert "uncalibrated" in str(exc) and "status 0x10" in str(exc)


def test_hung_part_raises_after_polling():
    clock, bus, sim = _rig()
    sensor = AHT20(bus, clock=clock)
    sim.hang = True
    assert "busy" in str(raises(AHT20Error, sensor.read))


def test_crc_fault_and_range():
    clock, bus, sim = _rig()
    sensor = AHT20(bus, clock=clock)
    sim.set_truth(90.0, 20.0)
    assert sensor.read().quality == SUSPECT
    sim.corrupt_crc = True
    assert sensor.read().quality == BAD


def test_stuck_sensor_repeats_codes():
    clock, bus, sim = _rig()
    sensor = AHT20(bus, clock=clock)
    sim.set_truth(5.0, 10.0)
    first = sensor.read().copy()
    sim.stuck = True
    sim.set_truth(25.0, 90.0)
    assert sensor.read().temperature_c == first.temperature_c


def test_nack_is_a_driver_error_carrying_the_os_error():
    clock, bus, sim = _rig()
    sensor = AHT20(bus, clock=clock)
    sim.nack = True
    exc = raises(AHT20Error, sensor.read)
    assert isinstance(exc, SensorError) and exc.cause.args[0] == 19
    assert "0x38" in str(exc)


def test_detect_falls_back_to_the_aht20():
    clock, bus, _ = _rig()
    assert isinstance(detect(bus, clock=clock), AHT20)
