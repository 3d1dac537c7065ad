"""`ntptime` of a simulated ESP32: the answer an NTP server would give, from the host clock.

Seconds since the interpreter's epoch (1970 on the Unix port, 2000 on the ESP32 port), as the
port's ntptime.time() returns them.
"""

import time as _time

host = "pool.ntp.org"
timeout = 1
_UNIX_2000_S = 946684800


def time():
    secs = int(_time.time())
    if _time.gmtime(0)[0] == 2000:
        secs -= _UNIX_2000_S
    return secs


def settime():
    raise OSError("the virtual board's clock follows the host clock; it cannot be set")
