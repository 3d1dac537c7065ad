"""MQTT client properties (hypothesis, CPython): hostile broker bytes, remaining length, packet ids,
CONNECT.

The decoders here are written from the MQTT 3.1.1 OASIS standard (section numbers cited), not from
firmware.uplink.mqtt, so the client's bytes are checked against the spec rather than against the
code that wrote them. The streams are test_mqtt's in-memory fakes.
"""

import asyncio
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.uplink.mqtt import MQTTClient, MqttError, connect_packet, encode_length
from tests.firmware.test_mqtt import KNOWN_FAILURES, FakeStream, connected, settle

_MAX_REMAINING = 268435455  # §2.2.3: 0xFF 0xFF 0xFF 0x7F


# -- an independent reading of the spec


def spec_length_bytes(n):
    """§2.2.3 table 2.4: how many bytes the remaining length n takes."""
    for size, top in ((1, 127), (2, 16383), (3, 2097151), (4, _MAX_REMAINING)):
        if n <= top:
            return size
    raise ValueError("%d needs more than four bytes" % n)


def spec_encode_length(n):
    """§2.2.3: seven bits per byte, least significant group first, high bit = more follow."""
    out = bytearray()
    while True:
        digit, n = n % 128, n // 128
        out.append(digit | (128 if n else 0))
        if not n:
            return bytes(out)


def spec_decode_length(data, pos):
    """§2.2.3 decoding algorithm: -> (value, position after it); ValueError past four bytes."""
    multiplier = 1
    value = 0
    for i in range(4):
        byte = data[pos + i]
        value += (byte & 127) * multiplier
        multiplier *= 128
        if not byte & 128:
            return value, pos + i + 1
    raise ValueError("remaining length longer than four bytes")


class SpecReader:
    """Reads §1.5 data types off a packet; ValueError when a field runs past the end."""

    def __init__(self, data, pos):
        self.data = data
        self.pos = pos

    def take(self, n):
        if self.pos + n > len(self.data):
            raise ValueError("field of %d bytes runs past the packet" % n)
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self):
        return self.take(1)[0]

    def u16(self):
        """§1.5.2: big-endian 16-bit integer."""
        hi, lo = self.take(2)
        return hi * 256 + lo

    def binary(self):
        """§1.5.3 length-prefixed bytes (will message and password are binary, §3.1.3.3/5)."""
        return bytes(self.take(self.u16()))

    def utf8(self):
        """§1.5.3: well-formed UTF-8, no surrogates, no U+0000."""
        text = self.binary().decode("utf-8")  # strict: rejects surrogates and overlongs
        if "\x00" in text:
            raise ValueError("U+0000 in a UTF-8 string field (§1.5.3)")
        return text


def spec_parse_connect(packet):
    """Decode a CONNECT (§3.1) into a dict; ValueError naming the first rule it breaks."""
    if packet[0] != 0x10:
        raise ValueError("fixed header 0x%02x, CONNECT is 0x10 (§3.1.1)" % packet[0])
    length, pos = spec_decode_length(packet, 1)
    if len(packet) - pos != length:
        raise ValueError("remaining length %d, %d bytes follow" % (length, len(packet) - pos))
    r = SpecReader(packet, pos)
    if r.utf8() != "MQTT" or r.u8() != 4:  # §3.1.2.1, §3.1.2.2
        raise ValueError("protocol name or level is not MQTT 4")
    flags = r.u8()
    if flags & 0x01:
        raise ValueError("reserved flag set (§3.1.2.3)")
    will = bool(flags & 0x04)
    will_qos = (flags >> 3) & 3
    will_retain = bool(flags & 0x20)
    if will_qos == 3:
        raise ValueError("will QoS 3 (§3.1.2.6)")
    if not will and (will_qos or will_retain):
        raise ValueError("will QoS/retain without the will flag (§3.1.2.6, §3.1.2.7)")
    has_user = bool(flags & 0x80)
    has_password = bool(flags & 0x40)
    if has_password and not has_user:
        raise ValueError("password flag without user name flag (§3.1.2.9)")
    out = {"clean": bool(flags & 0x02), "keepalive": r.u16(), "client_id": r.utf8()}
    out["will"] = None
    if will:
        topic = r.utf8()
        out["will"] = (topic, r.binary(), will_qos, will_retain)
    out["user"] = r.utf8() if has_user else None
    out["password"] = r.binary().decode() if has_password else None
    if r.pos != len(packet):
        raise ValueError("%d bytes after the last field" % (len(packet) - r.pos))
    return out


