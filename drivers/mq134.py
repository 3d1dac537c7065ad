"""MQ-134 metal-oxide gas sensor on an ESP32 ADC pin: volts, Rs, Rs/R0 and ppm, with faults.

The module's analog output is Vout = Vc * RL / (Rs + RL) (sensors.md §4), usually through a
divider so a 5 V output fits the ADC. The driver averages N samples (integers only, no
allocation), undoes the divider, solves for the sensor resistance Rs, corrects it for
temperature and humidity and maps Rs/R0 through a power law ppm = a * (Rs/R0) ** b.

MQ-134 has no published curve: DEFAULT_A/DEFAULT_B (MQ-135's CO2 fit) and DEFAULT_R0_OHM are
placeholders so the numbers move in the right direction; calibrate R0 in clean air and fit a, b
for the gas you care about before trusting ppm. Rs (`rs_ohm`) is the portable raw value.

    from machine import ADC, Pin
    gas = MQ134(ADC(Pin(34), atten=ADC.ATTN_11DB), atten="ATTN_11DB", divider_ratio=2.0,
                load_ohm=10000, supply_v=5.0)
    gas.set_environment(24.5, 40.0)
    r = gas.read()          # r.ppm, r.rs_ohm, r.ratio, r.volts, r.raw_u16, r.quality, r.reason
"""

from drivers.compat import SYSTEM_CLOCK, const
from drivers.sensor import BAD, GOOD, SUSPECT, WARMING_UP, SensorError

# Nominal input voltage at the top count per attenuation, uncalibrated (ESP-IDF v4
# driver/adc.h, "full-scale voltage"); used only when the port has no read_uv().
FULL_SCALE_V = {"ATTN_0DB": 1.1, "ATTN_2_5DB": 1.5, "ATTN_6DB": 2.2, "ATTN_11DB": 3.9}
# Upper end of the linear range (sensors.md §5): above it readings are kept but SUSPECT.
LINEAR_MAX_V = {"ATTN_0DB": 0.95, "ATTN_2_5DB": 1.25, "ATTN_6DB": 1.75, "ATTN_11DB": 2.45}

DEFAULT_A = 116.6020682  # placeholder: MQ-135 CO2 fit (GeorgK/MQ135), no MQ-134 curve exists
DEFAULT_B = -2.769034857  # placeholder, see DEFAULT_A
DEFAULT_R0_OHM = 76630.0  # placeholder: GeorgK's old RZero; calibrate in clean air
DEFAULT_WARMUP_MS = 180000  # "minutes" after power-on for a burned-in sensor (unconfirmed)

# read_u16 = (raw << 4) | (raw >> 8) for 12-bit counts (sensors.md §5): 4095 -> 65535.
_U16_SATURATED = const(0xFFF0)  # raw count 4095: the ADC clipped
_U16_OPEN = const(0x0010)  # raw count 0: nothing drives the pin above ~0.1 V (RL pulls it low)
_MAX_SAMPLES = const(64)  # 64 * 3.9e6 uV stays a small int (< 2**30) on the ESP32

# Reasons carried with quality BAD (interned strings: comparing allocates nothing).
OPEN_CIRCUIT = "open_circuit"
SATURATED = "saturated"
ABOVE_SUPPLY = "above_supply"


class MQ134Error(SensorError):
    """The ADC could not be read; `cause` holds the OSError from the port."""


def compensation_factor(temperature_c, humidity_pct):
    """Rs(t, h) / Rs(20 °C, 33 %RH)-like factor; divide Rs by it (GeorgK fit, sensors.md §4).

    CF = 0.00035 t^2 - 0.02718 t + 1.39538 - 0.0018 (h - 33). Multiplicative: adding it to the
    ratio instead (as one library example does) shifts Rs/R0 by about +1.
    """
    t = temperature_c
    return 0.00035 * t * t - 0.02718 * t + 1.39538 - 0.0018 * (humidity_pct - 33.0)


