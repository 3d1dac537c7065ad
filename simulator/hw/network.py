"""`network` of a simulated ESP32: a station that joins any access point after a short delay.

The sockets the firmware opens afterwards are the host's, so "connected" means the host's
network: the uplink reaches whatever /config.json names. Status codes and ifconfig shape are
the ESP32 port's (network_wlan.c).
"""

import machine

STA_IF = 0
AP_IF = 1
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202
CONNECT_MS = 800  # association plus DHCP on a quiet 2.4 GHz channel
RSSI_DBM = -58
_IFCONFIG = ("127.0.0.1", "255.0.0.0", "127.0.0.1", "127.0.0.1")
_HOSTNAME = ["espressif"]  # the ESP32 port's default; one process is one board
_INTERFACES = {}


def hostname(name=None):
    if name is None:
        return _HOSTNAME[0]
    if not isinstance(name, str) or not 0 < len(name) <= 32:
        raise ValueError("hostname must be a string of 1..32 characters, got %r" % (name,))
    _HOSTNAME[0] = name
    return None


class _Wlan:
    def __init__(self, interface):
        self.interface = interface
        self._active = False
        self._ssid = None
        self._since = None  # ticks of connect(), or None when not connecting

    def active(self, is_active=None):
        if is_active is None:
            return self._active
        self._active = bool(is_active)
        if not self._active:
            self._since = None
        return None

    def connect(self, ssid=None, key=None, bssid=None):
        if not self._active:
            raise OSError("Wifi Not Started")  # the ESP32 port's message before active(True)
        if not ssid:
            raise ValueError("connect() needs an SSID")
        self._ssid = ssid
        clock = machine.BOARD.clock()
        self._since = clock.ticks_ms()

    def disconnect(self):
        self._since = None

    def isconnected(self):
        machine.BOARD.check()
        if self._since is None:
            return False
        clock = machine.BOARD.clock()
        return clock.ticks_diff(clock.ticks_ms(), self._since) >= CONNECT_MS

    def status(self, param=None):
        if param == "rssi":
            if not self.isconnected():
                raise OSError("not connected")
            return RSSI_DBM
        if param is not None:
            raise ValueError("unknown status parameter %r" % (param,))
        if self._since is None:
            return STAT_IDLE
        return STAT_GOT_IP if self.isconnected() else STAT_CONNECTING

    def ifconfig(self, config=None):
        if config is not None:
            raise OSError("the virtual board uses the host's addresses")
        return _IFCONFIG if self.isconnected() else ("0.0.0.0",) * 4

    def config(self, *args, **kw):
        if kw:
            return None  # settings (txpower, pm, ...) are accepted and have no effect
        if len(args) != 1:
            raise TypeError("config() takes one parameter name or keyword settings")
        name = args[0]
        if name == "mac":
            return machine.unique_id()
        if name in ("ssid", "essid"):
            return self._ssid or ""
        if name in ("hostname", "dhcp_hostname"):
            return hostname()
        raise ValueError("unknown config param %r" % (name,))

    def scan(self):
        # (ssid, bssid, channel, RSSI, security, hidden)
        return [((self._ssid or "nbk-bench").encode(), machine.unique_id(), 6, RSSI_DBM, 3, False)]


def WLAN(interface=STA_IF):
    if interface not in (STA_IF, AP_IF):
        raise ValueError("WLAN interface must be STA_IF or AP_IF, got %r" % (interface,))
    wlan = _INTERFACES.get(interface)
    if wlan is None:
        wlan = _INTERFACES[interface] = _Wlan(interface)
    return wlan
