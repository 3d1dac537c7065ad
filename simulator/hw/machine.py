"""`machine` of a simulated ESP32: what firmware/esp32_board.py uses, on simulated parts.

Pin, UART, I2C and ADC find their part by pin number in simulator.hw.hardware (built from
/board.json on first use); WDT, RTC, reset and the reset cause behave as on the ESP32 port
(constants and ranges from its modmachine.c / machine_pin.c). Resets end the interpreter with a
signal the virtual board's supervisor reads (nbk.virtualboard): it prints the ROM's reset line
and boots again with `reset_cause()` telling why.

While main.py runs, every hardware access also looks at the console: a Ctrl-C there raises
KeyboardInterrupt, as the ESP32's UART interrupt does, so `nbk device info` or mpremote can
stop the application and reach the REPL. Other bytes typed meanwhile are dropped.

Limits: the watchdog and Ctrl-C are noticed at the next hardware access (the radar is read
every 100 ms), so a firmware loop that never touches hardware is not reset; RTC memory lives
in the interpreter and is lost at any reset.
"""

import os
import sys
import time

# machine.reset_cause() values on the ESP32 port
PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5
# machine.wake_reason() values
PIN_WAKE = EXT0_WAKE = 2
TIMER_WAKE = 4

ENV_RESET_CAUSE = "NBK_VB_RESET_CAUSE"  # set by the supervisor for each boot
ENV_MAC = "NBK_VB_MAC"  # 12 hex digits: the base MAC, stable for one board directory
ENV_CONSOLE = "NBK_VB_CONSOLE"  # "1": watch the console for Ctrl-C (main.py is running)
BOARD_JSON = "/board.json"
DEFAULT_MAC = b"\x24\x0a\xc4\x00\x00\x01"  # an Espressif OUI
FREQ_HZ = (80000000, 160000000, 240000000)
CONSOLE_CHECK_MS = 20
_CTRL_C = 3
# Signals that end the interpreter, one per reset kind (read by nbk.virtualboard._supervise).
SIGNAL_HARD = "USR2"
SIGNAL_WDT = "USR1"
SIGNAL_DEEPSLEEP = "ALRM"


def _kill_self(signal_name):
    """End this interpreter as a reset would: a signal from a shell whose parent we are."""
    if sys.implementation.name != "micropython":
        raise SystemExit("simulated reset (%s)" % signal_name)  # never signal a host process
    os.system("kill -%s $PPID" % signal_name)
    while True:  # the signal arrives while system() waits; never return to the caller
        time.sleep_ms(100)


class _PortClock:
    """time.ticks_* as a clock object (what drivers.compat.SYSTEM_CLOCK is on MicroPython)."""

    def ticks_ms(self):
        return time.ticks_ms()

    def ticks_diff(self, end, start):
        return time.ticks_diff(end, start)

    def ticks_add(self, ticks, delta):
        return time.ticks_add(ticks, delta)

    def sleep_ms(self, ms):
        time.sleep_ms(ms)


class _Board:
    """This interpreter's board: its parts, watchdog, console and RTC memory."""

    def __init__(self):
        self.hardware = None  # simulator.hw.hardware.SimHardware, built on first use
        self._clock = None
        self.kill = _kill_self
        self.levels = {}  # GPIO -> level of pins nothing drives
        self.wdt = None
        self.rtc_memory = b""
        self.freq = 240000000
        self._console = None
        self._console_at = None

    def clock(self):
        """drivers.compat.SYSTEM_CLOCK unless set_clock() chose another. Without the
        application slot on sys.path (a REPL or main.py started without boot.py), the port's
        own ticks: unique_id(), the watchdog and resets must work there too."""
        if self._clock is None:
            try:
                from drivers.compat import SYSTEM_CLOCK

                self._clock = SYSTEM_CLOCK
            except ImportError:
                self._clock = _PortClock()
        return self._clock

    def set_clock(self, clock):
        self._clock = clock

    def parts(self):
        if self.hardware is None:
            import json

            from simulator.hw.hardware import SimHardware

            try:
                with open(BOARD_JSON) as f:
                    info = json.loads(f.read())
            except OSError:
                info = {}  # no board.json: nothing is wired
            self.hardware = SimHardware(info, self.clock(), _epoch_ms)
        return self.hardware

    def poll(self):
        """Run on every hardware access: the watchdog and the console, then the room."""
        self.check()
        hw = self.parts()
        hw.update()
        return hw

    def check(self):
        """The watchdog's deadline and the console's Ctrl-C (no parts needed)."""
        wdt = self.wdt
        clock = self.clock()
        if wdt is not None and clock.ticks_diff(clock.ticks_ms(), wdt.deadline) > 0:
            self.kill(SIGNAL_WDT)
        if os.getenv(ENV_CONSOLE) == "1":
            self._check_console()

    def _check_console(self):
        clock = self.clock()
        now = clock.ticks_ms()
        if (
            self._console_at is not None
            and clock.ticks_diff(now, self._console_at) < CONSOLE_CHECK_MS
        ):
            return
        self._console_at = now
        if self._console is None:
            import select

            self._console = select.poll()
            self._console.register(sys.stdin, select.POLLIN)
        # One byte at a time: after the Ctrl-C, what follows (mpremote's Ctrl-A) stays for
        # the REPL that starts next.
        while self._console.poll(0):
            data = sys.stdin.buffer.read(1)
            if not data:
                return
            if data[0] == _CTRL_C:
                raise KeyboardInterrupt