def ppm_from_ratio(ratio, a=DEFAULT_A, b=DEFAULT_B):
    """Concentration for Rs/R0 by the power law ppm = a * ratio ** b."""
    return a * ratio**b


def ratio_from_ppm(ppm, a=DEFAULT_A, b=DEFAULT_B):
    """Inverse of ppm_from_ratio: Rs/R0 = (ppm / a) ** (1 / b)."""
    return (ppm / a) ** (1.0 / b)


def rs_from_vout(vout, supply_v, load_ohm):
    """Sensor resistance from the module output: Rs = RL (Vc - Vout) / Vout."""
    return load_ohm * (supply_v - vout) / vout


def vout_from_rs(rs_ohm, supply_v, load_ohm):
    """Module output for a sensor resistance: Vout = Vc RL / (Rs + RL)."""
    return supply_v * load_ohm / (rs_ohm + load_ohm)


class GasReading:
    """One averaged measurement. The driver refills the same object on every read(): copy
    the values you keep. Unknown values (after a fault) are None."""

    def __init__(self):
        self.ppm = None  # type: float | None
        self.ratio = None  # type: float | None  # Rs / R0 after compensation
        self.rs_ohm = None  # type: float | None  # compensated sensor resistance
        self.rs_raw_ohm = None  # type: float | None  # before T/H compensation
        self.volts = 0.0  # module output, divider undone
        self.adc_volts = 0.0  # at the pin
        self.raw_u16 = 0  # mean read_u16()
        self.counts = 0  # mean 12-bit count
        self.samples = 0
        self.quality = WARMING_UP
        self.reason = None  # type: str | None  # why the quality is not GOOD


