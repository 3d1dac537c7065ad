"""A peripheral bridge: the firmware's UART, I2C, PIR pin and ADC answered by simulated parts in
another process, so the firmware runs alone in its bounded MicroPython heap.

Device end (MicroPython, or CPython): `Bridge` holds one blocking socket and has exactly the
methods the drivers call on the radar's UART, the I2C bus and the PIR pin; `BridgeADC` those
of the gas sensor's ADC. Each call is one request and one response and allocates nothing.
Host end (CPython, the test process): `BridgeHost` serves the simulated parts of a
`simulator.board.SimBoard` built on a plain SimClock; simulator.board.bridged_board builds the
device's Board from a Bridge.

    host = BridgeHost(sim_board(SimClock(), ""))        # CPython: the parts and ground truth
    host.at(63000, lambda: host.board.radar.set_targets([]))  # truth changes at exact ticks
    with host:                                          # serves in a thread
        ... micropython: bridged_board(VirtualClock(), "node", host.address)

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
failure; the payload then holds the message.
"""

import sys

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
            s = _SocketStream(s)
        self._s = s
        self._clock = clock
        self._tx = bytearray(263)  # header + the largest payload (n is one byte)
        self._rx = bytearray(256)
        self._next = None
        self._handler = None
        self._trigger = 0
        self._level = None  # the edge's level while its handler runs
        self.calls = 0
        try:
            self.call(_HELLO)
            if self._rx[0] != VERSION:
                raise ValueError(
                    "bridge host speaks version %d, this device %d" % (self._rx[0], VERSION)
                )
        except Exception:
            s.close()
            raise
        self.parts = self._rx[1]  # HAS_* bits

    def call(self, op, a=0, b=0, data=None, n=0, into=None):
        """One request/response at the clock's current tick; returns the payload length.

        The payload lands in `into` (or the scratch buffer `_rx`); then the PIR edges the
        response carries run the IRQ handler. Allocates nothing on MicroPython.
        """
        tx = self._tx
        t = self._clock.ticks_ms()
        size = 8
        if data is not None:
            n = len(data)
            if n > 255:
                raise ValueError("bridge: %d bytes in one call; the limit is 255" % n)
            tx[8 : 8 + n] = data
            size += n
        tx[0] = op
        tx[1] = a
        tx[2] = b
        tx[3] = n
        tx[4] = t & 0xFF
        tx[5] = (t >> 8) & 0xFF
        tx[6] = (t >> 16) & 0xFF
        tx[7] = (t >> 24) & 0xFF
        self._s.write(tx, size)
        rx = self._rx
        self._read(rx, 8)
        status = rx[0]
        edges = rx[1]
        n = rx[2] | (rx[3] << 8)
        nxt = _u32(rx, 4)
        self._next = None if nxt == _NONE else nxt
        self.calls += 1
        levels = 0
        if edges:
            self._read(rx, edges)
            for i in range(edges):
                levels |= rx[i] << i
        if status:
            self._read(rx, n)
            msg = bytes(rx[:n]).decode()
            if status == _ERR_VALUE:
                raise ValueError(msg)
            if status == _ERR_OTHER:
                raise RuntimeError("bridge host: " + msg)
            raise OSError(status)
        if n:
            self._read(into if into is not None else rx, n)
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
        return _u32(self._rx, 0)

    def readinto(self, buf, n=None):
        if n is None or n > len(buf):
            n = len(buf)
        return self.call(_RECV, 0, 0, None, min(n, 255), buf) or None  # None: nothing came

    def read(self, n=-1):
        got = self.call(_RECV, 0, 0, None, 255 if n is None or n < 0 else min(n, 255))
        return bytes(self._rx[:got]) if got else None

    def write(self, buf):
        self.call(_SEND, 0, 0, buf)
        return _u32(self._rx, 0)

    # ---- machine.I2C (8-bit register addresses) ----------------------------------------------

    def scan(self):
        return list(self._rx[: self.call(_SCAN)])

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
        return _u32(self._rx, 0)

    # ---- machine.Pin (the PIR output, an input here) -----------------------------------------

    def value(self, *args):
        if args:
            raise ValueError("bridged PIR pin is an input: the PIR module drives this line")
        if self._level is not None:  # inside the handler: the level of its edge
            return self._level
        self.call(_PIN)
        return self._rx[0]

    def irq(self, handler=None, trigger=3, **_kw):
        self._handler = handler
        self._trigger = trigger


