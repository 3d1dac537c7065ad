"""A simulated HLK-LD2410/B/C radar: a UART stand-in that speaks the module's bytes.

Driven by a clock: it emits a report every 100 ms for ground-truth targets, answers every
command as the module does (ld2410.md §5, same ACK bytes), keeps its parameters across
restarts, and has fault switches for line noise, lost bytes, a stuck or silent module.

    from simulator.clock import SimClock
    from simulator.ld2410 import SimLD2410
    from drivers.ld2410 import LD2410
    clock = SimClock()
    sim = SimLD2410(clock, seed=1)
    sim.set_targets([(120, "moving", 70)])
    radar = LD2410(sim, clock)
    clock.advance(150); radar.poll(); radar.read().moving_distance_cm   # 120

MicroPython subset: it also runs inside the firmware's end-to-end tests. About 1 KB per
instance (a fleet runs thousands): frames are built only when due, and pending output is capped
like the ESP32 UART's 256-byte receive buffer (overflow drops new bytes).

Choices where the module's behaviour is undocumented (ld2410.md marks them unconfirmed): the
strongest target above its gate's threshold is the one reported; a gate whose clutter alone
exceeds its threshold reports a false target at the gate's centre; stationary gates 0-1 read 0
and never detect; commands outside config mode, or ones the model lacks, get status 1 (failed);
the auto-threshold routine measures for 10 s after the leave-room time.
"""

from simulator.prng import Prng

REPORT_PERIOD_MS = 100  # [AIO] "typical rate of 10/sec"; [MG] captures 100 ms apart
RESTART_MS = 1000  # silence after 0x00A3 (the module: 500-800 ms of garbage or nothing [NCM])
RX_BUFFER = 256  # MicroPython esp32 UART default rxbuf
BAUD_RATES = (9600, 19200, 38400, 57600, 115200, 230400, 256000, 460800)  # index 1..8
GATE_SIZES_CM = (75, 20)
MODELS = ("LD2410", "LD2410B", "LD2410C")
# Firmware per model seen in the field (ld2410.md §5): major, minor, build.
_FIRMWARE = {
    "LD2410": (1, 0x07, 0x22091516),
    "LD2410B": (2, 0x04, 0x23022511),
    "LD2410C": (2, 0x44, 0x24073110),
}
# Factory defaults [PB][AIO][TAS].
DEFAULT_MOVING = bytes((50, 50, 40, 30, 20, 15, 15, 15, 15))
DEFAULT_STATIONARY = bytes((0, 0, 40, 40, 30, 30, 20, 20, 20))
_AUTO_MEASURE_MS = 10000  # auto-threshold measuring time after leave-room: not documented
_AUTO_RESULT_MS = 1000  # reports show state 5/6 this long after the routine ends

_FW_2_04 = (0x00AA, 0x00AB, 0x00AD, 0x00AE)  # gate size and light control [PB][AIO]
_FW_2_44 = (0x000B, 0x001B)  # auto thresholds [MY]
_B_C_ONLY = (0x00A4, 0x00A5, 0x00A9) + _FW_2_04 + _FW_2_44

_ACK_HEADER = b"\xfd\xfc\xfb\xfa"
_ACK_FOOTER = b"\x04\x03\x02\x01"
_REPORT_HEADER = b"\xf4\xf3\xf2\xf1"
_REPORT_FOOTER = b"\xf8\xf7\xf6\xf5"


def _u16(v):
    return bytes((v & 0xFF, (v >> 8) & 0xFF))


def _u32(v):
    return bytes((v & 0xFF, (v >> 8) & 0xFF, (v >> 16) & 0xFF, (v >> 24) & 0xFF))


class _OutPin:
    """The radar's OUT pin as a machine.Pin stand-in (value() only)."""

    def __init__(self, sim):
        self._sim = sim

    def value(self):
        self._sim._advance()
        return self._sim.out_level()


