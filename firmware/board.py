"""The Board: everything the firmware reaches outside itself, injected in one object.

firmware.esp32_board builds one from machine.* on the device; simulator.board builds one from
simulated peripherals. The application touches hardware, time, files and network only through
these attributes, so the same code runs on the ESP32, the Unix port and CPython.

    clock           tick clock with sleep_ms_async (firmware.clock.TickClock or a simulated one)
    fs              firmware.fs.OsFs-like file system (paths relative to the device root)
    uart            LD2410 UART (read/readinto/write/any), or None
    pir_pin         PIR input Pin (value/irq), or None
    gas_adc         MQ134 ADC (read_u16/read_uv), or None
    i2c             I2C bus for the environment sensor, or None
    open_connection coroutine (host, port, ssl=None) -> (reader, writer)
    wdt             watchdog with feed(); NullWdt when the board has none
    rtc_memory      bytes kept across deep sleep (RtcMemory-like: read() / write(b))
    reset_cause     "power_on" | "watchdog" | "deep_sleep" | "soft" | "hard" | "brownout" | ...
    info            dict from /board.json (pins, mq134 electrical parameters, battery divider)
and the methods below, which a concrete board overrides.
"""


class NullWdt:
    """Stands in where there is no hardware watchdog; counts feeds so tests can see them."""

    def __init__(self):
        self.feeds = 0

    def feed(self):
        self.feeds += 1


class RamRtcMemory:
    """RTC memory stand-in: bytes that survive a simulated deep sleep (not a power cut)."""

    def __init__(self, size=2048):
        self._size = size
        self._data = b""

    def read(self):
        return self._data

    def write(self, data):
        if len(data) > self._size:
            raise ValueError("RTC memory holds %d bytes, got %d" % (self._size, len(data)))
        self._data = bytes(data)


class Board:
    """A plain holder; subclasses override the methods that need the platform."""

    def __init__(
        self,
        clock,
        fs,
        uart=None,
        pir_pin=None,
        gas_adc=None,
        i2c=None,
        open_connection=None,
        wdt=None,
        rtc_memory=None,
        reset_cause="power_on",
        info=None,
    ):
        self.clock = clock
        self.fs = fs
        self.uart = uart
        self.pir_pin = pir_pin
        self.gas_adc = gas_adc
        self.i2c = i2c
        self.open_connection = open_connection
        self.wdt = wdt or NullWdt()
        self.rtc_memory = rtc_memory or RamRtcMemory()
        self.reset_cause = reset_cause
        self.info = info or {}

    def connect_network(self, config):
        """Bring the network up (Wi-Fi on the device); returns True when it is up."""
        return True

    def rssi(self):
        """Signal strength in dBm, or None where there is no radio."""
        return None

    def battery_pct(self):
        """Battery level 0..100 from the divider in board info, or None on mains."""
        return None

    def mem_free(self):
        import gc

        if hasattr(gc, "mem_free"):
            return gc.mem_free()
        return None  # CPython: not meaningful

    def ntp_epoch_ms(self):
        """Ask NTP for the time: epoch ms (UTC); raises OSError when it cannot."""
        raise OSError("no NTP on this board")

    def deep_sleep(self, ms):
        """Power down for `ms` (battery build); does not return on the device."""
        raise OSError("deep sleep is not available on this board")

    def reset(self):
        """Hard reset (after a config change that needs one, or a fatal error)."""
        raise SystemExit("reset requested")
