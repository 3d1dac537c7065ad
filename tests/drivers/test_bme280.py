"""BME280/BMP280 driver against the simulated part: compensation, wire protocol, faults."""

from drivers.bme280 import (
    BME280,
    BME280Error,
    Calibration,
    compensate_humidity_q22_10,
    compensate_pressure_q24_8,
    compensate_t_fine,
    forced_wait_ms,
    temperature_centi_c,
)
from drivers.env import detect
from drivers.sensor import BAD, GOOD, SUSPECT, SensorError
from simulator.bme280 import DEFAULT_CALIBRATION, SimBME280, pack_calibration
from simulator.clock import SimClock
from simulator.i2c import SimI2C
from tests.support.mptest import close_to, raises

RUN_ON_MICROPYTHON = True

# The datasheet's worked example (sensors.md §1): bytes 0x88..0x9F of a BMP280.
EXAMPLE_TP = bytes.fromhex("706B4367 18FC7D8E 43D6D00B 270B8C00 F9FF8C3C F8C67017".replace(" ", ""))
EXAMPLE_H = bytes.fromhex("6A0100132903 1E".replace(" ", ""))  # typical H2..H6 at 0xE1..0xE7


def _example_calibration():
    tp = EXAMPLE_TP + b"\x00\x4b"  # 0xA0 unused, 0xA1 = dig_H1 = 75
    return Calibration(tp, EXAMPLE_H)


def _rig(chip_id=0x60):
    clock = SimClock(1000)
    bus = SimI2C()
    sim = bus.add(0x76, SimBME280(clock, chip_id=chip_id))
    return clock, bus, sim


def test_worked_example_temperature_is_bit_exact():
    cal = _example_calibration()
    t_fine = compensate_t_fine(519888, cal)
    assert t_fine == 128422
    assert temperature_centi_c(t_fine) == 2508


def test_worked_example_pressure_is_bit_exact():
    cal = _example_calibration()
    assert compensate_pressure_q24_8(415148, 128422, cal) == 25767233  # 100653.25 Pa
    assert compensate_pressure_q24_8(411257, 128422, cal) / 256 == 101324.9921875


def test_humidity_vectors_are_bit_exact():
    cal = _example_calibration()
    assert compensate_humidity_q22_10(25000, 128422, cal) == 27726
    assert compensate_humidity_q22_10(30000, 128422, cal) == 56317
    assert compensate_humidity_q22_10(35000, 128422, cal) == 84675


def test_temperature_vectors_smallest_code_per_value():
    cal = _example_calibration()
    for adc_t, centi in ((408360, -1000), (440056, 0), (503664, 2000), (519616, 2500)):
        assert temperature_centi_c(compensate_t_fine(adc_t, cal)) == centi
        assert temperature_centi_c(compensate_t_fine(adc_t - 1, cal)) < centi


def test_calibration_unpacks_the_example_words():
    cal = _example_calibration()
    got = (cal.dig_T1, cal.dig_T2, cal.dig_T3, cal.dig_P1, cal.dig_P2, cal.dig_P3)
    assert got == (27504, 26435, -1000, 36477, -10685, 3024)
    got = (cal.dig_P4, cal.dig_P5, cal.dig_P6, cal.dig_P7, cal.dig_P8, cal.dig_P9)
    assert got == (2855, 140, -7, 15500, -14600, 6000)
    got = (cal.dig_H1, cal.dig_H2, cal.dig_H3, cal.dig_H4, cal.dig_H5, cal.dig_H6)
    assert got == (75, 362, 0, 313, 50, 30)


def test_h4_h5_share_a_nibble_and_sign_extend_their_high_byte():
    values = DEFAULT_CALIBRATION[:15] + (-5, -100, -3)
    tp, h = pack_calibration(values)
    assert h[3:7] == b"\xff\xcb\xf9\xfd"  # E4 E5 E6 E7 (sensors.md §1 packing example)
    cal = Calibration(tp, h)
    assert (cal.dig_H4, cal.dig_H5, cal.dig_H6) == (-5, -100, -3)
    assert pack_calibration(DEFAULT_CALIBRATION)[0][:24] == EXAMPLE_TP


