"""HLK-LD2410 / LD2410B / LD2410C 24 GHz presence radar over UART: reports and every command.

The radar streams a report about every 100 ms; `poll()` drains the UART into a byte-stream
parser that survives garbage, split frames, bad lengths and lost bytes, and `read()` returns
the latest report (updated in place: steady-state parsing allocates nothing). The commands
(config mode, gates, baud rate, ...) are methods too, but their code is in
drivers.ld2410_commands, imported on the first call: a running node never sends one.

    from machine import UART
    from drivers.ld2410 import LD2410
    radar = LD2410(UART(2, baudrate=256000, tx=17, rx=16))
    with radar.config_mode():
        print(radar.read_firmware_version())
        radar.set_engineering_mode(True)
    radar.poll()
    report = radar.read()          # report.presence, report.moving_distance_cm, report.quality

Protocol: Hi-Link "HLK-LD2410B serial communication protocol" V1.06 ([PB] in comments), checked
against ESPHome, Tasmota and aio-ld2410 (the team's ld2410.md reference, test vectors TV1-TV9).
Frames are header, u16 length, intra data, footer; multi-byte fields little-endian.
"""

from drivers.compat import SYSTEM_CLOCK, const
from drivers.sensor import BAD, GOOD, SUSPECT, SensorError

# Frame delimiters [PB] §2: both headers and both footers are descending byte runs, so byte k
# of a header is header[0] - k (F4 F3 F2 F1, FD FC FB FA; F8 F7 F6 F5, 04 03 02 01).
_REPORT_HEAD = const(0xF4)
_ACK_HEAD = const(0xFD)
_REPORT_FOOT = const(0xF8)
_ACK_FOOT = const(0x04)

_FRAME_MAX = const(64)  # enable-config ACK announces a 64-byte buffer [PB][TAS]
_RX_SIZE = const(128)  # a read holds a report or two (45-byte engineering frames)
_LEN_MIN = const(4)  # an ACK's word + status; a report is longer still
_LEN_MAX = const(54)  # length + 10 (header, length, footer) must fit _FRAME_MAX

_TYPE_ENGINEERING = const(0x01)
_TYPE_BASIC = const(0x02)
_BASIC_LEN = const(13)  # type, AA, 9-byte target block, 55, 00
_GATES = const(9)  # gates 0..8


# Baud index of command 0x00A1 [PB]; position in this tuple = index - 1.
BAUD_RATES = (9600, 19200, 38400, 57600, 115200, 230400, 256000, 460800)
GATE_SIZES_CM = (75, 20)  # index 0 (default) and 1 of command 0x00AA (B/C firmware >= 2.04)
RESTART_MS = const(1000)  # after 0x00A3 the UART is garbage or silent ~500-800 ms [NCM]

# Target state: 0 none, 1 moving, 2 stationary, 3 both; 4 auto-threshold running, 5 done,
# 6 failed (firmware 2.44 [MY][AIO]): states 4-6 are never presence.
_STATE_MOVING = const(1)
_STATE_BOTH = const(3)


class LD2410Error(SensorError):
    """The radar refused a command, did not answer in time, or sent a malformed ACK."""


class Report:
    """The latest radar report, updated in place by the parser (distances in cm, energy 0-100).

    `presence` is true only for target states 1-3; states 4-6 come from the auto-threshold
    routine and say nothing about people. Engineering fields (`gate_count` > 0, gate energies,
    `light`, `out_pin`) are valid only when `engineering` is true; `out_pin` is taken from the
    OUT pin itself in basic mode when the driver was given one, else None.
    """

    def __init__(self, ticks_ms):
        self.target_state = 0
        self.presence = False
        self.moving_distance_cm = 0
        self.moving_energy = 0
        self.stationary_distance_cm = 0
        self.stationary_energy = 0
        self.detection_distance_cm = 0
        self.engineering = False
        self.max_moving_gate = 0
        self.max_stationary_gate = 0
        self.gate_count = 0
        self.moving_gate_energy = bytearray(_GATES)
        self.stationary_gate_energy = bytearray(_GATES)
        self.light = None
        self.out_pin = None
        self.ticks_ms = ticks_ms  # clock ticks when the report was decoded
        self.quality = BAD  # set by LD2410.read()


