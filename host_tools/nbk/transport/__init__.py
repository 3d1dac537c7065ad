"""Links to a board. `connect(port)` returns a Transport in the raw REPL; close it when done."""

from nbk.transport.base import DeviceExecError, Transport
from nbk.transport.serial import SerialTransport


def connect(port: str, baudrate: int = 115200, connect_timeout: float = 5.0) -> SerialTransport:
    """Open `port` and enter the raw REPL (no soft reset). Raises PortError or DeviceError."""
    return SerialTransport(port, baudrate=baudrate, connect_timeout=connect_timeout)


__all__ = ["DeviceExecError", "SerialTransport", "Transport", "connect"]
