"""The serial link to a board: mpremote's SerialTransport for the raw-REPL byte plumbing.

We never soft-reset on connect (mpremote's `resume` semantics): a soft reset would restart the
application on an ESP32 and ends the process on the Unix port. Every call has a timeout, and
mpremote's errors become one-line NbkErrors that name the fix.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import sys

import mpremote.transport_serial as _mp_serial
import serial
from mpremote.transport import TransportError
from mpremote.transport_serial import SerialTransport as _MpSerial

from nbk.errors import DeviceError, PortError
from nbk.transport.base import DeviceExecError, Transport

READ_TIMEOUT_S = 2.0  # a blocking pyserial read never waits longer than this

# mpremote prints the bytes it saw before raising "could not enter raw repl"; that diagnostic
# belongs on stderr, not in our stdout (which carries --json documents). Rebinding the name in
# its module is thread-safe, unlike redirect_stdout around each call (batch provisioning runs
# one thread per board).
_mp_serial.print = functools.partial(print, file=sys.stderr)  # pyright: ignore[reportAttributeAccessIssue]


class SerialTransport(Transport):
    """A board on a serial port, in the raw REPL until `close()`."""

    def __init__(self, port: str, baudrate: int = 115200, connect_timeout: float = 5.0) -> None:
        super().__init__()
        self.port = port
        self._link = open_link(port, baudrate)
        try:
            self._link.enter_raw_repl(soft_reset=False, timeout_overall=connect_timeout)
        except (TransportError, serial.SerialException, OSError) as exc:
            self._link.close()
            raise DeviceError(
                "%s does not answer the raw REPL (%s): the board may be busy running code "
                "(press its reset or stop the program) or not run MicroPython; "
                "check with `nbk monitor --port %s`" % (port, exc, port)
            ) from None

    def exec_code(self, code: str, timeout: float = 10.0) -> bytes:
        try:
            out, err = self._link.exec_raw(code, timeout=timeout)
        except TransportError as exc:
            raise DeviceError(
                "%s stopped answering (%s, timeout %.0fs); reset the board and retry"
                % (self.port, exc, timeout)
            ) from None
        except (serial.SerialException, OSError) as exc:
            raise PortError(
                "lost %s (%s): was the board unplugged or reset? reconnect it and retry"
                % (self.port, exc)
            ) from None
        if err:
            text = err.decode(errors="replace").strip()
            last = text.splitlines()[-1] if text else "error"
            raise DeviceExecError(
                "board raised %s; check the board (nbk device info, nbk monitor) and retry"
                % _name_errno(last),
                traceback=text,
            )
        return out

    def exec_no_wait(self, code: str) -> None:
        """Start `code` and return at once (for code that ends the link, e.g. machine.reset)."""
        try:
            self._link.exec_raw_no_follow(code)
        except (TransportError, serial.SerialException, OSError):
            pass  # the board may drop the link mid-answer: that is the point
        self._link.in_raw_repl = False

    def soft_reset(self, timeout: float = 5.0) -> bytes:
        """Ctrl-D at the friendly REPL; return the console bytes up to "soft reboot"."""
        self._link.exit_raw_repl()
        self._link.serial.write(b"\x04")
        return self._link.read_until(1, b"soft reboot", timeout=timeout, timeout_overall=timeout)

    def close(self) -> None:
        try:
            if self._link.in_raw_repl:
                self._link.exit_raw_repl()
        except (serial.SerialException, OSError):
            pass  # the port is gone already; closing is all that is left
        with contextlib.suppress(serial.SerialException, OSError):
            self._link.close()


def open_link(port: str, baudrate: int = 115200) -> _MpSerial:
    """Open mpremote's SerialTransport on `port`, turning failures into a PortError with the fix."""
    if not port.startswith(("rfc2217://", "socket://", "loop://")):
        if not os.path.exists(port):
            raise PortError(
                "no serial port at %s; plug the board in (or start the virtual board) "
                "or pass the right --port" % port
            )
        if not os.access(port, os.R_OK | os.W_OK):
            raise PortError(
                "no permission to open %s; add yourself to the dialout group "
                "(sudo usermod -aG dialout $USER) and log in again" % port
            )
    try:
        link = _MpSerial(port, baudrate=baudrate, timeout=READ_TIMEOUT_S)
    except TransportError:
        reason = _open_failure(port)  # mpremote's "failed to access" hides why
        if reason is None or "lock" in reason.lower() or "busy" in reason.lower():
            raise PortError(
                "%s is open in another program (nbk monitor, mpremote, a terminal?); "
                "close it and retry" % port
            ) from None
        raise PortError(
            "cannot open %s (%s); check it is the board's serial port or pass --port"
            % (port, reason)
        ) from None
    return link


def _open_failure(port: str) -> str | None:
    """Why pyserial cannot open `port` (its message), or None if it opens now."""
    try:
        serial.Serial(port, exclusive=True).close()
    except (serial.SerialException, OSError, ValueError) as exc:
        return str(exc)
    return None


def _name_errno(last: str) -> str:
    """'OSError: 20' -> 'OSError: 20 (ENOTDIR, Not a directory)': MicroPython prints bare
    numbers for errors it has no name for; the numbers are the POSIX ones (py/mperrno.h)."""
    m = re.fullmatch(r"OSError: (?:\[Errno )?(\d+)\]?", last)
    if not m or int(m.group(1)) not in errno.errorcode:
        return last
    number = int(m.group(1))
    return "%s (%s, %s)" % (last, errno.errorcode[number], os.strerror(number))
