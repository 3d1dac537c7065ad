"""The world a demo node lives in (CPython only): the script of ground truth its simulated parts
report, people walking in, sitting, leaving (radar targets, PIR motion) and the air
(temperature, humidity, pressure, gas) following keyframes; `host_parts()`, the node's
simulated parts with its board's MQ-134 circuit; `script_world()`, which schedules the world
on the simulator.bridge_host.BridgeHost serving them, each change at its exact simulated tick
while the device waits.

It lives apart from simulator.node, the device end: on MicroPython every table, class and
string constant of a module takes heap at import, even in a branch that never runs there.
"""

from simulator.clock import SimClock
from simulator.mq134 import SimMQ134
from simulator.parts import set_environment, sim_board

# The air is re-applied this often (simulated ms); the BME280 samples every 10 s.
WORLD_STEP_MS = 5000

# Worlds: a period (simulated s) after which the script repeats, and moments sorted by time:
# (t_s, label, people, air). `people` = radar targets from then on [(distance_cm, "moving" |
# "stationary", energy 0-100)], None = unchanged. `air` = (°C, %RH, hPa, gas ppm) keyframe,
# None = none here; between keyframes the air changes linearly, and after the last it moves
# back towards the first, so the script loops without a jump. An empty label is not logged.
WORLDS = {
    "busy": (
        600,
        (
            (0, "morning: the office is empty", [], (21.0, 45.0, 1013.0, 4.0)),
            (40, "someone walks in", [(450, "moving", 75)], None),
            (55, "walks to the desk", [(220, "moving", 65)], None),
            (70, "sits down at the desk", [(160, "stationary", 55)], None),
            (120, "the sun comes round: a warm afternoon", None, (21.4, 44.5, 1012.9, 4.0)),
            (220, "gas event: a solvent bottle left open", None, (23.6, 41.5, 1012.6, 5.0)),
            (250, "gas near 160 ppm", None, (24.0, 41.0, 1012.5, 160.0)),
            (300, "window opened: the gas clears", None, (24.8, 40.0, 1012.4, 150.0)),
            (360, "", None, (25.8, 38.0, 1012.2, 8.0)),
            (380, "a visitor walks in", [(160, "stationary", 55), (380, "moving", 70)], None),
            (420, "both leave", [(300, "moving", 60)], None),
            (435, "the room is empty", [], None),
            (450, "afternoon peak", None, (26.5, 36.5, 1012.0, 6.0)),
        ),
    ),
    "quiet": (
        600,
        (
            (0, "night: the room is empty", [], (19.5, 50.0, 1015.0, 3.0)),
            (300, "a guard walks past", [(350, "moving", 60)], (19.2, 51.0, 1015.2, 3.2)),
            (320, "the room is empty", [], None),
        ),
    ),
}


def _check_world(name):
    """(period_ms, moments) of a named world; ValueError naming the problem."""
    if name not in WORLDS:
        raise ValueError("unknown world %r; choose one of %s" % (name, ", ".join(sorted(WORLDS))))
    period_s, moments = WORLDS[name]
    if not moments or moments[0][0] != 0 or moments[0][2] is None or moments[0][3] is None:
        raise ValueError("world %r must start at 0 s with people and air" % name)
    for i in range(1, len(moments)):
        if not moments[i - 1][0] < moments[i][0] < period_s:
            raise ValueError("world %r: moment at %r s is out of order" % (name, moments[i][0]))
    return period_s * 1000, moments


class World:
    """The ground truth of one scripted world at any simulated time (pure; no I/O).

    `noise` (a simulator.prng.Prng, optional) adds the small jitter real air has, so the
    firmware's stuck-value check sees a live sensor.
    """

    def __init__(self, name, noise=None):
        self.name = name
        self.period_ms, self.moments = _check_world(name)
        self._keys = []  # (t_ms, air) keyframes, plus the first again at the period
        for m in self.moments:
            if m[3] is not None:
                self._keys.append((m[0] * 1000, m[3]))
        self._keys.append((self.period_ms, self._keys[0][1]))
        self._noise = noise

    def people_at(self, t_ms):
        """Radar targets in the room at `t_ms`."""
        t = t_ms % self.period_ms
        people = self.moments[0][2]
        for m in self.moments:
            if m[0] * 1000 > t:
                break
            if m[2] is not None:
                people = m[2]
        return people

    def air_at(self, t_ms):
        """(°C, %RH, hPa, ppm) at `t_ms`, linear between keyframes, jittered with `noise`."""
        t = t_ms % self.period_ms
        keys = self._keys
        i = 0
        while keys[i + 1][0] <= t:
            i += 1
        t0, a = keys[i]
        t1, b = keys[i + 1]
        f = (t - t0) / (t1 - t0)
        air = [a[k] + (b[k] - a[k]) * f for k in range(4)]
        r = self._noise
        if r is not None:
            air[0] += (r.random() - 0.5) * 0.06
            air[1] += (r.random() - 0.5) * 0.4
            air[2] += (r.random() - 0.5) * 0.1
            air[3] *= 1 + (r.random() - 0.5) * 0.04
        return air[0], air[1], air[2], air[3]

    def labels_between(self, after_ms, until_ms):
        """Labels of the moments in (after_ms, until_ms], in order (across repeats)."""
        out = []
        for m in self.moments:
            if not m[1]:
                continue
            at = m[0] * 1000
            # first repeat of this moment after `after_ms`
            n = (after_ms - at) // self.period_ms + 1
            when = at + n * self.period_ms
            while when <= until_ms:
                out.append((when, m[1]))
                when += self.period_ms
        out.sort()
        return out


def apply(board, world, t_ms):
    """Set the simulated parts to the world's truth at `t_ms`."""
    people = world.people_at(t_ms)
    board.radar.set_targets(people)
    if board.pir is not None:
        board.pir.set_motion(any(p[1] == "moving" for p in people))
    t, h, p, ppm = world.air_at(t_ms)
    set_environment(board, t, h, p)
    board.gas.ppm = ppm


def host_parts(root, seed=1, info=None):
    """The reference node's simulated parts on a host SimClock, for a BridgeHost; with board
    `info` (nbk.boards' to_device_dict) the MQ-134 circuit simulated is that board's."""
    board = sim_board(SimClock(), str(root), seed=seed)
    mq = (info or {}).get("mq134") or {}
    kw = {}
    for key in ("divider_ratio", "load_ohm", "supply_v", "atten"):
        if key in mq:
            kw[key] = mq[key]
    if kw:
        board.gas = board.gas_adc = SimMQ134(seed=seed + 1, **kw)
    if info:
        board.info = info
    return board


def script_world(host, world, on_label=None):
    """Play `world` on the parts a simulator.bridge_host.BridgeHost serves: its truth from
    tick 0, again every WORLD_STEP_MS and at each scripted moment, each at its exact
    simulated tick while the device waits; `on_label(t_ms, label, people)` for each
    labelled moment."""
    board = host.board

    def step(t_ms, after_ms):
        apply(board, world, t_ms)
        if on_label is not None:
            people = len(world.people_at(t_ms))
            for when, label in world.labels_between(after_ms, t_ms):
                on_label(when, label, people)
        nxt = t_ms + WORLD_STEP_MS
        due = world.labels_between(t_ms, nxt)
        if due:
            nxt = due[0][0]
        host.at(nxt, lambda: step(nxt, t_ms))

    host.at(0, lambda: step(0, -1))
