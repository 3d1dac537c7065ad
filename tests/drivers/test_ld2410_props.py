"""LD2410 properties (hypothesis, CPython): arbitrary bytes never break the parser or grow its
memory, valid frames survive garbage and lost bytes, the simulated radar round-trips targets;
and the driver with its simulator fits a 64 KB board heap as .mpy files."""

import os
import struct
import subprocess
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.ld2410 import LD2410, LD2410Error
from simulator.clock import SimClock
from simulator.ld2410 import SimLD2410
from tests.support.allocations import allocated_by
from tests.support.micropython import REPO_ROOT, micropython_executable, run_micropython

REPORT_HEAD = b"\xf4\xf3\xf2\xf1"
ACK_HEAD = b"\xfd\xfc\xfb\xfa"
DRIVER_FILES = (REPO_ROOT / "drivers" / "*",)  # tracemalloc filters take fnmatch patterns


class BytesUART:
    """A UART that delivers given chunks, one per read, and answers writes with given bytes."""

    def __init__(self, chunks=(), answer=b""):
        self.chunks = list(chunks)
        self.answer = answer

    def any(self):
        return len(self.chunks[0]) if self.chunks else 0

    def readinto(self, buf, n):
        chunk = self.chunks[0]
        got = min(n, len(chunk))
        buf[:got] = chunk[:got]
        if got == len(chunk):
            self.chunks.pop(0)
        else:
            self.chunks[0] = chunk[got:]
        return got

    def write(self, data):
        if self.answer:
            self.chunks.append(self.answer)
        return len(data)


def report_frame(state, mov_cm, mov_e, st_cm, st_e, det_cm, gates=None, light=0, out=0):
    body = struct.pack("<BHBHBH", state, mov_cm, mov_e, st_cm, st_e, det_cm)
    if gates is None:
        kind = 2
    else:
        kind = 1
        body += bytes((8, 8)) + bytes(gates[0]) + bytes(gates[1]) + bytes((light, out))
    intra = bytes((kind, 0xAA)) + body + b"\x55\x00"
    return REPORT_HEAD + struct.pack("<H", len(intra)) + intra + b"\xf8\xf7\xf6\xf5"


u16 = st.integers(0, 0xFFFF)
u8 = st.integers(0, 255)
gate_list = st.lists(u8, min_size=9, max_size=9)
reports = st.builds(
    report_frame,
    st.integers(0, 6),
    u16,
    u8,
    u16,
    u8,
    u16,
    st.one_of(st.none(), st.tuples(gate_list, gate_list)),
    u8,
    st.integers(0, 1),
)
# Garbage may hold delimiter bytes and partial headers, but no whole header: a whole header
# followed by a plausible length is a frame as far as any parser can tell.
garbage = (
    st.lists(
        st.one_of(u8, st.sampled_from([0xF4, 0xF3, 0xF2, 0xF1, 0xFD, 0xFC, 0x0D, 0x23, 0x00])),
        max_size=40,
    )
    .map(bytes)
    .filter(lambda g: REPORT_HEAD not in g and ACK_HEAD not in g)
)


def decoded(radar):
    r = radar.report
    fields = (
        r.target_state,
        r.moving_distance_cm,
        r.moving_energy,
        r.stationary_distance_cm,
        r.stationary_energy,
        r.detection_distance_cm,
    )
    if r.engineering:
        fields += (list(r.moving_gate_energy), list(r.stationary_gate_energy), r.light, r.out_pin)
    return fields


def expected(frame):
    state, mc, me, sc, se, dc = struct.unpack_from("<BHBHBH", frame, 8)
    fields = (state, mc, me, sc, se, dc)
    if frame[6] == 1:
        fields += (list(frame[19:28]), list(frame[28:37]), frame[37], frame[38])
    return fields


def split(data, cuts):
    """data cut at the given offsets (a stream as a UART delivers it)."""
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True) if b > a]


# Streams built to hit the parser's edges: headers with every length, footers, whole frames.
hostile = st.lists(
    st.one_of(
        st.binary(max_size=30),
        st.sampled_from([REPORT_HEAD, ACK_HEAD, b"\xf8\xf7\xf6\xf5", b"\x04\x03\x02\x01"]),
        st.builds(
            lambda h, n: h + struct.pack("<H", n),
            st.sampled_from([REPORT_HEAD, ACK_HEAD]),
            st.integers(0, 80),
        ),
        reports,
    ),
    max_size=60,
).map(b"".join)