BOARD = _Board()


def _epoch_ms():
    return time.time_ns() // 1000000


def _gpio(pin):
    """The GPIO number of a Pin or an int."""
    if isinstance(pin, Pin):
        return pin.id
    if isinstance(pin, int) and 0 <= pin <= 39:
        return pin
    raise ValueError("invalid pin %r: use a GPIO number 0..39 or a machine.Pin" % (pin,))


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_DOWN = 1
    PULL_UP = 2
    IRQ_RISING = 1
    IRQ_FALLING = 2
    WAKE_LOW = 4
    WAKE_HIGH = 5

    def __init__(self, id, mode=-1, pull=-1, value=None):
        self.id = _gpio(id)
        self._part = BOARD.parts().pin_part(self.id)
        self.init(mode, pull, value)

    def init(self, mode=-1, pull=-1, value=None):
        if mode != -1:
            if self._part is not None and mode != Pin.IN:
                raise ValueError("GPIO%d is driven by a part: it can only be an input" % self.id)
            self.mode = mode
        if pull == Pin.PULL_UP and self._part is None:
            BOARD.levels[self.id] = 1
        if value is not None:
            self.value(value)

    def value(self, *args):
        BOARD.poll()
        if self._part is not None:
            return self._part.value(*args)
        if args:
            BOARD.levels[self.id] = 1 if args[0] else 0
            return None
        return BOARD.levels.get(self.id, 0)

    def __call__(self, *args):
        return self.value(*args)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def irq(self, handler=None, trigger=3, wake=None, hard=False):
        part = self._part
        if part is None or not hasattr(part, "irq"):
            return None  # a pin nobody drives never changes
        if handler is None:
            part.irq(handler=None, trigger=trigger)
        else:
            part.irq(handler=lambda _p: handler(self), trigger=trigger)
        return None

    def __repr__(self):
        return "Pin(%d)" % self.id


class ADC:
    ATTN_0DB = 0
    ATTN_2_5DB = 1
    ATTN_6DB = 2
    ATTN_11DB = 3
    WIDTH_9BIT = 0
    WIDTH_10BIT = 1
    WIDTH_11BIT = 2
    WIDTH_12BIT = 3

    def __init__(self, pin, atten=None):
        self.id = _gpio(pin)
        if not (32 <= self.id <= 39 or self.id in (0, 2, 4, 12, 13, 14, 15, 25, 26, 27)):
            raise ValueError("GPIO%d has no ADC channel on the ESP32" % self.id)
        self._part = BOARD.parts().adc_part(self.id)
        self._atten = ADC.ATTN_0DB if atten is None else atten

    def atten(self, atten):
        if atten not in (0, 1, 2, 3):
            raise ValueError("invalid attenuation %r; use ADC.ATTN_*" % (atten,))
        self._atten = atten

    def width(self, width):
        pass  # the simulated parts always convert at 12 bits

    def read(self):
        BOARD.poll()
        return 0 if self._part is None else self._part.read()

    def read_u16(self):
        BOARD.poll()
        return 0 if self._part is None else self._part.read_u16()

    def read_uv(self):
        BOARD.poll()
        return 0 if self._part is None else self._part.read_uv()


class _NoLine:
    """A UART whose RX pin nothing drives: silence, and writes go nowhere."""

    def init(self, baudrate=115200, **kw):
        pass

    def any(self):
        return 0

    def read(self, n=-1):
        return None

    def readinto(self, buf, n=None):
        return None

    def write(self, buf):
        return len(buf)


class UART:
    def __init__(self, id, baudrate=115200, bits=8, parity=None, stop=1, tx=None, rx=None, **kw):
        if id not in (0, 1, 2):
            raise ValueError("UART(%r) does not exist on the ESP32: use 0, 1 or 2" % (id,))
        self.id = id
        self._rx = None if rx is None else _gpio(rx)
        self._part = BOARD.parts().uart_part(self._rx) or _NoLine()
        self.init(baudrate)

    def init(self, baudrate=115200, **kw):
        self.baudrate = baudrate
        self._part.init(baudrate=baudrate)

    def deinit(self):
        pass

    def any(self):
        BOARD.poll()
        return self._part.any()

    def read(self, n=-1):
        BOARD.poll()
        return self._part.read(n)

    def readinto(self, buf, n=None):
        BOARD.poll()
        return self._part.readinto(buf, n)

    def readline(self):
        BOARD.poll()
        return self._part.read()

    def write(self, buf):
        BOARD.poll()
        return self._part.write(buf)

    def flush(self):
        pass

    def txdone(self):
        return True