def encode_command(word, value=b""):
    """The host->radar frame for command `word` with `value` bytes [PB] §2.1."""
    n = 2 + len(value)
    frame = bytearray(10 + n)
    frame[0:4] = b"\xfd\xfc\xfb\xfa"
    frame[4] = n & 0xFF
    frame[5] = n >> 8
    frame[6] = word & 0xFF
    frame[7] = word >> 8
    frame[8 : 8 + len(value)] = value
    frame[8 + len(value) :] = b"\x04\x03\x02\x01"
    return bytes(frame)


class LD2410:
    """One radar on one UART. `clock` times ACK waits and report staleness.

    `stale_ms`: read() says BAD when no report arrived for this long (reports come every
    ~100 ms, so 500 ms is five missed reports). `ack_timeout_ms`: how long a command waits for
    its ACK ([PB] gives ~10 ms latency; other drivers give up after 2 s).
    """

    def __init__(
        self, uart, clock=SYSTEM_CLOCK, out_pin=None, stale_ms=500, ack_timeout_ms=1000, poll_ms=5
    ):
        self._uart = uart
        self._clock = clock
        self._out_pin = out_pin
        self.stale_ms = stale_ms
        self.ack_timeout_ms = ack_timeout_ms
        self._poll_ms = poll_ms
        self._buf = bytearray(_FRAME_MAX)  # the frame being assembled, from its header on
        self._rx = bytearray(_RX_SIZE)  # UART read chunk: whole frames parse without a copy
        self._pos = 0  # bytes held in _buf
        self._need = 0  # total frame size once the length is known
        self._ack = bytearray(_LEN_MAX)
        self._ack_word = 0
        self._ack_status = 0
        self._ack_len = 0
        self._ack_ready = False
        self._have_report = False
        self.report = Report(clock.ticks_ms())
        self.in_config = False
        # Counters, for diagnostics and the parser's tests.
        self.frames_ok = 0
        self.reports = 0
        self.acks = 0
        self.bytes_discarded = 0
        self.bad_lengths = 0
        self.bad_footers = 0
        self.bad_payloads = 0

    # ---- reports -------------------------------------------------------------------------

    def poll(self):
        """Drain what the UART holds into the parser; return how many reports were decoded.

        Raises LD2410Error (cause = the OSError) when the UART read fails.
        """
        uart = self._uart
        rx = self._rx
        count = 0
        try:
            n = uart.any()
            while n > 0:
                got = uart.readinto(rx, n if n < _RX_SIZE else _RX_SIZE)
                if not got:  # None on timeout (ESP32), 0 when empty
                    break
                count += self.feed(rx, got)
                n = uart.any()
        except OSError as e:
            raise LD2410Error("LD2410 UART read failed: %s" % e, e)
        return count

    def read(self):
        """The latest Report, its `quality` set: GOOD when a report arrived within `stale_ms`,
        SUSPECT while the auto-threshold routine owns the target state (4-6), BAD when stale or
        none yet. The same object every call; copy fields you want to keep."""
        report = self.report
        clock = self._clock
        if (
            not self._have_report
            or clock.ticks_diff(clock.ticks_ms(), report.ticks_ms) > self.stale_ms
        ):
            report.quality = BAD
        elif report.target_state > _STATE_BOTH:
            report.quality = SUSPECT
        else:
            report.quality = GOOD
        return report

    def feed(self, data, n=-1):
        """Parse the first `n` bytes of `data` (all when n < 0); return reports decoded.

        Never raises on bad input: garbage is discarded and counted, and after a failed frame
        the parser rescans from one byte after its header, so a frame starting inside garbage
        is still found.
        """
        if n < 0:
            n = len(data)
        before = self.reports
        i = 0
        while i < n:
            if self._pos:
                i = self._feed_partial(data, i, n)
                continue
            b = data[i]
            if b != _REPORT_HEAD and b != _ACK_HEAD:
                self.bytes_discarded += 1
                i += 1
                continue
            if i + 6 > n:
                i = self._feed_partial(data, i, n)
                continue
            # Fast path: the frame lies whole in `data`; check and decode it there, no copy.
            if data[i + 1] != b - 1 or data[i + 2] != b - 2 or data[i + 3] != b - 3:
                self.bytes_discarded += 1  # not a header after all
                i += 1
                continue
            length = data[i + 4] | (data[i + 5] << 8)
            if length < _LEN_MIN or length > _LEN_MAX:
                self.bad_lengths += 1
                self.bytes_discarded += 1  # resync one byte after this header start
                i += 1
                continue
            if i + length + 10 > n:
                i = self._feed_partial(data, i, n)  # the rest arrives in a later read
                continue
            if self._complete(data, i, length + 10):
                i += length + 10
            else:
                self.bytes_discarded += 1
                i += 1
        return self.reports - before

    def _feed_partial(self, data, i, n):
        """Assemble a frame split across reads in _buf; return where it stopped: n, or the
        first byte after a completed frame (back to the fast path)."""
        buf = self._buf
        while i < n:
            pos = self._pos
            need = self._need
            if pos > 5 and pos < need - 1:
                # Payload: copy up to (not including) the frame's last byte in a tight loop.
                stop = i + need - 1 - pos
                if stop > n:
                    stop = n
                while i < stop:
                    buf[pos] = data[i]
                    pos += 1
                    i += 1
                self._pos = pos
                continue
            b = data[i]
            i += 1
            if pos == 0:
                if b != _REPORT_HEAD and b != _ACK_HEAD:
                    self.bytes_discarded += 1
                    continue
                buf[0] = b
                self._pos = 1
                continue
            buf[pos] = b
            self._pos = pos + 1
            r = self._check(pos)
            if r < 0:
                self._rescan(1, 0)
            elif r > 0:
                self._pos = 0
                self._need = 0
            if self._pos == 0:
                return i
        return i

    def _check(self, k):
        """Check buf[k], just added: -1 the frame failed, 1 complete and handled, 0 go on."""
        buf = self._buf
        if k < 4:
            return 0 if buf[k] == buf[0] - k else -1
        if k == 5:
            length = buf[4] | (buf[5] << 8)
            if length < _LEN_MIN or length > _LEN_MAX:
                self.bad_lengths += 1
                return -1
            self._need = length + 10
            return 0
        if k == self._need - 1:
            return 1 if self._complete(buf, 0, self._need) else -1
        return 0

    def _rescan(self, start, consumed):
        """Re-parse buf[start:pos] as fresh stream after a failed (start 1) or complete frame."""
        buf = self._buf
        pos = self._pos
        while True:
            j = start
            while j < pos and buf[j] != _REPORT_HEAD and buf[j] != _ACK_HEAD:
                j += 1
            self.bytes_discarded += j - consumed
            self._need = 0
            if j >= pos:
                self._pos = 0
                return
            for k in range(j, pos):  # shift the candidate frame to the front
                buf[k - j] = buf[k]
            pos -= j
            self._pos = pos
            start = 0
            for k in range(1, pos):
                r = self._check(k)
                if r < 0:
                    start = 1
                    consumed = 0
                    break
                if r > 0:
                    start = k + 1
                    consumed = start
                    break
            if start == 0:
                return  # all held bytes are a valid frame prefix: wait for more

    def _complete(self, src, o, need):
        """src[o:o+need] holds a whole frame with a good header and length: check footer and
        payload, then decode. False = reject (counted)."""
        head = src[o]
        foot = _REPORT_FOOT if head == _REPORT_HEAD else _ACK_FOOT
        e = o + need
        if src[e - 4] != foot or src[e - 3] != foot - 1 or src[e - 2] != foot - 2:
            self.bad_footers += 1
            return False
        if src[e - 1] != foot - 3:
            self.bad_footers += 1
            return False
        if head == _REPORT_HEAD:
            ok = self._decode_report(src, o, need - 10)
        else:
            ok = self._store_ack(src, o, need - 10)
        if ok:
            self.frames_ok += 1
        else:
            self.bad_payloads += 1
        return ok

    def _decode_report(self, src, o, length):
        # Layout [PB] §2.3 (offsets from the header): 6 type, 7 AA, 8 state, 9-10 moving cm,
        # 11 energy, 12-13 stationary cm, 14 energy, 15-16 detection cm; engineering adds
        # 17-18 max gates, gate energies, light, OUT; then 55 00 before the footer.
        e = o + length + 6
        if src[o + 7] != 0xAA or src[e - 2] != 0x55 or src[e - 1] != 0x00:
            return False
        kind = src[o + 6]
        if kind == _TYPE_BASIC:
            if length != _BASIC_LEN:
                return False
            gates = 0
        elif kind == _TYPE_ENGINEERING:
            # Size the gate arrays from the length ((length - 17) / 2), not from bytes 17/18,
            # whose meaning differs between firmware (ld2410.md §4).
            gates = (length - 17) >> 1
            if length & 1 == 0 or gates < 1 or gates > _GATES:
                return False
        else:
            return False
        r = self.report
        state = src[o + 8]
        r.target_state = state
        r.presence = state >= _STATE_MOVING and state <= _STATE_BOTH
        r.moving_distance_cm = src[o + 9] | (src[o + 10] << 8)
        r.moving_energy = src[o + 11]
        r.stationary_distance_cm = src[o + 12] | (src[o + 13] << 8)
        r.stationary_energy = src[o + 14]
        r.detection_distance_cm = src[o + 15] | (src[o + 16] << 8)
        r.gate_count = gates
        if gates:
            r.engineering = True
            r.max_moving_gate = src[o + 17]
            r.max_stationary_gate = src[o + 18]
            mv = r.moving_gate_energy
            st = r.stationary_gate_energy
            g0 = o + 19
            for g in range(gates):
                mv[g] = src[g0 + g]
                st[g] = src[g0 + gates + g]
            r.light = src[g0 + 2 * gates]
            r.out_pin = src[g0 + 2 * gates + 1]
        else:
            r.engineering = False
            r.light = None
            r.out_pin = None if self._out_pin is None else self._out_pin.value()
        r.ticks_ms = self._clock.ticks_ms()
        self._have_report = True
        self.reports += 1
        return True

    def _store_ack(self, src, o, length):
        # ACK intra data [PB] §2.1: word | 0x0100, status u16 (0 success, 1 failure), data.
        if src[o + 7] != 0x01:
            return False
        self._ack_word = src[o + 6] | (src[o + 7] << 8)
        self._ack_status = src[o + 8] | (src[o + 9] << 8)
        n = length - 4
        ack = self._ack
        for i in range(n):
            ack[i] = src[o + 10 + i]
        self._ack_len = n
        self._ack_ready = True
        self.acks += 1
        return True

    # ---- commands ------------------------------------------------------------------------

    def __getattr__(self, name):
        """The configuration commands (config_mode, command, set_baud_rate, ...) live in
        drivers.ld2410_commands, imported on their first use: a running node never sends one,
        and as methods here they would cost heap for as long as it runs."""
        fn = None
        if name[:1] != "_":
            from drivers.ld2410_commands import Commands

            fn = getattr(Commands, name, None)
        if fn is None:
            raise AttributeError("'LD2410' object has no attribute %r" % (name,))

        def bound(*args, **kw):
            return fn(self, *args, **kw)

        return bound
