"""HTTP/1.1 client on asyncio streams: keep-alive, Content-Length and chunked bodies, JSON, auth.

Bounded everywhere (status line, headers, body), because a gateway in front of the platform
may answer anything; a response we cannot read raises HttpError (an OSError) saying what was
wrong, and the connection is dropped. RFC 9112 is the reference for message framing.

    client = HttpClient("127.0.0.1", 8080, api_key="k", auth="x-api-key")
    status, headers, body = await client.post_json("/api/v1/sensor-data", payload)
"""

try:
    import asyncio
except ImportError:
    import uasyncio as asyncio

import json

from firmware.uplink import ACKED as ACKED_OUTCOME
from firmware.uplink import DUPLICATE as DUPLICATE_OUTCOME
from firmware.uplink import FAILED as FAILED_OUTCOME
from firmware.uplink import REJECTED as REJECTED_OUTCOME
from firmware.uplink import UNSENT, wait_for_ms

ACCEPTED = "accepted"
DUPLICATE = "duplicate"
FAILED = "failed"


def parse_retry_after(value, cap_ms=3600000):
    """Retry-After (RFC 9110 §10.2.3) in ms, or None. Only delay-seconds: an HTTP-date needs a
    synced wall clock and is answered by the caller's backoff instead."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode()
    value = value.strip()
    if not value or not value.isdigit():
        return None
    return min(int(value) * 1000, cap_ms)


class HttpError(OSError):
    """The response could not be read (garbage, oversize, cut short) or made no sense."""


class _LineReader:
    """Buffered reads over a stream with `read(n)`, so lines and bodies have hard limits."""

    def __init__(self, stream):
        self._s = stream
        self._buf = b""
        self.received = 0  # bytes read so far: 0 means the server never answered

    async def _more(self, what):
        data = await self._s.read(512)
        if not data:
            raise HttpError("connection closed by the server while reading %s" % what)
        self.received += len(data)
        self._buf += data

    async def readline(self, limit, what):
        while True:
            i = self._buf.find(b"\n")
            if i >= 0:
                line = self._buf[:i]
                self._buf = self._buf[i + 1 :]
                if line.endswith(b"\r"):
                    line = line[:-1]
                return line
            if len(self._buf) > limit:
                raise HttpError("%s longer than %d bytes" % (what, limit))
            await self._more(what)

    async def readexactly(self, n, what):
        while len(self._buf) < n:
            await self._more(what)
        data = self._buf[:n]
        self._buf = self._buf[n:]
        return data

    async def read_to_eof(self, limit, what):
        while True:
            if len(self._buf) > limit:
                raise HttpError("%s longer than %d bytes" % (what, limit))
            data = await self._s.read(512)
            if not data:
                data = self._buf
                self._buf = b""
                return data
            self._buf += data


class HttpClient:
    """One keep-alive connection to one host; requests go one at a time.

    `auth` is "x-api-key" (header x-api-key: key) or "bearer" (Authorization: Bearer key);
    the key is sent verbatim (contracts §5: it may hold '$', '/' and '.').
    """

    def __init__(
        self,
        host,
        port=80,
        api_key=None,
        auth="x-api-key",
        open_connection=None,
        ssl=None,
        timeout_ms=10000,
        max_body=8192,
        max_header=1024,
    ):
        if auth not in ("x-api-key", "bearer"):
            raise ValueError("auth must be 'x-api-key' or 'bearer', got %r" % (auth,))
        if api_key is not None and ("\r" in api_key or "\n" in api_key or not api_key):
            raise ValueError("api_key must be a non-empty single line")
        self.host = host
        self.port = port
        self._auth = None
        if api_key is not None:
            if auth == "bearer":
                self._auth = "Authorization: Bearer " + api_key
            else:
                self._auth = "x-api-key: " + api_key
        self._open = open_connection or asyncio.open_connection
        self._ssl = ssl
        self.timeout_ms = timeout_ms
        self.max_body = max_body
        self.max_header = max_header
        self._reader = None
        self._writer = None
        self._lines = None
        self.requests = 0
        self.connections = 0  # how many TCP connections were opened (keep-alive check)

    async def _connect(self):
        if self._ssl is None:
            opening = self._open(self.host, self.port)
        else:
            opening = self._open(self.host, self.port, ssl=self._ssl)
        self._reader, self._writer = await wait_for_ms(opening, self.timeout_ms)
        self._lines = _LineReader(self._reader)
        self.connections += 1

    async def close(self):
        w = self._writer
        self._reader = self._writer = self._lines = None
        if w is not None:
            try:
                w.close()
                await w.wait_closed()
            except Exception:
                pass

    def _head(self, method, path, length, content_type):
        lines = [
            "%s %s HTTP/1.1" % (method, path),
            "Host: %s:%d" % (self.host, self.port),
            "Connection: keep-alive",
        ]
        if content_type is not None:
            lines.append("Content-Type: " + content_type)
        if length is not None:
            lines.append("Content-Length: %d" % length)
        if self._auth is not None:
            lines.append(self._auth)
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    async def request(self, method, path, body=None, content_type="application/json"):
        """Send one request; (status, headers with lower-case names, body bytes).

        `body` is bytes or a list of byte strings sent back to back (a batch without joining).
        """
        if not path.startswith("/") or " " in path or "\r" in path or "\n" in path:
            raise ValueError("path must start with '/' and have no spaces: %r" % (path,))
        if body is not None and not isinstance(body, (list, tuple)):
            body = (body,)
        length = None
        if body is not None:
            length = 0
            for part in body:
                length += len(part)
        head = self._head(method, path, length, None if body is None else content_type)
        reused = self._writer is not None
        try:
            return await self._exchange(head, body)
        except Exception as exc:
            silent = self._lines is not None and self._lines.received == 0
            await self.close()
            if (
                reused
                and silent
                and isinstance(exc, OSError)
                and type(exc).__name__ != "TimeoutError"
            ):
                # a kept-alive connection the server had closed while idle (RFC 9112 §9.3.1):
                # nothing came back, so one fresh try; a duplicate would get 409
                try:
                    return await self._exchange(head, body)
                except Exception as exc2:
                    await self.close()
                    raise _as_oserror(exc2, method, path)
            raise _as_oserror(exc, method, path)

    async def _exchange(self, head, body):
        if self._writer is None:
            await self._connect()
        self._lines.received = 0
        # One write of one buffer: small separate writes would leave as separate TCP segments
        # and stall on Nagle + delayed ACK; assembling costs one allocation of the message.
        message = head
        if body:
            message = bytearray(len(head) + sum(len(p) for p in body))
            message[: len(head)] = head
            n = len(head)
            for part in body:
                message[n : n + len(part)] = part
                n += len(part)
        self._writer.write(message)
        await self._writer.drain()
        self.requests += 1
        status, headers, data, keep = await wait_for_ms(self._read_response(), self.timeout_ms)
        if not keep:
            await self.close()
        return status, headers, data

    async def _read_response(self):
        lines = self._lines
        line = await lines.readline(self.max_header, "the status line")
        parts = line.split(b" ", 2)
        if (
            len(parts) < 2
            or not parts[0].startswith(b"HTTP/1.")
            or len(parts[1]) != 3
            or not parts[1].isdigit()
        ):
            raise HttpError("garbage status line %r" % line[:40])
        status = int(parts[1])
        headers = {}
        total = 0
        while True:
            line = await lines.readline(self.max_header, "a header line")
            if not line:
                break
            total += len(line)
            if total > self.max_header * 4:
                raise HttpError("response headers longer than %d bytes" % (self.max_header * 4))
            i = line.find(b":")
            if i <= 0 or not _is_text(line):
                raise HttpError("garbage header line %r" % line[:40])
            headers[line[:i].strip().lower().decode()] = line[i + 1 :].strip().decode()
        keep = headers.get("connection", "").lower() != "close"
        if status < 200 or status in (204, 304):
            return status, headers, b"", keep
        if "chunked" in headers.get("transfer-encoding", "").lower():
            data = await self._read_chunked()
        elif "content-length" in headers:
            text = headers["content-length"]
            if not text.isdigit():
                raise HttpError("garbage Content-Length %r" % text)
            n = int(text)
            if n > self.max_body:
                raise HttpError("response body of %d bytes exceeds %d" % (n, self.max_body))
            data = await lines.readexactly(n, "the body")
        else:  # RFC 9112 §6.3: no length, the body ends when the server closes
            data = await lines.read_to_eof(self.max_body, "the body")
            keep = False
        return status, headers, data, keep

    async def _read_chunked(self):
        lines = self._lines
        parts = []
        total = 0
        while True:
            line = await lines.readline(64, "a chunk size")
            # RFC 9112 §7.1: chunk-size = 1*HEXDIG, then BWS ";" ext. int(x, 16) alone would
            # also take "0x3", "1_0", "+3" and "-2" (a negative read).
            size_text = line.split(b";")[0].rstrip(b" \t")
            if not size_text or size_text.strip(b"0123456789abcdefABCDEF"):
                raise HttpError("garbage chunk size %r" % line[:20])
            size = int(size_text, 16)
            if size == 0:
                while await lines.readline(self.max_header, "the trailer"):
                    pass
                return b"".join(parts)
            total += size
            if total > self.max_body:
                raise HttpError("chunked body exceeds %d bytes" % self.max_body)
            parts.append(await lines.readexactly(size, "a chunk"))
            if await lines.readline(2, "a chunk end"):
                raise HttpError("chunk of %d bytes not followed by CRLF" % size)

    async def post_json(self, path, body):
        """POST body (bytes, or a list of parts) as application/json; (status, headers, body)."""
        return await self.request("POST", path, body, "application/json")


def _is_text(line):
    """Printable ASCII or tab only: what we can decode the same way on every runtime."""
    return all(0x20 <= b <= 0x7E or b == 0x09 for b in line)


def _as_oserror(exc, method, path):
    if isinstance(exc, MemoryError):
        return exc  # this node's heap, not the peer: the Uplink sends fewer at a time
    if isinstance(exc, HttpError):
        return HttpError("%s %s: %s" % (method, path, exc.args[-1] if exc.args else exc))
    name = type(exc).__name__
    if name == "TimeoutError":
        return HttpError("%s %s: no response within the timeout" % (method, path))
    if isinstance(exc, OSError):
        return exc
    return HttpError("%s %s: %s %s" % (method, path, name, exc))


def parse_json(body, what="response"):
    """Decode a JSON body; HttpError quoting the start of it when it is not JSON."""
    try:
        return json.loads(body)
    except (ValueError, UnicodeError):
        raise HttpError("%s body is not JSON: %r" % (what, bytes(body[:40])))


def batch_body(payloads):
    """The parts of a JSON array of already-encoded readings (contracts §1: 1 to 100 of them),
    for post_json: the payloads are not copied into one string first."""
    if not 1 <= len(payloads) <= 100:
        raise ValueError("a batch holds 1 to 100 readings, got %d" % len(payloads))
    parts = [b"["]
    for p in payloads:
        if len(parts) > 1:
            parts.append(b",")
        parts.append(p)
    parts.append(b"]")
    return parts


def batch_results(body, count):
    """Per-item (status, error) from a batch 202 body, in request order (contracts §1)."""
    doc = parse_json(body, "batch")
    results = doc.get("results") if isinstance(doc, dict) else None
    if not isinstance(results, list) or len(results) != count:
        raise HttpError(
            "batch answer has %s results for %d readings"
            % (len(results) if isinstance(results, list) else "no", count)
        )
    out = []
    for item in results:
        status = item.get("status") if isinstance(item, dict) else None
        if status not in (ACCEPTED, DUPLICATE, FAILED):
            raise HttpError("batch result %r has no known status" % (item,))
        out.append((status, item.get("error")))
    return out


def describe(status, headers, body):
    """One line naming an HTTP failure: status, Retry-After, and the server's error text."""
    text = "HTTP %d" % status
    retry = parse_retry_after(headers.get("retry-after"))
    if retry is not None:
        text += " (Retry-After %d ms)" % retry
    try:
        doc = json.loads(body)
        if isinstance(doc, dict) and doc.get("error"):
            text += ": %s" % doc["error"]
            if doc.get("details"):
                text += " (%s)" % doc["details"]
    except (ValueError, UnicodeError):
        if body:
            text += ": unreadable body %r" % bytes(body[:40])
    return text


