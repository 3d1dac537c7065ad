"""Read a board's console: decode the firmware's structured log lines, filter, survive resets.

The firmware writes one log record per line, a marker then one JSON object:

    @nbk {"t":12345,"lvl":"I","mod":"mqtt","msg":"connected","kv":{"rtt_ms":41}}

t = ticks_ms at the board, lvl = D|I|W|E|C, mod = module name, msg = text, kv = optional object.
Anything else on the console (ROM boot text, tracebacks, print output) is kept as a text line.
A reset keeps the port open and just shows up as text; an unplug closes it, and the monitor
reopens it with a growing delay until the board is back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any

from nbk.errors import NbkError, PortError

MARKER = "@nbk "
LEVELS = {"D": 10, "I": 20, "W": 30, "E": 40, "C": 50}
LEVEL_NAMES = {"D": "DEBUG", "I": "INFO", "W": "WARN", "E": "ERROR", "C": "CRIT"}
_ALIASES = {
    "DEBUG": "D",
    "INFO": "I",
    "WARN": "W",
    "WARNING": "W",
    "ERROR": "E",
    "CRIT": "C",
    "CRITICAL": "C",
}


def parse_level(name: str) -> str:
    """'W', 'warn' or 'WARNING' -> 'W'. Raises NbkError naming the accepted values."""
    key = str(name).upper()
    key = _ALIASES.get(key, key)
    if key not in LEVELS:
        raise NbkError(
            "unknown log level %r; use one of D, I, W, E, C (or debug, info, warn, error, crit)"
            % name
        )
    return key


def decode_line(line: str) -> dict[str, Any]:
    """Decode one console line into an event dict.

    {"kind": "log", "t", "lvl", "mod", "msg", "kv"} for a structured record; {"kind": "text",
    "text"} for anything else, with "bad": reason when the marker was there but the record was
    not valid (the raw line is kept so nothing the board said is lost).
    """
    line = line.rstrip("\r\n")
    at = line.find(MARKER)
    if at < 0:
        return {"kind": "text", "text": line}
    try:
        record = json.loads(line[at + len(MARKER) :])
    except ValueError:
        return {"kind": "text", "text": line, "bad": "not JSON after the marker"}
    if not isinstance(record, dict):
        return {"kind": "text", "text": line, "bad": "record is not an object"}
    lvl, t, mod, msg = record.get("lvl"), record.get("t"), record.get("mod"), record.get("msg")
    kv = record.get("kv", {})
    problem = None
    if lvl not in LEVELS:
        problem = "lvl %r is not one of D I W E C" % (lvl,)
    elif not isinstance(t, int) or isinstance(t, bool):
        problem = "t %r is not an integer tick count" % (t,)
    elif not isinstance(mod, str) or not isinstance(msg, str):
        problem = "mod and msg must be strings"
    elif not isinstance(kv, dict):
        problem = "kv %r is not an object" % (kv,)
    if problem:
        return {"kind": "text", "text": line, "bad": problem}
    return {"kind": "log", "t": t, "lvl": lvl, "mod": mod, "msg": msg, "kv": kv}


class Filter:
    """Keeps records at or above `level` from `modules` (a module matches itself and children).

    Text lines pass unless a module filter is set: boot text and tracebacks matter at any level.
    """

    def __init__(self, level: str = "D", modules: Iterable[str] = ()) -> None:
        self.min_level = LEVELS[parse_level(level)]
        self.modules = tuple(modules)

    def __call__(self, event: dict[str, Any]) -> bool:
        if event["kind"] == "status":
            return True
        if event["kind"] == "text":
            return not self.modules
        if LEVELS[event["lvl"]] < self.min_level:
            return False
        if not self.modules:
            return True
        mod = event["mod"]
        return any(mod == m or mod.startswith(m + ".") for m in self.modules)


def _open_serial(port: str) -> Any:
    """Open without touching the reset lines: on ESP32 dev boards RTS drives EN and DTR drives
    GPIO0, so both stay released (as idf.py monitor does) and opening never resets the board."""
    import serial

    link = serial.Serial(baudrate=115200, timeout=0.1, exclusive=True)
    link.port = port
    link.dtr = False
    link.rts = False
    link.open()
    return link


class Monitor:
    """Reads lines from a port and hands decoded events to a callback; reconnects on unplug.

    `resolve_port()` is asked again before each reconnect, so a board that comes back under
    another device name (auto-selection by USB id) is found. `open_port`, `sleep` and `clock` are
    injected for tests.
    """

    def __init__(
        self,
        resolve_port: Callable[[], str],
        open_port: Callable[[str], Any] = _open_serial,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        backoff_s: tuple[float, float] = (0.1, 2.0),
    ) -> None:
        self.resolve_port = resolve_port
        self.open_port = open_port
        self.sleep = sleep
        self.clock = clock
        self.backoff_first, self.backoff_max = backoff_s
        self.reconnects = 0

    def run(
        self,
        on_event: Callable[[dict[str, Any]], None],
        stop: Callable[[], bool] = lambda: False,
        duration_s: float | None = None,
        wait_s: float = 0.0,
    ) -> dict[str, int]:
        """Read until `stop()` is true or `duration_s` passed. Returns counts per event kind.

        The first open must succeed within `wait_s` seconds (PortError otherwise); after that,
        losing the port only starts a reconnect loop.
        """
        started = self.clock()
        deadline = None if duration_s is None else started + duration_s

        def done() -> bool:
            return stop() or (deadline is not None and self.clock() >= deadline)

        counts = {"log": 0, "text": 0, "status": 0}

        def emit(event: dict[str, Any]) -> None:
            counts[event["kind"]] += 1
            on_event(event)

        link = self._connect(started + wait_s, done, first=True)
        if link is None:
            return counts
        emit({"kind": "status", "msg": "connected", "port": link.port})
        pending = b""
        while not done():
            try:
                chunk = link.read(256)
            except OSError:  # serial.SerialException is an OSError: unplugged, port gone
                chunk = None
            if chunk is None:
                if pending:
                    emit(decode_line(pending.decode("utf-8", "replace")))
                    pending = b""
                _close(link)
                emit({"kind": "status", "msg": "disconnected"})
                link = self._connect(None, done, first=False)
                if link is None:
                    break
                self.reconnects += 1
                emit({"kind": "status", "msg": "connected", "port": link.port})
                continue
            pending += chunk
            while b"\n" in pending:
                raw, pending = pending.split(b"\n", 1)
                event = decode_line(raw.decode("utf-8", "replace"))
                if event["kind"] == "text" and not event["text"] and "bad" not in event:
                    continue  # blank lines carry nothing
                emit(event)
        if link is not None:
            _close(link)
        return counts

    def _connect(self, give_up_at: float | None, done: Callable[[], bool], first: bool) -> Any:
        """Open the port, retrying with doubling delays. None if `done()` first."""
        delay = self.backoff_first
        last_error = None
        while True:
            try:
                port = self.resolve_port()
                return self.open_port(port)
            except (OSError, PortError) as exc:
                last_error = exc
            if done():
                return None
            if first and (give_up_at is None or self.clock() >= give_up_at):
                if isinstance(last_error, PortError):
                    raise last_error
                raise PortError(
                    "cannot open the console (%s); check the port and that no other program "
                    "holds it, or pass --wait SECONDS to wait for the board" % last_error
                )
            self.sleep(delay)
            delay = min(delay * 2, self.backoff_max)


def _close(link: Any) -> None:
    try:
        link.close()
    except OSError:
        pass


def format_event(event: dict[str, Any]) -> str:
    """One line of rich markup for a person reading the console."""
    from rich.markup import escape

    if event["kind"] == "status":
        text = " ".join(["--", event["msg"], event.get("port", ""), "--"]).replace("  ", " ")
        return "[dim]%s[/]" % escape(text)
    if event["kind"] == "text":
        style = "yellow" if event.get("bad") else "default"
        return "[%s]%s[/]" % (style, escape(event["text"]))
    colour = {"D": "dim", "I": "green", "W": "yellow", "E": "red", "C": "bold red"}[event["lvl"]]
    kv = " ".join("%s=%s" % (k, json.dumps(v)) for k, v in sorted(event["kv"].items()))
    return "%10.3f [%s]%-5s[/] [cyan]%-12s[/] %s %s" % (
        event["t"] / 1000.0,
        colour,
        LEVEL_NAMES[event["lvl"]],
        escape(event["mod"]),
        escape(event["msg"]),
        "[dim]%s[/]" % escape(kv) if kv else "",
    )
