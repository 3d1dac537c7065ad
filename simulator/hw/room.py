"""The world around a virtual board: a quiet room with someone walking in now and then.

Pure: what the room holds at a wall-clock time (epoch ms), so it carries on across resets of the
board as a real room would. The script repeats every PERIOD_MS; the air drifts slowly with a
little jitter (a live sensor never repeats itself exactly, which the firmware's stuck check
would flag).

    room = Room(seed=1)
    room.people_at(t_ms)   # [(distance_cm, "moving" | "stationary", energy)]
    room.air_at(t_ms)      # (°C, %RH, hPa, gas ppm)
"""

import math

from simulator.prng import Prng

PERIOD_MS = 90000
# (from ms into the period, label, radar targets from then on)
SCRIPT = (
    (0, "the room is empty", []),
    (30000, "someone walks in", [(420, "moving", 70)]),
    (36000, "walks to the desk", [(200, "moving", 60)]),
    (42000, "sits down", [(150, "stationary", 55)]),
    (70000, "gets up and leaves", [(320, "moving", 65)]),
    (76000, "the room is empty", []),
)
_AIR_PERIOD_MS = 600000  # the slow drift of temperature and humidity: one cycle in 10 min


class Room:
    def __init__(self, seed=0):
        self._prng = Prng(seed)

    def moment_at(self, t_ms):
        """Index into SCRIPT of what is happening at `t_ms` (changes only at scripted times)."""
        t = t_ms % PERIOD_MS
        i = 0
        while i + 1 < len(SCRIPT) and SCRIPT[i + 1][0] <= t:
            i += 1
        return i

    def people_at(self, t_ms):
        return SCRIPT[self.moment_at(t_ms)][2]

    def label_at(self, t_ms):
        return SCRIPT[self.moment_at(t_ms)][1]

    def air_at(self, t_ms):
        """(°C, %RH, hPa, ppm): 21.5 ±0.5 °C and 45 ∓2 %RH over 10 min, 1013 hPa, 4 ppm gas."""
        phase = math.sin(2 * math.pi * (t_ms % _AIR_PERIOD_MS) / _AIR_PERIOD_MS)
        r = self._prng
        return (
            21.5 + 0.5 * phase + (r.random() - 0.5) * 0.06,
            45.0 - 2.0 * phase + (r.random() - 0.5) * 0.4,
            1013.2 + (r.random() - 0.5) * 0.1,
            4.0 * (1 + (r.random() - 0.5) * 0.04),
        )
