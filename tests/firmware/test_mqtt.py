"""MQTT 3.1.1 client: exact wire bytes against in-memory streams, and hostile broker packets.

Expected bytes are spelled out from the MQTT 3.1.1 standard (section numbers in comments), not
computed by the code under test. `FakeStream`/`FakeNet` are reused by test_http and test_link.
"""

try:
    import asyncio
except ImportError:
    import uasyncio as asyncio

from firmware.uplink.mqtt import (
    MQTTClient,
    MqttError,
    MqttTransport,
    connect_packet,
    encode_length,
)
from tests.support.mptest import raises

RUN_ON_MICROPYTHON = True

CONNACK_OK = b"\x20\x02\x00\x00"


class FakeStream:
    """Both ends of one connection: the client reads `feed()` bytes and its writes go to `sent`.

    `refuse` mimics the Unix port's refused connect: the error shows at the first I/O
    (toolchain.md §1). `on_write(stream)` lets a test play the server.
    """

    def __init__(self, incoming=b"", refuse=False, on_write=None):
        self.inbox = bytearray(incoming)
        self.sent = bytearray()
        self.eof = False
        self.closed = False
        self.refuse = refuse
        self.on_write = on_write
        self._event = asyncio.Event()

    def feed(self, data):
        self.inbox += data
        self._event.set()

    def hang_up(self):
        self.eof = True
        self._event.set()

    async def _wait(self, n):
        while len(self.inbox) < n and not self.eof:
            self._event.clear()
            await self._event.wait()

    async def read(self, n):
        if self.refuse:
            raise OSError(111)
        await self._wait(1)
        data = bytes(self.inbox[:n])
        self.inbox[:n] = b""
        return data

    async def readexactly(self, n):
        if self.refuse:
            raise OSError(111)
        await self._wait(n)
        if len(self.inbox) < n:
            raise EOFError("peer closed")
        data = bytes(self.inbox[:n])
        self.inbox[:n] = b""
        return data

    def write(self, data):
        if self.closed:
            raise OSError(9)
        self.sent += data
        if self.on_write is not None:
            self.on_write(self)

    async def drain(self):
        if self.refuse:
            raise OSError(111)

    def close(self):
        self.closed = True

    async def wait_closed(self):
        pass


class FakeNet:
    """An `open_connection` handing out scripted FakeStreams (a fresh one when none is left)."""

    def __init__(self, *streams):
        self.queue = list(streams)
        self.opened = []

    async def open_connection(self, host, port, ssl=None):
        stream = self.queue.pop(0) if self.queue else FakeStream()
        self.opened.append((host, port, stream))
        return stream, stream


class StepClock:
    """A tick clock moved by the test (`advance`); sleepers wake when their time has come."""

    def __init__(self):
        self.now = 0

    def ticks_ms(self):
        return self.now

    def ticks_diff(self, a, b):
        return a - b

    def ticks_add(self, a, b):
        return a + b

    async def sleep_ms_async(self, ms):
        until = self.now + ms
        while self.now < until:
            await asyncio.sleep(0)  # only ever spins inside a test's own short run

    async def advance(self, ms):
        self.now += ms
        for _ in range(5):
            await asyncio.sleep(0)


async def gather_results(tasks):
    out = []  # MicroPython has no `await` inside comprehensions
    for t in tasks:
        out.append(await t)
    return out


def run(coro):
    return asyncio.run(coro)


async def settle(n=5):
    for _ in range(n):
        await asyncio.sleep(0)


async def connected(stream=None, **kw):
    stream = stream or FakeStream(CONNACK_OK)
    net = FakeNet(stream)
    kw.setdefault("keepalive_s", 0)
    client = MQTTClient("n1", "broker", 1883, open_connection=net.open_connection, **kw)
    await client.connect()
    return client, stream


# -- pure encoders


