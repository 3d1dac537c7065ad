"""Folds the sensor stream of one period into one reading's values.

The radar reports about 10 times a second; PIR events, gas samples and environment samples come
at their own cadence. A `Window` accumulates them in a few scalars (adding allocates nothing)
and `close()` returns the reading's `values`: {name: [value, quality]} with

    presence       bool   someone was detected during the window
    distance_cm    int    nearest target seen while present (0 when nobody)
    energy         int    strongest target energy seen while present (0..100)
    occupancy      float  fraction of radar reports with presence (0..1, 3 decimals)
    motion         bool   the PIR saw motion during the window
    motion_events  int    PIR events counted
    gas_ppm        float  mean of the gas samples      gas_rs_ohm  mean sensor resistance
    temperature_c, humidity_pct, pressure_hpa          the latest environment sample

Radar quality: GOOD when at least half the expected reports arrived, SUSPECT when fewer, BAD
when none (values then 0/False). Other qualities come from the drivers; an average takes the
worst quality of the samples it used. A quantity never sampled is left out.
"""

from drivers.sensor import BAD, GOOD, SUSPECT
from firmware.validate import worse  # one quality order for the node (and one copy in RAM)


class Window:
    def __init__(self):
        self.reset()
        self._env = None  # (t, h, p) of the last good sample: carried across windows

    def reset(self):
        """Start a new window (keeps the last environment sample for `close`)."""
        self.radar_reports = 0
        self.radar_present = 0
        self.radar_stale = 0
        self.nearest_cm = -1
        self.strongest = 0
        self.pir_samples = 0
        self.pir_motion = False
        self.pir_events = 0
        self.pir_quality = GOOD
        self.gas_n = 0
        self.gas_ppm_sum = 0.0
        self.gas_rs_sum = 0.0
        self.gas_quality = GOOD
        self.gas_bad_n = 0
        self.gas_bad_valued = 0
        self.gas_bad_ppm_sum = 0.0
        self.gas_bad_rs_sum = 0.0
        self.env_n = 0
        self.env_quality = BAD
        self.env_errors = 0

    def add_radar(self, report):
        """One decoded LD2410 report (drivers.ld2410 Report: presence, target state, distances)."""
        self.radar_reports += 1
        if not report.presence:
            return
        self.radar_present += 1
        state = report.target_state
        # Target state bits (LD2410 protocol): 1 = moving, 2 = stationary, 3 = both.
        if state & 1:
            self._target(report.moving_distance_cm, report.moving_energy)
        if state & 2:
            self._target(report.stationary_distance_cm, report.stationary_energy)

    def _target(self, distance_cm, energy):
        if self.nearest_cm < 0 or distance_cm < self.nearest_cm:
            self.nearest_cm = distance_cm
        if energy > self.strongest:
            self.strongest = energy

    def radar_missed(self):
        """A radar poll found no fresh report (stale or broken stream)."""
        self.radar_stale += 1

    def add_pir(self, motion, events, quality=GOOD):
        self.pir_samples += 1
        if motion or events:
            self.pir_motion = True
        self.pir_events += events
        self.pir_quality = worse(self.pir_quality, quality)

    def add_gas(self, ppm, rs_ohm, quality=GOOD):
        """A gas sample; ppm and rs_ohm are None when the driver could not compute them."""
        if quality == BAD or ppm is None:  # kept apart: reported only when nothing better came
            self.gas_bad_n += 1
            if ppm is not None:
                self.gas_bad_valued += 1
                self.gas_bad_ppm_sum += ppm
                self.gas_bad_rs_sum += rs_ohm
            return
        self.gas_n += 1
        self.gas_ppm_sum += ppm
        self.gas_rs_sum += rs_ohm
        self.gas_quality = worse(self.gas_quality, quality)

    def add_env(self, temperature_c, humidity_pct, pressure_hpa, quality=GOOD):
        """An environment sample; humidity or pressure may be None (BMP280, SHT3x/AHT20)."""
        self.env_n += 1
        self._env = (temperature_c, humidity_pct, pressure_hpa)
        self.env_quality = quality

    def env_failed(self):
        """The environment sensor could not be read this time."""
        self.env_errors += 1

    def close(self, expected_radar_reports):
        """The window's values ({name: [value, quality]}); then starts a new window."""
        values = {}
        self._close_radar(values, expected_radar_reports)
        if self.pir_samples:
            values["motion"] = [self.pir_motion, self.pir_quality]
            values["motion_events"] = [self.pir_events, self.pir_quality]
        self._close_gas(values)
        self._close_env(values)
        self.reset()
        return values

    def _close_radar(self, values, expected):
        n = self.radar_reports
        if n == 0 and self.radar_stale == 0:
            return  # no radar task ran: nothing to say
        if n == 0:
            q = BAD
        elif n * 2 < expected:
            q = SUSPECT
        else:
            q = GOOD
        present = self.radar_present > 0
        values["presence"] = [present, q]
        values["distance_cm"] = [self.nearest_cm if present else 0, q]
        values["energy"] = [self.strongest if present else 0, q]
        values["occupancy"] = [round(self.radar_present / n, 3) if n else 0.0, q]

    def _close_gas(self, values):
        if self.gas_n:
            n, ppm, rs, q = self.gas_n, self.gas_ppm_sum, self.gas_rs_sum, self.gas_quality
            if self.gas_bad_n:
                q = worse(q, SUSPECT)  # some samples failed: the mean stands on fewer
        elif self.gas_bad_valued:
            n, ppm, rs, q = self.gas_bad_valued, self.gas_bad_ppm_sum, self.gas_bad_rs_sum, BAD
        elif self.gas_bad_n:  # every sample failed without a value (open circuit, saturated)
            values["gas_ppm"] = [None, BAD]
            return
        else:
            return
        values["gas_ppm"] = [round(ppm / n, 2), q]
        values["gas_rs_ohm"] = [round(rs / n, 1), q]

    def _close_env(self, values):
        if self._env is None:
            return
        q = self.env_quality if self.env_n else BAD  # no fresh sample: the old one, flagged
        t, h, p = self._env
        values["temperature_c"] = [t, q]
        if h is not None:
            values["humidity_pct"] = [h, q]
        if p is not None:
            values["pressure_hpa"] = [p, q]
