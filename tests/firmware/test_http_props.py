"""HTTP client properties (hypothesis, CPython): any response bytes, chunked framing, header case.

Responses are served in pieces cut at hypothesis-chosen offsets, so every parser state meets a
read boundary. Framing is checked by a second response on the same kept-alive connection: it
parses only if the first was consumed to the exact byte. RFC 9112 is the reference.
"""

import asyncio
import itertools
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.uplink.http import HttpClient, HttpError
from tests.firmware.test_http import KNOWN_HTTP_FAILURES, Net, Stream

NEXT = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext"  # the sentinel second response


class CutStream(Stream):
    """One connection serving `response` in the pieces `cuts` make, then EOF."""

    def __init__(self, response, cuts=()):
        marks = sorted({c % (len(response) + 1) for c in cuts} | {0, len(response)})
        self.pieces = [response[a:b] for a, b in itertools.pairwise(marks) if b > a]
        self.sent = b""
        self.closed = False

    async def read(self, n):
        if not self.pieces:
            return b""
        piece = self.pieces[0]
        self.pieces[0] = piece[n:]
        if not self.pieces[0]:
            self.pieces.pop(0)
        return piece[:n]


def client_on(stream, **kw):
    net = Net(stream)
    kw.setdefault("timeout_ms", 3000)  # a hang fails the example instead of stalling the run
    return HttpClient("gw", 8080, open_connection=net.open_connection, **kw)


def exchange(client, count=1):
    """`count` POSTs on one client: a list of (status, headers, body), or the OSError raised."""

    async def main():
        out = []
        for _ in range(count):
            out.append(await client.post_json("/api/v1/sensor-data", b"{}"))
        return out

    try:
        return asyncio.run(main())
    except OSError as exc:
        return exc


def head(status_line, fields):
    return status_line + b"".join(name + b":" + value + b"\r\n" for name, value in fields) + b"\r\n"


def random_case(draw, text):
    flips = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return bytes(
        c ^ 0x20 if flip and chr(c).isalpha() else c for c, flip in zip(text, flips, strict=True)
    )


# -- strategies

