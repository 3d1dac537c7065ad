"""MQTT 3.1.1 protocol layer on asyncio streams: connect, QoS 0/1 publish, ping, subscribe.

Policy (reconnect, backoff, breaker) lives in firmware.uplink.link; this layer raises OSError
(MqttError is one) on any failure and drops the connection. Section numbers cite the MQTT 3.1.1
OASIS standard.

    client = MQTTClient("node-1", "127.0.0.1", 1883, will_topic=t, will_payload=b"...")
    await client.connect()
    await client.publish("neurobuild/sensors/node-1/data", payload)  # returns after PUBACK
    await client.disconnect()
"""

try:
    import asyncio
except ImportError:  # very old MicroPython
    import uasyncio as asyncio

from drivers.compat import const
from firmware.uplink import ACKED, UNSENT, sleep_ms, wait_for_ms

_CONNECT = const(0x10)
_CONNACK = const(0x20)
_PUBLISH = const(0x30)
_PUBACK = const(0x40)
_SUBSCRIBE = const(0x82)  # §3.8.1: flags must be 0b0010
_SUBACK = const(0x90)
_UNSUBACK = const(0xB0)
_PINGRESP = const(0xD0)
# PINGREQ (c0 00) and DISCONNECT (e0 00) are sent as constant bytes literals.

# §3.2.2.3 CONNACK return codes
_REFUSALS = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised",
}

_MAX_REMAINING = const(268435455)  # §2.2.3: four length bytes at most


class MqttError(OSError):
    """A protocol failure: refused CONNECT, malformed or unexpected packet, timeout."""


def encode_length(buf, pos, n):
    """Write MQTT's remaining-length varint (§2.2.3) at buf[pos]; return the new position."""
    if n < 0 or n > _MAX_REMAINING:
        raise MqttError("remaining length %d outside 0..268435455" % n)
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            buf[pos] = byte | 0x80
            pos += 1
        else:
            buf[pos] = byte
            return pos + 1


def _utf8(text, what, binary=False):
    """A length-limited field (§1.5.3); unless `binary` (password, §3.1.3.5), one without U+0000,
    which a UTF-8 string must not hold (the server closes the connection)."""
    try:
        data = text.encode() if isinstance(text, str) else bytes(text)
    except UnicodeError:  # CPython: a lone surrogate has no UTF-8 form
        raise MqttError("%s is not encodable as UTF-8" % what)
    if len(data) > 65535:
        raise MqttError("%s is %d bytes; MQTT strings hold at most 65535" % (what, len(data)))
    if not binary and b"\x00" in data:
        raise MqttError("%s contains U+0000, which MQTT strings must not (§1.5.3)" % what)
    return data


def check_topic(topic):
    """A topic name to publish to: non-empty, no wildcards or NUL (§4.7.1, §1.5.3)."""
    if not topic:
        raise MqttError("topic must not be empty")
    for c in "+#\x00":
        if c in topic:
            raise MqttError("topic %r contains %r; wildcards and NUL are not allowed" % (topic, c))
    return _utf8(topic, "topic")


def connect_packet(client_id, keepalive_s, user=None, password=None, will=None, clean=True):
    """The bytes of a CONNECT packet (§3.1). will = (topic, payload, qos, retain) or None."""
    cid = _utf8(client_id, "client id")
    flags = 0x02 if clean else 0
    payload = bytearray(2 + len(cid))
    payload[0] = len(cid) >> 8
    payload[1] = len(cid) & 0xFF
    payload[2:] = cid
    fields = []
    if will is not None:
        topic, message, qos, retain = will
        if qos not in (0, 1):
            raise MqttError("will qos must be 0 or 1, got %r" % (qos,))
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        fields.append(check_topic(topic))
        fields.append(bytes(message))
    if user is not None:
        flags |= 0x80
        fields.append(_utf8(user, "user name"))
        if password is not None:
            flags |= 0x40
            fields.append(_utf8(password, "password", True))
    elif password is not None:
        raise MqttError("a password needs a user name (§3.1.2.9)")
    for field in fields:
        if len(field) > 65535:
            raise MqttError("a CONNECT field is %d bytes; at most 65535" % len(field))
        payload += bytes((len(field) >> 8, len(field) & 0xFF))
        payload += field
    if not 0 <= keepalive_s <= 65535:
        raise MqttError("keepalive %r s outside 0..65535" % (keepalive_s,))
    variable = b"\x00\x04MQTT\x04" + bytes((flags, keepalive_s >> 8, keepalive_s & 0xFF))
    head = bytearray(5)
    n = encode_length(head, 1, len(variable) + len(payload))
    head[0] = _CONNECT
    return bytes(head[:n]) + variable + bytes(payload)