def test_pack_calibration_names_a_value_out_of_range():
    bad = DEFAULT_CALIBRATION[:15] + (4096, 50, 30)
    assert "dig_H4" in str(raises(ValueError, pack_calibration, bad))


def test_forced_wait_follows_appendix_9_1():
    assert forced_wait_ms(1, 4, 0) == 14  # 13.325 ms max, rounded up
    assert forced_wait_ms(16, 16, 16) == 113  # 112.8 ms
    assert forced_wait_ms(1, 1, 1) == 10  # 9.3 ms


def test_read_returns_the_truth_within_quantisation():
    clock, bus, sim = _rig()
    sensor = BME280(bus, clock=clock, osrs_p=4)
    sim.set_truth(21.37, 43.2, 987.65)
    r = sensor.read()
    assert r.quality == GOOD
    assert close_to(r.temperature_c, 21.37, 0.0051), r.temperature_c
    assert close_to(r.humidity_pct, 43.2, 0.006), r.humidity_pct
    assert close_to(r.pressure_hpa, 987.65, 0.003), r.pressure_hpa
    assert r is sensor.reading  # updated in place


def test_read_sleeps_the_datasheet_maximum_on_the_clock():
    clock, bus, _ = _rig()
    sensor = BME280(bus, clock=clock, osrs_t=2, osrs_p=16, osrs_h=1)
    before = clock.ticks_ms()
    sensor.read()
    assert clock.ticks_ms() - before == forced_wait_ms(2, 16, 1) == 47  # 46.1 ms


def test_split_api_returns_none_until_the_conversion_ends():
    clock, bus, sim = _rig()
    sensor = BME280(bus, clock=clock)
    sim.set_truth(-12.5, 80.0, 1040.0)
    wait = sensor.start_measurement()
    clock.advance(2)
    assert sensor.read_measurement() is None
    clock.advance(wait)
    r = sensor.read_measurement()
    assert close_to(r.temperature_c, -12.5, 0.0051)
    assert sim.conversions == 1


def test_wire_protocol_reset_then_ctrl_hum_before_ctrl_meas():
    clock, bus, sim = _rig()
    sensor = BME280(bus, clock=clock, osrs_t=2, osrs_p=4, osrs_h=8, iir_filter=4)
    assert sim.regs[0xF5] == 0x08  # filter 4 -> 010 in config[4:2]
    sensor.start_measurement()
    assert sim.regs[0xF2] == 0x04  # osrs_h x8
    assert sim.regs[0xF4] == (0x02 << 5) | (0x03 << 2) | 0x01  # x2, x4, forced


def test_conversion_uses_ctrl_hum_written_before_it():
    # ctrl_hum is latched only by a ctrl_meas write: the sim enforces it, so humidity present
    # proves the driver writes them in the datasheet's order.
    clock, bus, _sim = _rig()
    sensor = BME280(bus, clock=clock)
    assert sensor.read().raw_humidity != 0x8000


def test_bmp280_has_no_humidity():
    clock, bus, sim = _rig(chip_id=0x58)
    sensor = BME280(bus, clock=clock)
    assert sensor.name == "BMP280" and not sensor.has_humidity
    sim.set_truth(30.0, 70.0, 1000.0)
    r = sensor.read()
    assert r.humidity_pct is None and r.raw_humidity is None
    assert close_to(r.pressure_hpa, 1000.0, 0.003)
    assert r.quality == GOOD
    assert sensor.wait_ms == forced_wait_ms(1, 1, 0)


def test_skipped_pressure_is_none_not_bad():
    clock, bus, _ = _rig()
    r = BME280(bus, clock=clock, osrs_p=0).read()
    assert r.pressure_hpa is None and r.quality == GOOD


def test_reading_without_a_conversion_is_bad():
    clock, bus, _ = _rig()
    sensor = BME280(bus, clock=clock)
    r = sensor.read_measurement()  # data registers still hold their reset value 0x80000
    assert r.quality == BAD and r.temperature_c is None and r.raw_temperature == 0x80000


