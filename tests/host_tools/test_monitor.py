"""nbk monitor: decoding the firmware's log lines, filtering, and reconnecting after unplug."""

import json
import shutil
import threading
import time

import pytest
from click.testing import CliRunner
from nbk.cli import main
from nbk.errors import NbkError, PortError
from nbk.monitor import Filter, Monitor, decode_line, format_event, parse_level
from nbk.virtualboard import VirtualBoard

from firmware.log import format_line
from tests.support.micropython import REPO_ROOT


# -- decoding ---------------------------------------------------------------------------------
def test_decodes_the_line_the_firmware_writes():
    line = format_line(12345, "I", "mqtt", "connected", {"host": "10.0.0.2", "rtt_ms": 41})
    assert decode_line(line + "\r\n") == {
        "kind": "log",
        "t": 12345,
        "lvl": "I",
        "mod": "mqtt",
        "msg": "connected",
        "kv": {"host": "10.0.0.2", "rtt_ms": 41},
    }


def test_marker_after_other_text_still_decodes_and_kv_is_optional():
    event = decode_line('\x00garbage after reset@nbk {"t":5,"lvl":"E","mod":"app","msg":"x"}')
    assert event["kind"] == "log" and event["lvl"] == "E" and event["kv"] == {}


def test_plain_text_and_broken_records_are_kept_as_text():
    assert decode_line("rst:0x1 (POWERON_RESET),boot:0x13") == {
        "kind": "text",
        "text": "rst:0x1 (POWERON_RESET),boot:0x13",
    }
    cut = decode_line('@nbk {"t":5,"lvl":"I","mod":"ap')
    assert cut["kind"] == "text" and cut["bad"] == "not JSON after the marker"
    assert "lvl" in decode_line('@nbk {"t":5,"lvl":"X","mod":"a","msg":"b"}')["bad"]
    assert "integer" in decode_line('@nbk {"t":"5","lvl":"I","mod":"a","msg":"b"}')["bad"]
    assert "kv" in decode_line('@nbk {"t":5,"lvl":"I","mod":"a","msg":"b","kv":[1]}')["bad"]


def test_filter_by_level_and_module_prefix():
    keep = Filter("warn", ["uplink"])
    log = lambda lvl, mod: {"kind": "log", "lvl": lvl, "mod": mod}  # noqa: E731
    assert keep(log("W", "uplink")) and keep(log("E", "uplink.http"))
    assert not keep(log("I", "uplink")) and not keep(log("E", "uplinkx"))
    assert not keep({"kind": "text", "text": "boot"})  # a module filter hides plain text
    assert Filter("E")({"kind": "text", "text": "Traceback"})  # a level filter does not


def test_unknown_level_is_refused_naming_the_choices():
    with pytest.raises(NbkError) as caught:
        parse_level("loud")
    assert "D, I, W, E, C" in str(caught.value)


# -- reconnecting (fake port) -----------------------------------------------------------------
class FakeLink:
    def __init__(self, port, chunks):
        self.port, self.chunks, self.closed = port, list(chunks), False

    def close(self):
        self.closed = True

    def read(self, n):
        if not self.chunks:
            return b""
        chunk = self.chunks.pop(0)
        if isinstance(chunk, Exception):
            raise chunk
        return chunk


def test_reconnects_with_growing_delays_and_asks_for_the_port_again():
    line = format_line(7, "I", "app", "up").encode() + b"\n"
    opened, delays = [], []
    # The board comes back under another name, as after re-plugging into another USB socket.
    names = iter(["/dev/ttyUSB0", "/dev/ttyUSB0", "/dev/ttyUSB0", "/dev/ttyUSB1"])
    plan = [
        FakeLink("/dev/ttyUSB0", [line[:10], line[10:] + b"partial", OSError(5, "EIO")]),
        OSError(2, "gone"),
        OSError(2, "gone"),
        FakeLink("/dev/ttyUSB1", [line]),
    ]

    def open_port(port):
        item = plan.pop(0)
        if isinstance(item, Exception):
            raise item
        opened.append(port)
        return item

    events = []
    monitor = Monitor(lambda: next(names), open_port=open_port, sleep=delays.append)
    monitor.run(events.append, stop=lambda: not plan and len(events) >= 6)
    kinds = [(e["kind"], e.get("msg") or e.get("text")) for e in events]
    assert kinds == [
        ("status", "connected"),
        ("log", "up"),
        ("text", "partial"),  # a half line is flushed, not lost, when the port goes
        ("status", "disconnected"),
        ("status", "connected"),
        ("log", "up"),
    ]
    assert opened == ["/dev/ttyUSB0", "/dev/ttyUSB1"]
    assert delays == [0.1, 0.2]
    assert monitor.reconnects == 1


