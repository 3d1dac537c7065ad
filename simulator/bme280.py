"""A simulated BME280/BMP280: its register file, forced-mode timing and faults, on a SimI2C.

The data registers come from the ground truth by inverting the datasheet compensation: fix
t_fine from the temperature first, then binary-search the 20-bit pressure and 16-bit humidity
codes (T rises with adc_T, P falls with adc_P, H never falls with adc_H), so a driver reads the
truth back within the sensor's quantisation.

    sim = SimBME280(clock)                 # BME280 at the worked-example calibration
    bus.add(0x76, sim)
    sim.set_truth(21.5, 40.0, 1013.25)

Simplifications: the IIR filter, standby time and normal mode (mode 11) are stored but not
modelled; only forced conversions update the data registers.
"""

from drivers.bme280 import (
    Calibration,
    compensate_humidity_q22_10,
    compensate_pressure_q24_8,
    compensate_t_fine,
)
from drivers.compat import const
from simulator.i2c import I2CDevice

_REG_CALIB_TP = const(0x88)
_REG_ID = const(0xD0)
_REG_RESET = const(0xE0)
_REG_CALIB_H = const(0xE1)
_REG_CTRL_HUM = const(0xF2)
_REG_STATUS = const(0xF3)
_REG_CTRL_MEAS = const(0xF4)
_REG_CONFIG = const(0xF5)
_REG_DATA = const(0xF7)
_NO_DATA_20 = const(0x80000)
_NO_DATA_16 = const(0x8000)
_STARTUP_MS = const(2)

# dig_T1..T3, dig_P1..P9 (datasheet worked example), dig_H1..H6 (typical, sensors.md §1).
DEFAULT_CALIBRATION = (
    27504, 26435, -1000,
    36477, -10685, 3024, 2855, 140, -7, 15500, -14600, 6000,
    75, 362, 0, 313, 50, 30,
)  # fmt: skip
_OVERSAMPLING = (0, 1, 2, 4, 8, 16, 16, 16)  # osrs field -> factor; 101..111 all mean x16


def pack_calibration(values):
    """The NVM bytes for 18 trim values: (26 bytes at 0x88..0xA1, 7 bytes at 0xE1..0xE7).

    The inverse of drivers.bme280.Calibration, including the shared nibble of H4/H5 at 0xE5.
    Raises ValueError naming a value that does not fit its field.
    """
    if len(values) != 18:
        raise ValueError("need 18 trim values (T1..T3, P1..P9, H1..H6), got %d" % len(values))
    t1, t2, t3, p1, p2, p3, p4, p5, p6, p7, p8, p9, h1, h2, h3, h4, h5, h6 = values
    tp = bytearray(26)
    words = (t1, t2, t3, p1, p2, p3, p4, p5, p6, p7, p8, p9)
    for i in range(12):
        unsigned = i in (0, 3)  # dig_T1 and dig_P1 are u16, the rest s16
        _check("dig_" + ("T%d" % (i + 1) if i < 3 else "P%d" % (i - 2)), words[i], unsigned, 16)
        w = words[i] & 0xFFFF
        tp[2 * i] = w & 0xFF
        tp[2 * i + 1] = w >> 8
    _check("dig_H1", h1, True, 8)
    tp[25] = h1
    _check("dig_H2", h2, False, 16)
    _check("dig_H3", h3, True, 8)
    _check("dig_H4", h4, False, 12)
    _check("dig_H5", h5, False, 12)
    _check("dig_H6", h6, False, 8)
    h = bytearray(7)
    h[0] = h2 & 0xFF
    h[1] = (h2 >> 8) & 0xFF
    h[2] = h3
    h[3] = (h4 >> 4) & 0xFF
    h[4] = (h4 & 0x0F) | (h5 & 0x0F) << 4
    h[5] = (h5 >> 4) & 0xFF
    h[6] = h6 & 0xFF
    return bytes(tp), bytes(h)