def test_out_of_rated_range_is_suspect():
    clock, bus, sim = _rig()
    sensor = BME280(bus, clock=clock)
    sim.set_truth(95.0, 20.0, 1000.0)
    assert sensor.read().quality == SUSPECT
    sim.set_truth(20.0, 20.0, 250.0)
    assert sensor.read().quality == SUSPECT
    sim.set_truth(20.0, 20.0, 1000.0)
    assert sensor.read().quality == GOOD


def test_stuck_sensor_repeats_its_last_codes():
    clock, bus, sim = _rig()
    sensor = BME280(bus, clock=clock)
    sim.set_truth(20.0, 50.0, 1000.0)
    first = sensor.read().copy()
    sim.stuck = True
    sim.set_truth(30.0, 60.0, 900.0)
    again = sensor.read()
    assert again.raw_temperature == first.raw_temperature
    assert again.temperature_c == first.temperature_c


def test_wrong_chip_id_is_named_in_the_error():
    clock, bus, _ = _rig(chip_id=0x61)
    exc = raises(BME280Error, BME280, bus, clock=clock)
    assert "0x61" in str(exc) and "0x76" in str(exc)
    assert isinstance(exc, SensorError)


def test_absent_device_error_keeps_the_bus_error():
    clock, bus, _ = _rig()
    exc = raises(BME280Error, BME280, bus, address=0x77, clock=clock)
    assert isinstance(exc.cause, OSError) and exc.cause.args[0] == 19
    assert "0x77" in str(exc)


def test_nack_during_read_raises_driver_error():
    clock, bus, sim = _rig()
    sensor = BME280(bus, clock=clock)
    sim.nack_next(1)
    exc = raises(BME280Error, sensor.read)
    assert exc.cause.args[0] == 19
    assert sensor.read().quality == GOOD  # intermittent: the next read works


def test_bad_arguments_raise_value_error():
    clock, bus, _ = _rig()
    assert "osrs_p" in str(raises(ValueError, BME280, bus, clock=clock, osrs_p=3))
    assert "iir_filter" in str(raises(ValueError, BME280, bus, clock=clock, iir_filter=1))
    assert "osrs_t" in str(raises(ValueError, BME280, bus, clock=clock, osrs_t=0))


def test_detect_finds_the_bme280_at_either_address():
    clock = SimClock()
    bus = SimI2C()
    bus.add(0x77, SimBME280(clock, chip_id=0x58))
    sensor = detect(bus, clock=clock)
    assert isinstance(sensor, BME280) and sensor.address == 0x77 and sensor.name == "BMP280"


def test_bus_timeout_is_kept_as_the_cause():
    clock, bus, sim = _rig()
    sensor = BME280(bus, clock=clock)
    sim.fault_errno = 116  # ETIMEDOUT: SDA held low, as the ESP32 port reports it
    sim.nack = True
    exc = raises(BME280Error, sensor.read)
    assert exc.cause.args[0] == 116 and "116" in str(exc)


def test_sim_takes_register_data_pairs_and_ignores_a_wrong_reset_word():
    clock, bus, _ = _rig()
    clock.advance(5)
    bus.writeto(0x76, b"\xf2\x01\xf4\x25")  # ctrl_hum x1, then ctrl_meas T x1 P x1 forced
    assert bus.readfrom_mem(0x76, 0xF3, 1) == b"\x08"  # measuring
    clock.advance(10)
    data = bus.readfrom_mem(0x76, 0xF7, 8)
    assert data[6:8] != b"\x80\x00" and bus.readfrom_mem(0x76, 0xF4, 1) == b"\x24"  # back to sleep
    bus.writeto_mem(0x76, 0xE0, b"\x01")  # only 0xB6 resets
    assert bus.readfrom_mem(0x76, 0xF7, 8) == data
    bus.writeto_mem(0x76, 0xE0, b"\xb6")
    assert bus.readfrom_mem(0x76, 0xF7, 8) == b"\x80\x00\x00\x80\x00\x00\x80\x00"