def spec_split_publishes(data):
    """The PUBLISH packets in a client's output: [(qos, packet id or None, topic, payload)]."""
    out = []
    pos = 0
    while pos < len(data):
        first = data[pos]
        length, body_at = spec_decode_length(data, pos + 1)
        end = body_at + length
        if first >> 4 == 3:  # §3.3.1: PUBLISH is type 3
            qos = (first >> 1) & 3
            r = SpecReader(data[:end], body_at)
            topic = r.utf8()
            pid = r.u16() if qos else None
            out.append((qos, pid, topic, bytes(r.take(end - r.pos))))
        pos = end
    return out


def cut(data, points):
    """`data` split at the given offsets (taken modulo its length, so any ints will do)."""
    if not data:
        return [data]
    marks = sorted({p % len(data) for p in points} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(marks)]


def run_bounded(coro, seconds=3.0):
    """Run a scenario; a hang fails it (asyncio.TimeoutError) instead of stalling the suite."""

    async def main():
        leaked = []
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: leaked.append(ctx))
        result = await asyncio.wait_for(coro, seconds)
        assert not leaked, "a task died with an unhandled exception: %r" % leaked
        return result

    return asyncio.run(main())


# -- strategies

_TYPES = (0x20, 0x30, 0x31, 0x32, 0x33, 0x34, 0x40, 0x42, 0x90, 0xB0, 0xD0, 0xC0, 0x00, 0xF0)

# one packet: a type byte, a remaining length that usually tells the truth, and a body
_packet = st.builds(
    lambda first, body, lie, lied: (
        bytes((first,)) + spec_encode_length(lied if lie else len(body)) + body
    ),
    st.one_of(st.sampled_from(_TYPES), st.integers(0, 255)),
    st.binary(max_size=12),
    st.booleans(),
    st.integers(0, 100),
)
_broker_bytes = st.one_of(
    st.binary(max_size=80),
    st.lists(_packet, max_size=6).map(b"".join),
    st.tuples(st.lists(_packet, max_size=4).map(b"".join), st.binary(max_size=8)).map(
        lambda t: t[0] + t[1]
    ),
)
_cuts = st.lists(st.integers(0, 10000), max_size=8)

# Valid MQTT strings, for the round-trip properties: any Unicode scalar except U+0000 (§1.5.3),
# no lone surrogates (no UTF-8 form). Text that breaks these rules is _any_text, further down.
_mqtt_text = st.text(
    alphabet=st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=30
)
_topic = st.text(
    alphabet=st.characters(exclude_characters="\x00+#", exclude_categories=("Cs",)),
    min_size=1,
    max_size=30,
)


# -- hostile and valid broker traffic


@settings(max_examples=200, deadline=None)
@given(data=_broker_bytes, cuts=_cuts, publishing=st.booleans())
def test_any_broker_bytes_end_in_a_named_oserror_never_a_crash_or_hang(data, cuts, publishing):
    got = []

    async def scenario():
        client, stream = await connected(
            max_packet=64, on_message=lambda t, p, r: got.append((t, p, r))
        )
        task = asyncio.create_task(client.publish("t", b"x")) if publishing else None
        for piece in cut(data, cuts):
            stream.feed(piece)
            await settle()
        stream.hang_up()
        await settle()
        assert not client.connected and stream.closed
        assert isinstance(client.error, OSError), client.error
        text = str(client.error)
        assert any(k in text for k in KNOWN_FAILURES), (data, text)
        if task is not None:
            try:
                assert await task == 1  # the only id in flight: its PUBACK was in the bytes
            except OSError as exc:
                assert any(k in str(exc) for k in KNOWN_FAILURES), str(exc)
        for topic, payload, retain in got:
            assert isinstance(topic, bytes) and isinstance(payload, bytes)
            assert isinstance(retain, bool)

    run_bounded(scenario())


