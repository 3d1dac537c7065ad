"""A simulated MQ-134 as seen by the ESP32 ADC pin: ppm in, counts and microvolts out.

Ground truth (`ppm`, `temperature_c`, `humidity_pct`) goes through the inverse power law, the
ambient factor, the RL circuit, the divider and a 12-bit quantiser, so the driver reading it
back must recover the truth within one count. Faults: "saturated" (pin at full scale),
"disconnected" (open circuit: RL pulls the output to 0 V), "stuck" (frozen at the value when
set), and `noise_counts` (uniform +-n counts per read from the device's own Prng).

    adc = SimMQ134(ppm=400, divider_ratio=2.0)
    gas = MQ134(adc, clock, divider_ratio=2.0)
    adc.ppm = 1200; gas.read().ppm   # ~1200
"""

from drivers.mq134 import (
    DEFAULT_A,
    DEFAULT_B,
    DEFAULT_R0_OHM,
    FULL_SCALE_V,
    compensation_factor,
    ratio_from_ppm,
    vout_from_rs,
)
from simulator.prng import Prng

FAULTS = (None, "saturated", "disconnected", "stuck")


class SimMQ134:
    """The ADC object the MQ134 driver reads: read(), read_u16(), read_uv()."""

    def __init__(
        self,
        ppm=400.0,
        r0_ohm=DEFAULT_R0_OHM,
        a=DEFAULT_A,
        b=DEFAULT_B,
        load_ohm=10000.0,
        supply_v=5.0,
        divider_ratio=1.0,
        atten="ATTN_11DB",
        temperature_c=20.0,
        humidity_pct=33.0,
        seed=0,
    ):
        if atten not in FULL_SCALE_V:
            raise ValueError("unknown attenuation %r" % (atten,))
        self.ppm = ppm
        self.r0_ohm = r0_ohm
        self.a = a
        self.b = b
        self.load_ohm = load_ohm
        self.supply_v = supply_v
        self.divider_ratio = divider_ratio
        self.temperature_c = temperature_c
        self.humidity_pct = humidity_pct
        self.noise_counts = 0
        self.reads = 0  # how many conversions the driver asked for
        self._full_scale_v = FULL_SCALE_V[atten]
        self._prng = Prng(seed)
        self._fault = None
        self._stuck_count = 0

    @property
    def fault(self):
        return self._fault

    def set_fault(self, fault):
        """One of FAULTS; "stuck" freezes the count the pin shows right now."""
        if fault not in FAULTS:
            raise ValueError("unknown fault %r; use one of %r" % (fault, FAULTS))
        if fault == "stuck":
            self._stuck_count = self._true_count()
        self._fault = fault

    def rs_ohm(self):
        """The sensor resistance the truth implies: R0 * (ppm/a)^(1/b) * CF(t, h)."""
        ratio = ratio_from_ppm(self.ppm, self.a, self.b)
        return self.r0_ohm * ratio * compensation_factor(self.temperature_c, self.humidity_pct)

    def pin_volts(self):
        """Voltage at the ADC pin (before quantisation), clipped to the ADC's input range."""
        v = vout_from_rs(self.rs_ohm(), self.supply_v, self.load_ohm) / self.divider_ratio
        return min(max(v, 0.0), self._full_scale_v)

    def _true_count(self):
        return int(self.pin_volts() / self._full_scale_v * 4095 + 0.5)

    def _count(self):
        self.reads += 1
        fault = self._fault
        if fault == "saturated":
            return 4095
        if fault == "disconnected":
            return 0
        count = self._stuck_count if fault == "stuck" else self._true_count()
        n = self.noise_counts
        if n and fault != "stuck":
            count += self._prng.randint(-n, n)
        return min(max(count, 0), 4095)

    def read(self):
        """12-bit count, as ADC.read() on the ESP32 port at the default width."""
        return self._count()

    def read_u16(self):
        """The count scaled to 16 bits the way the ESP32 port does: (raw << 4) | (raw >> 8)."""
        raw = self._count()
        return (raw << 4) | (raw >> 8)

    def read_uv(self):
        """Microvolts in 1 mV steps, as the calibrated read_uv() returns them."""
        raw = self._count()
        mv = int(raw * self._full_scale_v * 1000.0 / 4095 + 0.5)
        return mv * 1000