class HttpStatusError(HttpError):
    """The peer answered a status that says "not now" (401/403/429/5xx) for every reading."""

    def __init__(self, message, status, retry_after_ms=None):
        super().__init__(message)
        self.status = status
        self.retry_after_ms = retry_after_ms
        self.busy = status == 429  # the peer is alive, it only asks us to wait


class HttpTransport:
    """Sends readings as contracts §1 (or §2) POSTs for firmware.uplink.link.Uplink.

    With `batch_path`, several readings go in one POST to the batch endpoint; otherwise one POST
    each over the kept-alive connection. 202 -> acked, 409 -> duplicate, 400/413/422 ->
    rejected (the reading is wrong), 5xx -> failed for that reading (a 500 may mean that one
    reading is malformed, contracts §1), 401/403/429 -> stop, honouring Retry-After.
    """

    def __init__(self, client, path="/api/v1/sensor-data", batch_path=None, max_batch_bytes=2048):
        self.client = client
        self.path = path
        self.batch_path = batch_path
        # the request is assembled in one buffer: keep it small enough for a fragmented heap
        self.max_batch_bytes = max_batch_bytes

    async def send(self, items):
        if self.batch_path is not None and len(items) > 1:
            return await self._send_batch(items)
        out = []
        fives = 0
        for i, (_seq, payload) in enumerate(items):
            try:
                status, headers, body = await self.client.post_json(self.path, payload)
            except OSError as exc:
                if not out:
                    raise
                return out + [(UNSENT, str(exc))] * (len(items) - i)
            outcome = _outcome(status, headers, body)
            if outcome is None:  # not about this reading: stop here
                err = _status_error(status, headers, body)
                if not out:
                    raise err
                return out + [(UNSENT, str(err))] * (len(items) - i)
            out.append(outcome)
            if outcome[0] == FAILED_OUTCOME:
                fives += 1
                if fives >= 2:  # two in a row: the peer is failing, not one reading
                    return out + [(UNSENT, outcome[1])] * (len(items) - i - 1)
            else:
                fives = 0
        return out

    async def _send_batch(self, items):
        count = 0
        size = 2
        for _, payload in items:  # at least one, then as many as fit in max_batch_bytes
            size += len(payload) + 1
            if count and size > self.max_batch_bytes:
                break
            count += 1
        body = batch_body([p for _, p in items[:count]])
        status, headers, data = await self.client.post_json(self.batch_path, body)
        if status != 202 and status != 200:
            raise _status_error(status, headers, data)
        out = []
        for result, error in batch_results(data, count):
            if result == ACCEPTED:
                out.append((ACKED_OUTCOME, None))
            elif result == DUPLICATE:
                out.append((DUPLICATE_OUTCOME, None))
            else:
                out.append((REJECTED_OUTCOME, "batch item failed: %s" % error))
        return out + [(UNSENT, "next batch")] * (len(items) - count)


def _outcome(status, headers, body):
    if 200 <= status < 300:
        return (ACKED_OUTCOME, None)
    if status == 409:
        return (DUPLICATE_OUTCOME, None)
    if status in (400, 413, 422):
        return (REJECTED_OUTCOME, describe(status, headers, body))
    if status >= 500 and status != 503:
        return (FAILED_OUTCOME, describe(status, headers, body))
    return None


def _status_error(status, headers, body):
    return HttpStatusError(
        describe(status, headers, body), status, parse_retry_after(headers.get("retry-after"))
    )
