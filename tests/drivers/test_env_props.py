"""Properties of the environment drivers and their simulated parts (hypothesis, CPython only)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.aht20 import AHT20
from drivers.bme280 import (
    BME280,
    Calibration,
    compensate_humidity_q22_10,
    compensate_pressure_q24_8,
    compensate_t_fine,
    temperature_centi_c,
)
from drivers.env import crc8, detect
from drivers.sensor import BAD, GOOD, SUSPECT, SensorError
from drivers.sht3x import SHT3x
from simulator.aht20 import SimAHT20
from simulator.bme280 import SimBME280, pack_calibration
from simulator.clock import SimClock
from simulator.i2c import SimI2C
from simulator.sht3x import SimSHT3x
from tests.drivers.test_aht20 import FrameBus

# Trim values drawn around those real parts carry (datasheet example, Bosch API defaults,
# published dumps); far outside them the compensation stops being monotonic, as on no real part.
calibrations = st.tuples(
    st.integers(26000, 29000),  # T1
    st.integers(25000, 28000),  # T2
    st.integers(-1000, 1000),  # T3
    st.integers(36000, 38500),  # P1
    st.integers(-11000, -10000),  # P2
    st.integers(3000, 3300),  # P3
    st.integers(2000, 9000),  # P4
    st.integers(-200, 200),  # P5
    st.integers(-7, 7),  # P6
    st.integers(9900, 15500),  # P7
    st.integers(-14600, -10000),  # P8
    st.integers(4000, 6000),  # P9
    st.integers(0, 100),  # H1
    st.integers(300, 400),  # H2
    st.integers(0, 20),  # H3
    st.integers(250, 400),  # H4
    st.integers(0, 60),  # H5
    st.integers(20, 40),  # H6
)
temperatures = st.floats(-40.0, 85.0)
humidities = st.floats(0.0, 100.0)
pressures = st.floats(300.0, 1100.0)


def _bme(calibration, chip_id=0x60):
    clock = SimClock()
    bus = SimI2C()
    sim = bus.add(0x76, SimBME280(clock, chip_id=chip_id, calibration=calibration))
    return BME280(bus, clock=clock), sim


@settings(max_examples=150, deadline=None)
@given(calibrations, temperatures, humidities, pressures)
def test_simulated_bme280_reads_back_the_truth_within_quantisation(cal_values, t, h, p):
    sensor, sim = _bme(cal_values)
    sim.set_truth(t, h, p)
    r = sensor.read()
    cal = sensor.calibration
    adc_t, adc_p, adc_h = r.raw_temperature, r.raw_pressure, r.raw_humidity
    t_fine = compensate_t_fine(adc_t, cal)
    # One step of each code near the answer, plus the output's own resolution.
    t_step = (compensate_t_fine(adc_t + 16, cal) - t_fine) / 5120
    p_step = abs(
        compensate_pressure_q24_8(adc_p + 1, t_fine, cal)
        - compensate_pressure_q24_8(adc_p, t_fine, cal)
    )
    h_step = compensate_humidity_q22_10(adc_h + 2, t_fine, cal) - compensate_humidity_q22_10(
        adc_h, t_fine, cal
    )
    assert abs(r.temperature_c - t) <= 0.005 + t_step, (r.temperature_c, t)
    assert abs(r.pressure_hpa - p) <= (p_step + 1) / 25600, (r.pressure_hpa, p)
    assert abs(r.humidity_pct - h) <= (h_step + 1) / 1024, (r.humidity_pct, h)
    # A truth on the edge of the rated range may read a quantum outside it: then SUSPECT.
    rated = -40.0 <= r.temperature_c <= 85.0 and 300.0 <= r.pressure_hpa <= 1100.0
    assert r.quality == (GOOD if rated else SUSPECT)


@settings(max_examples=60, deadline=None)
@given(calibrations, temperatures, pressures)
def test_simulated_bmp280_reads_back_temperature_and_pressure(cal_values, t, p):
    sensor, sim = _bme(cal_values, chip_id=0x58)
    sim.set_truth(t, 50.0, p)
    r = sensor.read()
    assert abs(r.temperature_c - t) <= 0.006
    assert abs(r.pressure_hpa - p) <= 0.005
    assert r.humidity_pct is None


@given(calibrations)
def test_calibration_packing_round_trips(values):
    cal = Calibration(*pack_calibration(values))
    names = ["dig_T%d" % i for i in (1, 2, 3)] + ["dig_P%d" % i for i in range(1, 10)]
    names += ["dig_H%d" % i for i in range(1, 7)]
    assert tuple(getattr(cal, n) for n in names) == values


@given(st.integers(-2048, 2047), st.integers(-2048, 2047), st.integers(-128, 127))
def test_h4_h5_packing_round_trips_over_their_whole_12_bit_range(h4, h5, h6):
    values = (27504, 26435, -1000, 36477, -10685, 3024, 2855, 140, -7, 15500, -14600, 6000)
    values += (75, 362, 0, h4, h5, h6)
    cal = Calibration(*pack_calibration(values))
    assert (cal.dig_H4, cal.dig_H5, cal.dig_H6) == (h4, h5, h6)


def test_datasheet_worked_example_reproduces_exactly():
    tp = bytes.fromhex("706B436718FC7D8E43D6D00B270B8C00F9FF8C3CF8C67017") + b"\x00\x00"
    cal = Calibration(tp, None)
    t_fine = compensate_t_fine(519888, cal)
    assert (t_fine, temperature_centi_c(t_fine)) == (128422, 2508)
    assert compensate_pressure_q24_8(415148, t_fine, cal) == 25767233
    # The floating-point form of the same datasheet gives 25.0825 °C / 100653.27 Pa.
    assert abs(temperature_centi_c(t_fine) / 100 - 25.0825) < 0.005
    assert abs(25767233 / 256 - 100653.27) < 0.03


@given(st.integers(0, 0xFFFFF), calibrations)
def test_temperature_never_falls_as_adc_t_rises(adc_t, values):
    cal = Calibration(*pack_calibration(values))
    assert compensate_t_fine(min(adc_t + 1, 0xFFFFF), cal) >= compensate_t_fine(adc_t, cal)


@given(st.binary(min_size=8, max_size=8))
def test_any_bme280_burst_decodes_or_is_flagged(data):
    sensor, sim = _bme(
        (
            27504,
            26435,
            -1000,
            36477,
            -10685,
            3024,
            2855,
            140,
            -7,
            15500,
            -14600,
            6000,
            75,
            362,
            0,
            313,
            50,
            30,
        )
    )
    sim.regs[0xF7:0xFF] = data
    r = sensor.read_measurement()
    assert r.quality in (GOOD, SUSPECT, BAD)
    no_data = (data[3] << 12 | data[4] << 4 | data[5] >> 4) == 0x80000
    no_data |= (data[0] << 12 | data[1] << 4 | data[2] >> 4) == 0x80000
    no_data |= (data[6] << 8 | data[7]) == 0x8000
    assert (r.quality == BAD) == no_data


def _crc8_by_polynomial_division(data):
    """CRC-8 the long way: init 0xFF folds into the first byte; remainder mod x^8+x^5+x^4+1."""
    if not data:
        return 0xFF
    msg = int.from_bytes(bytes([data[0] ^ 0xFF]) + data[1:], "big") << 8
    poly = 0x131
    for bit in range(msg.bit_length() - 1, 7, -1):
        if msg >> bit & 1:
            msg ^= poly << (bit - 8)
    return msg


@given(st.binary(max_size=16))
def test_crc8_matches_polynomial_division(data):
    assert crc8(data) == _crc8_by_polynomial_division(data)


@given(st.binary(min_size=1, max_size=16))
def test_crc8_of_message_plus_its_crc_is_zero(data):
    assert crc8(data + bytes([crc8(data)])) == 0


@given(st.binary(min_size=6, max_size=6))
def test_any_sht3x_frame_is_good_only_when_both_crcs_match(frame):
    status = b"\x80\x10\xe1"
    sensor = SHT3x(FrameBus(status + b"\x00\x00\x00"), clock=SimClock())
    sensor._i2c.frame = frame
    r = sensor.read()
    crcs_ok = crc8(frame, 0, 2) == frame[2] and crc8(frame, 3, 5) == frame[5]
    assert (r.quality != BAD) == crcs_ok
    assert r.raw_temperature == frame[0] << 8 | frame[1]


@given(st.binary(min_size=7, max_size=7))
def test_any_aht20_frame_is_none_busy_bad_or_decoded(frame):
    sensor = AHT20(FrameBus(b"\x18" + bytes(6)), clock=SimClock())
    sensor._i2c.frame = frame
    r = sensor.read_measurement()
    if frame[0] & 0x80:
        assert r is None
    elif crc8(frame, 0, 6) != frame[6]:
        assert r.quality == BAD
    else:
        assert -50.0 <= r.temperature_c < 150.0 and 0.0 <= r.humidity_pct < 100.0


@given(st.floats(-40.0, 125.0), humidities)
def test_simulated_sht3x_round_trips(t, h):
    clock = SimClock()
    bus = SimI2C()
    sim = bus.add(0x44, SimSHT3x(clock))
    sensor = SHT3x(bus, clock=clock)
    sim.set_truth(t, h)
    r = sensor.read()
    assert abs(r.temperature_c - t) <= 175 / 65535 / 2 + 1e-9
    assert abs(r.humidity_pct - h) <= 100 / 65535 / 2 + 1e-9


@given(temperatures, humidities)
def test_simulated_aht20_round_trips(t, h):
    clock = SimClock()
    bus = SimI2C()
    sim = bus.add(0x38, SimAHT20(clock))
    sensor = AHT20(bus, clock=clock)
    sim.set_truth(t, h)
    r = sensor.read()
    assert abs(r.temperature_c - t) <= 200 / 2**20 / 2 + 1e-9
    assert abs(r.humidity_pct - min(h, 100 * 0xFFFFF / 2**20)) <= 100 / 2**20 / 2 + 1e-9


# detect(): which part wins, and what the error says when none does.


def test_detect_prefers_the_bme280_when_several_answer():
    clock = SimClock()
    bus = SimI2C()
    bus.add(0x38, SimAHT20(clock))
    bus.add(0x44, SimSHT3x(clock))
    bus.add(0x77, SimBME280(clock))
    assert isinstance(detect(bus, clock=clock), BME280)


def test_detect_skips_a_refused_part_and_takes_the_next():
    clock = SimClock()
    bus = SimI2C()
    bus.add(0x76, SimBME280(clock, chip_id=0x61))
    bus.add(0x44, SimSHT3x(clock))
    assert isinstance(detect(bus, clock=clock), SHT3x)


def test_detect_error_lists_what_answered_where():
    clock = SimClock()
    bus = SimI2C()
    bus.add(0x76, SimBME280(clock, chip_id=0x61))
    bus.add(0x3C, SimAHT20(clock))
    with pytest.raises(SensorError) as info:
        detect(bus, clock=clock)
    message = str(info.value)
    assert "0x76: chip id 0x61" in message
    assert "other devices answered at 0x3c" in message


def test_detect_on_an_empty_bus_says_check_the_wiring():
    with pytest.raises(SensorError, match=r"no device answered.*wiring"):
        detect(SimI2C(), clock=SimClock())


def test_detect_reports_a_failing_scan_with_its_cause():
    class DeadBus:
        def scan(self):
            raise OSError(116)

    with pytest.raises(SensorError) as info:
        detect(DeadBus())
    assert info.value.cause.args[0] == 116