def test_remaining_length_varint_matches_spec_table():
    # §2.2.3 table 2.4: the boundaries of 1..4 byte encodings
    cases = (
        (0, b"\x00"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (16383, b"\xff\x7f"),
        (16384, b"\x80\x80\x01"),
        (2097151, b"\xff\xff\x7f"),
        (2097152, b"\x80\x80\x80\x01"),
        (268435455, b"\xff\xff\xff\x7f"),
    )
    buf = bytearray(5)
    for n, expected in cases:
        end = encode_length(buf, 0, n)
        assert bytes(buf[:end]) == expected, (n, bytes(buf[:end]))
    assert "268435456" in str(raises(MqttError, encode_length, buf, 0, 268435456))


def test_connect_minimal_is_byte_exact():
    # §3.1: fixed header 0x10, len 13; "MQTT" level 4; flags = clean session; keepalive 0; id "c"
    expected = b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x00\x00\x01c"
    assert connect_packet("c", 0) == expected


def test_connect_with_will_and_credentials_is_byte_exact():
    # flags: user 0x80 | password 0x40 | will retain 0x20 | will QoS1 0x08 | will 0x04 | clean
    expected = (
        b"\x10\x33\x00\x04MQTT\x04\xee\x00\x3c"
        b"\x00\x02n1"
        b"\x00\x0bp/n1/status"
        b'\x00\x10{"online":false}'
        b"\x00\x01u\x00\x01p"
    )
    got = connect_packet("n1", 60, "u", "p", ("p/n1/status", b'{"online":false}', 1, True))
    assert got == expected, got


def test_connect_rejects_what_the_spec_forbids():
    assert "user name" in str(raises(MqttError, connect_packet, "c", 0, None, "pw"))
    assert "wildcard" in str(
        raises(MqttError, connect_packet, "c", 0, None, None, ("a/#", b"", 1, 1))
    )
    assert "65535" in str(raises(MqttError, connect_packet, "c", 70000))


def test_connect_refuses_u0000_in_strings_but_not_in_the_binary_password():
    # §1.5.3: a UTF-8 string must not hold U+0000 (the broker would close the connection);
    # §3.1.3.5: the password is binary data, any byte goes
    err = raises(MqttError, connect_packet, "a\x00b", 0)
    assert str(err) == "client id contains U+0000, which MQTT strings must not (§1.5.3)", err
    err = raises(MqttError, connect_packet, "c", 0, "u\x00")
    assert str(err).startswith("user name contains U+0000"), err
    err = raises(MqttError, connect_packet, "c", 0, None, None, ("w\x00", b"", 0, False))
    assert "topic" in str(err) and "NUL" in str(err), err
    assert connect_packet("c", 0, "u", "p\x00w").endswith(b"\x00\x01u\x00\x03p\x00w")


def test_subscribe_refuses_u0000_in_the_filter_and_stays_connected():
    async def main():
        client, stream = await connected()
        start = len(stream.sent)
        err = None
        try:
            await client.subscribe("c/\x00", 1)
        except MqttError as exc:
            err = exc
        assert err is not None and "topic filter contains U+0000" in str(err), err
        assert client.connected and bytes(stream.sent[start:]) == b""

    run(main())


# -- client against a fake broker


def test_connect_sends_connect_and_accepts_connack():
    async def main():
        client, stream = await connected()
        assert client.connected
        assert bytes(stream.sent) == b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x00\x00\x02n1"
        await client.disconnect()
        assert bytes(stream.sent).endswith(b"\xe0\x00")  # §3.14 DISCONNECT
        assert stream.closed and not client.connected

    run(main())


def test_refused_connack_names_the_reason():
    async def main():
        net = FakeNet(FakeStream(b"\x20\x02\x00\x05"))
        client = MQTTClient("n1", "h", open_connection=net.open_connection, keepalive_s=0)
        err = None
        try:
            await client.connect()
        except MqttError as exc:
            err = exc
        assert err is not None and "not authorised (5)" in str(err), err
        assert not client.connected and net.opened[0][2].closed

    run(main())


def test_refused_port_surfaces_as_oserror_at_first_io():
    async def main():
        net = FakeNet(FakeStream(refuse=True))
        client = MQTTClient("n1", "h", open_connection=net.open_connection, keepalive_s=0)
        try:
            await client.connect()
        except OSError as exc:
            assert exc.args[0] == 111, exc.args
            return
        raise AssertionError("connect to a refused port did not raise")

    run(main())


def test_connect_that_never_completes_times_out():
    async def never(host, port, ssl=None):
        await asyncio.Event().wait()  # a SYN into a black hole

    async def main():
        client = MQTTClient("n1", "10.255.255.1", open_connection=never, timeout_ms=30)
        try:
            await client.connect()
        except OSError as exc:
            assert str(exc) == "connect to 10.255.255.1:1883: timed out", str(exc)
            return
        raise AssertionError("connect returned")

    run(main())


def test_publish_qos1_is_byte_exact_and_waits_for_puback():
    async def main():
        client, stream = await connected()
        start = len(stream.sent)
        task = asyncio.create_task(client.publish("a/b", b"hi"))
        await settle()
        # §3.3: 0x32 = PUBLISH QoS1; len 9 = 2+3 topic, 2 packet id, 2 payload
        assert bytes(stream.sent[start:]) == b"\x32\x09\x00\x03a/b\x00\x01hi"
        assert not task.done()  # no PUBACK yet
        stream.feed(b"\x40\x02\x00\x01")
        assert await task == 1

    run(main())


def test_publish_qos0_and_retain_flags():
    async def main():
        client, stream = await connected()
        start = len(stream.sent)
        assert await client.publish("a/b", b"hi", qos=0) == 0
        assert await client.publish("a/b", b"", qos=0, retain=True) == 0
        assert bytes(stream.sent[start:]) == b"\x30\x07\x00\x03a/bhi" + b"\x31\x05\x00\x03a/b"

    run(main())


def test_acks_out_of_order_resolve_the_right_publishes():
    async def main():
        client, stream = await connected()
        tasks = [asyncio.create_task(client.publish("t", b"%d" % i)) for i in range(3)]
        await settle()
        stream.feed(b"\x40\x02\x00\x03")
        await settle()
        assert tasks[2].done() and not tasks[0].done() and not tasks[1].done()
        stream.feed(b"\x40\x02\x00\x01\x40\x02\x00\x02")
        assert await gather_results(tasks) == [1, 2, 3]
        assert client._pending == {}

    run(main())


def test_window_limits_publishes_in_flight():
    async def main():
        client, stream = await connected(max_inflight=2)
        tasks = [asyncio.create_task(client.publish("t", b"x")) for _ in range(3)]
        await settle()
        assert bytes(stream.sent).count(b"\x32\x06\x00\x01t") == 2  # third waits for a slot
        stream.feed(b"\x40\x02\x00\x01")
        for _ in range(20):
            await asyncio.sleep(0.01)
            if bytes(stream.sent).count(b"\x32\x06\x00\x01t") == 3:
                break
        assert bytes(stream.sent).count(b"\x32\x06\x00\x01t") == 3
        stream.feed(b"\x40\x02\x00\x02\x40\x02\x00\x03")
        assert await gather_results(tasks) == [1, 2, 3]

    run(main())


def test_packet_ids_wrap_to_one_never_zero():
    async def main():
        client, stream = await connected()
        client._next_pid = 65534
        t1 = asyncio.create_task(client.publish("t", b""))
        t2 = asyncio.create_task(client.publish("t", b""))
        await settle()
        stream.feed(b"\x40\x02\xff\xff\x40\x02\x00\x01")  # §2.3.1: 0 is not a packet id
        assert (await t1, await t2) == (65535, 1)

    run(main())


def test_puback_timeout_drops_the_connection():
    async def main():
        client, stream = await connected(timeout_ms=30)
        try:
            await client.publish("t", b"x")
        except OSError as exc:
            assert "PUBACK" in str(exc) and "timed out" in str(exc), exc
            assert not client.connected and stream.closed
            return
        raise AssertionError("publish without PUBACK returned")

    run(main())


def _hostile(packet, expected):
    """Feed one bad packet while a publish waits: the publish fails naming it, client drops."""

    async def main():
        client, stream = await connected()
        task = asyncio.create_task(client.publish("t", b"x"))
        await settle()
        stream.feed(packet)
        try:
            await task
        except OSError as exc:
            assert expected in str(exc), (expected, str(exc))
            assert not client.connected and stream.closed
            assert expected in str(client.error)
            return
        raise AssertionError("publish survived a hostile packet %r" % packet)

    run(main())


def test_malformed_remaining_length_drops_connection():
    _hostile(b"\x40\xff\xff\xff\xff\x01", "malformed remaining length")


def test_oversize_packet_drops_connection():
    _hostile(b"\x30\xa0\x8d\x06", "exceeds max_packet")  # 100000 bytes announced


def test_unknown_packet_type_drops_connection():
    _hostile(b"\xf0\x00", "unexpected packet type 0xf0")
    _hostile(b"\x10\x00", "unexpected packet type 0x10")  # CONNECT from a broker


def test_malformed_puback_drops_connection():
    _hostile(b"\x40\x03\x00\x01\x00", "malformed ack")
    _hostile(b"\x42\x02\x00\x01", "malformed ack")  # §2.2.2: PUBACK flags are 0


def test_broker_hangup_fails_pending_publish():
    async def main():
        client, stream = await connected()
        task = asyncio.create_task(client.publish("t", b"x"))
        await settle()
        stream.hang_up()
        err = None
        try:
            await task
        except OSError as exc:
            err = exc
        assert err is not None and "closed by the peer" in str(err), err
        # and the next publish says why, without touching the dead stream
        try:
            await client.publish("t", b"")
        except OSError as exc:
            assert "closed by the peer" in str(exc), exc
            return
        raise AssertionError("publish on a dropped connection did not raise")

    run(main())


def test_unknown_puback_id_is_counted_not_fatal():
    async def main():
        client, stream = await connected()
        stream.feed(b"\x40\x02\x00\x09")
        await settle()
        assert client.connected and client.unknown_acks == 1

    run(main())


def test_incoming_qos1_publish_is_acked_and_delivered():
    got = []

    async def main():
        _, stream = await connected(on_message=lambda t, p, r: got.append((t, p, r)))
        start = len(stream.sent)
        stream.feed(b"\x33\x0a\x00\x03c/f\x00\x07cfg")  # QoS1 retained, id 7
        await settle()
        assert bytes(stream.sent[start:]) == b"\x40\x02\x00\x07"
        assert got == [(b"c/f", b"cfg", True)]

    run(main())


def test_subscribe_is_byte_exact_and_refusal_raises():
    async def main():
        client, stream = await connected()
        start = len(stream.sent)
        task = asyncio.create_task(client.subscribe("c/#", 1))
        await settle()
        # §3.8: 0x82, len 8: id 1, filter "c/#", requested QoS 1
        assert bytes(stream.sent[start:]) == b"\x82\x08\x00\x01\x00\x03c/#\x01"
        stream.feed(b"\x90\x03\x00\x01\x01")
        await task
        task = asyncio.create_task(client.subscribe("d", 1))
        await settle()
        stream.feed(b"\x90\x03\x00\x02\x80")
        try:
            await task
        except MqttError as exc:
            assert "refused the subscription" in str(exc)
            return
        raise AssertionError("SUBACK 0x80 not reported")

    run(main())


def test_keepalive_pings_then_declares_silent_broker_dead():
    async def main():
        clock = StepClock()
        client, stream = await connected(keepalive_s=10, clock=clock)
        start = len(stream.sent)
        await clock.advance(2500)  # the loop checks every keepalive/4
        assert bytes(stream.sent[start:]) == b""
        await clock.advance(2500)  # keepalive/2 without sending: PINGREQ (§3.12)
        assert bytes(stream.sent[start:]) == b"\xc0\x00"
        stream.feed(b"\xd0\x00")  # PINGRESP counts as traffic: last byte at 5000 ms
        await settle()
        for _ in range(5):  # up to 17500 ms: 12.5 s of silence is still tolerated
            await clock.advance(2500)
        assert client.connected
        await clock.advance(2500)  # 15 s = 1.5 keepalives without a byte
        assert not client.connected
        assert "silent" in str(client.error), client.error

    run(main())


def test_transport_maps_acks_and_failures():
    async def main():
        stream = FakeStream(CONNACK_OK)
        net = FakeNet(stream)
        client = MQTTClient("n1", "h", open_connection=net.open_connection, keepalive_s=0)
        transport = MqttTransport(client, "p/n1/data")
        task = asyncio.create_task(transport.send([(5, b"a"), (6, b"b")]))
        await settle(10)
        stream.feed(b"\x40\x02\x00\x02\x40\x02\x00\x01")
        assert await task == [("acked", None), ("acked", None)]
        assert bytes(stream.sent).endswith(b"\x32\x0e\x00\x09p/n1/data\x00\x02b")

    run(main())


def test_publish_rejects_bad_topics_and_sizes():
    async def main():
        client, _ = await connected(max_packet=64)
        for topic in ("", "a/+", "a/#"):
            err = None
            try:
                await client.publish(topic, b"x")
            except MqttError as exc:
                err = exc
            assert err is not None, topic
        try:
            await client.publish("t", b"x" * 100)
        except MqttError as exc:
            assert "exceeds max_packet 64" in str(exc)
            return
        raise AssertionError("oversize publish accepted")

    run(main())


def test_transport_link_failure_is_not_the_readings_fault():
    async def main():
        stream = FakeStream(CONNACK_OK)
        net = FakeNet(stream)
        client = MQTTClient("n1", "h", open_connection=net.open_connection, keepalive_s=0)
        transport = MqttTransport(client, "t")
        task = asyncio.create_task(transport.send([(1, b"a"), (2, b"b")]))
        await settle(10)
        stream.feed(b"\x40\x02\x00\x01")  # first acked, then the broker vanishes
        await settle()
        stream.hang_up()
        out = await task
        assert out[0] == ("acked", None) and out[1][0] == "unsent", out
        # nothing acked at all: the link's error is raised, naming the refused connect
        net.queue.append(FakeStream(refuse=True))
        try:
            await transport.send([(3, b"c")])
        except OSError as exc:
            assert exc.args[0] == 111 and "connect to h:1883" in str(exc), exc
            return
        raise AssertionError("send over a refused connection did not raise")

    run(main())


# Every way a broker's bytes can fail must be one the parser names; a stray IndexError or
# TypeError turned into a message would mean a crash path we did not think of.
KNOWN_FAILURES = (
    "malformed",
    "unexpected packet type",
    "exceeds max_packet",
    "closed by the peer",
    "runs past the packet",
)


def test_random_broker_bytes_only_give_named_protocol_errors():
    seed = 12345
    firsts = (0x20, 0x30, 0x32, 0x34, 0x40, 0x90, 0xB0, 0xD0, 0x00, 0xF0)

    async def one(data):
        client, stream = await connected(max_packet=64)
        stream.feed(data)
        await settle()
        stream.hang_up()
        await settle()
        assert not client.connected and isinstance(client.error, OSError), data
        text = str(client.error)
        assert any(k in text for k in KNOWN_FAILURES), (data, text)

    async def main(seed):
        for _ in range(150):
            seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
            n = seed % 9
            data = bytearray([firsts[seed % len(firsts)]])
            if seed & 0x100:  # half are well framed: the length byte tells the truth
                data.append(n)
            for _ in range(n):
                seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
                data.append(seed >> 16 & 0xFF)
            await one(bytes(data))

    run(main(seed))
