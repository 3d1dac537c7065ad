"""`make demo`: the real firmware on the Unix port publishing to its own Mosquitto, shown live.

The end-to-end tests run `python -m simulator.demo` as `make demo` does (short and fast), and
check what it prints and how it exits; the rest checks the pieces: the world script and how it
plays on the bridge host, the tally that finds gaps and duplicates, the broker runner.
"""

import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from simulator.bridge import Bridge
from simulator.bridge_host import BridgeHost
from simulator.broker import BrokerError, Mosquitto, wait_for_port
from simulator.clock import SimClock
from simulator.demo import (
    DEFAULT_HEAP,
    DemoError,
    Tally,
    _summary,
    console_line,
    reading_line,
    status_line,
    world_line,
)
from simulator.node import check_spec, end_ms
from simulator.prng import Prng
from simulator.world import WORLD_STEP_MS, WORLDS, World, host_parts, script_world
from tests.support.micropython import REPO_ROOT

ROW = re.compile(r"^\s+(\d+|-)\s+(\d\d:\d\d:\d\d)\s")


def run_demo(*args, timeout=90):
    return subprocess.run(
        [sys.executable, "-m", "simulator.demo", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, NO_COLOR="1"),
    )


def summary_value(out, label):
    m = re.search(r"^  %s\s+(\S+)" % re.escape(label), out, re.M)
    assert m, "no %r in the summary:\n%s" % (label, out[-2000:])
    return m.group(1)


def pids_in_header(out):
    return [int(p) for p in re.findall(r"\(.*?pid (\d+)\)", out)]


