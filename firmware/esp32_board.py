"""The Board of a real ESP32, built from /board.json with machine.* (device only).

/board.json is what `nbk build` writes from boards/<name>.toml (host_tools/nbk/boards.py,
Board.to_device_dict): the pins of the LD2410 UART, PIR, MQ-134 ADC and I2C bus, the MQ-134
circuit and the battery divider. Only this module and /main.py touch machine and network.

    board = build_board()            # then firmware.app.start(board)
"""

import json
import time

import machine
import network

from firmware.board import Board
from firmware.clock import TickClock
from firmware.fs import OsFs

WDT_TIMEOUT_MS = 30000  # the app feeds every second while all tasks are alive
WIFI_TIMEOUT_MS = 20000
_UNIX_2000_S = 946684800  # seconds from 1970 to 2000: the ESP32 port's time epoch
# A 1-cell Li-ion between empty and full (no load): a linear guess, good enough for status.
_BATTERY_EMPTY_V = 3.3
_BATTERY_FULL_V = 4.2

_RESET_CAUSES = {
    machine.PWRON_RESET: "power_on",
    machine.HARD_RESET: "hard",
    machine.WDT_RESET: "watchdog",
    machine.DEEPSLEEP_RESET: "deep_sleep",
    machine.SOFT_RESET: "soft",
}


class RtcMemory:
    """machine.RTC().memory(): bytes kept through deep sleep (2 KB on the ESP32)."""

    def __init__(self):
        self._rtc = machine.RTC()

    def read(self):
        return self._rtc.memory()

    def write(self, data):
        self._rtc.memory(data)


class Esp32Board(Board):
    def __init__(self, info, **kw):
        super().__init__(TickClock(), OsFs(""), info=info, **kw)
        self._wlan = network.WLAN(network.STA_IF)
        self._battery_adc = None
        bat = info.get("battery")
        if bat:
            adc = machine.ADC(machine.Pin(bat["adc"]))
            adc.atten(getattr(machine.ADC, bat["atten"]))
            self._battery_adc = adc

    def connect_network(self, config):
        net = config.get("network", {})
        ssid = net.get("ssid")
        if not ssid:
            return False
        wlan = self._wlan
        wlan.active(True)
        if net.get("hostname"):
            network.hostname(net["hostname"])
        if not wlan.isconnected():
            wlan.connect(ssid, net.get("password", ""))
            start = time.ticks_ms()
            while not wlan.isconnected():
                if time.ticks_diff(time.ticks_ms(), start) > WIFI_TIMEOUT_MS:
                    return False
                self.wdt.feed()
                time.sleep_ms(200)
        return True

    def rssi(self):
        try:
            return self._wlan.status("rssi") if self._wlan.isconnected() else None
        except (OSError, ValueError):
            return None

    def battery_pct(self):
        if self._battery_adc is None:
            return None
        volts = self._battery_adc.read_uv() / 1e6 * self.info["battery"]["divider_ratio"]
        pct = (volts - _BATTERY_EMPTY_V) * 100 / (_BATTERY_FULL_V - _BATTERY_EMPTY_V)
        return max(0, min(100, int(pct)))

    def ntp_epoch_ms(self):
        import ntptime  # blocking, about one round trip; raises OSError on timeout

        secs = ntptime.time()
        if time.gmtime(0)[0] == 2000:
            secs += _UNIX_2000_S
        return secs * 1000

    def deep_sleep(self, ms):
        machine.deepsleep(ms)

    def reset(self):
        machine.reset()


def read_board_json(path="/board.json"):
    with open(path) as f:
        return json.loads(f.read())


def build_board(path="/board.json"):
    """The Board for this device; a missing part in /board.json leaves that sensor out."""
    info = read_board_json(path)
    kw = {}
    ld = info.get("ld2410")
    if ld:
        kw["uart"] = machine.UART(
            ld["uart"], baudrate=ld.get("baudrate", 256000), tx=ld["tx"], rx=ld["rx"], rxbuf=512
        )
    pir = info.get("pir")
    if pir:
        kw["pir_pin"] = machine.Pin(pir["pin"], machine.Pin.IN)
    mq = info.get("mq134")
    if mq:
        adc = machine.ADC(machine.Pin(mq["adc"]))
        adc.atten(getattr(machine.ADC, mq["atten"]))
        kw["gas_adc"] = adc
    i2c = info.get("i2c")
    if i2c:
        kw["i2c"] = machine.I2C(
            i2c["id"], sda=machine.Pin(i2c["sda"]), scl=machine.Pin(i2c["scl"]), freq=i2c["freq"]
        )
    kw["wdt"] = machine.WDT(timeout=WDT_TIMEOUT_MS)
    kw["rtc_memory"] = RtcMemory()
    kw["reset_cause"] = _RESET_CAUSES.get(machine.reset_cause(), "unknown")
    return Esp32Board(info, **kw)