_incoming = st.tuples(
    _topic, st.binary(max_size=20), st.integers(0, 1), st.booleans(), st.integers(1, 65535)
)
_traffic = st.lists(
    st.one_of(
        _incoming,
        st.just("pingresp"),
        st.integers(1, 65535),  # a PUBACK for an id never sent: counted, not fatal
    ),
    max_size=8,
)


def _broker_packet(item):
    """Spec bytes for one broker -> client packet of `_traffic`."""
    if item == "pingresp":
        return b"\xd0\x00"  # §3.13
    if isinstance(item, int):
        return b"\x40\x02" + bytes((item >> 8, item & 0xFF))  # §3.4
    topic, payload, qos, retain, pid = item
    t = topic.encode()
    body = bytes((len(t) >> 8, len(t) & 0xFF)) + t
    if qos:
        body += bytes((pid >> 8, pid & 0xFF))
    body += payload
    return bytes((0x30 | qos << 1 | retain,)) + spec_encode_length(len(body)) + body


@settings(max_examples=100, deadline=None)
@given(traffic=_traffic, cuts=_cuts)
def test_valid_broker_traffic_split_anywhere_is_delivered_and_acked(traffic, cuts):
    got = []

    async def scenario():
        client, stream = await connected(on_message=lambda t, p, r: got.append((t, p, r)))
        start = len(stream.sent)
        for piece in cut(b"".join(_broker_packet(i) for i in traffic), cuts):
            stream.feed(piece)
            await settle()
        assert client.connected, client.error
        assert client.unknown_acks == sum(1 for i in traffic if isinstance(i, int))
        messages = [i for i in traffic if isinstance(i, tuple)]
        assert got == [(t.encode(), p, bool(r)) for t, p, q, r, _ in messages]
        # §3.3.4: each QoS 1 PUBLISH is answered by a PUBACK with its packet id, in order
        acks = b"".join(b"\x40\x02" + bytes((m[4] >> 8, m[4] & 0xFF)) for m in messages if m[2])
        assert bytes(stream.sent[start:]) == acks
        await client.disconnect()

    run_bounded(scenario())


# -- remaining length


@settings(max_examples=200, deadline=None)
@given(
    n=st.one_of(
        st.integers(0, _MAX_REMAINING),
        st.sampled_from((0, 127, 128, 16383, 16384, 2097151, 2097152, _MAX_REMAINING)),
    )
)
def test_remaining_length_round_trips_through_spec_and_client(n):
    buf = bytearray(6)
    end = encode_length(buf, 1, n)
    encoded = bytes(buf[1:end])
    assert encoded == spec_encode_length(n)
    assert len(encoded) == spec_length_bytes(n)
    assert spec_decode_length(encoded, 0) == (n, len(encoded))

    # the client's own reader gives back n: as the body length it reads, or in its refusal
    async def read_back():
        limit = min(n, 200)
        stream = FakeStream(b"\x30" + encoded + b"\xaa" * limit)
        client = MQTTClient("c", "h", max_packet=limit)
        client._reader = stream  # _read_packet is the length decoder under test
        try:
            first, body = await client._read_packet()
        except MqttError as exc:
            assert n > limit and ("of %d bytes exceeds" % n) in str(exc), (n, str(exc))
            return
        assert first == 0x30 and len(body) == n

    run_bounded(read_back())


