"""What every driver shares: the quality vocabulary and the error base class."""

# Quality of one value, as carried in telemetry. Interned strings: comparing allocates nothing.
GOOD = "good"
SUSPECT = "suspect"
BAD = "bad"
WARMING_UP = "warming_up"


class SensorError(Exception):
    """A sensor could not be read or configured.

    `cause` keeps the bus error (OSError from I2C/UART, a timeout) so the caller can log it.
    """

    def __init__(self, message, cause=None):
        super().__init__(message)
        self.cause = cause