def _check(name, value, unsigned, bits):
    lo, hi = (0, (1 << bits) - 1) if unsigned else (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    if not lo <= value <= hi:
        raise ValueError("%s = %d does not fit its field (%d..%d)" % (name, value, lo, hi))


def _nearest_code(f, target, hi, rising):
    """The code in 0..hi whose f(code) is nearest `target`; f monotonic (rising or falling)."""
    lo_c, hi_c = 0, hi
    # Find the first code whose value reaches the target (in the direction f moves).
    while lo_c < hi_c:
        mid = (lo_c + hi_c) // 2
        v = f(mid)
        if (v >= target) if rising else (v <= target):
            hi_c = mid
        else:
            lo_c = mid + 1
    if lo_c > 0 and abs(f(lo_c - 1) - target) <= abs(f(lo_c) - target):
        return lo_c - 1
    return lo_c


class SimBME280(I2CDevice):
    """The register file of one BME280 (chip_id 0x60) or BMP280 (0x58) behind an I2C address.

    Faults: `nack`/`nack_next`/`nack_rate` (from I2CDevice), `stuck = True` (conversions leave
    the data registers frozen), `chip_id = 0x..` (a foreign part answers at the address).
    """

    def __init__(self, clock, chip_id=0x60, calibration=DEFAULT_CALIBRATION):
        super().__init__()
        self._clock = clock
        self.chip_id = chip_id
        self.stuck = False
        tp, h = pack_calibration(calibration)
        self.regs = bytearray(256)
        self.regs[_REG_CALIB_TP : _REG_CALIB_TP + 26] = tp
        self.regs[_REG_CALIB_H : _REG_CALIB_H + 7] = h
        self.calibration = Calibration(tp, h)
        self.temperature_c = 25.0
        self.humidity_pct = 50.0
        self.pressure_hpa = 1013.25
        self.conversions = 0
        self._pointer = 0
        self._ctrl_hum_written = 0  # ctrl_hum applies only at the next ctrl_meas write
        self._ctrl_hum = 0
        self._busy_until = None  # ticks when the running forced conversion ends
        self._pending = None  # codes of that conversion, copied into 0xF7.. when it ends
        self._im_update_until = None
        self._reset()

    @property
    def has_humidity(self):
        return self.chip_id == 0x60

    def set_truth(self, temperature_c, humidity_pct=None, pressure_hpa=None):
        """The world around the sensor; the next conversion reports it."""
        self.temperature_c = temperature_c
        if humidity_pct is not None:
            self.humidity_pct = humidity_pct
        if pressure_hpa is not None:
            self.pressure_hpa = pressure_hpa

    def codes_for(self, temperature_c, humidity_pct, pressure_hpa):
        """(adc_T, adc_P, adc_H) that compensate nearest to the given truth."""
        cal = self.calibration
        adc_t = _nearest_code(
            lambda c: compensate_t_fine(c, cal), temperature_c * 5120, 0xFFFFF, True
        )
        if adc_t == _NO_DATA_20:
            adc_t += 1  # same t_fine (both shifts drop bit 0) but not read as "no data"
        t_fine = compensate_t_fine(adc_t, cal)
        adc_p = _nearest_code(
            lambda c: compensate_pressure_q24_8(c, t_fine, cal),
            pressure_hpa * 25600,
            0xFFFFF,
            False,
        )
        if adc_p == _NO_DATA_20:
            adc_p += 1  # one code off: within the pressure quantisation
        adc_h = _nearest_code(
            lambda c: compensate_humidity_q22_10(c, t_fine, cal), humidity_pct * 1024, 0xFFFF, True
        )
        if adc_h == _NO_DATA_16:
            adc_h += 1
        return adc_t, adc_p, adc_h

    # I2C framing (datasheet 6.2): a write is a register address then (data, address) pairs;
    # a read continues from the last address with auto-increment.
    def write(self, data):
        if not data:
            return
        self._pointer = data[0]
        i = 1
        reg = data[0]
        while i < len(data):
            self._write_reg(reg, data[i])
            i += 1
            if i < len(data):
                reg = data[i]
                i += 1

    def read(self, n):
        self._tick()
        out = bytearray(n)
        for i in range(n):
            out[i] = self._read_reg((self._pointer + i) & 0xFF)
        self._pointer = (self._pointer + n) & 0xFF
        return out

    def _read_reg(self, reg):
        if reg == _REG_ID:
            return self.chip_id
        if reg == _REG_STATUS:
            status = 0
            if self._busy_until is not None:
                status |= 0x08
            if self._im_update_until is not None:
                status |= 0x01
            return status
        if reg >= 0xFD and not self.has_humidity:
            return 0x80 if reg == 0xFD else 0x00
        return self.regs[reg]

    def _write_reg(self, reg, value):
        self._tick()
        if reg == _REG_RESET:
            if value == 0xB6:  # other values are ignored (datasheet 5.4.2)
                self._reset()
        elif reg == _REG_CTRL_HUM:
            self._ctrl_hum_written = value & 0x07
            self.regs[reg] = value & 0x07
        elif reg == _REG_CTRL_MEAS:
            self.regs[reg] = value
            self._ctrl_hum = self._ctrl_hum_written
            if (value & 0x03) in (1, 2):  # 01 and 10 both mean forced
                self._start_forced()
        elif reg == _REG_CONFIG:
            self.regs[reg] = value
        # other registers are read-only: writes are ignored

    def _reset(self):
        for reg in (_REG_CTRL_HUM, _REG_CTRL_MEAS, _REG_CONFIG):
            self.regs[reg] = 0
        self._ctrl_hum_written = self._ctrl_hum = 0
        # Reset values of the data registers: a skipped / never-run channel reads 0x80000.
        self.regs[_REG_DATA : _REG_DATA + 8] = b"\x80\x00\x00\x80\x00\x00\x80\x00"
        self._busy_until = None
        self._pending = None
        self._im_update_until = self._clock.ticks_add(self._clock.ticks_ms(), _STARTUP_MS)

    def _start_forced(self):
        ctrl = self.regs[_REG_CTRL_MEAS]
        n_t = _OVERSAMPLING[ctrl >> 5]
        n_p = _OVERSAMPLING[(ctrl >> 2) & 0x07]
        n_h = _OVERSAMPLING[self._ctrl_hum] if self.has_humidity else 0
        # Typical conversion time (datasheet 9.1): a driver waiting the maximum finds it done.
        us = 1000 + 2000 * n_t
        if n_p:
            us += 2000 * n_p + 500
        if n_h:
            us += 2000 * n_h + 500
        self._busy_until = self._clock.ticks_add(self._clock.ticks_ms(), (us + 999) // 1000)
        self.conversions += 1
        if self.stuck:
            self._pending = None
            return
        adc_t, adc_p, adc_h = self.codes_for(
            self.temperature_c, self.humidity_pct, self.pressure_hpa
        )
        self._pending = (
            adc_t if n_t else _NO_DATA_20,
            adc_p if n_p else _NO_DATA_20,
            adc_h if n_h else _NO_DATA_16,
        )

    def _tick(self):
        now = self._clock.ticks_ms()
        if self._im_update_until is not None:
            if self._clock.ticks_diff(now, self._im_update_until) >= 0:
                self._im_update_until = None
        if self._busy_until is None:
            return
        if self._clock.ticks_diff(now, self._busy_until) < 0:
            return
        self._busy_until = None
        self.regs[_REG_CTRL_MEAS] &= 0xFC  # forced mode ends in sleep (datasheet 3.3.3)
        if self._pending is not None:
            adc_t, adc_p, adc_h = self._pending
            r = self.regs
            r[0xF7] = adc_p >> 12
            r[0xF8] = (adc_p >> 4) & 0xFF
            r[0xF9] = (adc_p & 0x0F) << 4
            r[0xFA] = adc_t >> 12
            r[0xFB] = (adc_t >> 4) & 0xFF
            r[0xFC] = (adc_t & 0x0F) << 4
            r[0xFD] = adc_h >> 8
            r[0xFE] = adc_h & 0xFF
            self._pending = None