class I2C:
    def __init__(self, id=0, scl=None, sda=None, freq=400000, timeout=50000):
        if id not in (0, 1):
            raise ValueError("I2C(%r) does not exist on the ESP32: use 0 or 1" % (id,))
        if scl is None or sda is None:
            raise ValueError("I2C(%d) needs scl= and sda= pins" % id)
        self.id = id
        self.freq = freq
        self._bus = BOARD.parts().i2c_bus(_gpio(sda), _gpio(scl))

    def scan(self):
        BOARD.poll()
        return self._bus.scan()

    def readfrom(self, addr, nbytes, stop=True):
        BOARD.poll()
        return self._bus.readfrom(addr, nbytes, stop)

    def readfrom_into(self, addr, buf, stop=True):
        BOARD.poll()
        self._bus.readfrom_into(addr, buf, stop)

    def writeto(self, addr, buf, stop=True):
        BOARD.poll()
        return self._bus.writeto(addr, buf, stop)

    def readfrom_mem(self, addr, memaddr, nbytes, addrsize=8):
        BOARD.poll()
        return self._bus.readfrom_mem(addr, memaddr, nbytes, addrsize)

    def readfrom_mem_into(self, addr, memaddr, buf, addrsize=8):
        BOARD.poll()
        self._bus.readfrom_mem_into(addr, memaddr, buf, addrsize)

    def writeto_mem(self, addr, memaddr, buf, addrsize=8):
        BOARD.poll()
        self._bus.writeto_mem(addr, memaddr, buf, addrsize)


class WDT:
    """The task watchdog: once started it cannot be stopped; a missed feed resets the board."""

    def __init__(self, id=0, timeout=5000):
        if timeout < 1:
            raise ValueError("WDT timeout must be >= 1 ms, got %r" % (timeout,))
        self.timeout = timeout
        self.feeds = 0
        clock = BOARD.clock()
        self.deadline = clock.ticks_add(clock.ticks_ms(), timeout)
        BOARD.wdt = self

    def feed(self):
        BOARD.check()  # a deadline already past resets the board before the feed counts
        self.feeds += 1
        clock = BOARD.clock()
        self.deadline = clock.ticks_add(clock.ticks_ms(), self.timeout)


class RTC:
    MEMORY_BYTES = 2048  # the ESP32 port's RTC user memory

    def __init__(self, id=0):
        pass

    def memory(self, data=None):
        if data is None:
            return BOARD.rtc_memory
        if len(data) > RTC.MEMORY_BYTES:
            raise ValueError("RTC memory holds %d bytes, got %d" % (RTC.MEMORY_BYTES, len(data)))
        BOARD.rtc_memory = bytes(data)
        return None

    def datetime(self, dt=None):
        if dt is not None:
            raise OSError("the virtual board's RTC follows the host clock; it cannot be set")
        t = time.localtime()
        return (t[0], t[1], t[2], t[6], t[3], t[4], t[5], 0)


def reset():
    """Hard reset (as esp_restart): the board boots again with HARD_RESET."""
    BOARD.kill(SIGNAL_HARD)


def soft_reset():
    """Soft reset: the interpreter ends and the supervisor boots it again (SOFT_RESET)."""
    raise SystemExit(0)


def deepsleep(time_ms=0):
    """Sleep, then boot again with DEEPSLEEP_RESET (0 = until reset: here one minute)."""
    time.sleep_ms(time_ms if time_ms > 0 else 60000)
    BOARD.kill(SIGNAL_DEEPSLEEP)


def lightsleep(time_ms=0):
    time.sleep_ms(time_ms)


def idle():
    pass


def reset_cause():
    value = os.getenv(ENV_RESET_CAUSE)
    try:
        return int(value) if value else PWRON_RESET
    except ValueError:
        return PWRON_RESET


def wake_reason():
    return TIMER_WAKE if reset_cause() == DEEPSLEEP_RESET else 0


def unique_id():
    """The base MAC, as on the ESP32 port."""
    mac = os.getenv(ENV_MAC)
    if mac and len(mac) == 12:
        try:
            return bytes(int(mac[i : i + 2], 16) for i in range(0, 12, 2))
        except ValueError:
            pass
    return DEFAULT_MAC


def freq(hz=None):
    if hz is None:
        return BOARD.freq
    if hz not in FREQ_HZ:
        raise ValueError("frequency %r: the ESP32 runs at %s Hz" % (hz, FREQ_HZ))
    BOARD.freq = hz
    return None


def disable_irq():
    return 0


def enable_irq(state=0):
    pass
