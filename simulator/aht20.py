"""A simulated AHT20: status byte, trigger command, 7-byte frame with CRC, on a SimI2C.

    sim = SimAHT20(clock)
    bus.add(0x38, sim)
    sim.set_truth(19.0, 61.5)

A read returns the status byte followed by the last result and its CRC, truncated to the
length asked for (a 1-byte read is the status alone, datasheet 5.3). While a conversion runs
the busy bit is set and the data bytes are the previous result.
"""

from drivers.compat import const
from drivers.env import crc8
from simulator.i2c import I2CDevice

_MEASURE_MS = const(75)  # inside the 80 ms the datasheet tells drivers to wait
_STATUS_BUSY = const(0x80)
_STATUS_CALIBRATED = const(0x08)
_STATUS_IDLE = const(0x10)  # bit 4 reads 1 on real parts (DHT20 sheet checks status & 0x18)


def humidity_code(humidity_pct):
    """S_RH for a humidity: round(RH * 2^20 / 100), clamped to 20 bits."""
    return _clamp20(round(humidity_pct * 1048576 / 100))


def temperature_code(temperature_c):
    """S_T for a temperature: round((T + 50) * 2^20 / 200), clamped to 20 bits."""
    return _clamp20(round((temperature_c + 50) * 1048576 / 200))


def _clamp20(code):
    return 0 if code < 0 else 0xFFFFF if code > 0xFFFFF else code


class SimAHT20(I2CDevice):
    """One AHT20. `calibrated=False` starts it needing the 0xBE initialise command.

    Faults: NACKs (I2CDevice), `stuck` (results frozen), `corrupt_crc`, `hang` (stays busy).
    """

    def __init__(self, clock, calibrated=True):
        super().__init__()
        self._clock = clock
        self.calibrated = calibrated
        self.temperature_c = 25.0
        self.humidity_pct = 50.0
        self.stuck = False
        self.corrupt_crc = False
        self.hang = False
        self.commands = []  # every write received, as bytes
        self._codes = (0, 0)
        self._busy_until = None

    def set_truth(self, temperature_c, humidity_pct=None):
        self.temperature_c = temperature_c
        if humidity_pct is not None:
            self.humidity_pct = humidity_pct

    def write(self, data):
        self.commands.append(bytes(data))
        if not data:
            return
        if data[0] == 0xAC and len(data) == 3 and data[1] == 0x33:
            self._busy_until = self._clock.ticks_add(self._clock.ticks_ms(), _MEASURE_MS)
            if not self.stuck:
                self._codes = (
                    humidity_code(self.humidity_pct),
                    temperature_code(self.temperature_c),
                )
        elif data[0] == 0xBE and len(data) == 3:
            self.calibrated = True
        elif data[0] == 0xBA:  # soft reset: calibration lives in NVM and survives it
            self._busy_until = None
        # anything else (e.g. a written 0x71 some drivers send) is ignored, as the part does

    def read(self, n):
        busy = self.hang
        if self._busy_until is not None:
            if self._clock.ticks_diff(self._clock.ticks_ms(), self._busy_until) < 0:
                busy = True
            else:
                self._busy_until = None
        status = _STATUS_IDLE
        if busy:
            status |= _STATUS_BUSY
        if self.calibrated:
            status |= _STATUS_CALIBRATED
        h, t = self._codes
        frame = bytearray(
            (
                status,
                h >> 12,
                (h >> 4) & 0xFF,
                (h & 0x0F) << 4 | t >> 16,
                (t >> 8) & 0xFF,
                t & 0xFF,
                0,
            )
        )
        frame[6] = crc8(frame, 0, 6) ^ (0xFF if self.corrupt_crc else 0)
        return frame[:n]
