"""The one error family of nbk: expected failures shown as one line with the fix, no traceback."""


class NbkError(Exception):
    """An expected failure (bad input, missing tool, board not answering). Exit code 1.

    The message says what went wrong, the value seen, and the fix, e.g.
    "/dev/ttyUSB0 is open in another program; close it or pass --port".
    """

    exit_code = 1


class UsageProblem(NbkError):
    """The command line asks for something impossible (exit 2, like click's usage errors)."""

    exit_code = 2


class DeviceError(NbkError):
    """The board answered, but not as expected (exec failed, file missing, verify mismatch)."""

    exit_code = 3


class PortError(NbkError):
    """No usable serial port: none found, several candidates, busy, or no permission."""

    exit_code = 4
