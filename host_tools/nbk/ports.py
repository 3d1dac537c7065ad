"""Which serial port is the board: `--port` wins, else the one USB-serial bridge we know.

USB ids from esp32-tooling.md §7 (Linux usb-serial drivers, esptool). Several candidates are a
question for the user, never a guess: the error lists them.
"""

from __future__ import annotations

import os
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
) -> str:
    """Return the port to use: `port`, else $NBK_PORT, else the only known USB bridge.

    Raises PortError when no candidate or several candidates are found.
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
    listing = ", ".join("%s (%s)" % item for item in found)
    raise PortError("several boards found: %s; pick one with --port" % listing)
