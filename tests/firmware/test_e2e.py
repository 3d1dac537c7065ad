"""End to end: the whole firmware on the MicroPython Unix port against simulated sensors, a real
Mosquitto and the HTTP receiver, for ten simulated minutes; every reading arrives exactly once
(after de-duplication by device and seq) with the values and qualities of the simulated truth.

How it runs (see docs/firmware.md, "Memory"): the application, the drivers and the main program
are compiled into a ROMFS image and run by simulator.unixport, which mounts it with `vfs.VfsRom`
from memory outside the bounded heap, so their bytecode executes in place as it does from a
ROMFS partition or frozen modules on the ESP32. The simulated parts are not in that process:
simulator.bridge_host serves them from this test's process (ground truth and outages are events
scheduled on the bridge host), so the heap limit (`-X heapsize`) bounds what the firmware
alone allocates, as on a board. It is 128K, not
96K: this port has 64-bit words, so objects are about twice their ESP32 size (docs/firmware.md,
"Memory"). Measured 2026-11-25: 140K before the firmware's first heap diet, 136K after it;
after boot-only code left RAM, the clock stopped allocating per sleep and the uplink learnt to
send fewer readings when memory is short, the four tests pass 4 runs in a row at 124K and 128K,
and fail now and then at 120K. NBK_E2E_HEAP overrides it, to bisect.
Time is simulator.board.VirtualClock: it jumps whenever every task waits on it, and stands
still while a task waits on the network or on the bridge, so ten minutes take a second or two.
"""

import json
import os
import subprocess

import pytest

from simulator.unixport import build_image, run
from tests.support.micropython import REPO_ROOT
from tests.support.servers import http_receiver, mosquitto  # noqa: F401  (fixtures)

DEVICE = "e2e-node-1"
WINDOW_MS = 10000
DURATION_MS = 600000
GAS_WARMUP_MS = 60000
PIR_WARMUP_MS = 60000  # simulator.pir's default warm-up: driver and part agree
EPOCH0_MS = 1795341600000  # simulator.board.DEFAULT_EPOCH_MS: wall time at tick 0
E2E_HEAP = os.environ.get("NBK_E2E_HEAP", "128K")  # x64 port; see the module docstring

# Ground truth: from t_ms on, the room holds these targets (distance cm, kind, energy) and
# this climate and gas. Changes fall 3 s into a window, so most windows see one state only
# (and the PIR's hold time has ended before the next window starts).
SCENARIO = [
    (0, [(150, "moving", 60)], (22.0, 45.0, 1005.0), 50.0),
    (63000, [], (22.5, 46.0, 1004.0), 55.0),
    (123000, [(300, "stationary", 50)], (23.0, 47.0, 1003.5), 60.0),
    (183000, [(120, "moving", 70), (400, "stationary", 45)], (23.5, 48.0, 1003.0), 80.0),
    (243000, [(75, "moving", 90)], (24.0, 49.0, 1002.5), 120.0),
    (303000, [], (23.0, 50.0, 1002.0), 70.0),
    (363000, [(220, "stationary", 60)], (22.0, 51.0, 1001.5), 40.0),
    (423000, [(500, "moving", 80)], (21.5, 50.0, 1001.0), 45.0),
    (483000, [(160, "moving", 55), (330, "stationary", 65)], (21.0, 49.0, 1000.5), 65.0),
    (543000, [], (20.5, 48.0, 1000.0), 50.0),
]

