# pyright: reportAttributeAccessIssue=false
# (Commands' methods run with `self` an LD2410: pyright cannot know its attributes here.)
"""The LD2410's configuration commands [PB] §2.2: config mode, gates, sensitivities, baud rate,
Bluetooth, light control, auto thresholds, and the command/ACK exchange they share.

They are reached as methods of drivers.ld2410.LD2410 (`radar.set_baud_rate(256000)`), which
imports this module on the first such call: a running node only parses reports, and every
function here would otherwise cost heap (a function object and its code record) for as long
as it runs.

    with radar.config_mode():
        print(radar.read_firmware_version())
        radar.set_engineering_mode(True)
"""

from drivers.compat import const
from drivers.ld2410 import BAUD_RATES, GATE_SIZES_CM, LD2410Error, encode_command

_ACK_BIT = const(0x0100)  # ACK word = command word | 0x0100 [PB] §2.1

# Command words [PB] §2.2, ld2410.md §5.
_CMD_ENABLE_CONFIG = const(0x00FF)
_CMD_END_CONFIG = const(0x00FE)
_CMD_SET_MAX_GATES = const(0x0060)
_CMD_READ_PARAMETERS = const(0x0061)
_CMD_ENGINEERING_ON = const(0x0062)
_CMD_ENGINEERING_OFF = const(0x0063)
_CMD_SET_SENSITIVITY = const(0x0064)
_CMD_READ_FIRMWARE = const(0x00A0)
_CMD_SET_BAUD = const(0x00A1)
_CMD_FACTORY_RESET = const(0x00A2)
_CMD_RESTART = const(0x00A3)
_CMD_BLUETOOTH = const(0x00A4)
_CMD_READ_MAC = const(0x00A5)
_CMD_SET_PASSWORD = const(0x00A9)
_CMD_SET_GATE_SIZE = const(0x00AA)
_CMD_READ_GATE_SIZE = const(0x00AB)
_CMD_SET_LIGHT = const(0x00AD)
_CMD_READ_LIGHT = const(0x00AE)
_CMD_AUTO_THRESHOLD = const(0x000B)
_CMD_AUTO_THRESHOLD_STATUS = const(0x001B)


class Parameters:
    """The radar's stored configuration, as answered to read parameters (0x0061)."""

    def __init__(self, max_gate, max_moving_gate, max_stationary_gate, moving, stationary, no_one):
        self.max_gate = max_gate
        self.max_moving_gate = max_moving_gate
        self.max_stationary_gate = max_stationary_gate
        self.moving_sensitivity = moving  # bytes, gates 0..8, 0-100 (100 disables the gate)
        self.stationary_sensitivity = stationary  # gates 0 and 1 are not settable, read 0
        self.no_one_duration_s = no_one


def _triple(a, b, c):
    """The 18-byte value of 0x0060/0x0064: keys 0, 1, 2, each + a u32 [PB] §2.2.3."""
    v = bytearray(18)
    for i, x in ((0, a), (1, b), (2, c)):
        v[6 * i] = i
        v[6 * i + 2] = x & 0xFF
        v[6 * i + 3] = x >> 8
    return bytes(v)


def _require_int(what, value, low, high):
    if not isinstance(value, int) or value < low or value > high:
        raise ValueError("%s must be an int in %d..%d, got %r" % (what, low, high, value))


class _ConfigMode:
    """`with radar.config_mode():` enables config mode, and always ends it on the way out."""

    def __init__(self, radar):
        self._radar = radar

    def __enter__(self):
        self._radar.enable_config()
        return self._radar

    def __exit__(self, exc_type, exc, tb):
        if not self._radar.in_config:
            return False  # restart() already left config mode
        try:
            self._radar.end_config()
        except LD2410Error:
            if exc_type is None:
                raise  # otherwise keep the first error: it is the one that explains
        return False