class MQTTClient:
    """One MQTT 3.1.1 connection; `publish()` with QoS 1 returns once the broker's PUBACK came.

    Several publishes may be in flight at once (up to `max_inflight`), and their acks may come
    in any order. Any failure raises OSError (MqttError for protocol faults), fails every
    pending publish with it, and leaves the client disconnected; call connect() again.
    """

    def __init__(
        self,
        client_id,
        host,
        port=1883,
        keepalive_s=60,
        user=None,
        password=None,
        will_topic=None,
        will_payload=b"",
        will_qos=1,
        will_retain=True,
        open_connection=None,
        clock=None,
        ssl=None,
        max_inflight=8,
        max_packet=2048,
        timeout_ms=10000,
        on_message=None,
        log=None,
    ):
        if not client_id:
            raise MqttError("client id must not be empty")
        if max_inflight < 1:
            raise MqttError("max_inflight must be at least 1, got %r" % (max_inflight,))
        if clock is None:
            from drivers.compat import SYSTEM_CLOCK

            clock = SYSTEM_CLOCK
        self.client_id = client_id
        self.host = host
        self.port = port
        self.keepalive_s = keepalive_s
        self._user = user
        self._password = password
        self._will = None
        if will_topic is not None:
            self._will = (will_topic, will_payload, will_qos, will_retain)
        self._open = open_connection or asyncio.open_connection
        self._clock = clock
        self._ssl = ssl
        self.max_inflight = max_inflight
        self.max_packet = max_packet
        self.timeout_ms = timeout_ms
        self.on_message = on_message
        self._log = log
        self._reader = None
        self._writer = None
        self._tasks = []
        self._pending = {}  # packet id -> [event, error or None]
        self._next_pid = 0
        # Every PUBLISH is assembled here and written in one call: separate small writes would
        # go out as separate TCP segments and meet Nagle + delayed ACK (~40 ms per message).
        self._out = bytearray(max_packet + 5)
        self._out_mv = memoryview(self._out)
        self._small = bytearray(4)  # PUBACK we send for incoming QoS 1
        self._last_rx = 0
        self._last_tx = 0
        self.error = None  # why the last connection ended
        self.connected = False
        self.unknown_acks = 0  # PUBACKs for ids not pending (e.g. after a timeout)

    # -- connection

    async def connect(self):
        """Open the stream, send CONNECT (clean session), wait for CONNACK; start the reader."""
        if self.connected:
            return
        self.error = None
        packet = connect_packet(
            self.client_id, self.keepalive_s, self._user, self._password, self._will
        )
        try:
            if self._ssl is None:
                opening = self._open(self.host, self.port)
            else:
                opening = self._open(self.host, self.port, ssl=self._ssl)
            self._reader, self._writer = await wait_for_ms(opening, self.timeout_ms)
            self._writer.write(packet)
            await self._writer.drain()
            # toolchain.md §1: a refused connection only shows at the first read
            head = await wait_for_ms(self._reader.readexactly(4), self.timeout_ms)
        except Exception as exc:  # OSError, timeout, EOF: all mean "no broker"
            await self._close()
            raise _as_oserror(exc, "connect to %s:%d" % (self.host, self.port))
        if head[0] != _CONNACK or head[1] != 2:
            await self._close()
            raise MqttError("expected CONNACK, got bytes %s" % _hex(head))
        if head[3] != 0:
            await self._close()
            raise MqttError(
                "broker refused the connection: %s (%d)"
                % (_REFUSALS.get(head[3], "unknown code"), head[3])
            )
        now = self._clock.ticks_ms()
        self._last_rx = now
        self._last_tx = now
        self.connected = True
        self._tasks = [asyncio.create_task(self._read_loop())]
        if self.keepalive_s:
            self._tasks.append(asyncio.create_task(self._keepalive_loop()))

    async def disconnect(self):
        """Send DISCONNECT (so the broker discards the will, §3.14) and close."""
        if self.connected:
            try:
                self._writer.write(b"\xe0\x00")
                await self._writer.drain()
            except OSError:
                pass
        await self._drop(MqttError("disconnected by the client"))

    # -- sending

    def _pid(self):
        """Next packet id: 1..65535, never 0 (§2.3.1), skipping ids still in flight."""
        while True:
            self._next_pid = self._next_pid % 65535 + 1
            if self._next_pid not in self._pending:
                return self._next_pid

    async def publish(self, topic, payload, qos=1, retain=False):
        """Send PUBLISH; with qos=1 wait for its PUBACK (timeout_ms). Returns the packet id."""
        if qos not in (0, 1):
            raise MqttError("qos must be 0 or 1, got %r" % (qos,))
        topic_b = check_topic(topic)
        while len(self._pending) >= self.max_inflight:
            self._ensure_connected()
            await sleep_ms(self._clock, 5)
        self._ensure_connected()
        pid = 0
        size = 2 + len(topic_b) + len(payload) + (2 if qos else 0)
        if size > self.max_packet:
            raise MqttError("PUBLISH of %d bytes exceeds max_packet %d" % (size, self.max_packet))
        out = self._out
        out[0] = _PUBLISH | (qos << 1) | (1 if retain else 0)
        n = encode_length(out, 1, size)
        out[n] = len(topic_b) >> 8
        out[n + 1] = len(topic_b) & 0xFF
        n += 2
        out[n : n + len(topic_b)] = topic_b
        n += len(topic_b)
        entry = None
        if qos:
            pid = self._pid()
            entry = [asyncio.Event(), None]
            self._pending[pid] = entry
            out[n] = pid >> 8
            out[n + 1] = pid & 0xFF
            n += 2
        out[n : n + len(payload)] = payload
        n += len(payload)
        w = self._writer
        # one synchronous write: packets from concurrent publishes never interleave, and both
        # runtimes copy what the socket did not take at once, so the buffer can be reused
        w.write(self._out_mv[:n])
        self._last_tx = self._clock.ticks_ms()
        try:
            await w.drain()
            if not qos:
                return 0
            try:
                await wait_for_ms(entry[0].wait(), self.timeout_ms)
            except Exception as exc:
                raise _as_oserror(exc, "waiting for PUBACK of packet %d" % pid)
        except OSError as exc:
            self._pending.pop(pid, None)
            await self._drop(exc)
            raise
        self._pending.pop(pid, None)
        if entry[1] is not None:
            raise entry[1]
        return pid

    async def subscribe(self, topic_filter, qos=1):
        """SUBSCRIBE to one filter and wait for its SUBACK; MqttError if the broker refused."""
        self._ensure_connected()
        flt = _utf8(topic_filter, "topic filter")
        pid = self._pid()
        entry = [asyncio.Event(), None]
        self._pending[pid] = entry
        body = bytes((pid >> 8, pid & 0xFF, len(flt) >> 8, len(flt) & 0xFF)) + flt + bytes((qos,))
        head = bytearray(5)
        n = encode_length(head, 1, len(body))
        head[0] = _SUBSCRIBE
        self._writer.write(bytes(head[:n]) + body)
        try:
            await self._writer.drain()
            await wait_for_ms(entry[0].wait(), self.timeout_ms)
        except Exception as exc:
            self._pending.pop(pid, None)
            err = _as_oserror(exc, "waiting for SUBACK")
            await self._drop(err)
            raise err
        self._pending.pop(pid, None)
        if entry[1] is not None:
            raise entry[1]

    async def ping(self):
        """Send PINGREQ; the reader notes PINGRESP as received traffic (§3.12)."""
        self._ensure_connected()
        self._writer.write(b"\xc0\x00")
        self._last_tx = self._clock.ticks_ms()
        await self._writer.drain()

    def _ensure_connected(self):
        if not self.connected:
            raise self.error or MqttError("not connected")

    # -- receiving

    async def _read_packet(self):
        """(first byte, body bytes) of the next packet; MqttError on a malformed length."""
        first = (await self._reader.readexactly(1))[0]
        n = 0
        shift = 0
        while True:
            byte = (await self._reader.readexactly(1))[0]
            n |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
            if shift > 21:  # §2.2.3: at most four length bytes
                raise MqttError("malformed remaining length (more than 4 bytes)")
        if n > self.max_packet:
            raise MqttError(
                "packet type 0x%02x of %d bytes exceeds max_packet %d" % (first, n, self.max_packet)
            )
        body = await self._reader.readexactly(n) if n else b""
        self._last_rx = self._clock.ticks_ms()
        return first, body

    async def _read_loop(self):
        try:
            while True:
                first, body = await self._read_packet()
                self._handle(first, body)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._drop(_as_oserror(exc, "reading from the broker"))

    def _handle(self, first, body):
        kind = first & 0xF0
        if kind in (_PUBACK, _SUBACK, _UNSUBACK):
            want = 3 if kind == _SUBACK else 2
            if first & 0x0F or len(body) != want:
                raise MqttError("malformed ack 0x%02x with %d bytes" % (first, len(body)))
            pid = (body[0] << 8) | body[1]
            entry = self._pending.get(pid)
            if entry is None:
                self.unknown_acks += 1
                return
            if kind == _SUBACK and body[2] == 0x80:
                entry[1] = MqttError("broker refused the subscription (SUBACK 0x80)")
            entry[0].set()
        elif kind == _PINGRESP:
            if first != _PINGRESP or body:
                raise MqttError("malformed PINGRESP")
        elif kind == _PUBLISH:
            self._incoming(first, body)
        else:
            raise MqttError("unexpected packet type 0x%02x from the broker" % first)

    def _incoming(self, first, body):
        qos = (first >> 1) & 3
        if qos > 1 or len(body) < 2:
            raise MqttError("malformed or QoS 2 PUBLISH from the broker")
        tlen = (body[0] << 8) | body[1]
        start = 2 + tlen + (2 if qos else 0)
        if start > len(body):
            raise MqttError("PUBLISH topic length %d runs past the packet" % tlen)
        topic = bytes(body[2 : 2 + tlen])
        if qos:
            ack = self._small
            ack[0] = _PUBACK
            ack[1] = 2
            ack[2] = body[start - 2]
            ack[3] = body[start - 1]
            self._writer.write(bytes(ack))
        if self.on_message is not None:
            self.on_message(topic, bytes(body[start:]), (first & 1) == 1)

    async def _keepalive_loop(self):
        """Ping after keepalive/2 of silence; drop after 1.5 keepalives with no byte (§3.1.2.10)."""
        period_ms = self.keepalive_s * 1000
        clock = self._clock
        try:
            while self.connected:
                await sleep_ms(clock, period_ms // 4)
                now = clock.ticks_ms()
                if clock.ticks_diff(now, self._last_rx) >= period_ms * 3 // 2:
                    await self._drop(MqttError("broker silent for %d ms" % (period_ms * 3 // 2)))
                    return
                if clock.ticks_diff(now, self._last_tx) >= period_ms // 2:
                    await self.ping()
        except asyncio.CancelledError:
            raise
        except OSError as exc:
            await self._drop(exc)

    # -- teardown

    async def _drop(self, exc):
        """One way down: mark disconnected, fail pending publishes, stop tasks, close."""
        was = self.connected
        self.connected = False
        if self.error is None:
            self.error = exc
        for entry in self._pending.values():
            if entry[1] is None:
                entry[1] = exc
            entry[0].set()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        self._tasks = []
        await self._close()
        if was and self._log is not None:
            self._log("mqtt", "connection dropped: %s" % exc)

    async def _close(self):
        w = self._writer
        self._writer = None
        self._reader = None
        if w is not None:
            try:
                w.close()
                await w.wait_closed()
            except Exception:
                pass


def _hex(data):
    return " ".join("%02x" % b for b in data)


def _as_oserror(exc, doing):
    """Any failure as an OSError whose message says what we were doing."""
    name = type(exc).__name__
    if name == "TimeoutError" or name == "CancelledError":  # an OSError on CPython
        return MqttError("%s: timed out" % doing)
    if isinstance(exc, OSError):
        args = exc.args  # the MicroPython stubs type it as an empty tuple: hence the ignore
        if args and isinstance(args[0], int):  # errno, or an mbedTLS code with its name
            detail = (": " + " ".join(str(a) for a in args[1:])) if len(args) > 1 else ""
            return OSError(args[0], "%s failed%s" % (doing, detail))  # pyright: ignore
        return exc
    if name == "IncompleteReadError" or isinstance(exc, EOFError):
        return MqttError("%s: connection closed by the peer" % doing)
    # e.g. MicroPython's TLS verification failure: ValueError("\nThe certificate is not ...\n")
    return MqttError("%s: %s: %s" % (doing, name, " ".join(str(exc).split())))


class MqttTransport:
    """Publishes readings with QoS 1 for firmware.uplink.link.Uplink; a PUBACK means acked.

    Connects on demand; all items of one send go out together (up to the client's window), so
    their PUBACKs may come back in any order. A broker never refuses one reading, so a failure
    is the link's: unacked items are UNSENT, and if none was acked the error is raised.
    """

    def __init__(self, client, topic):
        check_topic(topic)
        self.client = client
        self.topic = topic

    async def send(self, items):
        if not self.client.connected:
            await self.client.connect()
        results = await asyncio.gather(
            *[self.client.publish(self.topic, payload, 1) for _, payload in items],
            return_exceptions=True,
        )
        out = []
        error = None
        for r in results:
            if isinstance(r, BaseException):
                error = error or r
                out.append((UNSENT, "%s: %s" % (type(r).__name__, r)))
            else:
                out.append((ACKED, None))
        if error is not None and len(out) == sum(1 for o in out if o[0] == UNSENT):
            raise error  # nothing acked: the link failed, not these readings
        return out