@settings(max_examples=100, deadline=None)
@given(
    head=st.lists(st.integers(0x80, 0xFF), min_size=4, max_size=4),
    fifth=st.integers(0, 255),
)
def test_five_byte_remaining_lengths_are_refused(head, fifth):
    async def read_back():
        client = MQTTClient("c", "h")
        client._reader = FakeStream(b"\x30" + bytes(head) + bytes((fifth,)) + b"\x00" * 8)
        try:
            await client._read_packet()
        except MqttError as exc:
            assert "more than 4 bytes" in str(exc), str(exc)
            return
        raise AssertionError("a five-byte remaining length was accepted")

    run_bounded(read_back())
    try:
        spec_decode_length(bytes(head) + bytes((fifth,)), 0)
    except ValueError:
        pass
    else:
        raise AssertionError("the spec decoder accepted five bytes")


@given(n=st.one_of(st.integers(max_value=-1), st.integers(min_value=_MAX_REMAINING + 1)))
def test_lengths_outside_four_bytes_are_not_encoded(n):
    buf = bytearray(8)
    try:
        encode_length(buf, 0, n)
    except MqttError as exc:
        assert str(n) in str(exc)
    else:
        raise AssertionError("encoded %d" % n)
    assert buf == bytearray(8)  # nothing half-written


# -- packet ids


@settings(max_examples=120, deadline=None)
@given(data=st.data(), count=st.integers(1, 8), start=st.integers(0, 65535))
def test_every_puback_completes_exactly_its_own_publish(data, count, start):
    order = data.draw(st.permutations(range(count)), label="ack order")
    noise = data.draw(st.lists(st.integers(1, 65535), max_size=count), label="stray ids")

    async def scenario():
        client, stream = await connected(max_inflight=8)
        client._next_pid = start  # anywhere in the id space, so wrapping is covered
        begin = len(stream.sent)
        tasks = [asyncio.create_task(client.publish("t", b"%d" % i)) for i in range(count)]
        await settle()
        sent = spec_split_publishes(bytes(stream.sent[begin:]))
        assert len(sent) == count
        wire = {}  # payload index -> the packet id the client put on the wire
        for qos, pid, topic, payload in sent:
            assert qos == 1 and topic == "t"
            assert 1 <= pid <= 65535  # §2.3.1: never 0
            wire[int(payload)] = pid
        assert len(set(wire.values())) == count  # ids in flight are distinct
        strays = 0
        acked = set()
        for k, i in enumerate(order):
            if k < len(noise) and noise[k] not in set(wire.values()) - acked:
                stream.feed(b"\x40\x02" + bytes((noise[k] >> 8, noise[k] & 0xFF)))
                strays += 1
            pid = wire[i]
            stream.feed(b"\x40\x02" + bytes((pid >> 8, pid & 0xFF)))
            acked.add(pid)
            await settle()
            done = {j for j in range(count) if tasks[j].done()}
            assert done == {j for j in range(count) if wire[j] in acked}, (order, k)
        for i in range(count):
            assert await tasks[i] == wire[i]
        assert client._pending == {} and client.unknown_acks == strays
        assert client.connected

    run_bounded(scenario())


# -- CONNECT


_will = st.one_of(
    st.none(),
    st.tuples(_topic, st.binary(max_size=40), st.integers(0, 1), st.booleans()),
)


@settings(max_examples=200, deadline=None)
@given(
    client_id=_mqtt_text.filter(len),
    keepalive=st.integers(0, 65535),
    user=st.one_of(st.none(), _mqtt_text),
    password=st.one_of(st.none(), _mqtt_text),
    will=_will,
    clean=st.booleans(),
)
def test_connect_parses_back_per_the_spec(client_id, keepalive, user, password, will, clean):
    if user is None:
        password = None  # §3.1.2.9: the client refuses a password alone (tested below)
    packet = connect_packet(client_id, keepalive, user, password, will, clean)
    got = spec_parse_connect(packet)
    assert got["client_id"] == client_id and got["keepalive"] == keepalive
    assert got["clean"] == clean
    assert got["user"] == user and got["password"] == password
    if will is None:
        assert got["will"] is None
    else:
        topic, message, qos, retain = will
        assert got["will"] == (topic, message, qos, retain)