class Commands:
    """The command methods of LD2410 (`self` is the LD2410); see LD2410.__getattr__."""

    def command(self, word, value=b"", size=-1, timeout_ms=None):
        """Send command `word` + `value`; return the ACK data after the status word.

        Reports arriving meanwhile are parsed as usual. Raises LD2410Error on timeout (on the
        injected clock), a failure status, or an ACK whose data is not `size` bytes (size >= 0).
        """
        if timeout_ms is None:
            timeout_ms = self.ack_timeout_ms
        clock = self._clock
        self.poll()  # reports already on the wire precede the ACK [EHp]
        self._ack_ready = False
        try:
            self._uart.write(encode_command(word, value))
        except OSError as e:
            raise LD2410Error("%s: UART write failed: %s" % (_name(word), e), e)
        start = clock.ticks_ms()
        while True:
            self.poll()
            if self._ack_ready and self._ack_word == word | _ACK_BIT:
                break
            self._ack_ready = False  # none yet, or a late ACK to an earlier command
            if clock.ticks_diff(clock.ticks_ms(), start) >= timeout_ms:
                hint = self.in_config or word == _CMD_ENABLE_CONFIG
                raise LD2410Error(
                    "%s: no ACK within %d ms; check power, TX/RX wiring and baud rate%s"
                    % (_name(word), timeout_ms, "" if hint else " (not in config mode?)")
                )
            clock.sleep_ms(self._poll_ms)
        if self._ack_status:
            raise LD2410Error("%s refused: status %d" % (_name(word), self._ack_status))
        n = self._ack_len
        if size >= 0 and n != size:
            raise LD2410Error(
                "%s: malformed ACK, expected %d data bytes, got %d" % (_name(word), size, n)
            )
        return bytes(self._ack[:n])

    def config_mode(self):
        """A context manager: enable config mode, run the block, end config mode."""
        return _ConfigMode(self)

    def enable_config(self):
        """Enter config mode (reports stop); return (protocol version, buffer size)."""
        d = self.command(_CMD_ENABLE_CONFIG, b"\x01\x00", 4)
        self.in_config = True
        return d[0] | (d[1] << 8), d[2] | (d[3] << 8)

    def end_config(self):
        """Leave config mode; the radar resumes reporting."""
        self.command(_CMD_END_CONFIG, b"", 0)
        self.in_config = False

    def set_max_gates(self, moving_gate, stationary_gate, no_one_s):
        """Farthest gate (1..8) for moving and stationary targets, and the no-one duration in s
        (how long OUT stays high after the last detection). Persistent."""
        # [PB] says 1..8 in one place and 2..8 in another; the module takes both.
        _require_int("moving_gate", moving_gate, 1, 8)
        _require_int("stationary_gate", stationary_gate, 1, 8)
        _require_int("no_one_s", no_one_s, 0, 65535)
        self.command(_CMD_SET_MAX_GATES, _triple(moving_gate, stationary_gate, no_one_s), 0)

    def read_parameters(self):
        """The stored configuration as Parameters."""
        d = self.command(_CMD_READ_PARAMETERS, b"", 24)
        if d[0] != 0xAA:
            raise LD2410Error("%s: malformed ACK, no AA head" % _name(_CMD_READ_PARAMETERS))
        return Parameters(d[1], d[2], d[3], d[4:13], d[13:22], d[22] | (d[23] << 8))

    def set_engineering_mode(self, enabled):
        """Engineering reports add per-gate energies, light and OUT; lost at power-off."""
        self.command(_CMD_ENGINEERING_ON if enabled else _CMD_ENGINEERING_OFF, b"", 0)

    def set_gate_sensitivity(self, gate, moving, stationary):
        """Energy thresholds 0-100 (100 disables) for gate 0..8, or every gate when None.
        The stationary threshold of gates 0 and 1 is fixed (reads 0). Persistent."""
        if gate is not None:
            _require_int("gate", gate, 0, 8)
        _require_int("moving sensitivity", moving, 0, 100)
        _require_int("stationary sensitivity", stationary, 0, 100)
        value = _triple(0xFFFF if gate is None else gate, moving, stationary)
        self.command(_CMD_SET_SENSITIVITY, value, 0)

    def read_firmware_version(self):
        """Firmware as the vendor prints it: major.minor(2 hex).build(8 hex), e.g. 1.02.22062416."""
        d = self.command(_CMD_READ_FIRMWARE, b"", 8)
        return "%d.%02x.%02x%02x%02x%02x" % (d[3], d[2], d[7], d[6], d[5], d[4])

    def set_baud_rate(self, baud):
        """Serial speed from the next restart on; one of BAUD_RATES."""
        if baud not in BAUD_RATES:
            raise ValueError("baud rate %r not supported; use one of %s" % (baud, BAUD_RATES))
        self.command(_CMD_SET_BAUD, bytes((BAUD_RATES.index(baud) + 1, 0)), 0)

    def factory_reset(self):
        """Restore factory settings; they apply after the next restart."""
        self.command(_CMD_FACTORY_RESET, b"", 0)

    def restart(self):
        """Restart the module: it leaves config and engineering mode, and its UART carries
        garbage or nothing for up to RESTART_MS; wait that long before the next command."""
        self.command(_CMD_RESTART, b"", 0)
        self.in_config = False

    def set_bluetooth(self, enabled):
        """Bluetooth on or off (default on); applies after the next restart."""
        self.command(_CMD_BLUETOOTH, b"\x01\x00" if enabled else b"\x00\x00", 0)

    def read_mac(self):
        """The Bluetooth MAC address as text, e.g. '8f:27:2e:b8:0f:65' (wire = display order)."""
        return ":".join("%02x" % b for b in self.command(_CMD_READ_MAC, b"\x01\x00", 6))

    def set_bluetooth_password(self, password):
        """The 6-character ASCII Bluetooth password (default 'HiLink'); after restart."""
        raw = password.encode() if isinstance(password, str) else b""
        if len(raw) != 6 or len(password) != 6:
            raise ValueError("bluetooth password must be 6 ASCII characters, got %r" % (password,))
        self.command(_CMD_SET_PASSWORD, raw, 0)

    def set_gate_size_cm(self, size_cm):
        """Distance resolution: 75 (default) or 20 cm per gate; after restart (B/C >= 2.04)."""
        if size_cm not in GATE_SIZES_CM:
            raise ValueError("gate size %r cm not supported; use 75 or 20" % (size_cm,))
        self.command(_CMD_SET_GATE_SIZE, bytes((GATE_SIZES_CM.index(size_cm), 0)), 0)

    def read_gate_size_cm(self):
        """Current distance resolution in cm per gate: 75 or 20."""
        d = self.command(_CMD_READ_GATE_SIZE, b"", 2)
        if d[0] > 1 or d[1]:
            raise LD2410Error("%s: unknown index %d" % (_name(_CMD_READ_GATE_SIZE), d[0]))
        return GATE_SIZES_CM[d[0]]

    def set_light_control(self, mode, threshold, out_idle_level):
        """OUT gated by light (B/C): mode 0 off, 1 below, 2 above `threshold` (0-255);
        out_idle_level 0 = OUT low when no one (default), 1 = inverted."""
        _require_int("light mode", mode, 0, 2)
        _require_int("light threshold", threshold, 0, 255)
        _require_int("out_idle_level", out_idle_level, 0, 1)
        self.command(_CMD_SET_LIGHT, bytes((mode, threshold, out_idle_level, 0)), 0)

    def read_light_control(self):
        """(mode, threshold, out_idle_level) as set by set_light_control."""
        d = self.command(_CMD_READ_LIGHT, b"", 4)
        return d[0], d[1], d[2]

    def start_auto_thresholds(self, leave_room_s=10):
        """Start the auto-threshold routine (firmware 2.44): leave the room within
        `leave_room_s`; meanwhile reports carry states 4 running, 5 done, 6 failed."""
        _require_int("leave_room_s", leave_room_s, 0, 65535)
        self.command(_CMD_AUTO_THRESHOLD, bytes((leave_room_s & 0xFF, leave_room_s >> 8)), 0)

    def read_auto_threshold_status(self):
        """0 idle, 1 running, 2 done (firmware 2.44)."""
        d = self.command(_CMD_AUTO_THRESHOLD_STATUS, b"", 2)
        return d[0] | (d[1] << 8)


# Command names for error messages, one string (a table of tuples would cost RAM on the board).
_NAMES = (
    "00FF enable config/00FE end config/0060 set max gates/0061 read parameters/"
    "0062 engineering on/0063 engineering off/0064 set gate sensitivity/00A0 read firmware/"
    "00A1 set baud rate/00A2 factory reset/00A3 restart/00A4 set bluetooth/00A5 read MAC/"
    "00A9 set bluetooth password/00AA set gate size/00AB read gate size/00AD set light control/"
    "00AE read light control/000B start auto thresholds/001B auto threshold status/"
)


def _name(word):
    """'set baud rate (0x00A1)': the command's name and word, for messages."""
    key = "%04X " % word
    i = _NAMES.find(key)
    name = _NAMES[i + 5 : _NAMES.find("/", i)] if i >= 0 else "command"
    return "%s (0x%04X)" % (name, word)
