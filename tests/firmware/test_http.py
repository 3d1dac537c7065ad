"""HTTP/1.1 client: exact request bytes, response framing, hostile answers, the transport's mapping.

Responses are scripted bytes served in small pieces, so every parser path sees split reads.
"""

try:
    import asyncio
except ImportError:
    import uasyncio as asyncio

from firmware.uplink.http import (
    HttpClient,
    HttpError,
    HttpStatusError,
    HttpTransport,
    batch_body,
    batch_results,
    describe,
    parse_json,
    parse_retry_after,
)
from tests.support.mptest import raises

RUN_ON_MICROPYTHON = True


class Stream:
    """One scripted connection: serves `response` `piece` bytes per read, then EOF."""

    def __init__(self, response=b"", piece=7):
        self.response = response
        self.piece = piece
        self.sent = b""
        self.closed = False

    async def read(self, n):
        n = min(n, self.piece)
        data = self.response[:n]
        self.response = self.response[n:]
        return data

    def write(self, data):
        self.sent += bytes(data)

    async def drain(self):
        pass

    def close(self):
        self.closed = True

    async def wait_closed(self):
        pass


class Net:
    def __init__(self, *streams):
        self.streams = list(streams)
        self.used = []

    async def open_connection(self, host, port, ssl=None):
        s = self.streams.pop(0)
        self.used.append(s)
        return s, s


def ok(body=b'{"success":true}', status=b"202 Accepted", extra=b""):
    return (
        b"HTTP/1.1 "
        + status
        + b"\r\nContent-Type: application/json\r\n"
        + extra
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )


def client_for(*streams, **kw):
    net = Net(*streams)
    return HttpClient("gw", 8080, open_connection=net.open_connection, **kw), net


def run(coro):
    return asyncio.run(coro)


def failure(coro):
    """The OSError a coroutine raises (AssertionError if none)."""
    try:
        run(coro)
    except OSError as exc:
        return exc
    raise AssertionError("no error raised")


def test_request_bytes_are_exact_with_api_key():
    stream = Stream(ok())
    client, _ = client_for(stream, api_key="k$1/a.b")
    status, headers, body = run(client.post_json("/api/v1/sensor-data", b"{}"))
    assert stream.sent == (
        b"POST /api/v1/sensor-data HTTP/1.1\r\nHost: gw:8080\r\nConnection: keep-alive\r\n"
        b"Content-Type: application/json\r\nContent-Length: 2\r\nx-api-key: k$1/a.b\r\n\r\n{}"
    )
    assert status == 202 and headers["content-type"] == "application/json"
    assert body == b'{"success":true}'


def test_bearer_auth_header_and_bad_keys():
    stream = Stream(ok())
    client, _ = client_for(stream, api_key="tok", auth="bearer")
    run(client.post_json("/v1/data/ingest", b"{}"))
    assert b"\r\nAuthorization: Bearer tok\r\n" in stream.sent
    assert "single line" in str(raises(ValueError, HttpClient, "h", 80, "a\r\nX: y"))
    assert "auth" in str(raises(ValueError, HttpClient, "h", 80, "k", "basic"))


def test_keep_alive_reuses_one_connection():
    stream = Stream(ok(b"1") + ok(b"22"))
    client, net = client_for(stream)

    async def two():
        first = await client.post_json("/a", b"x")
        second = await client.post_json("/a", b"y")
        return first[2], second[2]

    assert run(two()) == (b"1", b"22")
    assert client.connections == 1 and len(net.used) == 1


class OutOfMemoryStream(Stream):
    """A connection whose read runs this node out of memory (a large response, a full heap)."""

    async def read(self, n):
        raise MemoryError("memory allocation failed, allocating 723 bytes")


def test_out_of_memory_is_not_blamed_on_the_peer():
    """MemoryError passes through as itself (the Uplink then sends fewer readings per step), not
    as an HttpError that would count against the link; the half-used connection is closed."""
    stream = OutOfMemoryStream()
    client, _ = client_for(stream)
    err = raises(MemoryError, run, client.post_json("/a", b"x"))
    assert "723 bytes" in str(err)
    assert stream.closed and client.connections == 1
    again = Stream(ok(b"1"))
    client, net = client_for(OutOfMemoryStream(), again)
    raises(MemoryError, run, client.post_json("/a", b"x"))
    assert run(client.post_json("/a", b"y"))[2] == b"1"  # the next request opens a fresh one
    assert len(net.used) == 2


def test_connection_close_opens_a_new_connection():
    first = Stream(ok(b"1", extra=b"Connection: close\r\n"))
    client, _ = client_for(first, Stream(ok(b"2")))

    async def two():
        await client.post_json("/a", b"x")
        return await client.post_json("/a", b"y")

    assert run(two())[2] == b"2"
    assert first.closed and client.connections == 2


