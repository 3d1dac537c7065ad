"""A peripheral bridge: the firmware's UART, I2C, PIR pin and ADC answered by simulated parts in
another process, so the firmware runs alone in its bounded MicroPython heap.

This module is the device end (MicroPython, or CPython): `Bridge` holds one blocking socket and
has exactly the methods the drivers call on the radar's UART, the I2C bus and the PIR pin;
`BridgeADC` those of the gas sensor's ADC. Each call is one request and one response and
allocates nothing. simulator.board.bridged_board builds the device's Board from them. The host
end, `simulator.bridge_host.BridgeHost` (CPython only), serves the parts of a SimBoard.

Time: every request carries the device's ticks; the host moves its clock to exactly that time
(running the events due on the way, each at its own tick) before the part answers. Every
response carries the host's next event (a PIR edge or a scheduled truth change), which the
device's VirtualClock treats like SimPIR's `next_edge_ms`, so it stops there and asks; PIR
edges that fired on the host come back in the response and the Bridge runs the IRQ handler
registered with it, at the tick of the edge. Truth changed on the host outside `at()` events
reaches the device only with its next call, so schedule changes that must be exact.

Wire format (little-endian). Request: op, a, b, n, ticks(u32), then n payload bytes for writes
(a = I2C address, b = register, n = bytes wanted or sent). Response: status, e, n(u16),
next(u32, 0xFFFFFFFF = none), then e edge levels, then n payload bytes. Status 0 is success,
1..253 an OSError errno from the part (an I2C NACK is 19), 254 ValueError, 255 any other
failure; the payload then holds the message (at most 255 bytes).
"""

from drivers.compat import const

VERSION = const(1)
# Parts the host board has, in the HELLO answer.
HAS_UART = const(1)
HAS_I2C = const(2)
HAS_PIN = const(4)
HAS_ADC = const(8)

_NONE = const(0xFFFFFFFF)  # "no next event" on the wire
_ERR_VALUE = const(254)
_ERR_OTHER = const(255)
_MAX_EDGES = const(16)  # per response: their levels fit a small int, one bit each
# Operations (one byte on the wire).
_HELLO = const(72)  # H
_SYNC = const(83)  # S: move time, nothing else
_ANY = const(65)  # A
_RECV = const(82)  # R
_SEND = const(87)  # W
_MEM_READ = const(109)  # m
_MEM_WRITE = const(77)  # M
_READ = const(114)  # r
_WRITE = const(119)  # w
_SCAN = const(115)  # s
_PIN = const(80)  # P
_ADC = const(97)  # a
_ADC_U16 = const(117)  # u
_ADC_UV = const(118)  # v


def _u32(b, i):
    return b[i] | (b[i + 1] << 8) | (b[i + 2] << 16) | (b[i + 3] << 24)