class MQ134:
    """MQ-134 behind a resistor divider on one ADC pin.

    adc: an object with read_u16() (and read_uv() on the ESP32 port, preferred: eFuse
    calibrated). atten: the attenuation the ADC was built with, as its MicroPython constant
    name. divider_ratio: V_module / V_pin (1.0 = no divider). load_ohm, supply_v: RL and Vc of
    the module. Raises ValueError for impossible parameters.
    """

    def __init__(
        self,
        adc,
        clock=SYSTEM_CLOCK,
        atten="ATTN_11DB",
        divider_ratio=1.0,
        load_ohm=10000.0,
        supply_v=5.0,
        r0_ohm=DEFAULT_R0_OHM,
        a=DEFAULT_A,
        b=DEFAULT_B,
        warmup_ms=DEFAULT_WARMUP_MS,
        samples=16,
        use_uv=None,
    ):
        if atten not in FULL_SCALE_V:
            raise ValueError("unknown attenuation %r; use one of %s" % (atten, list(FULL_SCALE_V)))
        if divider_ratio < 1:
            raise ValueError("divider_ratio %r < 1: it is V_module / V_pin" % (divider_ratio,))
        if load_ohm <= 0 or supply_v <= 0 or r0_ohm <= 0 or a <= 0:
            raise ValueError(
                "load_ohm, supply_v, r0_ohm and a must be positive: %r, %r, %r, %r"
                % (load_ohm, supply_v, r0_ohm, a)
            )
        if b == 0:
            raise ValueError("curve exponent b must not be 0")
        if not 1 <= samples <= _MAX_SAMPLES:
            raise ValueError("samples %r: use 1..%d" % (samples, _MAX_SAMPLES))
        if warmup_ms < 0:
            raise ValueError("warmup_ms must be >= 0, got %r" % (warmup_ms,))
        self._adc = adc
        self._clock = clock
        self._full_scale_v = FULL_SCALE_V[atten]
        self._linear_max_v = LINEAR_MAX_V[atten]
        self._divider = float(divider_ratio)
        self._load_ohm = float(load_ohm)
        self._supply_v = float(supply_v)
        self.r0_ohm = float(r0_ohm)
        self.a = float(a)
        self.b = float(b)
        self._warmup_ms = warmup_ms
        self._samples = samples
        self._use_uv = hasattr(adc, "read_uv") if use_uv is None else use_uv
        self._temperature_c = None
        self._humidity_pct = None
        self._reading = GasReading()
        # Sums of the last sample() call: ints only, so sampling allocates nothing.
        self._sum_u16 = 0
        self._sum_uv = 0
        self._n_saturated = 0
        self._n_open = 0
        self._started = clock.ticks_ms()

    def restart_warmup(self):
        """Call when the heater is switched on again (after deep sleep or a power cut)."""
        self._started = self._clock.ticks_ms()

    def warming_up(self):
        return self._clock.ticks_diff(self._clock.ticks_ms(), self._started) < self._warmup_ms

    def set_environment(self, temperature_c, humidity_pct):
        """Ambient conditions for compensation (from the BME280); None turns it off."""
        self._temperature_c = temperature_c
        self._humidity_pct = humidity_pct

    def sample(self):
        """Take N readings into the integer sums. Allocates nothing; raises MQ134Error."""
        adc = self._adc
        use_uv = self._use_uv
        s16 = 0
        suv = 0
        sat = 0
        low = 0
        try:
            for _ in range(self._samples):
                v = adc.read_u16()
                s16 += v
                if v >= _U16_SATURATED:
                    sat += 1
                elif v < _U16_OPEN:
                    low += 1
                if use_uv:
                    suv += adc.read_uv()
        except OSError as exc:
            raise MQ134Error("MQ134: ADC read failed", exc)
        self._sum_u16 = s16
        self._sum_uv = suv
        self._n_saturated = sat
        self._n_open = low

    def read(self):
        """Sample and convert. Returns the driver's GasReading (refilled in place).

        Quality: BAD with reason open_circuit / saturated / above_supply when most samples
        say so (ppm, ratio and Rs are then None); WARMING_UP during the heater warm-up;
        SUSPECT if some samples clipped, the pin is above the ADC's linear range, or the
        ambient conditions are outside the compensation fit (-10..45 °C, < 95 %RH).
        """
        self.sample()
        n = self._samples
        r = self._reading
        r.samples = n
        mean_u16 = self._sum_u16 // n
        r.raw_u16 = mean_u16
        r.counts = mean_u16 >> 4
        if self._use_uv:
            adc_v = self._sum_uv / n / 1000000.0
        else:
            adc_v = mean_u16 * self._full_scale_v / 65535.0
        r.adc_volts = adc_v
        vout = adc_v * self._divider
        r.volts = vout
        r.ppm = r.ratio = r.rs_ohm = r.rs_raw_ohm = None
        fault = None
        if self._n_open * 2 > n:
            fault = OPEN_CIRCUIT
        elif self._n_saturated * 2 > n:
            fault = SATURATED
        elif vout >= self._supply_v:
            fault = ABOVE_SUPPLY  # a wrong divider_ratio or supply_v in the board file
        elif vout <= 0.0:
            fault = OPEN_CIRCUIT
        if fault is not None:
            r.quality = BAD
            r.reason = fault
            return r
        rs = rs_from_vout(vout, self._supply_v, self._load_ohm)
        r.rs_raw_ohm = rs
        reason = None
        t = self._temperature_c
        h = self._humidity_pct
        if t is not None and h is not None:
            rs = rs / compensation_factor(t, h)
            if not (-10.0 <= t <= 45.0 and 0.0 <= h < 95.0):
                reason = "environment_out_of_range"
        r.rs_ohm = rs
        ratio = rs / self.r0_ohm
        r.ratio = ratio
        r.ppm = ppm_from_ratio(ratio, self.a, self.b)
        if self._n_saturated or self._n_open:
            reason = "some_samples_clipped"
        elif adc_v > self._linear_max_v:
            reason = "above_linear_range"
        if self.warming_up():
            r.quality = WARMING_UP
            r.reason = "warming_up"
        elif reason is not None:
            r.quality = SUSPECT
            r.reason = reason
        else:
            r.quality = GOOD
            r.reason = None
        return r