def test_stale_keep_alive_connection_is_retried_once():
    # the server answered once, then closed the idle connection (RFC 9112 §9.3.1)
    client, net = client_for(Stream(ok(b"1")), Stream(ok(b"2")))

    async def two():
        await client.post_json("/a", b"x")
        return await client.post_json("/a", b"y")

    assert run(two())[2] == b"2"
    assert net.used[1].sent.endswith(b"\r\n\r\ny")


def test_chunked_response_split_across_reads():
    raw = (
        b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'5;ext=1\r\n{"a":\r\n3\r\n12}\r\n0\r\n\r\n'
    )
    client, _ = client_for(Stream(raw, piece=3))
    status, _, body = run(client.post_json("/a", b"x"))
    assert status == 202 and body == b'{"a":12}'


def test_body_without_length_reads_to_eof():
    client, _ = client_for(Stream(b"HTTP/1.0 200 OK\r\n\r\nhello"))
    assert run(client.request("GET", "/health"))[2] == b"hello"


def test_hostile_responses_raise_clear_errors():
    cases = (
        (b"<html>oops</html>\r\n", "garbage status line"),
        (b"HTTP/1.1 20x OK\r\n\r\n", "garbage status line"),
        (b"HTTP/1.1 202 OK\r\nno colon here\r\n\r\n", "garbage header line"),
        (b"HTTP/1.1 202 OK\r\nContent-Length: 100000\r\n\r\n", "exceeds 8192"),
        (b"HTTP/1.1 202 OK\r\nContent-Length: -1\r\n\r\n", "garbage Content-Length"),
        (b"HTTP/1.1 202 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "garbage chunk size"),
        (b'HTTP/1.1 202 OK\r\nContent-Length: 100\r\n\r\n{"succ', "while reading the body"),
        (b"", "while reading the status line"),
        (b"HTTP/1.1 202 OK\r\nX: " + b"a" * 2000, "longer than 1024 bytes"),
    )
    for raw, expected in cases:
        stream = Stream(raw)
        client, _ = client_for(stream)
        err = failure(client.post_json("/api/v1/sensor-data", b"{}"))
        assert isinstance(err, HttpError), (raw, err)
        assert expected in str(err) and "POST /api/v1/sensor-data" in str(err), (expected, err)
        assert stream.closed  # a connection in an unknown state is never reused


def test_json_and_batch_helpers():
    assert parse_json(b'{"a":1}') == {"a": 1}
    assert "not JSON: b'<html>'" in str(raises(HttpError, parse_json, b"<html>"))
    assert b"".join(batch_body([b"{}", b"[]"])) == b"[{},[]]"
    assert "1 to 100" in str(raises(ValueError, batch_body, []))
    body = b'{"total":3,"results":[{"status":"accepted"},{"status":"duplicate"},'
    body += b'{"status":"failed","error":"bad distance"}]}'
    assert batch_results(body, 3) == [
        ("accepted", None),
        ("duplicate", None),
        ("failed", "bad distance"),
    ]
    assert "2 results for 3" in str(raises(HttpError, batch_results, b'{"results":[{},{}]}', 3))
    assert "no known status" in str(raises(HttpError, batch_results, b'{"results":[7]}', 1))


def test_retry_after_and_describe():
    assert parse_retry_after("5") == 5000
    assert parse_retry_after(b" 0 ") == 0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") is None
    assert parse_retry_after("-3") is None and parse_retry_after(None) is None
    assert parse_retry_after("999999") == 3600000
    text = describe(429, {"retry-after": "5"}, b'{"error":"Too Many Requests"}')
    assert text == "HTTP 429 (Retry-After 5000 ms): Too Many Requests"
    text = describe(400, {}, b'{"error":"Validation failed","details":"a, b"}')
    assert text == "HTTP 400: Validation failed (a, b)"
    assert describe(502, {}, b"\x00garbage") == "HTTP 502: unreadable body b'\\x00garbage'"


def transport_with(*responses, batch=False):
    client, net = client_for(Stream(b"".join(responses)))
    path = "/api/v1/sensor-data/batch" if batch else None
    return HttpTransport(client, batch_path=path), net


def test_transport_maps_statuses_per_reading():
    t, net = transport_with(
        ok(),
        ok(b'{"error":"Duplicate"}', b"409 Conflict"),
        ok(b'{"error":"Validation failed","details":"bad"}', b"400 Bad Request"),
        ok(b'{"error":"Internal"}', b"500 Internal Server Error"),
        ok(),
    )
    out = run(t.send([(1, b"a"), (2, b"b"), (3, b"c"), (4, b"d"), (5, b"e")]))
    assert out == [
        ("acked", None),
        ("duplicate", None),
        ("rejected", "HTTP 400: Validation failed (bad)"),
        ("failed", "HTTP 500: Internal"),
        ("acked", None),
    ]
    assert net.used[0].sent.count(b"POST ") == 5


def test_transport_stops_after_two_server_errors_in_a_row():
    t, net = transport_with(ok(b"", b"500 Oops"), ok(b"", b"502 Bad Gateway"))
    out = run(t.send([(1, b"a"), (2, b"b"), (3, b"c"), (4, b"d")]))
    assert [o for o, _ in out] == ["failed", "failed", "unsent", "unsent"]
    assert net.used[0].sent.count(b"POST ") == 2  # the rest were not hammered


def test_transport_raises_for_peer_wide_statuses():
    for status, retry, busy in ((b"503 Unavailable", 30000, False), (b"429 Slow down", 5000, True)):
        t, _ = transport_with(ok(b"{}", status, b"Retry-After: %d\r\n" % (retry // 1000)))
        err = failure(t.send([(1, b"a"), (2, b"b")]))
        assert isinstance(err, HttpStatusError), err
        assert err.retry_after_ms == retry and err.busy == busy
    t, _ = transport_with(ok(b'{"error":"Unauthorized"}', b"401 Unauthorized"))
    err = failure(t.send([(1, b"a")]))
    assert "HTTP 401: Unauthorized" in str(err)


def test_batch_transport_maps_results_in_request_order():
    body = b'{"total":2,"results":[{"status":"duplicate"},{"status":"failed","error":"x"}]}'
    t, net = transport_with(ok(body), batch=True)
    out = run(t.send([(1, b"{}"), (2, b"[]")]))
    assert out == [("duplicate", None), ("rejected", "batch item failed: x")]
    assert net.used[0].sent.endswith(b"\r\n\r\n[{},[]]")
    t, _ = transport_with(ok(b"<html>"), batch=True)
    assert "not JSON" in str(failure(t.send([(1, b"{}"), (2, b"{}")])))


KNOWN_HTTP_FAILURES = (
    "garbage status line",
    "garbage header line",
    "garbage Content-Length",
    "garbage chunk size",
    "not followed by CRLF",
    "closed by the server",
    "longer than",
    "exceeds",
)


def test_random_responses_parse_or_give_named_errors():
    pieces = (
        b"HTTP/1.1 202 OK\r\n",
        b"HTTP/1.1 ",
        b"Content-Length: 3\r\n",
        b"Content-Length: x\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"\r\n",
        b"3\r\nabc\r\n",
        b"0\r\n\r\n",
        b"zz\r\n",
        b"abc",
        b":",
        b"\n",
        b"\x00\xff",
    )
    seed = 99
    parsed = 0
    for _ in range(200):
        seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
        raw = pieces[0] if seed & 0x300 else b""  # most start with a real status line
        for _ in range(seed % 7):
            seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
            raw += pieces[(seed >> 8) % len(pieces)]
        client, _ = client_for(Stream(raw, piece=1 + seed % 5), max_body=16, max_header=64)
        try:
            status, _, _ = run(client.post_json("/a", b"{}"))
            assert 100 <= status <= 999
            parsed += 1
        except HttpError as exc:
            assert any(k in str(exc) for k in KNOWN_HTTP_FAILURES), (raw, str(exc))
    assert parsed > 0  # the generator also builds valid answers


def test_batch_is_cut_to_max_batch_bytes_and_the_rest_waits():
    body = b'{"total":2,"results":[{"status":"accepted"},{"status":"accepted"}]}'
    client, net = client_for(Stream(ok(body)))
    t = HttpTransport(client, batch_path="/b", max_batch_bytes=25)
    out = run(t.send([(1, b"x" * 10), (2, b"y" * 10), (3, b"z" * 10)]))
    assert out == [("acked", None), ("acked", None), ("unsent", "next batch")]
    assert net.used[0].sent.endswith(b"\r\n\r\n[" + b"x" * 10 + b"," + b"y" * 10 + b"]")


def test_chunk_size_is_hex_digits_only():
    # RFC 9112 §7.1: chunk-size = 1*HEXDIG; int(x, 16) alone would take 0x3, 1_0, +3 and -2
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    for size in (b"0x3", b"1_0", b"+3", b"-2", b" 3", b"", b";x=1", b"3\x0b"):
        stream = Stream(head + size + b"\r\nabc\r\n0\r\n\r\n")
        client, _ = client_for(stream)
        err = failure(client.post_json("/a", b"{}"))
        assert isinstance(err, HttpError) and "garbage chunk size" in str(err), (size, err)
        assert stream.closed
    # upper and lower case, leading zeros, whitespace before an extension (BWS, §7.1.1)
    raw = head + b"0A ;x=1\r\n0123456789\r\n00b\t;y\r\nabcdefghijk\r\n0\r\n\r\n"
    client, _ = client_for(Stream(raw + ok(b"next")))
    assert run(client.post_json("/a", b"{}"))[2] == b"0123456789abcdefghijk"
    assert run(client.post_json("/a", b"{}"))[2] == b"next"  # framing ended at the last CRLF
