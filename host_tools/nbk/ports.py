"""Which serial port is the board: `--port` wins, else the one USB-serial bridge we know.

USB ids from esp32-tooling.md §7 (Linux usb-serial drivers, esptool). Several candidates are a
question for the user, never a guess: on a terminal nbk asks which one, in a script the error
lists them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from nbk.errors import PortError

# (VID, PID) -> what the chip is, for messages.
KNOWN_BRIDGES = {
    (0x10C4, 0xEA60): "Silicon Labs CP210x",
    (0x1A86, 0x7523): "WCH CH340",
    (0x1A86, 0x55D4): "WCH CH9102",
    (0x0403, 0x6001): "FTDI FT232R",
    (0x0403, 0x6010): "FTDI FT2232",
    (0x0403, 0x6011): "FTDI FT4232H",
    (0x0403, 0x6014): "FTDI FT232H",
    (0x0403, 0x6015): "FTDI FT-X",
    (0x303A, 0x1001): "Espressif USB-Serial/JTAG",
    (0x303A, 0x4001): "Espressif native USB (MicroPython TinyUSB)",
}

PORT_ENV = "NBK_PORT"


def _comports() -> Iterable[Any]:
    from serial.tools import list_ports

    return list_ports.comports()


def candidates(comports: Callable[[], Iterable[Any]] = _comports) -> list[tuple[str, str]]:
    """Ports whose USB VID:PID is a known ESP32 bridge: [(device, description)], sorted."""
    found = []
    for info in comports():
        kind = KNOWN_BRIDGES.get((info.vid, info.pid))
        if kind is not None:
            found.append((info.device, "%s %04X:%04X" % (kind, info.vid, info.pid)))
    return sorted(found)


def select_port(
    port: str | None = None,
    comports: Callable[[], Iterable[Any]] = _comports,
    environ: Mapping[str, str] = os.environ,
    ask: Callable[[list[tuple[str, str]]], str] | None = None,
) -> str:
    """Return the port to use: `port`, else $NBK_PORT, else the only known USB bridge.

    Several candidates go to `ask(candidates)` (a question on the terminal) when given. Raises
    PortError when no candidate is found, or several and nobody to ask.
    """
    if port:
        return port
    if environ.get(PORT_ENV):
        return environ[PORT_ENV]
    found = candidates(comports)
    if len(found) == 1:
        return found[0][0]
    if not found:
        raise PortError(
            "no ESP32 board found on USB (looked for CP210x, CH340, CH9102, FTDI and Espressif "
            "USB ids); plug one in, check the cable carries data, or pass --port"
        )
    if ask is not None:
        return ask(found)
    listing = ", ".join("%s (%s)" % item for item in found)
    raise PortError("several boards found: %s; pick one with --port" % listing)


def ask_which(
    found: list[tuple[str, str]],
    read: Callable[[str], str] | None = None,
    write: Callable[[str], Any] | None = None,
    tries: int = 3,
) -> str:
    """Ask which of several boards to use: a numbered list, answered by number or port name.

    The list and the question go to stderr (`write`), so stdout stays clean for --json.
    """
    write = write or sys.stderr.write
    write("Several boards are connected:\n")
    for number, (device, kind) in enumerate(found, start=1):
        write("  %d) %s (%s)\n" % (number, device, kind))
    names = [device for device, _ in found]
    read = read or _read_line
    for _ in range(tries):
        answer = read("Which one [1-%d]? " % len(found))
        if not answer:  # end of input
            break
        answer = answer.strip()
        if answer in names:
            return answer
        if answer.isdigit() and 1 <= int(answer) <= len(found):
            return names[int(answer) - 1]
        write("  answer with a number from 1 to %d or a port name\n" % len(found))
    raise PortError("no board chosen among %s; pass --port" % ", ".join(names))


def _read_line(prompt: str) -> str:
    """The question goes to stderr, so stdout stays clean for --json."""
    sys.stderr.write(prompt)
    sys.stderr.flush()
    return sys.stdin.readline()


def interactive() -> bool:
    """True when a person can answer a question: stdin and stderr are terminals."""
    return sys.stdin.isatty() and sys.stderr.isatty()


def pick_port(port: str | None) -> str:
    """select_port for the command line: asks on a terminal, lists the candidates otherwise."""
    return select_port(port, ask=ask_which if interactive() else None)