@given(st.one_of(st.binary(max_size=3000), hostile), st.lists(st.integers(0, 3000), max_size=30))
def test_any_bytes_are_counted_never_raised(data, cuts):
    radar = LD2410(BytesUART(split(data, cuts)), SimClock())
    radar.poll()
    assert 0 <= radar._pos <= 64 and len(radar._buf) == 64 and len(radar._rx) == 128
    if radar.frames_ok == 0:  # every byte is either discarded or held as a frame prefix
        assert radar.bytes_discarded + radar._pos == len(data)


@given(st.lists(st.binary(min_size=1, max_size=200), min_size=1, max_size=5))
def test_commands_on_arbitrary_answers_raise_only_ld2410error(answers):
    for answer in answers:
        radar = LD2410(BytesUART(answer=answer), SimClock(), ack_timeout_ms=20)
        for call in (
            radar.enable_config,
            radar.read_parameters,
            radar.read_firmware_version,
            radar.read_mac,
            radar.read_gate_size_cm,
            radar.read_light_control,
            lambda r=radar: r.set_max_gates(8, 8, 5),
        ):
            try:
                call()
            except LD2410Error:
                pass


def test_memory_does_not_grow_with_input():
    data = bytes((i * 37 + (i >> 3)) & 0xFF for i in range(4000)) + bytes(
        report_frame(1, 10, 20, 30, 40, 50)
    )
    radar = LD2410(BytesUART(), SimClock())
    radar.feed(data)  # warm-up

    def feed_50_times():
        for _ in range(50):
            radar.feed(data)

    grown, _ = allocated_by(DRIVER_FILES, feed_50_times)
    assert grown < 256, grown  # nothing kept per byte or per frame (a few counters' ints)


@settings(max_examples=5, deadline=None)
@given(st.lists(st.one_of(st.binary(min_size=1, max_size=400), hostile), min_size=20, max_size=40))
def test_arbitrary_bytes_allocate_nothing_on_micropython(streams):
    # The heap is locked while the parser eats every stream: any allocation is a MemoryError.
    # Streams go through a file (as source text they would cost more heap than the parser).
    with tempfile.TemporaryDirectory() as scratch:
        with open(os.path.join(scratch, "streams.bin"), "wb") as f:
            for data in streams:
                f.write(struct.pack("<H", len(data)) + data)
        code = (
            "import micropython\n"
            "from drivers.ld2410 import LD2410\n"
            "from simulator.clock import SimClock\n"
            "streams = []\n"
            "with open('streams.bin', 'rb') as f:\n"
            "    while True:\n"
            "        head = f.read(2)\n"
            "        if not head:\n"
            "            break\n"
            "        streams.append(f.read(head[0] | head[1] << 8))\n"
            "radar = LD2410(None, SimClock())\n"
            "def eat():\n"  # in a function: a new module global would allocate
            "    micropython.heap_lock()\n"
            "    for s in streams:\n"
            "        radar.feed(s)\n"
            "    micropython.heap_unlock()\n"
            "eat()\n"
            "print('fed', len(streams), radar.bytes_discarded)\n"
        )
        proc = run_micropython(code, cwd=scratch, timeout=30)
    assert "fed %d" % len(streams) in proc.stdout


@given(st.lists(st.tuples(garbage, reports), min_size=1, max_size=12), garbage, st.data())
def test_frames_in_garbage_are_all_recovered(pairs, tail, data):
    stream = b"".join(g + f for g, f in pairs) + tail
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
    radar = LD2410(BytesUART(), SimClock())
    seen = []
    for chunk in split(stream, cuts):
        # Feed byte-chunks and record each report as it completes.
        for i in range(len(chunk)):
            if radar.feed(chunk[i : i + 1]):
                seen.append(decoded(radar))
    assert seen == [expected(f) for _, f in pairs]
    assert radar.bytes_discarded == sum(len(g) for g, _ in pairs) + len(tail) - radar._pos