_names = st.sampled_from(
    (b"Content-Length", b"Transfer-Encoding", b"Connection", b"Retry-After", b"X-Id", b"")
)
_values = st.one_of(
    st.sampled_from((b" 3", b"4", b" chunked", b"close", b"keep-alive", b"-1", b"zz", b" ")),
    st.binary(max_size=10),
    st.binary(min_size=60, max_size=80),  # past max_header
)
_field = st.tuples(_names, _values)
_status = st.one_of(
    st.sampled_from((b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 204 No\r\n", b"HTTP/1.0 503 X\r\n")),
    st.builds(lambda d, r: b"HTTP/1.1 " + d + b" " + r + b"\r\n", st.binary(max_size=4), _values),
)
_body = st.one_of(
    st.binary(max_size=40),
    st.sampled_from((b"abc", b"3\r\nabc\r\n0\r\n\r\n", b"zz\r\n", b"0\r\n\r\n", b"-2\r\nab\r\n")),
)


def _framed(kind, n, body):
    """A well-formed head whose framing (length, chunk size, EOF) the body may or may not fit."""
    if kind == 0:
        return head(b"HTTP/1.1 200 OK\r\n", [(b"Content-Length", b" %d" % n)]) + body
    if kind == 1:
        te = head(b"HTTP/1.1 200 OK\r\n", [(b"Transfer-Encoding", b" chunked")])
        return te + b"%x\r\n" % n + body + b"\r\n0\r\n\r\n"
    return head(b"HTTP/1.0 200 OK\r\n", []) + body  # RFC 9112 §6.3: the body runs to EOF


_response = st.one_of(
    st.binary(max_size=120),
    st.builds(lambda s, f, b: head(s, f) + b, _status, st.lists(_field, max_size=4), _body),
    st.builds(_framed, st.integers(0, 2), st.integers(0, 50), st.binary(max_size=50)),
)
_cuts = st.lists(st.integers(0, 1000), max_size=10)


# -- properties


@settings(max_examples=200, deadline=None)
@given(raw=_response, cuts=_cuts)
def test_any_response_bytes_parse_or_give_a_named_http_error(raw, cuts):
    stream = CutStream(raw, cuts)
    got = exchange(client_on(stream, max_body=32, max_header=64))
    if isinstance(got, OSError):
        assert isinstance(got, HttpError), repr(got)
        # a crash inside the parser would reach us as HttpError("... IndexError ..."): the
        # message must name one of the failures the client knows
        assert any(k in str(got) for k in KNOWN_HTTP_FAILURES), (raw, str(got))
        assert stream.closed  # a connection in an unknown state is never reused
        return
    status, headers, body = got[0]
    assert isinstance(status, int) and 0 <= status <= 999
    assert isinstance(body, bytes) and len(body) <= 32
    for name, value in headers.items():
        assert isinstance(name, str) and name == name.lower() and name == name.strip()
        assert isinstance(value, str) and value == value.strip()


@settings(max_examples=200, deadline=None)
@given(data=st.data(), body=st.binary(max_size=300), cuts=_cuts)
def test_chunked_bodies_decode_to_the_same_bytes_however_chunked(data, body, cuts):
    marks = data.draw(st.lists(st.integers(0, len(body)), max_size=8), label="chunk ends")
    bounds = sorted(set(marks) | {0, len(body)})
    wire = b""
    for a, b in itertools.pairwise(bounds):
        if a == b:
            continue
        size = data.draw(st.sampled_from(("%x", "%X", "%04x")), label="size form") % (b - a)
        ext = data.draw(st.sampled_from((b"", b";x=1", b' ; name="v"')), label="extension")
        wire += size.encode() + ext + b"\r\n" + body[a:b] + b"\r\n"
    trailer = data.draw(
        st.sampled_from((b"", b"X-Sum: 1\r\n", b"A: b\r\nC: d\r\n")), label="trailer"
    )
    wire += b"0\r\n" + trailer + b"\r\n"
    te = random_case(data.draw, b"Transfer-Encoding")
    raw = head(b"HTTP/1.1 202 Accepted\r\n", [(te, b" chunked")]) + wire
    client = client_on(CutStream(raw + NEXT, cuts), max_body=300)
    got = exchange(client, 2)
    assert not isinstance(got, OSError), (raw, got)
    assert got[0][0] == 202 and got[0][2] == body
    assert got[1][2] == b"next" and client.connections == 1  # framing ended at the last CRLF


@settings(max_examples=150, deadline=None)
@given(data=st.data(), body=st.binary(max_size=40), cuts=_cuts, close=st.booleans())
def test_header_names_are_case_insensitive(data, body, cuts, close):
    length = random_case(data.draw, b"Content-Length")
    custom = random_case(data.draw, b"X-Request-Id")
    pad = data.draw(st.sampled_from((b"", b" ", b"  ", b"\t")), label="whitespace")
    fields = [(custom, pad + b"Ab-9" + pad), (length, pad + b"%d" % len(body) + pad)]
    if close:
        fields.append(
            (random_case(data.draw, b"Connection"), pad + random_case(data.draw, b"close"))
        )
    order = data.draw(st.permutations(range(len(fields))), label="field order")
    raw = head(b"HTTP/1.1 200 OK\r\n", [fields[i] for i in order]) + body
    stream = CutStream(raw + NEXT, cuts)
    client = client_on(stream)
    got = exchange(client, 1)
    assert not isinstance(got, OSError), (raw, got)
    _, headers, received = got[0]
    assert received == body  # Content-Length framed it, whatever its case
    assert headers["x-request-id"] == "Ab-9"  # names folded to lower case, values kept
    assert headers["content-length"] == "%d" % len(body)
    assert stream.closed == close  # "Connection: close" honoured in any case
    if not close:
        assert exchange(client, 1)[0][2] == b"next" and client.connections == 1


_RFC_CHUNK_LINE = re.compile(rb"[0-9A-Fa-f]+([ \t]*;.*)?")  # RFC 9112 §7.1 (ext unchecked)
_HEXDIGITS = re.compile(rb"[0-9A-Fa-f]+")
_line_bytes = st.binary(max_size=12).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
_size_spellings = st.one_of(
    st.sampled_from((b"3", b"03", b"0003", b"0x3", b"0X3", b"+3", b"-3", b"3_", b"0_3", b"-0")),
    st.sampled_from((b" 3", b"\t3", b"3\x0b", b"3 ", b"", b"\xef\xbc\x93", b"3.0", b"3e0")),
    _line_bytes,
)
_extensions = st.sampled_from((b"", b";x", b" ;x=1", b'\t; n="v"', b";", b";;"))


@settings(max_examples=300, deadline=None)
@given(size=_size_spellings, ext=_extensions, tail=_line_bytes, cuts=_cuts)
def test_a_chunk_size_that_is_not_hexdig_is_refused(size, ext, tail, cuts):
    """RFC 9112 §7.1: chunk-size = 1*HEXDIG, then optional BWS ";" extensions. A size line the
    RFC allows is read; one whose size is not hex digits is refused, never guessed at."""
    line = size + ext + (tail if ext else b"")
    raw = head(b"HTTP/1.1 200 OK\r\n", [(b"Transfer-Encoding", b" chunked")])
    raw += line + b"\r\nabc\r\n0\r\n\r\n"
    stream = CutStream(raw + NEXT, cuts)
    client = client_on(stream, max_body=64)
    got = exchange(client, 2)
    size_part = line.split(b";", 1)[0]
    if _RFC_CHUNK_LINE.fullmatch(line):
        if int(size_part.rstrip(b" \t"), 16) == 3:
            assert not isinstance(got, OSError), (line, got)
            assert got[0][2] == b"abc" and got[1][2] == b"next"  # framed to the exact byte
    elif not _HEXDIGITS.fullmatch(size_part.rstrip(b" \t")):
        assert isinstance(got, HttpError) and "garbage chunk size" in str(got), (line, got)
        assert stream.closed
