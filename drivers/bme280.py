"""Bosch BME280 (temperature, humidity, pressure) and BMP280 (no humidity) over I2C, forced mode.

Compensation is the datasheet's integer code (BST-BME280-DS002 section 4.2.3, rev 1.1 of the
code), bit-exact; values come back as floats derived from its integer results.

    from drivers.bme280 import BME280
    sensor = BME280(i2c, address=0x76, osrs_h=1, osrs_p=4)
    r = sensor.read()            # r.temperature_c, r.humidity_pct, r.pressure_hpa, r.quality
"""

import struct

from drivers.compat import SYSTEM_CLOCK, const
from drivers.env import EnvReading
from drivers.sensor import BAD, GOOD, SUSPECT, SensorError

_REG_CALIB_TP = const(0x88)  # 0x88..0x9F T/P trim words, 0xA0 unused, 0xA1 dig_H1
_CALIB_TP_LEN = const(26)
_REG_ID = const(0xD0)
_REG_RESET = const(0xE0)
_REG_CALIB_H = const(0xE1)  # 0xE1..0xE7 dig_H2..dig_H6 (BME280 only)
_CALIB_H_LEN = const(7)
_REG_CTRL_HUM = const(0xF2)
_REG_STATUS = const(0xF3)
_REG_CTRL_MEAS = const(0xF4)
_REG_CONFIG = const(0xF5)
_REG_DATA = const(0xF7)  # press[3] temp[3] hum[2]: one burst, shadowed so all from one conversion

_RESET_WORD = const(0xB6)  # any other value written to 0xE0 is ignored
_STATUS_MEASURING = const(0x08)
_STATUS_IM_UPDATE = const(0x01)
_MODE_FORCED = const(0x01)
_NO_DATA_20 = const(0x80000)  # reset value of a 20-bit channel: skipped or never converted
_NO_DATA_16 = const(0x8000)
_STARTUP_MS = const(2)  # datasheet table 1: start-up time after power-on or soft reset
_POLL_MS = const(1)
_POLL_TRIES = const(20)

CHIP_ID_BME280 = 0x60
CHIP_IDS_BMP280 = (0x58, 0x56, 0x57)  # production, then the two sample revisions

# Oversampling factor -> 3-bit osrs field (datasheet tables 20, 23, 24); index = field value.
_OVERSAMPLING = (0, 1, 2, 4, 8, 16)
_FILTER = (0, 2, 4, 8, 16)


class BME280Error(SensorError):
    """The BME280/BMP280 did not answer, is another part, or gave an unusable calibration."""


class Calibration:
    """The trimming parameters from NVM (datasheet table 16), decoded once.

    `tp` is the 26 bytes at 0x88..0xA1; `h` the 7 bytes at 0xE1..0xE7 (None on a BMP280).
    """

    def __init__(self, tp, h=None):
        (
            self.dig_T1,
            self.dig_T2,
            self.dig_T3,
            self.dig_P1,
            self.dig_P2,
            self.dig_P3,
            self.dig_P4,
            self.dig_P5,
            self.dig_P6,
            self.dig_P7,
            self.dig_P8,
            self.dig_P9,
        ) = struct.unpack("<HhhHhhhhhhhh", bytes(tp[:24]))
        self.dig_H1 = tp[25]
        if h is None:
            self.dig_H2 = self.dig_H3 = self.dig_H4 = self.dig_H5 = self.dig_H6 = 0
            return
        self.dig_H2 = _s16(h[0] | h[1] << 8)
        self.dig_H3 = h[2]
        # H4 and H5 are 12-bit and share 0xE5: H4 = E4[7:0]<<4 | E5[3:0], H5 = E6[7:0]<<4 | E5[7:4].
        # The high byte is signed (Bosch API casts it to int8; Adafruit_BME280_Library #44).
        self.dig_H4 = _s8(h[3]) * 16 + (h[4] & 0x0F)
        self.dig_H5 = _s8(h[5]) * 16 + (h[4] >> 4)
        self.dig_H6 = _s8(h[6])


def _s8(b):
    return b - 256 if b > 127 else b


def _s16(w):
    return w - 65536 if w > 32767 else w


def compensate_t_fine(adc_t, cal):
    """t_fine, the fine temperature the P and H formulas need (°C = t_fine / 5120)."""
    var1 = (((adc_t >> 3) - (cal.dig_T1 << 1)) * cal.dig_T2) >> 11
    d = (adc_t >> 4) - cal.dig_T1
    var2 = (((d * d) >> 12) * cal.dig_T3) >> 14
    return var1 + var2


def temperature_centi_c(t_fine):
    """Temperature in 0.01 °C, as the datasheet's BME280_compensate_T_int32 returns it."""
    return (t_fine * 5 + 128) >> 8


