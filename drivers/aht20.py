"""Aosong AHT20 temperature and humidity over I2C (also DHT20, which is an AHT20 in a case).

from drivers.aht20 import AHT20
sensor = AHT20(i2c)          # construct it at least 40 ms after power-up (datasheet 5.4)
r = sensor.read()            # r.temperature_c, r.humidity_pct, r.quality; pressure is None
"""

from drivers.compat import SYSTEM_CLOCK, const
from drivers.env import EnvReading, crc8
from drivers.sensor import BAD, GOOD, SUSPECT, SensorError

_STATUS_BUSY = const(0x80)
_STATUS_CALIBRATED = const(0x08)
_INIT_MS = const(10)  # after the 0xBE initialise command (datasheet 5.4 step 1)
_MEASURE_MS = const(80)  # "wait 80 ms for the measurement to be completed" (5.4 step 3)
_POLL_MS = const(5)
_POLL_TRIES = const(10)

_CMD_INIT = b"\xbe\x08\x00"  # AHT10 uses 0xE1, which can make an AHT20 NACK (Adafruit_AHTX0 #19)
_CMD_MEASURE = b"\xac\x33\x00"


class AHT20Error(SensorError):
    """The AHT20 did not answer, stayed uncalibrated, or stayed busy."""


class AHT20:
    """One AHT20 on an I2C bus (address fixed at 0x38).

    The constructor reads the status byte and, if the calibration bit is clear, sends the
    initialise command. Raises AHT20Error when nothing answers or calibration never sets.
    """

    def __init__(self, i2c, address=0x38, clock=SYSTEM_CLOCK):
        self._i2c = i2c
        self.address = address
        self._clock = clock
        self.wait_ms = _MEASURE_MS
        self._status = bytearray(1)
        self._frame = bytearray(7)
        self.reading = EnvReading()
        status = self.status()
        if not status & _STATUS_CALIBRATED:
            self._write(_CMD_INIT, "initialise command")
            self._clock.sleep_ms(_INIT_MS)
            status = self.status()
            if not status & _STATUS_CALIBRATED:
                raise AHT20Error(
                    "AHT20 at 0x%02x still uncalibrated after 0xBE (status 0x%02x); is it an "
                    "AHT10? power-cycle the part" % (address, status)
                )

    def status(self):
        """The status byte: bit 7 busy, bit 3 calibrated (a plain one-byte read, datasheet 5.3)."""
        try:
            self._i2c.readfrom_into(self.address, self._status)
        except OSError as exc:
            raise self._bus_error("status read", exc)
        return self._status[0]

    def start_measurement(self):
        """Trigger one conversion; returns the ms to wait before `read_measurement()`."""
        self._write(_CMD_MEASURE, "measure command")
        return self.wait_ms

    def read_measurement(self):
        """Read the result into `self.reading` and return it; None while the part is busy."""
        try:
            self._i2c.readfrom_into(self.address, self._frame)
        except OSError as exc:
            raise self._bus_error("result read", exc)
        b = self._frame
        if b[0] & _STATUS_BUSY:
            return None
        r = self.reading
        # Frame (datasheet 5.4): status, H[19:12], H[11:4], H[3:0]|T[19:16], T[15:8], T[7:0], CRC.
        r.raw_humidity = b[1] << 12 | b[2] << 4 | b[3] >> 4
        r.raw_temperature = (b[3] & 0x0F) << 16 | b[4] << 8 | b[5]
        r.pressure_hpa = r.raw_pressure = None
        if crc8(b, 0, 6) != b[6]:  # one CRC over status and data
            r.temperature_c = r.humidity_pct = None
            r.quality = BAD
            return r
        r.humidity_pct = r.raw_humidity * 100 / 1048576  # RH = S_RH / 2^20 * 100 %
        r.temperature_c = r.raw_temperature * 200 / 1048576 - 50  # T = S_T / 2^20 * 200 - 50
        # Operating range -40..85 °C (datasheet table 2).
        r.quality = GOOD if -40.0 <= r.temperature_c <= 85.0 else SUSPECT
        return r

    def read(self):
        """Trigger a conversion, wait for it on the clock, and return the updated reading."""
        self._clock.sleep_ms(self.start_measurement())
        for _ in range(_POLL_TRIES):  # the datasheet: poll the busy bit until it clears
            reading = self.read_measurement()
            if reading is not None:
                return reading
            self._clock.sleep_ms(_POLL_MS)
        raise AHT20Error(
            "AHT20 at 0x%02x still busy %d ms after a measure command; power-cycle the part"
            % (self.address, self.wait_ms + _POLL_TRIES * _POLL_MS)
        )

    def _write(self, command, what):
        try:
            self._i2c.writeto(self.address, command)
        except OSError as exc:
            raise self._bus_error(what, exc)

    def _bus_error(self, what, exc):
        return AHT20Error(
            "AHT20 at 0x%02x did not answer (%s: %s); check wiring and power"
            % (self.address, what, exc),
            exc,
        )