class Bridge:
    """The device end: one connection to a BridgeHost at "host:port", a VirtualClock watcher,
    and the machine.UART (radar), machine.I2C and PIR machine.Pin surfaces the drivers call.

    One object serves as all three because each class costs ~360 bytes of the heap this
    bridge exists to spare (measured on the x64 port); the ADC has its own (`read` differs).
    """

    IRQ_RISING = 1  # machine.Pin's values on the ESP32 port, as simulator.pir
    IRQ_FALLING = 2

    def __init__(self, clock, address):
        import socket

        host, port = address.rsplit(":", 1)
        s = socket.socket()
        s.connect(socket.getaddrinfo(host, int(port))[0][-1])
        if not hasattr(s, "readinto"):  # CPython: wrap its socket as a MicroPython stream
            from simulator.bridge_host import SocketStream

            s = SocketStream(s)
        self._s = s
        self._clock = clock
        # One buffer for both ways (a request is sent before its response arrives): the header
        # and the largest payload (n is one byte; the host cuts error messages to fit).
        self._buf = bytearray(263)
        self._next = None
        self._handler = None
        self._trigger = 0
        self._level = None  # the edge's level while its handler runs
        self.calls = 0
        try:
            self.call(_HELLO)
            if self._buf[0] != VERSION:
                raise ValueError(
                    "bridge host speaks version %d, this device %d" % (self._buf[0], VERSION)
                )
        except Exception:
            s.close()
            raise
        self.parts = self._buf[1]  # HAS_* bits

    def call(self, op, a=0, b=0, data=None, n=0, into=None):
        """One request/response at the clock's current tick; returns the payload length.

        The payload lands in `into` (or the scratch buffer `_buf`); then the PIR edges the
        response carries run the IRQ handler. Allocates nothing on MicroPython.
        """
        buf = self._buf
        t = self._clock.ticks_ms()
        size = 8
        if data is not None:
            n = len(data)
            if n > 255:
                raise ValueError("bridge: %d bytes in one call; the limit is 255" % n)
            buf[8 : 8 + n] = data
            size += n
        buf[0] = op
        buf[1] = a
        buf[2] = b
        buf[3] = n
        buf[4] = t & 0xFF
        buf[5] = (t >> 8) & 0xFF
        buf[6] = (t >> 16) & 0xFF
        buf[7] = (t >> 24) & 0xFF
        self._s.write(buf, size)
        self._read(buf, 8)
        status = buf[0]
        edges = buf[1]
        n = buf[2] | (buf[3] << 8)
        nxt = _u32(buf, 4)
        self._next = None if nxt == _NONE else nxt
        self.calls += 1
        levels = 0
        if edges:
            self._read(buf, edges)
            for i in range(edges):
                levels |= buf[i] << i
        if status:
            self._read(buf, n)
            msg = bytes(buf[:n]).decode()
            if status == _ERR_VALUE:
                raise ValueError(msg)
            if status == _ERR_OTHER:
                raise RuntimeError(msg)  # it names the bridge host
            raise OSError(status)
        if n:
            self._read(into if into is not None else buf, n)
        for i in range(edges):  # the pin interrupt, once per edge, seeing that edge's level
            level = (levels >> i) & 1
            if self._handler is not None and self._trigger & (1 if level else 2):
                self._level = level
                try:
                    self._handler(self)
                finally:
                    self._level = None
        return n

    def _read(self, buf, n):
        if self._s.readinto(buf, n) != n:  # a blocking stream fills all n, or hit EOF
            raise RuntimeError("bridge host closed the connection")

    def close(self):
        self._s.close()

    # ---- VirtualClock watcher: stop at the host's next event and let it happen -------------

    def next_edge_ms(self):
        return self._next

    def update(self):
        c = self._clock
        if self._next is not None and c.ticks_diff(c.ticks_ms(), self._next) >= 0:
            self.call(_SYNC)

    # ---- machine.UART ------------------------------------------------------------------------

    def any(self):
        self.call(_ANY)
        return _u32(self._buf, 0)

    def readinto(self, buf, n=None):
        if n is None or n > len(buf):
            n = len(buf)
        return self.call(_RECV, 0, 0, None, min(n, 255), buf) or None  # None: nothing came

    def read(self, n=-1):
        got = self.call(_RECV, 0, 0, None, 255 if n is None or n < 0 else min(n, 255))
        return bytes(self._buf[:got]) if got else None

    def write(self, buf):
        self.call(_SEND, 0, 0, buf)
        return _u32(self._buf, 0)

    # ---- machine.I2C (8-bit register addresses) ----------------------------------------------

    def scan(self):
        return list(self._buf[: self.call(_SCAN)])

    def readfrom_mem_into(self, addr, memaddr, buf, addrsize=8):
        if addrsize != 8:
            raise ValueError("bridge I2C: addrsize %r; only 8-bit registers" % (addrsize,))
        self.call(_MEM_READ, addr, memaddr, None, len(buf), buf)

    def readfrom_mem(self, addr, memaddr, nbytes, addrsize=8):
        buf = bytearray(nbytes)
        self.readfrom_mem_into(addr, memaddr, buf, addrsize)
        return bytes(buf)

    def writeto_mem(self, addr, memaddr, buf, addrsize=8):
        if addrsize != 8:
            raise ValueError("bridge I2C: addrsize %r; only 8-bit registers" % (addrsize,))
        self.call(_MEM_WRITE, addr, memaddr, buf)

    def readfrom_into(self, addr, buf, stop=True):
        self.call(_READ, addr, 0, None, len(buf), buf)

    def writeto(self, addr, buf, stop=True):
        self.call(_WRITE, addr, 0, buf)
        return _u32(self._buf, 0)

    # ---- machine.Pin (the PIR output, an input here) -----------------------------------------

    def value(self, *args):
        if args:
            raise ValueError("bridged PIR pin is an input: the PIR module drives this line")
        if self._level is not None:  # inside the handler: the level of its edge
            return self._level
        self.call(_PIN)
        return self._buf[0]

    def irq(self, handler=None, trigger=3, **_kw):
        self._handler = handler
        self._trigger = trigger


class BridgeADC:
    """machine.ADC over a Bridge: read, read_u16, read_uv."""

    def __init__(self, bridge):
        self._b = bridge

    def read(self):
        self._b.call(_ADC)
        return _u32(self._b._buf, 0)

    def read_u16(self):
        self._b.call(_ADC_U16)
        return _u32(self._b._buf, 0)

    def read_uv(self):
        self._b.call(_ADC_UV)
        return _u32(self._b._buf, 0)
