"""The host end of simulator.bridge (CPython only): `BridgeHost` serves a board's simulated
parts to one device connection, from a thread of the test (or demo) process.

    host = BridgeHost(sim_board(SimClock(), ""))        # simulator.parts: parts and ground truth
    host.at(63000, lambda: host.board.radar.set_targets([]))  # truth changes at exact ticks
    with host:                                          # serves in a thread
        ... micropython: bridged_board(VirtualClock(), "node", host.address)

simulator.bridge describes the protocol and its timing; this module is never in a device image.
"""

import heapq
import socket
import threading
import traceback

from simulator.bridge import (  # the wire's constants; private there, so MicroPython folds them
    _ADC,
    _ADC_U16,
    _ADC_UV,
    _ANY,
    _ERR_OTHER,
    _ERR_VALUE,
    _HELLO,
    _MAX_EDGES,
    _MEM_READ,
    _MEM_WRITE,
    _NONE,
    _PIN,
    _READ,
    _RECV,
    _SCAN,
    _SEND,
    _SYNC,
    _WRITE,
    HAS_ADC,
    HAS_I2C,
    HAS_PIN,
    HAS_UART,
    VERSION,
)


class SocketStream:
    """A CPython socket as the MicroPython stream a Bridge uses: write(buf, n), readinto."""

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
                return code, _message(str(exc))
            self.errors.append(traceback.format_exc())
            return _ERR_OTHER, _message("bridge host: %r" % (exc,))
        except ValueError as exc:
            return _ERR_VALUE, _message(str(exc))
        except Exception as exc:  # a bug in a part or an event: the device must fail too
            self.errors.append(traceback.format_exc())
            return _ERR_OTHER, _message("bridge host: %r" % (exc,))

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


def _message(text):
    """An error's text for the wire: ASCII (a cut never splits a character), at most 255
    bytes, what the device's buffer holds."""
    return text.encode("ascii", "replace")[:255]


def _word(v):
    return int(v).to_bytes(4, "little")