def test_first_open_failure_is_a_port_error_unless_waiting():
    def never(port):
        raise OSError(2, "No such file or directory")

    with pytest.raises(PortError) as caught:
        Monitor(lambda: "/dev/ttyNOPE", open_port=never).run(lambda e: None)
    assert "--wait" in str(caught.value)


# -- end to end on a virtual board --------------------------------------------------------------
MAIN = """\
from firmware.log import format_line
try:
    n = int(open('boots').read())
except OSError:
    n = 0
open('boots', 'w').write(str(n + 1))
print(format_line(1000 + n, 'I', 'boot', 'started', {'boot': n}))
print(format_line(1001, 'D', 'mqtt', 'noise'))
print(format_line(1002, 'W', 'uplink.http', 'slow', {'ms': 900}))
print('plain text from boot', n)
if n in (0, 2):
    import machine
    machine.soft_reset()  # these boots reset the board by themselves
"""


def install_main(root):
    """The firmware's own log module on the board (its "/" is `root`), and the main above."""
    (root / "firmware").mkdir()
    (root / "firmware" / "__init__.py").write_text("")
    shutil.copy(REPO_ROOT / "firmware" / "log.py", root / "firmware" / "log.py")
    (root / "main.py").write_text(MAIN)


def test_monitor_survives_resets_and_a_replug(tmp_path):
    root = tmp_path / "board"
    root.mkdir()
    install_main(root)
    board = VirtualBoard(root, run_main=True)
    events, stop = [], threading.Event()
    monitor = Monitor(lambda: board.port, backoff_s=(0.05, 0.2))
    thread = threading.Thread(
        target=monitor.run, args=(events.append,), kwargs={"stop": stop.is_set, "wait_s": 20}
    )
    thread.start()

    def boots_seen():
        # Opening a port flushes what came before: boots 0 and 1 may precede the monitor.
        return [e["kv"]["boot"] for e in events if e.get("msg") == "started"][-3:]

    def wait_for(condition):
        deadline = time.monotonic() + 10
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.05)
        return condition()

    try:
        board.start(wait_prompt=False)
        assert wait_for(lambda: events and events[0]["kind"] == "status"), events
        assert wait_for(lambda: (root / "boots").exists() and (root / "boots").read_text() == "2")
        time.sleep(0.3)  # boot 1 is at its REPL
        board.press_reset()  # boot 2, which soft-resets into boot 3
        assert wait_for(lambda: boots_seen()[-2:] == [2, 3]), events
        assert wait_for(lambda: {"kind": "text", "text": "plain text from boot 3"} in events)
        board.replug(wait_prompt=False)  # boot 4
        assert wait_for(lambda: boots_seen() == [2, 3, 4]), events
    finally:
        stop.set()
        thread.join(5)
        board.close()
    texts = [e["text"] for e in events if e["kind"] == "text"]
    assert "rst:0x1 (POWERON_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)" in texts
    assert "MPY: soft reboot" in texts and "plain text from boot 3" in texts
    slow = [e for e in events if e.get("msg") == "slow"]
    assert slow[-1] == {
        "kind": "log",
        "t": 1002,
        "lvl": "W",
        "mod": "uplink.http",
        "msg": "slow",
        "kv": {"ms": 900},
    }
    statuses = [e["msg"] for e in events if e["kind"] == "status"]
    assert statuses == ["connected", "disconnected", "connected"]
    assert monitor.reconnects == 1


def test_cli_filters_and_prints_json_lines(tmp_path):
    root = tmp_path / "board"
    root.mkdir()
    (root / "boots").write_text("5")  # not boot 0 or 2: no self-reset
    install_main(root)
    board = VirtualBoard(root, run_main=True)
    # Pressed once the monitor has the port (opening it flushes earlier output): boot 6.
    press = threading.Timer(1.0, board.press_reset)
    try:
        board.start()
        press.start()
        result = CliRunner().invoke(
            main,
            ["--json", "monitor", "--port", board.port, "--level", "W", "--duration", "3"],
        )
    finally:
        press.cancel()
        board.close()
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    logs = [(e["lvl"], e["mod"]) for e in events if e["kind"] == "log"]
    assert logs == [("W", "uplink.http")]  # boot 6's I and D records are filtered out
    assert {"kind": "text", "text": "plain text from boot 6"} in events


def test_human_lines_show_time_level_module_message_and_values():
    from rich.console import Console

    console = Console(width=200, record=True, color_system=None)
    console.print(
        format_event(decode_line(format_line(61500, "W", "uplink", "slow [x]", {"ms": 9})))
    )
    console.print(format_event({"kind": "status", "msg": "disconnected"}))
    text = console.export_text()
    assert "61.500 WARN  uplink       slow [x] ms=9" in text  # markup in messages is escaped
    assert "-- disconnected --" in text