class SimLD2410:
    """UART stand-in for one radar: `read(n)`, `readinto(buf[, n])`, `write(buf)`, `any()`,
    `init(baudrate=...)` (the host side's speed). Ground truth: `set_targets`, `set_clutter`,
    `set_light`. Faults: `garbage_rate`, `flip_rate`, `drop_rate` (probabilities per frame,
    per byte, per byte), `stuck` (repeats the last frame), `silent` (sends and answers
    nothing); `clear_faults()` resets them all.
    """

    # CPython keeps no per-instance dict with slots (~1 KB less per simulated radar in a fleet);
    # MicroPython ignores __slots__.
    __slots__ = (
        "_auto_end_ms", "_auto_result", "_auto_result_until", "_auto_state", "_booting_until",
        "_clock", "_clutter_moving", "_clutter_stationary", "_det_cm", "_host_baud", "_in",
        "_last_frame", "_last_presence_ms", "_mov_cm", "_next_report_ms", "_occupied", "_out",
        "_pending", "_prng", "_stat_cm", "_targets", "baud_index", "bluetooth", "drop_rate",
        "engineering", "firmware", "flip_rate", "garbage_rate", "gate_size_index", "in_config",
        "light", "light_mode", "light_threshold", "mac", "max_moving_gate", "max_stationary_gate",
        "model", "moving_sensitivity", "no_one_s", "noise", "out_idle_level", "password", "silent",
        "stationary_sensitivity", "stuck",
    )  # fmt: skip

    def __init__(self, clock, seed=0, model="LD2410C", firmware=None):
        if model not in MODELS:
            raise ValueError("unknown LD2410 model %r; use one of %s" % (model, MODELS))
        self._clock = clock
        self._prng = Prng(seed)
        self.model = model
        self.firmware = firmware if firmware is not None else _FIRMWARE[model]
        r = self._prng
        self.mac = bytes(r.randint(0, 255) for _ in range(6))
        self._host_baud = 256000
        self._out = bytearray()
        self._in = b""
        self._targets = []
        self._clutter_moving = bytearray(9)
        self._clutter_stationary = bytearray(9)
        self.noise = 0  # +- this much random energy on every gate, each frame
        self.light = 0  # ambient light sensor value 0-255 (B/C)
        self._factory_defaults()
        self.baud_index = 7
        self.bluetooth = True
        self.password = b"HiLink"
        self.gate_size_index = 0
        self._pending = {}  # settings that apply at the next restart
        self.in_config = False
        self.engineering = False
        self._booting_until = None
        now = clock.ticks_ms()
        self._next_report_ms = clock.ticks_add(now, REPORT_PERIOD_MS)
        self._mov_cm = 0  # last reported distances: the module does not zero them [TAS][MG]
        self._stat_cm = 0
        self._det_cm = 0
        self._occupied = False
        self._last_presence_ms = now
        self._auto_end_ms = None  # auto-threshold routine: when it ends
        self._auto_result = 0  # 0 idle, 1 running, 2 done (0x001B)
        self._auto_state = 0  # 5 or 6 once done, shown in reports until _auto_result_until
        self._auto_result_until = now
        self._last_frame = None
        self.clear_faults()

    def _factory_defaults(self):
        self.max_moving_gate = 8
        self.max_stationary_gate = 8
        self.no_one_s = 5
        self.moving_sensitivity = bytearray(DEFAULT_MOVING)
        self.stationary_sensitivity = bytearray(DEFAULT_STATIONARY)
        self.light_mode = 0
        self.light_threshold = 0x80
        self.out_idle_level = 0

    # ---- ground truth and faults ---------------------------------------------------------

    def set_targets(self, targets):
        """Targets now in the room: [(distance_cm, "moving" | "stationary", energy 0-100)]."""
        checked = []
        for t in targets:
            if len(t) != 3:
                raise ValueError("target must be (distance_cm, kind, energy), got %r" % (t,))
            distance, kind, energy = t
            if not isinstance(distance, int) or distance < 0 or distance > 65535:
                raise ValueError("target distance_cm must be an int 0..65535, got %r" % (distance,))
            if kind != "moving" and kind != "stationary":
                raise ValueError("target kind must be 'moving' or 'stationary', got %r" % (kind,))
            if not isinstance(energy, int) or energy < 0 or energy > 100:
                raise ValueError("target energy must be an int 0..100, got %r" % (energy,))
            checked.append((distance, kind == "moving", energy))
        self._advance()  # reports due before the change see the old room
        self._targets = checked

    def set_clutter(self, moving=None, stationary=None):
        """Background energy per gate 0..8 (9 values 0-100), e.g. a fan or a wall."""
        self._advance()
        for name, values, dest in (
            ("moving", moving, self._clutter_moving),
            ("stationary", stationary, self._clutter_stationary),
        ):
            if values is None:
                continue
            if len(values) != 9 or any(v < 0 or v > 100 for v in values):
                raise ValueError("%s clutter must be 9 energies 0..100, got %r" % (name, values))
            for g in range(9):
                dest[g] = values[g]

    def set_light(self, value):
        """Ambient light as the module's light sensor reads it, 0-255."""
        if not isinstance(value, int) or value < 0 or value > 255:
            raise ValueError("light must be an int 0..255, got %r" % (value,))
        self._advance()
        self.light = value

    def clear_faults(self):
        self.garbage_rate = 0.0
        self.flip_rate = 0.0
        self.drop_rate = 0.0
        self.stuck = False
        self.silent = False

    def out_level(self):
        """Electrical level of OUT: occupancy, inverted when the idle level is high (0x00AD)."""
        return (1 if self._occupied else 0) ^ self.out_idle_level

    @property
    def out_pin(self):
        return _OutPin(self)

    # ---- UART side -----------------------------------------------------------------------

    def init(self, baudrate=256000, **kwargs):
        """Like machine.UART.init: the host's speed. A mismatch turns every byte to noise."""
        self._host_baud = baudrate

    def any(self):
        self._advance()
        return len(self._out)

    def read(self, n=-1):
        self._advance()
        out = self._out
        if not out:
            return None  # machine.UART.read returns None when nothing arrived
        if n is None or n < 0 or n > len(out):
            n = len(out)
        data = bytes(out[:n])
        out[0:n] = b""
        return data

    def readinto(self, buf, n=None):
        self._advance()
        out = self._out
        if n is None or n > len(buf):
            n = len(buf)
        if n > len(out):
            n = len(out)
        if n == 0:
            return None
        for i in range(n):
            buf[i] = out[i]
        out[0:n] = b""
        return n

    def write(self, buf):
        self._advance()
        data = bytes(buf)
        if self.silent or self._booting_until is not None:
            return len(data)  # nobody listening
        if self._host_baud != BAUD_RATES[self.baud_index - 1]:
            return len(data)  # wrong speed: the module sees framing errors, not commands
        self._in = self._in + data
        self._take_commands()
        return len(data)

    # ---- time ----------------------------------------------------------------------------

    def _advance(self):
        clock = self._clock
        now = clock.ticks_ms()
        if self._booting_until is not None:
            if clock.ticks_diff(now, self._booting_until) < 0:
                return
            self._finish_restart(self._booting_until)
        if self.in_config:
            return  # no reports in config mode [AIO]
        while True:
            due = clock.ticks_diff(now, self._next_report_ms)
            if due < 0:
                return
            t = self._next_report_ms
            # Silent, or the receive buffer is full: nothing reaches the host until it reads,
            # so jump to the last report due. The room (OUT pin, auto thresholds) still moves.
            lost = self.silent or len(self._out) >= RX_BUFFER
            if lost:
                t = clock.ticks_add(t, due // REPORT_PERIOD_MS * REPORT_PERIOD_MS)
            self._next_report_ms = clock.ticks_add(t, REPORT_PERIOD_MS)
            frame = self._report_frame(t)
            if not lost:
                self._emit(frame)

    def _emit(self, frame):
        """Put a frame on the wire, through the fault switches."""
        r = self._prng
        out = self._out
        if self._host_baud != BAUD_RATES[self.baud_index - 1]:
            frame = bytes(r.randint(0, 255) for _ in range(len(frame)))
        if self.garbage_rate and r.chance(self.garbage_rate):
            for _ in range(r.randint(1, 16)):
                if len(out) < RX_BUFFER:
                    out.append(r.randint(0, 255))
        flip = self.flip_rate
        drop = self.drop_rate
        for b in frame:
            if len(out) >= RX_BUFFER:
                return  # overrun: the rest of this frame is lost
            if drop and r.chance(drop):
                continue
            if flip and r.chance(flip):
                b ^= 1 << r.randint(0, 7)
            out.append(b)

    # ---- reports -------------------------------------------------------------------------

    def _gate_cm(self):
        return GATE_SIZES_CM[self.gate_size_index]

    def _report_frame(self, t):
        if self.stuck and self._last_frame is not None:
            return self._last_frame
        gate_cm = self._gate_cm()
        r = self._prng
        mov = bytearray(self._clutter_moving)
        st = bytearray(self._clutter_stationary)
        if self.noise:
            for g in range(9):
                mov[g] = max(0, min(100, mov[g] + r.randint(-self.noise, self.noise)))
                st[g] = max(0, min(100, st[g] + r.randint(-self.noise, self.noise)))
        for distance, moving, energy in self._targets:
            g = distance // gate_cm
            if g > 8:
                continue  # beyond the last gate: invisible
            energies = mov if moving else st
            if energy > energies[g]:
                energies[g] = energy
        st[0] = st[1] = 0  # stationary gates 0-1 are not measured (fixed 0 [PB], TV3 shows 0)
        # The strongest target (or clutter peak) above its gate's threshold, within the max gate.
        m_cm, m_e = self._strongest(mov, self.moving_sensitivity, self.max_moving_gate, True)
        s_gate = self.max_stationary_gate
        s_cm, s_e = self._strongest(st, self.stationary_sensitivity, s_gate, False)
        state = (1 if m_e is not None else 0) | (2 if s_e is not None else 0)
        if m_e is not None:
            self._mov_cm = m_cm
        if s_e is not None:
            self._stat_cm = s_cm
        if state == 3:
            self._det_cm = min(m_cm, s_cm)
        elif state:
            self._det_cm = m_cm if state == 1 else s_cm
        # Undetected fields keep the last distance, with the energy now at that gate.
        if m_e is None:
            g = self._mov_cm // gate_cm
            m_e = mov[g] if g <= 8 else 0
        if s_e is None:
            g = self._stat_cm // gate_cm
            s_e = st[g] if g <= 8 else 0
        self._update_out(state != 0, t)
        state = self._auto_threshold_state(state, t)
        body = bytearray()
        body.append(state)
        body.extend(_u16(self._mov_cm))
        body.append(m_e)
        body.extend(_u16(self._stat_cm))
        body.append(s_e)
        body.extend(_u16(self._det_cm))
        if self.engineering:
            body.extend(b"\x08\x08")  # ld2410.md §4: send 8, whatever the configured gates
            body.extend(mov)
            body.extend(st)
            light = self.light if self.model != "LD2410" else 0
            body.append(light)
            body.append(1 if self._occupied else 0)
            kind = 0x01
        else:
            kind = 0x02
        length = len(body) + 4  # type, AA, ..., 55, 00
        frame = (
            _REPORT_HEADER + _u16(length) + bytes((kind, 0xAA)) + bytes(body) + b"\x55\x00"
            + _REPORT_FOOTER
        )  # fmt: skip
        self._last_frame = frame
        return frame

    def _strongest(self, energies, thresholds, max_gate, moving):
        """(distance_cm, energy) of the strongest detection, or (0, None) when none."""
        gate_cm = self._gate_cm()
        best_cm = 0
        best_e = None
        for distance, is_moving, energy in self._targets:
            if is_moving != moving:
                continue
            g = distance // gate_cm
            if g > max_gate or energy <= thresholds[g] or (g < 2 and not moving):
                continue
            if best_e is None or energy > best_e or (energy == best_e and distance < best_cm):
                best_cm, best_e = distance, energy
        for g in range(max_gate + 1):  # clutter alone can trip a gate: a false detection
            e = energies[g]
            if e > thresholds[g] and (best_e is None or e > best_e):
                covered = False
                for distance, is_moving, _ in self._targets:
                    if is_moving == moving and distance // gate_cm == g:
                        covered = True
                if not covered:
                    best_cm, best_e = g * gate_cm + gate_cm // 2, e
        return best_cm, best_e

    def _update_out(self, presence, t):
        """OUT: set on presence (only when the light condition holds, if enabled [PB]), cleared
        after the no-one duration without presence."""
        if presence:
            if not self._occupied:
                mode = self.light_mode
                if mode == 0:
                    ok = True
                elif mode == 1:
                    ok = self.light < self.light_threshold
                else:
                    ok = self.light > self.light_threshold
                self._occupied = ok
            if self._occupied:
                self._last_presence_ms = t
        elif (
            self._occupied
            and self._clock.ticks_diff(t, self._last_presence_ms) >= self.no_one_s * 1000
        ):
            self._occupied = False

    def _auto_threshold_state(self, state, t):
        """Target state as reported while the auto-threshold routine runs (4) or has just
        finished (5 succeeded, 6 failed), else `state` unchanged."""
        self._auto_check(t)
        if self._auto_state and self._clock.ticks_diff(self._auto_result_until, t) > 0:
            return self._auto_state
        return state if self._auto_end_ms is None else 4

    def _auto_check(self, t):
        """Finish the routine once its time is up: thresholds just above the empty room's
        clutter; anyone still in the room spoils it (state 6, thresholds unchanged)."""
        if self._auto_end_ms is None or self._clock.ticks_diff(t, self._auto_end_ms) < 0:
            return
        self._auto_end_ms = None
        self._auto_result = 2
        self._auto_result_until = self._clock.ticks_add(t, _AUTO_RESULT_MS)
        if self._targets:
            self._auto_state = 6
            return
        self._auto_state = 5
        for g in range(9):
            self.moving_sensitivity[g] = min(100, self._clutter_moving[g] + 10)
            if g >= 2:
                self.stationary_sensitivity[g] = min(100, self._clutter_stationary[g] + 10)

    # ---- commands ------------------------------------------------------------------------

    def _take_commands(self):
        """Cut complete command frames out of the input and answer each."""
        data = self._in
        while True:
            start = data.find(_ACK_HEADER)
            if start < 0:
                data = data[-3:]  # a header may be split across writes
                break
            data = data[start:]
            if len(data) < 6:
                break
            length = data[4] | (data[5] << 8)
            if length < 2 or length > 54:
                data = data[1:]
                continue
            if len(data) < length + 10:
                break
            if data[6 + length : 10 + length] != _ACK_FOOTER:
                data = data[1:]
                continue
            self._answer(data[6] | (data[7] << 8), data[8 : 6 + length])
            data = data[10 + length :]
        self._in = data

    def _ack(self, word, data=None):
        """Answer `word`: success with `data` (bytes), or status 1 (failure) when None."""
        payload = bytes((word & 0xFF, 0x01)) + (b"\x01\x00" if data is None else b"\x00\x00")
        payload += data or b""
        self._emit(_ACK_HEADER + _u16(len(payload)) + payload + _ACK_FOOTER)

    def _answer(self, word, value):
        if word == 0x00FF:
            ok = value == b"\x01\x00"
            self.in_config = self.in_config or ok
            self._ack(word, b"\x01\x00\x40\x00" if ok else None)  # protocol 1, buffer 64
        elif not self.in_config or not self._supports(word):
            # Commands are valid only in config mode [PB]; answering "failed" there (and to
            # commands this model lacks) is our choice: the module's reaction is undocumented.
            self._ack(word, None)
        else:
            self._ack(word, self._execute(word, value))
            if word == 0x00A3:
                self._booting_until = self._clock.ticks_add(self._clock.ticks_ms(), RESTART_MS)

    def _supports(self, word):
        if self.model == "LD2410":
            return word not in _B_C_ONLY  # the base module has no Bluetooth, light, 0.2 m gates
        fw = (self.firmware[0], self.firmware[1])
        if word in _FW_2_04:
            return fw >= (2, 0x04)
        if word in _FW_2_44:
            return fw >= (2, 0x44)
        return True

    def _execute(self, word, v):
        """Carry out one command in config mode; return the ACK data, or None for "failed"."""
        n = len(v)
        p = self._pending  # settings that apply only after a restart [PB]
        if word == 0x00FE and n == 0:
            self.in_config = False
            self._next_report_ms = self._clock.ticks_add(self._clock.ticks_ms(), REPORT_PERIOD_MS)
        elif word == 0x0060:
            k = _pairs(v)
            if k is None or not (1 <= k[0] <= 8 and 1 <= k[1] <= 8):
                return None
            self.max_moving_gate, self.max_stationary_gate, self.no_one_s = k
        elif word == 0x0061 and n == 0:
            return (
                bytes((0xAA, 8, self.max_moving_gate, self.max_stationary_gate))
                + bytes(self.moving_sensitivity) + bytes(self.stationary_sensitivity)
                + _u16(self.no_one_s)
            )  # fmt: skip
        elif (word == 0x0062 or word == 0x0063) and n == 0:
            self.engineering = word == 0x0062
        elif word == 0x0064:
            k = _pairs(v)
            if k is None or k[1] > 100 or k[2] > 100 or (k[0] > 8 and k[0] != 0xFFFF):
                return None
            for g in range(9) if k[0] == 0xFFFF else (k[0],):
                self.moving_sensitivity[g] = k[1]
                if g >= 2:  # stationary thresholds of gates 0 and 1 are fixed at 0 [PB]
                    self.stationary_sensitivity[g] = k[2]
        elif word == 0x00A0 and n == 0:
            major, minor, build = self.firmware
            return b"\x00\x01" + bytes((minor, major)) + _u32(build)
        elif word == 0x00A1 and n == 2 and 1 <= v[0] <= 8 and v[1] == 0:
            p["baud_index"] = v[0]
        elif word == 0x00A2 and n == 0:
            p["reset"] = True
            p["baud_index"] = 7
            p["bluetooth"] = True
            p["password"] = b"HiLink"
            p["gate_size_index"] = 0
        elif word == 0x00A3 and n == 0:
            pass  # the restart itself follows the ACK
        elif word == 0x00A4 and v in (b"\x00\x00", b"\x01\x00"):
            p["bluetooth"] = v[0] == 1
        elif word == 0x00A5 and v == b"\x01\x00":
            return self.mac
        elif word == 0x00A9 and n == 6:
            p["password"] = bytes(v)
        elif word == 0x00AA and v in (b"\x00\x00", b"\x01\x00"):
            p["gate_size_index"] = v[0]
        elif word == 0x00AB and n == 0:
            return _u16(self.gate_size_index)
        elif word == 0x00AD and n == 4 and v[0] <= 2 and v[2] <= 1:
            self.light_mode, self.light_threshold, self.out_idle_level = v[0], v[1], v[2]
        elif word == 0x00AE and n == 0:
            return bytes((self.light_mode, self.light_threshold, self.out_idle_level, 0))
        elif word == 0x000B and n == 2:
            ms = (v[0] | (v[1] << 8)) * 1000 + _AUTO_MEASURE_MS
            self._auto_end_ms = self._clock.ticks_add(self._clock.ticks_ms(), ms)
            self._auto_state = 0
            self._auto_result = 1
        elif word == 0x001B and n == 0:
            self._auto_check(self._clock.ticks_ms())
            return _u16(self._auto_result)
        else:
            return None  # unknown command or malformed value
        return b""

    def _finish_restart(self, t):
        self._booting_until = None
        self.in_config = False
        self.engineering = False  # lost at power-off; a restart also leaves it [AIO][MY]
        p = self._pending
        if p.pop("reset", False):
            self._factory_defaults()
        for key in ("baud_index", "bluetooth", "password", "gate_size_index"):
            if key in p:
                setattr(self, key, p.pop(key))
        self._auto_end_ms = None
        self._auto_state = 0
        self._next_report_ms = self._clock.ticks_add(t, REPORT_PERIOD_MS)


def _pairs(v):
    """Values of a 0x0060/0x0064 command: keys 0, 1, 2 each + u32; None if malformed."""
    if len(v) != 18 or v[0] != 0 or v[6] != 1 or v[12] != 2 or v[1] or v[7] or v[13]:
        return None
    # The module ignores the upper bytes of each u32 [AIO].
    return [v[o] | (v[o + 1] << 8) for o in (2, 8, 14)]
