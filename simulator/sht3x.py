"""A simulated SHT3x: 16-bit commands, single-shot results with CRC, status word, on a SimI2C.

    sim = SimSHT3x(clock)
    bus.add(0x44, sim)
    sim.set_truth(22.5, 48.0)

Single-shot with clock stretching holds the read until the result is ready (the sim sleeps the
clock); without it, a read before the result is ready is NACKed (datasheet 4.4). Periodic mode
is not modelled: its commands set status bit 1 ("command not processed").
"""

from drivers.compat import const
from drivers.env import crc8
from simulator.i2c import ENODEV, I2CDevice

_STATUS_AFTER_RESET = const(0x8010)  # alert pending + reset detected (datasheet table 17)
_STATUS_HEATER = const(0x2000)
_STATUS_NOT_PROCESSED = const(0x0002)
_STATUS_CLEARABLE = const(0x8C10)  # bits 15, 11, 10, 4

# single-shot command -> (conversion ms, clock stretching); datasheet table 9 and 4.
_SINGLE_SHOT = {
    0x2C06: (15, True),
    0x2C0D: (6, True),
    0x2C10: (4, True),
    0x2400: (15, False),
    0x240B: (6, False),
    0x2416: (4, False),
}


def temperature_code(temperature_c):
    """S_T for a temperature: the inverse of T = -45 + 175 * S_T / 65535, clamped to 16 bits."""
    return _clamp16(round((temperature_c + 45) * 65535 / 175))


def humidity_code(humidity_pct):
    """S_RH for a humidity: the inverse of RH = 100 * S_RH / 65535, clamped to 16 bits."""
    return _clamp16(round(humidity_pct * 65535 / 100))


def _clamp16(code):
    return 0 if code < 0 else 0xFFFF if code > 0xFFFF else code


class SimSHT3x(I2CDevice):
    """One SHT3x. Faults: NACKs (I2CDevice), `stuck` (results frozen at the last codes),
    `corrupt_crc` (every CRC byte sent is wrong)."""

    def __init__(self, clock):
        super().__init__()
        self._clock = clock
        self.temperature_c = 25.0
        self.humidity_pct = 50.0
        self.stuck = False
        self.corrupt_crc = False
        self.status = _STATUS_AFTER_RESET
        self.commands = []  # every command received, for tests of the wire protocol
        self._codes = None  # (S_T, S_RH) of the last conversion
        self._ready_at = None
        self._stretch = False
        self._reply = None  # what the next read returns

    def set_truth(self, temperature_c, humidity_pct=None):
        self.temperature_c = temperature_c
        if humidity_pct is not None:
            self.humidity_pct = humidity_pct

    def write(self, data):
        if len(data) < 2:
            return  # an address-only write (a probe) carries no command
        command = data[0] << 8 | data[1]
        self.commands.append(command)
        self._reply = None
        self.status &= ~_STATUS_NOT_PROCESSED
        if command in _SINGLE_SHOT:
            duration_ms, self._stretch = _SINGLE_SHOT[command]
            self._ready_at = self._clock.ticks_add(self._clock.ticks_ms(), duration_ms)
            if not self.stuck or self._codes is None:
                self._codes = (
                    temperature_code(self.temperature_c),
                    humidity_code(self.humidity_pct),
                )
        elif command == 0x30A2:  # soft reset
            self.status = _STATUS_AFTER_RESET
            self._ready_at = None
        elif command == 0x3093:  # break: leaves periodic mode; nothing to stop here
            pass
        elif command == 0xF32D:
            self._reply = self._words(self.status >> 8, self.status & 0xFF)
        elif command == 0x3041:
            self.status &= ~_STATUS_CLEARABLE
        elif command == 0x306D:
            self.status |= _STATUS_HEATER
        elif command == 0x3066:
            self.status &= ~_STATUS_HEATER
        else:
            self.status |= _STATUS_NOT_PROCESSED

    def read(self, n):
        if self._reply is not None:
            reply, self._reply = self._reply, None
            return reply[:n]
        if self._ready_at is None:
            raise OSError(ENODEV)  # no result pending: the read header is NACKed
        left = self._clock.ticks_diff(self._ready_at, self._clock.ticks_ms())
        if left > 0:
            if not self._stretch:
                raise OSError(ENODEV)
            self._clock.sleep_ms(left)  # SCL held low until the result is ready
        self._ready_at = None  # a result is read once
        t, rh = self._codes
        return self._words(t >> 8, t & 0xFF, rh >> 8, rh & 0xFF)[:n]

    def _words(self, *data):
        out = bytearray()
        for i in range(0, len(data), 2):
            out.append(data[i])
            out.append(data[i + 1])
            crc = crc8(out, len(out) - 2)
            out.append(crc ^ 0xFF if self.corrupt_crc else crc)
        return out