@given(password=_mqtt_text)
def test_connect_refuses_a_password_without_a_user_name(password):
    try:
        connect_packet("c", 0, None, password)
    except MqttError as exc:
        assert "user name" in str(exc)
    else:
        raise AssertionError("password without user name encoded")


@settings(max_examples=30, deadline=None)
@given(size=st.integers(65530, 65540), field=st.sampled_from(("client_id", "user", "will")))
def test_connect_fields_hold_at_most_65535_bytes(size, field):
    """§1.5.3: a two-byte length prefix; one byte more is refused, never truncated."""
    text = "é" * (size // 2) + "a" * (size % 2)  # two-byte characters: bytes, not chars, count
    args = {"client_id": "c", "user": None, "will": None}
    if field == "will":
        args["will"] = ("w", text.encode(), 0, False)
    else:
        args[field] = text
    try:
        packet = connect_packet(args["client_id"], 0, args["user"], None, args["will"])
    except MqttError as exc:
        assert size > 65535 and "65535" in str(exc), (size, str(exc))
        return
    assert size <= 65535
    got = spec_parse_connect(packet)
    if field == "will":
        assert got["will"][1] == text.encode()
    else:
        assert got[field] == text


_FIELD_NAMES = {"client_id": "client id", "user": "user name", "password": "password"}


def spec_breaks(field, text):
    """Why `text` cannot go in a CONNECT `field` per the spec, or None. Every field must have
    a UTF-8 form (no lone surrogates) of at most 65535 bytes (§1.5.3); the password is binary
    data (§3.1.3.5), the others UTF-8 strings without U+0000 (§1.5.3); a will topic is also
    non-empty and wildcard-free (§3.1.3.2, §4.7.1)."""
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        return "no UTF-8 form"
    if len(data) > 65535:
        return "too long"
    if field != "password" and "\x00" in text:
        return "U+0000"
    if field == "topic" and (not text or "+" in text or "#" in text):
        return "not a topic name"
    return None


# any text: NUL and lone surrogates included, and often, not only when hypothesis happens on them
_any_text = st.one_of(
    st.text(max_size=20),
    st.lists(st.integers(0, 0x10FFFF), max_size=8).map(lambda cs: "".join(map(chr, cs))),
    st.lists(st.sampled_from(("a", "\x00", "\ud800", "\udfff", "é", "+")), max_size=6).map("".join),
)


@settings(max_examples=300, deadline=None)
@given(
    client_id=_any_text.filter(len),
    user=st.one_of(st.none(), _any_text),
    password=st.one_of(st.none(), _any_text),
    topic=st.one_of(st.none(), _any_text),
)
def test_connect_raises_mqtt_error_or_writes_spec_valid_strings(client_id, user, password, topic):
    if user is None:
        password = None  # a password alone is refused for another reason (tested above)
    fields = {"client_id": client_id, "user": user, "password": password, "topic": topic}
    broken = {f: spec_breaks(f, t) for f, t in fields.items() if t is not None}
    broken = {f: why for f, why in broken.items() if why}
    will = None if topic is None else (topic, b"m", 1, False)
    try:
        packet = connect_packet(client_id, 0, user, password, will)
    except MqttError as exc:
        assert broken, (fields, str(exc))  # refused only what the spec forbids
        named = [_FIELD_NAMES.get(f, f) for f in broken]
        assert any(str(exc).startswith(n) for n in named), (broken, str(exc))
        return
    assert not broken, (broken, packet)
    got = spec_parse_connect(packet)  # ValueError on U+0000 or bad UTF-8 in a string field
    assert got["client_id"] == client_id and got["user"] == user
    assert got["password"] == password
    assert got["will"] == (None if topic is None else (topic, b"m", 1, False))