# The node's main program. It goes into the ROMFS image beside the packages, so its bytecode
# stays out of the heap too; run_firmware passes the run's parameters in e2e.json.
MAIN = """
import os, gc, json, asyncio, micropython
from simulator.board import VirtualClock, bridged_board
from firmware.log import Log
from firmware.app import prepare
from firmware.bootrecord import BootRecord

with open("e2e.json") as f:
    P = json.load(f)
clock = VirtualClock()
os.mkdir("node")
board = bridged_board(clock, "node", P["bridge"])  # the parts answer from the test process
# As firmware.app.start does: boot record, /config.json through firmware.config, the App.
from firmware.config import save_config
save_config(board.fs, P["config"])
del save_config  # as on the device: nothing keeps firmware.config alive after boot
log = Log(clock, level="I", fs=board.fs)
app, reason = prepare(board, log, P["tuning"])
if app is None:
    raise SystemExit("safe mode: %s" % reason)


async def heap_watch(heap):
    while True:
        gc.collect()
        heap.append(gc.mem_alloc())
        await clock.sleep_ms_async(60000)


async def main(heap):
    asyncio.create_task(clock.run())
    asyncio.create_task(heap_watch(heap))
    await app.run(P["duration"])
    drained = await app.uplink.drain(app.buffer, 300000)
    st = app.buffer.stats()
    print("RESULT " + json.dumps({
        "drained": drained, "next_seq": st["next_seq"], "dropped": st["dropped"],
        "readings": app.readings, "sim_ms": clock.ticks_ms(), "wdt_feeds": board.wdt.feeds,
        "dead": app.uplink.dead.count, "mem_peak": micropython.mem_peak(),
        "free_now": gc.mem_free(), "heap": heap, "bridge_calls": board.bridge.calls,
        "healthy": BootRecord(board.fs).read()[0]["state"] == "healthy",
    }))


gc.collect()
asyncio.run(main([gc.mem_alloc()]))  # heap: after imports and setup, then each minute
"""


@pytest.fixture(scope="module")
def romfs(tmp_path_factory):
    """The application tree (drivers, firmware, simulator) and MAIN as a ROMFS image of .mpy."""
    return build_image(tmp_path_factory.mktemp("rom"), extra={"e2e_main.py": MAIN})


def host_board(fs_root, pir=True):
    """The reference node's simulated parts on a host clock, and apply(step): set a SCENARIO
    step's truth on them."""
    from simulator.clock import SimClock
    from simulator.parts import set_environment, sim_board

    board = sim_board(SimClock(), str(fs_root), pir=pir)

    def apply(step):
        board.radar.set_targets([tuple(t) for t in step[1]])
        if board.pir is not None:
            board.pir.set_motion(any(t[1] == "moving" for t in step[1]))
        set_environment(board, step[2][0], step[2][1], step[2][2])
        board.gas.ppm = step[3]

    return board, apply