def compensate_pressure_q24_8(adc_p, t_fine, cal):
    """Pressure in Pa as Q24.8 (Pa * 256): the datasheet's 64-bit BME280_compensate_P_int64.

    Python ints do not overflow; the values match C for every input the sensor can produce.
    Allocates long ints on MicroPython: never call it from an ISR.
    """
    var1 = t_fine - 128000
    var2 = var1 * var1 * cal.dig_P6
    var2 += (var1 * cal.dig_P5) << 17
    var2 += cal.dig_P4 << 35
    var1 = ((var1 * var1 * cal.dig_P3) >> 8) + ((var1 * cal.dig_P2) << 12)
    var1 = (((1 << 47) + var1) * cal.dig_P1) >> 33
    if var1 == 0:
        return 0  # the datasheet's guard against division by zero
    p = 1048576 - adc_p
    num = ((p << 31) - var2) * 3125
    # C's `/` truncates toward zero; Python's `//` floors: differ only for a negative quotient.
    if (num < 0) != (var1 < 0):
        p = -((-num) // var1) if num < 0 else -(num // -var1)
    else:
        p = num // var1
    var1 = (cal.dig_P9 * (p >> 13) * (p >> 13)) >> 25
    var2 = (cal.dig_P8 * p) >> 19
    return ((p + var1 + var2) >> 8) + (cal.dig_P7 << 4)


def compensate_humidity_q22_10(adc_h, t_fine, cal):
    """Relative humidity as Q22.10 (%RH * 1024): the datasheet's BME280_compensate_H_int32."""
    x = t_fine - 76800
    m = ((adc_h << 14) - (cal.dig_H4 << 20) - cal.dig_H5 * x + 16384) >> 15
    s = ((x * cal.dig_H6) >> 10) * (((x * cal.dig_H3) >> 11) + 32768)
    n = ((((s >> 10) + 2097152) * cal.dig_H2) + 8192) >> 14
    x = m * n
    x -= ((((x >> 15) * (x >> 15)) >> 7) * cal.dig_H1) >> 4
    if x < 0:
        x = 0
    elif x > 419430400:
        x = 419430400
    return x >> 12


def forced_wait_ms(osrs_t, osrs_p, osrs_h):
    """Maximum forced-mode conversion time in whole ms (datasheet appendix 9.1, t_measure,max)."""
    us = 1250 + 2300 * osrs_t
    if osrs_p:
        us += 2300 * osrs_p + 575
    if osrs_h:
        us += 2300 * osrs_h + 575
    return (us + 999) // 1000


def _field(value, allowed, what):
    for code in range(len(allowed)):
        if allowed[code] == value:
            return code
    raise ValueError("%s must be one of %s, got %r" % (what, allowed, value))


class BME280:
    """A BME280 or BMP280 (told apart by chip id) on an I2C bus, read in forced mode.

    Oversampling arguments are factors (0 skips the channel, else 1, 2, 4, 8, 16); `iir_filter`
    is the IIR coefficient (0 off, 2, 4, 8, 16). The constructor soft-resets the part and reads
    its calibration once. Raises BME280Error when nothing answers or the chip id is foreign.
    """

    def __init__(
        self, i2c, address=0x76, clock=SYSTEM_CLOCK, osrs_t=1, osrs_p=1, osrs_h=1, iir_filter=0
    ):
        if osrs_t == 0:
            raise ValueError("osrs_t cannot be 0: pressure and humidity need the temperature")
        self._ctrl_meas = (
            _field(osrs_t, _OVERSAMPLING, "osrs_t") << 5
            | _field(osrs_p, _OVERSAMPLING, "osrs_p") << 2
            | _MODE_FORCED
        )
        self._ctrl_hum = _field(osrs_h, _OVERSAMPLING, "osrs_h")
        config = _field(iir_filter, _FILTER, "iir_filter") << 2
        self._i2c = i2c
        self.address = address
        self._clock = clock
        self._byte = bytearray(1)
        self._data = bytearray(8)
        self.reading = EnvReading()

        chip_id = self._read_byte(_REG_ID, "chip id")
        if chip_id == CHIP_ID_BME280:
            self.has_humidity = True
            self.name = "BME280"
        elif chip_id in CHIP_IDS_BMP280:
            self.has_humidity = False
            self.name = "BMP280"
        else:
            raise BME280Error(
                "chip id 0x%02x at 0x%02x is neither BME280 (0x60) nor BMP280 (0x58); "
                "check the part or the address" % (chip_id, address)
            )
        self.chip_id = chip_id
        self._measure_h = self.has_humidity and osrs_h > 0
        self._measure_p = osrs_p > 0
        self.wait_ms = forced_wait_ms(osrs_t, osrs_p, osrs_h if self.has_humidity else 0)

        self._write_byte(_REG_RESET, _RESET_WORD)
        self._clock.sleep_ms(_STARTUP_MS)
        for _ in range(_POLL_TRIES):  # im_update: NVM still being copied to the image registers
            if not self._read_byte(_REG_STATUS, "status") & _STATUS_IM_UPDATE:
                break
            self._clock.sleep_ms(_POLL_MS)
        else:
            raise BME280Error("%s at 0x%02x stays busy copying its NVM after reset" % self._who())
        tp = self._read_mem(_REG_CALIB_TP, _CALIB_TP_LEN)
        h = self._read_mem(_REG_CALIB_H, _CALIB_H_LEN) if self.has_humidity else None
        self.calibration = Calibration(tp, h)
        if self.calibration.dig_T1 == 0 or self.calibration.dig_P1 == 0:
            raise BME280Error(
                "%s at 0x%02x has blank calibration (dig_T1/dig_P1 = 0); the part or the bus "
                "is faulty" % self._who()
            )
        # config is written in sleep mode: in normal mode the part may ignore it (datasheet 5.4.6).
        self._write_byte(_REG_CONFIG, config)

    def start_measurement(self):
        """Start one forced conversion; returns the ms to wait before `read_measurement()`."""
        if self.has_humidity:
            # ctrl_hum takes effect only after the next ctrl_meas write (datasheet 5.4.3).
            self._write_byte(_REG_CTRL_HUM, self._ctrl_hum)
        self._write_byte(_REG_CTRL_MEAS, self._ctrl_meas)
        return self.wait_ms

    def read_measurement(self):
        """Read the last conversion into `self.reading` and return it; None while converting."""
        if self._read_byte(_REG_STATUS, "status") & _STATUS_MEASURING:
            return None
        try:
            self._i2c.readfrom_mem_into(self.address, _REG_DATA, self._data)
        except OSError as exc:
            raise self._bus_error("data", exc)
        return self._decode()

    def read(self):
        """Start a conversion, wait for it on the clock, and return the updated reading."""
        self._clock.sleep_ms(self.start_measurement())
        for _ in range(_POLL_TRIES):
            reading = self.read_measurement()
            if reading is not None:
                return reading
            self._clock.sleep_ms(_POLL_MS)
        raise BME280Error(
            "%s at 0x%02x still measuring %d ms after the datasheet maximum"
            % (self.name, self.address, _POLL_TRIES * _POLL_MS)
        )

    def _decode(self):
        b = self._data
        r = self.reading
        adc_p = b[0] << 12 | b[1] << 4 | b[2] >> 4
        adc_t = b[3] << 12 | b[4] << 4 | b[5] >> 4
        r.raw_temperature = adc_t
        r.raw_pressure = adc_p if self._measure_p else None
        r.raw_humidity = (b[6] << 8 | b[7]) if self._measure_h else None
        r.temperature_c = r.pressure_hpa = r.humidity_pct = None
        if adc_t == _NO_DATA_20:  # never converted: a plausible 26 °C with typical trims
            r.quality = BAD
            return r
        cal = self.calibration
        t_fine = compensate_t_fine(adc_t, cal)
        temperature_c = temperature_centi_c(t_fine) / 100
        r.temperature_c = temperature_c
        quality = GOOD
        if not -40.0 <= temperature_c <= 85.0:  # operating range, datasheet table 1
            quality = SUSPECT
        if r.raw_pressure is not None:
            if adc_p == _NO_DATA_20:
                quality = BAD
            else:
                pressure_hpa = compensate_pressure_q24_8(adc_p, t_fine, cal) / 25600
                r.pressure_hpa = pressure_hpa
                if quality == GOOD and not 300.0 <= pressure_hpa <= 1100.0:
                    quality = SUSPECT
        if r.raw_humidity is not None:
            if r.raw_humidity == _NO_DATA_16:
                quality = BAD
            else:
                r.humidity_pct = compensate_humidity_q22_10(r.raw_humidity, t_fine, cal) / 1024
        r.quality = quality
        return r

    def _who(self):
        return (self.name, self.address)

    def _bus_error(self, what, exc):
        name = getattr(self, "name", "BME280/BMP280")
        return BME280Error(
            "%s at 0x%02x did not answer (%s: %s); check wiring, power and address "
            "(0x76 or 0x77)" % (name, self.address, what, exc),
            exc,
        )

    def _read_byte(self, reg, what):
        try:
            self._i2c.readfrom_mem_into(self.address, reg, self._byte)
        except OSError as exc:
            raise self._bus_error(what, exc)
        return self._byte[0]

    def _read_mem(self, reg, n):
        try:
            return self._i2c.readfrom_mem(self.address, reg, n)
        except OSError as exc:
            raise self._bus_error("calibration", exc)

    def _write_byte(self, reg, value):
        self._byte[0] = value
        try:
            self._i2c.writeto_mem(self.address, reg, self._byte)
        except OSError as exc:
            raise self._bus_error("a write to 0x%02x" % reg, exc)