@given(st.lists(st.tuples(reports, st.one_of(st.none(), st.integers(0, 44))), min_size=2))
def test_lost_bytes_lose_only_their_frame(frames):
    stream = b""
    intact = []
    for frame, cut in frames:
        if cut is not None and cut < len(frame):
            stream += frame[:cut] + frame[cut + 1 :]
        else:
            stream += frame
            intact.append(expected(frame))
    radar = LD2410(BytesUART(), SimClock())
    seen = []
    for i in range(len(stream)):
        if radar.feed(stream[i : i + 1]):
            seen.append(decoded(radar))
    assert seen == intact


targets = st.lists(
    st.tuples(st.integers(0, 800), st.sampled_from(["moving", "stationary"]), st.integers(0, 100)),
    max_size=4,
)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(targets, st.booleans(), st.integers(0, 2**31))
def test_simulated_radar_round_trips_targets(room, engineering, seed):
    clock = SimClock()
    sim = SimLD2410(clock, seed=seed)
    radar = LD2410(sim, clock)
    if engineering:
        with radar.config_mode():
            radar.set_engineering_mode(True)
    sim.set_targets(room)
    clock.advance(100)
    assert radar.poll() == 1
    assert decoded(radar) == expected(sim._last_frame)
    # Ground truth: the strongest detectable target of each kind is the one reported.
    thresholds = {
        "moving": list(sim.moving_sensitivity),
        "stationary": [101, 101] + list(sim.stationary_sensitivity[2:]),
    }
    for kind, bit, dist, energy in (
        ("moving", 1, radar.report.moving_distance_cm, radar.report.moving_energy),
        ("stationary", 2, radar.report.stationary_distance_cm, radar.report.stationary_energy),
    ):
        visible = [
            (e, -d)
            for d, k, e in room
            if k == kind and d // 75 <= 8 and e > thresholds[kind][d // 75]
        ]
        assert bool(radar.report.target_state & bit) == bool(visible)
        if visible:
            best_e, best_d = max(visible)
            assert (dist, energy) == (-best_d, best_e)
    if engineering:
        for d, k, e in room:
            if d // 75 <= 8 and not (k == "stationary" and d < 150):
                gates = (
                    radar.report.moving_gate_energy
                    if k == "moving"
                    else (radar.report.stationary_gate_energy)
                )
                assert gates[d // 75] >= e


MODULES = [
    "drivers/__init__.py",
    "drivers/compat.py",
    "drivers/sensor.py",
    "drivers/ld2410.py",
    "drivers/ld2410_commands.py",
    "simulator/__init__.py",
    "simulator/clock.py",
    "simulator/prng.py",
    "simulator/ld2410.py",
]


def test_driver_and_simulator_fit_a_64k_heap_as_mpy(tmp_path):
    # The board runs mpy-cross output (compiling source on the board needs ~90 KB of transient
    # heap); 64 KB is the firmware's whole heap budget.
    mpy_cross = str(micropython_executable()).replace("micropython", "mpy-cross")
    for module in MODULES:
        out = tmp_path / module.replace(".py", ".mpy")
        out.parent.mkdir(exist_ok=True)
        subprocess.run([mpy_cross, "-o", str(out), str(REPO_ROOT / module)], check=True)
    code = (
        "sys.path.insert(0, %r)\n"
        "import gc\n"
        "from drivers.ld2410 import LD2410\n"
        "from simulator.clock import SimClock\n"
        "from simulator.ld2410 import SimLD2410\n"
        "import drivers.ld2410, simulator.ld2410\n"
        "assert drivers.ld2410.__file__.endswith('.mpy'), drivers.ld2410.__file__\n"
        "assert simulator.ld2410.__file__.endswith('.mpy')\n"
        "clock = SimClock()\n"
        "sim = SimLD2410(clock, seed=1)\n"
        "radar = LD2410(sim, clock)\n"
        "sim.set_targets([(200, 'moving', 80)])\n"
        "with radar.config_mode():\n"
        "    radar.set_engineering_mode(True)\n"
        "    p = radar.read_parameters()\n"
        "n = 0\n"
        "for _ in range(100):\n"
        "    clock.advance(100)\n"
        "    n += radar.poll()\n"
        "assert n == 100 and radar.read().moving_distance_cm == 200\n"
        "gc.collect()\n"
        "print('resident', gc.mem_alloc())\n" % str(tmp_path)
    )
    proc = run_micropython(code, heap="64K", timeout=30)
    resident = int(proc.stdout.split("resident")[1])
    assert resident < 40 * 1024, resident  # driver ~15 KB + simulator ~16 KB + test objects