def run_firmware(image, config, tmp_path, heap=E2E_HEAP, outages=(), on_event=None, timeout=90):
    """Run MAIN on MicroPython, its parts served over the bridge from here;
    return (RESULT dict, log lines).

    `outages` [(start_ms, end_ms)] in simulated time: at each edge the bridge host calls
    `on_event("down")` / `on_event("up")` (stop or start the broker) while the device waits
    for its answer, so virtual time stands still until the test has acted.
    """
    from simulator.bridge_host import BridgeHost

    have_pir = (REPO_ROOT / "simulator" / "pir.py").exists()
    board, apply = host_board(tmp_path / "host", pir=have_pir)
    apply(SCENARIO[0])
    host = BridgeHost(board)
    for step in SCENARIO[1:]:
        host.at(step[0], lambda step=step: apply(step))
    for start, end in outages:
        host.at(start, lambda: on_event("down"))
        host.at(end, lambda: on_event("up"))
    tuning = {"gas_warmup_s": GAS_WARMUP_MS // 1000, "pir_warmup_s": PIR_WARMUP_MS // 1000}
    params = {"config": config, "tuning": tuning, "duration": DURATION_MS, "bridge": host.address}
    (tmp_path / "e2e.json").write_text(json.dumps(params))
    with host:
        try:
            proc = run(image, "e2e_main", heap=heap, cwd=tmp_path, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(
                "firmware run killed after %ds\n--- stdout (tail) ---\n%s\n--- bridge host ---\n%s"
                % (timeout, _text(exc.stdout)[-4000:], "\n".join(host.errors))
            ) from None
    lines = proc.stdout.splitlines()
    out = proc.stdout
    if proc.returncode != 0:
        raise AssertionError(
            "firmware run failed (exit %d)\n--- stdout (tail) ---\n%s\n--- stderr ---\n%s"
            "\n--- bridge host ---\n%s"
            % (proc.returncode, out[-4000:], proc.stderr[-4000:], "\n".join(host.errors))
        )
    assert not host.errors, "\n".join(host.errors)
    assert host.pending() == 0, "%d truth changes or outage edges never ran" % host.pending()
    result = [ln for ln in lines if ln.startswith("RESULT ")]
    assert result, "no RESULT line:\n" + out[-4000:]
    return json.loads(result[-1][len("RESULT ") :]), [ln for ln in lines if ln.startswith("@nbk ")]


def _text(out):
    """TimeoutExpired keeps bytes even for a text-mode run."""
    if isinstance(out, bytes):
        return out.decode(errors="replace")
    return out or ""


def truth_at(t_ms):
    step = SCENARIO[0]
    for s in SCENARIO:
        if s[0] <= t_ms:
            step = s
    return step


def pure_truth(end_ms):
    """The scenario step covering the whole window ending at `end_ms`, or None when it changed."""
    first = truth_at(end_ms - WINDOW_MS + 1)
    return first if first is truth_at(end_ms) else None


def expected_radar(targets):
    """What the window should report for these targets: (presence, nearest cm, strongest)."""
    if not targets:
        return False, 0, 0
    # One target per kind is reported (the strongest of that kind, LD2410 protocol), and every
    # scenario target is above its gate's default threshold.
    return True, min(t[0] for t in targets), max(t[2] for t in targets)


def check_reading(msg, problems):
    """Compare one neurobuild-profile payload with the truth of its window."""
    seq = msg["seq"]
    end_ms = iso_to_epoch_ms(msg["timestamp"]) - EPOCH0_MS
    q = msg["quality"]
    step = pure_truth(end_ms)
    if step is None:
        return False
    presence, nearest, strongest = expected_radar(step[1])
    ld = msg["sensors"]["ld2410"]
    got = (ld["presence"], ld["distance"], ld["energy"], msg["occupancy"])
    want = (presence, nearest, strongest, 1.0 if presence else 0.0)
    if got != want:
        problems.append("seq %d at %d ms: radar %r, truth %r" % (seq, end_ms, got, want))
    for name in ("presence", "distance_cm", "energy", "occupancy"):
        if q[name] != "good":
            problems.append("seq %d: %s quality %s" % (seq, name, q[name]))
    t, h, p = step[2]
    env = msg["environment"]
    for name, want_v, tol in (
        ("temperature_c", t, 0.02),
        ("humidity_pct", h, 0.1),
        ("pressure_hpa", p, 0.1),
    ):
        if abs(env[name] - want_v) > tol or q[name] != "good":
            problems.append(
                "seq %d: %s %r (%s), truth %r" % (seq, name, env[name], q[name], want_v)
            )
    start_ms = end_ms - WINDOW_MS
    gas = msg["sensors"]["mq134"]["gas_concentration"]
    want_q = warm_quality(start_ms, GAS_WARMUP_MS)
    # One 12-bit ADC count near these voltages moves ppm by ~1-2 % (power law, b = -2.77).
    if abs(gas - step[3]) > 0.03 * step[3] or q["gas_ppm"] not in want_q:
        problems.append(
            "seq %d: gas %r (%s), truth %r %s" % (seq, gas, q["gas_ppm"], step[3], want_q)
        )
    pir = msg["sensors"].get("pir")
    if pir is not None:
        want_q = warm_quality(start_ms, PIR_WARMUP_MS)
        moving = any(t[1] == "moving" for t in step[1])
        if q["motion"] not in want_q or (want_q == ("good",) and pir["motion_detected"] != moving):
            problems.append(
                "seq %d: motion %r (%s), truth %r %s"
                % (seq, pir["motion_detected"], q["motion"], moving, want_q)
            )
    return True


def warm_quality(start_ms, warmup_ms):
    """Qualities allowed for a window starting at `start_ms` of a part warming up `warmup_ms`."""
    if start_ms + 1000 < warmup_ms:
        return ("warming_up",)
    if start_ms > warmup_ms + 1000:
        return ("good",)
    return ("warming_up", "good")  # the window starts right at the end of the warm-up


def iso_to_epoch_ms(ts):
    from datetime import datetime

    dt = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    return round(dt.timestamp() * 1000)


def assert_exactly_once_and_true(messages, result):
    """De-duplicate by (device_id, seq): every seq once, no gaps, values as the truth."""
    assert result["drained"], result
    assert result["healthy"], result  # the boot record says this boot reached healthy
    assert result["dropped"] == 0 and result["dead"] == 0, result
    produced = set(range(1, result["next_seq"]))
    assert len(produced) == result["readings"] == DURATION_MS // WINDOW_MS, result
    by_key = {}
    for m in messages:
        by_key.setdefault((m["device_id"], m["seq"]), m)
    assert {k[0] for k in by_key} == {DEVICE}
    got = {k[1] for k in by_key}
    assert got == produced, "missing %s, unexpected %s" % (
        sorted(produced - got),
        sorted(got - produced),
    )
    problems = []
    checked = sum(check_reading(m, problems) for m in by_key.values())
    assert not problems, "\n".join(problems)
    assert checked >= 45, "only %d windows had a single truth" % checked
    return checked


def test_ten_minutes_over_mqtt_every_reading_once_and_true(romfs, mosquitto, tmp_path):  # noqa: F811
    config = {
        "version": 3,
        "device_id": DEVICE,
        "uplink": {"transport": "mqtt", "host": "127.0.0.1", "port": mosquitto.port},
        "intervals": {"sampling_s": WINDOW_MS // 1000, "transmission_s": 30, "status_s": 60},
    }
    status_sub = mosquitto.subscriber("neurobuild/sensors/+/status")
    with status_sub, mosquitto.subscriber("neurobuild/sensors/+/data") as sub:
        result, log_lines = run_firmware(romfs, config, tmp_path)
        messages = sub.wait_for(result["next_seq"] - 1, timeout_s=10)
    decoded = [json.loads(m.payload) for m in messages]
    assert_exactly_once_and_true(decoded, result)
    # Status: on connect and every status_s (60 s), then the broker's last will when the node
    # vanished (the process ended without DISCONNECT).
    statuses = [json.loads(m.payload) for m in status_sub.messages]
    assert statuses[-1] == {"device_id": DEVICE, "online": False}, statuses[-1]
    assert 9 <= len(statuses) - 1 <= 12, len(statuses)
    last = statuses[-2]
    assert last["device_id"] == DEVICE and last["online"] is True
    assert last["firmware_version"] and last["reset_cause"] == "power_on"
    assert last["config_version"] == 3 and last["uplink"] == "mqtt"
    assert last["breaker"] == "closed" and last["buffer_drops"] == 0
    assert 500 <= last["uptime_s"] <= 600 and last["rssi_dbm"] == -60
    # Every console line the firmware wrote decodes in `nbk monitor` as a structured record.
    from nbk.monitor import decode_line

    events = [decode_line(ln) for ln in log_lines]
    assert events and all(e["kind"] == "log" for e in events), [
        e for e in events if e["kind"] != "log"
    ][:3]
    assert any(e["mod"] == "uplink" and e["msg"] == "connected" for e in events)
    with mosquitto.subscriber("neurobuild/sensors/+/status") as late:
        kept = late.wait_for(1)
    assert kept and kept[0].retain, "the status topic is not retained"
    assert result["wdt_feeds"] >= DURATION_MS // 1000 - 5, result  # fed every second


def test_ten_minutes_over_http_every_reading_once_and_true(romfs, http_receiver, tmp_path):  # noqa: F811
    config = {
        "version": 3,
        "device_id": DEVICE,
        "uplink": {"transport": "http", "host": "127.0.0.1", "port": http_receiver.port},
        "intervals": {"sampling_s": WINDOW_MS // 1000, "transmission_s": 30, "status_s": 60},
    }
    result, _ = run_firmware(romfs, config, tmp_path)
    assert_exactly_once_and_true(list(http_receiver.accepted), result)


def test_broker_outage_of_three_minutes_loses_nothing(romfs, mosquitto, tmp_path):  # noqa: F811
    """The broker goes away for three simulated minutes: readings wait in flash, the breaker
    opens, half-opens, closes once the broker is back, and every reading arrives once."""
    config = {
        "version": 3,
        "device_id": DEVICE,
        "uplink": {"transport": "mqtt", "host": "127.0.0.1", "port": mosquitto.port},
        "intervals": {"sampling_s": WINDOW_MS // 1000, "transmission_s": 30, "status_s": 60},
    }
    subs = []

    def subscribe():
        sub = mosquitto.subscriber("neurobuild/sensors/+/data")
        sub.__enter__()  # SUBACK received before the firmware may publish again
        subs.append(sub)

    def on_event(word):
        if word == "down":
            mosquitto.stop()
        else:
            mosquitto.start()
            subscribe()  # a clean-session subscriber: the broker kept nothing for it

    subscribe()
    try:
        result, log_lines = run_firmware(
            romfs, config, tmp_path, outages=[(200000, 380000)], on_event=on_event
        )
        subs[-1].wait_for(1)
    finally:
        for sub in subs:
            sub.__exit__(None, None, None)
    messages = [json.loads(m.payload) for sub in subs for m in sub.messages]
    assert_exactly_once_and_true(messages, result)
    text = "\n".join(log_lines)
    for transition in ("breaker closed -> open", "open -> half_open", "half_open -> closed"):
        assert transition in text, transition + " not logged:\n" + text[-3000:]


def test_http_receiver_down_for_three_minutes_loses_nothing(romfs, http_receiver, tmp_path):  # noqa: F811
    """The receiver answers 503 for three simulated minutes: readings wait, then all arrive."""
    config = {
        "version": 3,
        "device_id": DEVICE,
        "uplink": {"transport": "http", "host": "127.0.0.1", "port": http_receiver.port},
        "intervals": {"sampling_s": WINDOW_MS // 1000, "transmission_s": 30, "status_s": 60},
    }

    def on_event(word):
        http_receiver.outage = 503 if word == "down" else None

    result, log_lines = run_firmware(
        romfs, config, tmp_path, outages=[(200000, 380000)], on_event=on_event
    )
    assert_exactly_once_and_true(list(http_receiver.accepted), result)
    text = "\n".join(log_lines)
    for transition in ("breaker closed -> open", "open -> half_open", "half_open -> closed"):
        assert transition in text, transition + " not logged:\n" + text[-3000:]
    assert "503" in text  # the reason is logged, not just "failed"


# ---- simulator.unixport, the runner above ----------------------------------------------------

PROBE = """
import gc, json, sys


def main(argv):
    gc.collect()
    print(json.dumps([__file__, gc.mem_alloc() + gc.mem_free(), argv, sys.argv[0]]))
"""


def test_unixport_runs_an_entry_from_rom_with_its_arguments_and_heap(tmp_path):
    image = build_image(tmp_path, extra={"tools/probe.py": PROBE}, contents={})
    proc = run(image, "tools.probe:main", ["a b", "2"], heap="64K", cwd=tmp_path, timeout=30)
    assert proc.returncode == 0, proc.stderr
    where, heap, argv, argv0 = json.loads(proc.stdout)
    assert where == "/rom/tools/probe.mpy"  # compiled, and read from the image
    assert 60 * 1024 <= heap <= 64 * 1024  # -X heapsize took effect
    assert argv == ["a b", "2"] and argv0 == "tools.probe:main"
    proc = run(image, "tools.nothing", heap="64K", cwd=tmp_path, timeout=30)
    # micropython_run writes MicroPython's tracebacks to stdout, not stderr
    assert proc.returncode == 1 and "no module named 'tools.nothing'" in proc.stdout


def test_unixport_refuses_a_bad_entry_or_heap_by_name(tmp_path):
    from simulator.unixport import command

    image = tmp_path / "app.romfs"
    for entry in ("", "a-b", "mod:", "mod:f:g", "1mod"):
        err = raises_value_error(command, image, entry)
        assert repr(entry) in err and "module:function" in err
    for heap in ("", "0K", "lots", 64):
        err = raises_value_error(command, image, "mod", heap=heap)
        assert repr(heap) in err and "144K" in err
    # The Unix port interns argv as qstrs (at most 255 bytes) before any handler exists: a longer
    # argument kills it with "FATAL: uncaught NLR", so the launcher refuses it by name.
    assert command(image, "mod", ["é" * 127 + "x"])  # 255 bytes of UTF-8: accepted
    err = raises_value_error(command, image, "mod", ["ok", "é" * 128])
    assert "256 bytes" in err


def raises_value_error(fn, *args, **kw):
    with pytest.raises(ValueError) as info:
        fn(*args, **kw)
    return str(info.value)


def test_unixport_image_errors_name_the_module(tmp_path):
    from simulator.unixport import UnixPortError

    with pytest.raises(UnixPortError, match=r"simulator/nope\.py is not there"):
        build_image(tmp_path, contents={"simulator": ("board", "nope")})
    with pytest.raises(UnixPortError, match=r"(?s)building the ROMFS image failed.*bad\.py"):
        build_image(tmp_path, extra={"bad.py": "def f(:\n    pass\n"}, contents={})