class BridgeADC:
    """machine.ADC over a Bridge: read, read_u16, read_uv."""

    def __init__(self, bridge):
        self._b = bridge

    def read(self):
        self._b.call(_ADC)
        return _u32(self._b._rx, 0)

    def read_u16(self):
        self._b.call(_ADC_U16)
        return _u32(self._b._rx, 0)

    def read_uv(self):
        self._b.call(_ADC_UV)
        return _u32(self._b._rx, 0)


# ---- host end (CPython) --------------------------------------------------------------------
# Not built on MicroPython: its classes would cost the device heap (~1.4 KB measured).

if sys.implementation.name != "micropython":
    import heapq
    import socket
    import threading
    import traceback

    class _SocketStream:
        """CPython's socket as the MicroPython stream the Bridge uses: write(buf, n), readinto."""

        def __init__(self, sock):
            self._sock = sock

        def write(self, buf, n):
            self._sock.sendall(memoryview(buf)[:n])

        def readinto(self, buf, n):
            view = memoryview(buf)[:n]
            got = 0
            while got < n:
                k = self._sock.recv_into(view[got:])
                if not k:
                    break
                got += k
            return got

        def close(self):
            self._sock.close()

    class BridgeHost:
        """Serves the simulated parts of `board` (uart, i2c, pir_pin, gas_adc; a SimBoard on a
        SimClock) to one device connection, on a thread; `with host:` starts and stops it.

        `at(ticks, fn)` runs fn (a truth change, an outage) when device time reaches `ticks`, with
        the host clock at exactly that tick and the device waiting. Failures in a part that are not
        OSError, and failures in events, are answered as errors and kept in `errors`.
        """

        def __init__(self, board, bind="127.0.0.1"):
            self.board = board
            self.clock = board.clock
            self.errors = []  # tracebacks of host-side failures
            self.calls = {}  # op letter -> count
            self._events = []  # heap of (ticks, order, fn)
            self._order = 0
            self._edges = []
            self._lock = threading.RLock()  # an event may call at()
            self._thread = None
            self._conn = None
            self._stop = False
            srv = socket.socket()
            srv.bind((bind, 0))
            srv.listen(1)
            srv.settimeout(0.2)
            self._srv = srv
            self.address = "%s:%d" % srv.getsockname()[:2]
            pin = board.pir_pin
            if pin is not None:
                pin.irq(handler=self._on_edge, trigger=3)

        def at(self, ticks, fn):
            """Run `fn()` when the device's time reaches `ticks` (same tick: in order of `at`).

            Schedule before the device connects: it learns the next event from each answer.
            """
            with self._lock:
                self._order += 1
                heapq.heappush(self._events, (ticks, self._order, fn))

        def pending(self):
            """How many scheduled events have not run yet (the device has not reached them)."""
            with self._lock:
                return len(self._events)

        def __enter__(self):
            self._thread = threading.Thread(target=self._serve, name="bridge-host", daemon=True)
            self._thread.start()
            return self

        def __exit__(self, *exc):
            self.close()

        def close(self):
            self._stop = True
            if self._conn is not None:
                try:
                    self._conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            if self._thread is not None:
                self._thread.join(5)
            self._srv.close()

        # ---- serving --------------------------------------------------------------------------

        def _serve(self):
            while not self._stop:
                try:
                    conn, _ = self._srv.accept()
                except socket.timeout:
                    continue
                except OSError:
                    return
                conn.settimeout(None)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._conn = conn
                try:
                    self._session(conn.makefile("rb"), conn)
                except OSError:
                    pass  # the device went away (end of a run, or killed)
                finally:
                    conn.close()
                    self._conn = None

        def _session(self, rfile, conn):
            while True:
                head = rfile.read(8)
                if len(head) < 8:
                    return
                op, a, b, n = head[0], head[1], head[2], head[3]
                ticks = int.from_bytes(head[4:8], "little")
                data = rfile.read(n) if op in (_SEND, _MEM_WRITE, _WRITE) else b""
                with self._lock:
                    status, payload = self._answer(op, a, b, n, ticks, data)
                    edges = self._edges[:_MAX_EDGES]
                    del self._edges[:_MAX_EDGES]
                    nxt = self._next_event(ticks)
                key = chr(op)
                self.calls[key] = self.calls.get(key, 0) + 1
                conn.sendall(
                    bytes((status, len(edges)))
                    + len(payload).to_bytes(2, "little")
                    + (_NONE if nxt is None else nxt).to_bytes(4, "little")
                    + bytes(edges)
                    + payload
                )

        def _answer(self, op, a, b, n, ticks, data):
            """(status, payload) for one request, after moving the parts to `ticks`."""
            try:
                self._advance(ticks)
                return 0, self._dispatch(op, a, b, n, data)
            except OSError as exc:
                code = _errno(exc)
                if 0 < code < _ERR_VALUE:
                    return code, str(exc).encode()
                self.errors.append(traceback.format_exc())
                return _ERR_OTHER, repr(exc).encode()[:1000]
            except ValueError as exc:
                return _ERR_VALUE, str(exc).encode()[:1000]
            except Exception as exc:  # a bug in a part or an event: the device must fail too
                self.errors.append(traceback.format_exc())
                return _ERR_OTHER, repr(exc).encode()[:1000]

        def _dispatch(self, op, a, b, n, data):
            board = self.board
            if op == _HELLO:
                parts = 0
                for flag, part in (
                    (HAS_UART, board.uart),
                    (HAS_I2C, board.i2c),
                    (HAS_PIN, board.pir_pin),
                    (HAS_ADC, board.gas_adc),
                ):
                    if part is not None:
                        parts |= flag
                return bytes((VERSION, parts))
            if op == _SYNC:
                return b""
            if op in (_ANY, _RECV, _SEND):
                uart = self._part(board.uart, "UART")
                if op == _ANY:
                    return _word(uart.any())
                if op == _SEND:
                    return _word(uart.write(data))
                buf = bytearray(n)
                got = uart.readinto(buf, n) if n else None
                return bytes(buf[: got or 0])
            if op in (_MEM_READ, _MEM_WRITE, _READ, _WRITE, _SCAN):
                i2c = self._part(board.i2c, "I2C bus")
                if op == _SCAN:
                    return bytes(i2c.scan())
                if op == _WRITE:
                    return _word(i2c.writeto(a, data))
                if op == _MEM_WRITE:
                    i2c.writeto_mem(a, b, data)
                    return b""
                buf = bytearray(n)
                if op == _READ:
                    i2c.readfrom_into(a, buf)
                else:
                    i2c.readfrom_mem_into(a, b, buf)
                return bytes(buf)
            if op == _PIN:
                return bytes((self._part(board.pir_pin, "PIR pin").value(),))
            if op in (_ADC, _ADC_U16, _ADC_UV):
                adc = self._part(board.gas_adc, "ADC")
                if op == _ADC:
                    return _word(adc.read())
                return _word(adc.read_u16() if op == _ADC_U16 else adc.read_uv())
            raise RuntimeError("unknown bridge operation %r" % chr(op))

        @staticmethod
        def _part(part, name):
            if part is None:
                raise RuntimeError("the host board has no %s" % name)
            return part

        # ---- time -----------------------------------------------------------------------------

        def _advance(self, ticks):
            """Bring the host clock and the parts to `ticks`, running due events at their ticks."""
            clock = self.clock
            if ticks < clock.ticks_ms():
                raise RuntimeError(
                    "device time went backwards: %d ms after %d ms" % (ticks, clock.ticks_ms())
                )
            events = self._events
            while events and events[0][0] <= ticks:
                when, _, fn = heapq.heappop(events)
                self._step_to(when)
                if self.board.uart is not None:
                    self.board.uart.any()  # the radar's reports so far keep the old truth
                try:
                    fn()
                except Exception as exc:  # the test's own code: say which event
                    raise RuntimeError("event at %d ms failed: %r" % (when, exc)) from exc
            self._step_to(ticks)

        def _step_to(self, ticks):
            """Move the clock; the PIR model follows (as a VirtualClock watcher would)."""
            clock = self.clock
            now = clock.ticks_ms()
            if ticks > now:
                clock.advance(ticks - now)
            if self.board.pir_pin is not None:
                self.board.pir_pin.update()  # edges up to now fire _on_edge

        def _on_edge(self, pin):
            self._edges.append(pin.value())

        def _next_event(self, ticks):
            nxt = None
            if self.board.pir_pin is not None:
                nxt = self.board.pir_pin.next_edge_ms()
            if self._events:
                e = self._events[0][0]
                if nxt is None or e < nxt:
                    nxt = e
            if self._edges:  # edges not sent yet: the device should ask again at once
                nxt = ticks
            return nxt

    def _errno(exc):
        """The errno of an OSError; the parts raise OSError(19), which CPython leaves in args."""
        code = exc.errno
        if code is None and exc.args and isinstance(exc.args[0], int):
            code = exc.args[0]
        return code if isinstance(code, int) else 0

    def _word(v):
        return int(v).to_bytes(4, "little")