def assert_gone(pid, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError("process %d still runs after the demo ended" % pid)


# ---- the demo, end to end -------------------------------------------------------------------


def test_demo_shows_every_reading_as_it_arrives_and_exits_0():
    # 4 s at 60x = 240 simulated s: 24 windows of 10 s, the first gas readings warming up.
    proc = run_demo("--duration", "4", "--speed", "60", "--seed", "3")
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "mqtt://127.0.0.1:" in out and "demo-node-1" in out
    assert "heap %s for the firmware alone" % DEFAULT_HEAP in out
    assert re.search(r"parts +simulated here, reached over simulator.bridge on 127.0.0.1:\d+", out)
    rows = [ROW.match(line) for line in out.splitlines()]
    seqs = [int(m.group(1)) for m in rows if m]
    assert seqs == list(range(1, 25)), seqs
    assert summary_value(out, "readings produced by the node") == "24"
    assert summary_value(out, "readings received") == "24"
    assert summary_value(out, "gaps (lost readings)") == "0"
    assert summary_value(out, "duplicates") == "0"
    # the world script happened, and the node's status arrived
    for event in ("someone walks in", "sits down at the desk", "gas event"):
        assert event in out, event
    assert re.search(
        r"status: up \d+s, free heap \d+ B, buffer \d, uplink mqtt \(breaker closed", out
    )
    # the values are the world script's: the person sitting at 160 cm (energy 55), the air
    rows = {int(m.group(1)): m.string.split() for m in rows if m}
    for seq in range(9, 25):
        assert rows[seq][2:5] == ["yes", "160", "55"], rows[seq]
    for seq in (19, 20, 21, 22):  # heater warm, before the gas event at 220 s: 4..5 ppm
        assert 3.8 <= float(rows[seq][7]) <= 5.3, rows[seq]
    assert float(rows[24][7]) > 20, rows[24]  # the gas event has begun
    assert abs(float(rows[12][8]) - 21.4) < 0.1, rows[12]  # 21.4 °C at 120 s
    for pid in pids_in_header(out):
        assert_gone(pid)


def test_platform_profile_and_quiet_night():
    proc = run_demo(
        "--duration", "2", "--speed", "100", "--scenario", "quiet", "--profile", "platform"
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    rows = [line for line in out.splitlines() if ROW.match(line)]
    # no seq in the platform profile (contracts.md §2): rows show "-", counted by timestamp
    assert len(rows) == 20 and all(ROW.match(r).group(1) == "-" for r in rows), rows
    temperature = float(rows[0].split()[-3])
    assert abs(temperature - 19.5) < 0.1, rows[0]  # the night's temperature
    assert summary_value(out, "unique readings") == "20"
    assert "night: the room is empty" in out


def test_node_out_of_heap_exits_1_with_its_last_console_lines():
    proc = run_demo("--duration", "2", "--speed", "60", "--heap", "100K")
    out = proc.stdout
    assert proc.returncode == 1, out
    assert "the node's last console lines:" in out
    assert "MemoryError" in out
    assert "demo failed: the node crashed (exit status 1)" in out
    assert "pass a larger --heap" in out
    for pid in pids_in_header(out):
        assert_gone(pid)


def test_ctrl_c_stops_node_and_broker_and_exits_130():
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulator.demo", "--duration", "60", "--speed", "10"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, NO_COLOR="1"),
    )
    lines = []
    try:
        for line in proc.stdout:  # wait for the first reading: it is shown live, not at the end
            lines.append(line)
            if ROW.match(line):
                break
        assert any(ROW.match(x) for x in lines), "".join(lines)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = "".join(lines) + rest
    assert proc.returncode == 130, out
    assert "interrupted: stopping the node and the broker" in out
    pids = pids_in_header(out)
    assert len(pids) == 2, out
    for pid in pids:
        assert_gone(pid)


def test_bad_options_are_refused_by_name():
    proc = run_demo("--speed", "0")
    assert proc.returncode == 2
    assert "--speed" in proc.stderr and "greater than 0" in proc.stderr
    proc = run_demo("--board", "no-such-board")
    assert proc.returncode == 2
    assert "no-such-board" in proc.stderr and "nb-node-v1" in proc.stderr
    proc = run_demo("--heap", "lots")
    assert proc.returncode == 2
    assert "'lots' is not a size such as 192K" in proc.stderr


# ---- the pieces -----------------------------------------------------------------------------


def test_tally_finds_duplicates_and_gaps_by_seq():
    t = Tally()
    for seq in (1, 2, 2, 4):
        t.add({"device_id": "n", "seq": seq, "timestamp": "x%d" % seq})
    assert (t.received, len(t.keys), t.duplicates) == (4, 3, 1)
    assert t.missing() == [3]
    assert t.missing(produced=6) == [3, 5, 6]


def test_tally_without_seq_counts_by_timestamp():
    t = Tally()
    for ts in ("2026-11-22T10:00:10.000Z", "2026-11-22T10:00:20.000Z", "2026-11-22T10:00:10.000Z"):
        t.add({"device_id": "n", "timestamp": ts})
    assert (len(t.keys), t.duplicates) == (2, 1)
    assert len(t.missing(produced=3)) == 1
    assert t.missing(produced=2) == []


def _summary_of(tally, counts):
    console = Console(file=io.StringIO(), width=100)
    try:
        code = _summary(console, tally, counts)
    except DemoError as exc:
        return None, str(exc), console.file.getvalue()
    return code, None, console.file.getvalue()


def test_summary_fails_when_nothing_arrived_or_a_reading_was_lost():
    code, err, _ = _summary_of(Tally(), {"readings": 5})
    assert code is None and "no reading arrived" in err
    t = Tally()
    for seq in (1, 2, 4):
        t.add({"device_id": "n", "seq": seq})
    code, err, out = _summary_of(t, {"readings": 4})
    assert code is None and "1 readings never arrived (seq 3)" in err
    assert re.search(r"gaps \(lost readings\)\s+1", out)
    t.add({"device_id": "n", "seq": 3})
    code, err, out = _summary_of(t, {"readings": 4})
    assert code == 0 and err is None and "every reading arrived" in out


def test_reading_row_colours_values_by_quality():
    reading = {
        "device_id": "n",
        "timestamp": "2026-11-22T10:00:10.000Z",
        "seq": 7,
        "sensors": {
            "ld2410": {"presence": True, "distance": 160.0, "energy": 55.0},
            "pir": {"motion_detected": False},
            "mq134": {"gas_concentration": 4.1, "unit": "ppm"},
        },
        "occupancy": 1.0,
        "environment": {"temperature_c": 21.03, "humidity_pct": 45.2, "pressure_hpa": 1013.0},
        "quality": {
            "presence": "good",
            "distance_cm": "good",
            "energy": "good",
            "occupancy": "good",
            "motion": "warming_up",
            "gas_ppm": "bad",
            "temperature_c": "suspect",
            "humidity_pct": "good",
            "pressure_hpa": "good",
        },
    }
    text = reading_line(reading)
    assert ROW.match(text.plain) and "yes  160   55 1.00   no     4.1  21.03" in text.plain
    styles = {text.plain[s.start : s.end].strip(): str(s.style) for s in text.spans}
    assert styles["160"] == "green"
    assert styles["no"] == "cyan"  # PIR warming up
    assert styles["4.1"] == "bold red"
    assert styles["21.03"] == "yellow"


def test_status_lines_say_online_state_heap_and_breaker():
    status = {
        "device_id": "n",
        "online": True,
        "uptime_s": 60,
        "free_heap": 20000,
        "buffer_depth": 3,
        "buffer_drops": 2,
        "uplink": "mqtt",
        "breaker": "half_open",
        "firmware_version": "0.1.0",
    }
    assert status_line(status).plain == (
        "  status: up 60s, free heap 20000 B, buffer 3, drops 2, "
        "uplink mqtt (breaker half-open), fw 0.1.0"
    )
    will = status_line({"device_id": "n", "online": False})
    assert "offline (last will)" in will.plain and str(will.style) == "bold red"


def test_console_lines_show_warnings_and_app_news_only():
    warn = '@nbk {"t":1,"lvl":"W","mod":"uplink","msg":"send failed","kv":{"err":"111"}}'
    assert "node W uplink: send failed" in console_line(warn).plain
    assert console_line('@nbk {"t":1,"lvl":"I","mod":"env","msg":"x","kv":{}}') is None
    assert console_line("plain print from the node") is None
    up = '@nbk {"t":9,"lvl":"I","mod":"uplink","msg":"connected","kv":{}}'
    assert console_line(up).plain == "  node: uplink connected"


def test_world_moments_show_at_their_simulated_minute():
    line = world_line(70000, "sits down")
    assert line.plain == "  >> 1:10  sits down" and str(line.style) == "bold magenta"
    assert world_line(3725000, "late").plain == "  >> 62:05  late"


def test_world_loops_without_a_jump_and_logs_each_moment_once_per_repeat():
    w = World("busy")
    period = w.period_ms
    before_wrap = w.air_at(period - 1)
    after_wrap = w.air_at(period)
    assert all(abs(a - b) < 0.01 for a, b in zip(before_wrap, after_wrap, strict=True))
    assert w.air_at(250000)[3] == 160.0  # the gas keyframe
    assert w.people_at(100000) == [(160, "stationary", 55)]
    assert w.people_at(period + 100000) == w.people_at(100000)
    labels = [label for _, label in w.labels_between(-1, 2 * period - 1)]
    named = [m[1] for m in WORLDS["busy"][1] if m[1]]
    assert labels == named + named
    assert w.labels_between(40000, 55000) == [(55000, "walks to the desk")]


def test_world_noise_is_small_and_replays_from_its_seed():
    a = World("quiet", Prng(5))
    b = World("quiet", Prng(5))
    plain = World("quiet").air_at(123000)
    first = a.air_at(123000)
    assert first == b.air_at(123000)
    assert abs(first[0] - plain[0]) <= 0.03 and abs(first[3] / plain[3] - 1) <= 0.02


def test_node_spec_and_end_time():
    good = {"bridge": "127.0.0.1:4000"}
    spec = check_spec(good)
    assert (spec["fs"], spec["seed"], spec["speed"], spec["tuning"]) == ("node", 1, 10, {})
    for bad, word in (
        ({"speed": 0}, "speed"),
        ({"duration_s": -1}, "duration_s"),
        ({"bridge": None}, "bridge"),
        ({"bridge": "4000"}, "host:port"),
        ({"world": "busy"}, "unknown key 'world'"),  # the world is the host's, not the node's
    ):
        with pytest.raises(ValueError, match=word):
            check_spec(dict(good, **bad))
    with pytest.raises(ValueError, match="unknown world 'x'; choose one of busy, quiet"):
        World("x")
    assert end_ms(600000, 10000) == 605000  # 60 windows, stop mid-window
    assert end_ms(3000, 10000) == 15000  # at least one window


def test_world_plays_on_the_bridge_host_at_its_exact_ticks(tmp_path):
    """The device's time drives the world: each moment at its tick, the parts in its truth."""
    world = World("busy")
    labels = []
    host = BridgeHost(host_parts(tmp_path, seed=2))
    script_world(host, world, lambda t, label, people: labels.append((t, label, people)))
    clock = SimClock()
    with host:
        bridge = Bridge(clock, host.address)  # the device end, as the node holds it
        try:
            assert labels == [(0, "morning: the office is empty", 0)]
            assert bridge.next_edge_ms() == WORLD_STEP_MS  # the next step, or a PIR edge
            clock.advance(69999)
            bridge.any()
            assert [x[1] for x in labels[1:]] == ["someone walks in", "walks to the desk"]
            assert labels[1][0] == 40000 and labels[2][0] == 55000
            parts = host.board
            assert parts.pir.motion is True  # walking to the desk
            clock.advance(1)
            bridge.any()
            assert labels[-1] == (70000, "sits down at the desk", 1)
            assert parts.pir.motion is False  # sitting still
            t, h, _, ppm = world.air_at(70000)  # no noise: exact
            assert (parts.env.temperature_c, parts.env.humidity_pct, parts.gas.ppm) == (t, h, ppm)
        finally:
            bridge.close()
    assert not host.errors, host.errors


def test_host_parts_simulate_the_boards_gas_circuit(tmp_path):
    info = {"mq134": {"adc": 33, "divider_ratio": 1.5, "load_ohm": 20000.0, "supply_v": 5.0}}
    board = host_parts(tmp_path, seed=4, info=info)
    assert (board.gas.divider_ratio, board.gas.load_ohm) == (1.5, 20000.0)
    assert board.gas is board.gas_adc and board.info == info
    assert host_parts(tmp_path).gas.load_ohm == 10000.0  # sim_board's default circuit


def test_broker_runs_on_a_private_port_and_stops(tmp_path):
    with Mosquitto(tmp_path) as broker:
        wait_for_port(broker.port, timeout_s=1)
        pid = broker.pid
        broker.stop()
        broker.start()  # same port again: an outage and a recovery
        wait_for_port(broker.port, timeout_s=1)
        assert broker.pid != pid
        assert "mosquitto version" in broker.log()
    assert not broker.running


def test_broker_on_a_taken_port_fails_with_its_log(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with Mosquitto(tmp_path / "a") as first:
        second = Mosquitto(tmp_path / "b", port=first.port)
        with pytest.raises(
            BrokerError, match=r"exited with status \d+ at start on 127.0.0.1:%d" % first.port
        ) as info:
            second.start()
        assert "Address already in use" in str(info.value)  # its log is in the message
        assert not second.running and first.running


def test_broker_with_tls_and_nodelay_serves_a_verified_handshake(tmp_path):
    import socket
    import ssl

    with Mosquitto(tmp_path, tls=True, nodelay=True) as broker:
        assert broker.url == "mqtts://127.0.0.1:%d" % broker.port
        conf = Path(broker.conf_path).read_text()
        assert "set_tcp_nodelay true" in conf and "certfile %s" % broker.ca.cert_pem in conf
        ctx = ssl.create_default_context(cafile=broker.ca.ca_pem)
        raw = socket.create_connection(("127.0.0.1", broker.port), timeout=5)
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.version().startswith("TLS")
    assert Path(broker.ca.ca_der).read_bytes()[:1] == b"\x30"  # DER: a SEQUENCE


def test_missing_mosquitto_says_how_to_install_it():
    with pytest.raises(BrokerError, match="make setup"):
        Mosquitto(binary="nbk-no-such-mosquitto")
