"""Sensirion SHT3x (SHT30/31/35) temperature and humidity over I2C, single shot.

Single-shot commands without clock stretching (datasheet table 9), so a slow conversion never
holds the bus; every 16-bit word is checked against its CRC-8.

    from drivers.sht3x import SHT3x
    sensor = SHT3x(i2c, address=0x44, repeatability="high")
    r = sensor.read()            # r.temperature_c, r.humidity_pct, r.quality; pressure is None
"""

from drivers.compat import SYSTEM_CLOCK, const
from drivers.env import EnvReading, crc8
from drivers.sensor import BAD, GOOD, SUSPECT, SensorError

_CMD_SOFT_RESET = const(0x30A2)
_CMD_BREAK = const(0x3093)  # stops periodic mode, where soft reset is ignored
_CMD_READ_STATUS = const(0xF32D)
_CMD_CLEAR_STATUS = const(0x3041)
_CMD_HEATER_ON = const(0x306D)
_CMD_HEATER_OFF = const(0x3066)
_RESET_MS = const(2)  # soft reset time 1.5 ms max (datasheet table 4)

# repeatability -> (single-shot command without clock stretching, wait ms). The waits round up
# the datasheet maxima 15 / 6 / 4 ms with Adafruit's 0.5 ms margin (15.5 / 6.5 / 4.5).
_SINGLE_SHOT = {"high": (0x2400, 16), "medium": (0x240B, 7), "low": (0x2416, 5)}


class SHT3xError(SensorError):
    """The SHT3x did not answer, NACKed a read (no result yet), or its status failed its CRC."""


class SHT3x:
    """One SHT3x on an I2C bus. `repeatability` is "high", "medium" or "low" (noise vs time).

    The constructor stops periodic mode, soft-resets the part and reads its status word, which
    must pass its CRC. Raises SHT3xError when nothing answers there.
    """

    def __init__(self, i2c, address=0x44, clock=SYSTEM_CLOCK, repeatability="high"):
        if repeatability not in _SINGLE_SHOT:
            raise ValueError(
                "repeatability must be 'high', 'medium' or 'low', got %r" % (repeatability,)
            )
        command, self.wait_ms = _SINGLE_SHOT[repeatability]
        self._i2c = i2c
        self.address = address
        self._clock = clock
        self._cmd = bytearray(2)
        self._measure = bytes((command >> 8, command & 0xFF))
        self._buf = bytearray(6)
        self._status = bytearray(3)
        self.reading = EnvReading()
        self._command(_CMD_BREAK)
        self._command(_CMD_SOFT_RESET)
        self._clock.sleep_ms(_RESET_MS)
        self.status()

    def start_measurement(self):
        """Start one single-shot conversion; returns the ms to wait before `read_measurement()`."""
        try:
            self._i2c.writeto(self.address, self._measure)
        except OSError as exc:
            raise self._bus_error("measure command", exc)
        return self.wait_ms

    def read_measurement(self):
        """Read the result into `self.reading` and return it.

        The SHT3x NACKs the read until its result is ready (datasheet 4.4), so a read before
        the wait raises SHT3xError like a missing part; there is no "not ready" None here.
        """
        try:
            self._i2c.readfrom_into(self.address, self._buf)
        except OSError as exc:
            raise self._bus_error("result read (no result yet, or the part is gone)", exc)
        b = self._buf
        r = self.reading
        r.raw_temperature = b[0] << 8 | b[1]
        r.raw_humidity = b[3] << 8 | b[4]
        r.pressure_hpa = r.raw_pressure = None
        quality = GOOD
        if crc8(b, 0, 2) == b[2]:
            # Datasheet 4.13: T = -45 + 175 * S_T / (2^16 - 1) °C.
            r.temperature_c = -45 + 175 * r.raw_temperature / 65535
            if not -40.0 <= r.temperature_c <= 125.0:  # specified range, datasheet table 2
                quality = SUSPECT
        else:
            r.temperature_c = None
            quality = BAD
        if crc8(b, 3, 5) == b[5]:
            r.humidity_pct = 100 * r.raw_humidity / 65535
        else:
            r.humidity_pct = None
            quality = BAD
        r.quality = quality
        return r

    def read(self):
        """Start a conversion, wait for it on the clock, and return the updated reading."""
        self._clock.sleep_ms(self.start_measurement())
        return self.read_measurement()

    def status(self):
        """The 16-bit status register (bit 13 heater on, bit 4 reset seen; datasheet table 17)."""
        self._command(_CMD_READ_STATUS)
        try:
            self._i2c.readfrom_into(self.address, self._status)
        except OSError as exc:
            raise self._bus_error("status read", exc)
        s = self._status
        if crc8(s, 0, 2) != s[2]:
            raise SHT3xError(
                "SHT3x at 0x%02x: status %02x%02x fails its CRC (got 0x%02x, expected 0x%02x); "
                "another part at this address, or a noisy bus"
                % (self.address, s[0], s[1], s[2], crc8(s, 0, 2))
            )
        return s[0] << 8 | s[1]

    def clear_status(self):
        """Clear the alert and reset-seen bits (15, 11, 10, 4)."""
        self._command(_CMD_CLEAR_STATUS)

    def heater(self, on):
        """Switch the built-in heater (for plausibility checks; it warms the part by a few °C)."""
        self._command(_CMD_HEATER_ON if on else _CMD_HEATER_OFF)

    def _command(self, command):
        self._cmd[0] = command >> 8
        self._cmd[1] = command & 0xFF
        try:
            self._i2c.writeto(self.address, self._cmd)
        except OSError as exc:
            raise self._bus_error("command 0x%04x" % command, exc)

    def _bus_error(self, what, exc):
        return SHT3xError(
            "SHT3x at 0x%02x did not answer (%s: %s); check wiring, power and address "
            "(0x44 or 0x45)" % (self.address, what, exc),
            exc,
        )
