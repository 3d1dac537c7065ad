"""Real servers on loopback for tests: Mosquitto and an HTTP receiver speaking the contract.

Each fixture starts its server on a free 127.0.0.1 port and stops it at teardown. Both can be
stopped and started again on the same port, so a test can stage an outage. The broker is
simulator.broker's runner (the demo's), with `subscriber()` added for tests.

    def test_publish(mosquitto):
        with mosquitto.subscriber("neurobuild/sensors/#") as sub:
            ...  # publish to 127.0.0.1:mosquitto.port
            assert sub.wait_for(1)[0].payload == b"..."
"""

import json
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from simulator import broker as _broker
from simulator.broker import HOST, free_port
from simulator.broker import LocalCA as TestCA  # the name tests import

# --------------------------------------------------------------------------------------------
# Mosquitto


class Mosquitto(_broker.Mosquitto):
    """simulator.broker.Mosquitto (persistent, tls, nodelay, restart on the same port, log())
    plus `subscriber()`; `tmp_dir` holds its config, log, database and certificates."""

    def subscriber(self, topic, qos=1, client_id=None):
        """A paho client subscribed to `topic`; use as a context manager.

        With a `client_id` the session is persistent (clean_session=False): after a broker
        restart it reconnects within ~0.5 s and gets what was queued for it.
        """
        return Subscriber(
            self.host, self.port, topic, qos, client_id, self.ca.ca_pem if self.ca else None
        )


class Message:
    def __init__(self, topic, payload, qos, retain):
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain

    def __repr__(self):
        return "Message(%r, %r, qos=%d, retain=%r)" % (
            self.topic,
            self.payload,
            self.qos,
            self.retain,
        )


class Subscriber:
    """Collects every message on a topic filter, in arrival order, in a background thread."""

    def __init__(self, host, port, topic, qos=1, client_id=None, ca_pem=None):
        import paho.mqtt.client as mqtt

        self.topic = topic
        self.messages = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or "test-sub-%d" % free_port(),
            clean_session=client_id is None,
        )
        self._client.reconnect_delay_set(min_delay=0.1, max_delay=0.5)
        if ca_pem is not None:
            self._client.tls_set(ca_certs=ca_pem)
        self._client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos)
        self._client.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed.set()
        self._client.on_message = self._on_message
        self._host = host
        self._port = port

    def _on_message(self, client, userdata, msg):
        with self._cond:
            self.messages.append(Message(msg.topic, bytes(msg.payload), msg.qos, msg.retain))
            self._cond.notify_all()

    def __enter__(self):
        self._client.connect(self._host, self._port, keepalive=30)
        self._client.loop_start()
        if not self._subscribed.wait(5):
            self.__exit__(None, None, None)
            raise TimeoutError(
                "subscription to %r on port %d not acknowledged" % (self.topic, self._port)
            )
        return self

    def __exit__(self, *exc):
        self._client.disconnect()
        self._client.loop_stop()

    def wait_for(self, count, timeout_s=5.0):
        """Wait until at least `count` messages arrived; return the list (may be shorter)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return list(self.messages)


def _started(make, attempts=3):
    """make() with a fresh free port until it starts: under pytest-xdist another worker may
    take the port between free_port() and the bind."""
    for attempt in range(attempts):
        try:
            return make()
        except (OSError, RuntimeError, TimeoutError):
            if attempt == attempts - 1:
                raise
    return None


@pytest.fixture
def mosquitto(tmp_path):
    """A started `Mosquitto` on a free loopback port; stopped after the test."""
    broker = _started(lambda: Mosquitto(tmp_path).start())
    try:
        yield broker
    finally:
        broker.stop()


# --------------------------------------------------------------------------------------------
# HTTP receiver: the platform's ingestion endpoints (contracts.md §1, §2), with scripted faults

MAX_BODY = 1024 * 1024  # contracts §1: bodies over 1 MB get 500
MAX_BATCH = 100


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def normalise_timestamp(ts):
    """The de-dup key's timestamp: UTC, millisecond precision (contracts §1).

    `.123Z`, `.123+00:00` and `.123456Z` give the same key. ValueError if not ISO-8601.
    """
    if not isinstance(ts, str) or not ts:
        raise ValueError("timestamp must be a non-empty ISO-8601 string")
    text = ts[:-1] + "+00:00" if ts.endswith("Z") else ts
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    dt = dt.astimezone(timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (dt.microsecond // 1000)


def validate_reading(r):
    """Errors of one neurobuild-profile reading as a list of strings (empty: valid)."""
    if not isinstance(r, dict):
        return ["reading must be an object"]
    errors = []
    if not isinstance(r.get("device_id"), str) or not r.get("device_id"):
        errors.append('"device_id" is required')
    try:
        normalise_timestamp(r.get("timestamp"))
    except (ValueError, TypeError):
        errors.append('"timestamp" must be a valid ISO 8601 date')
    sensors = r.get("sensors")
    if not isinstance(sensors, dict) or not any(k in sensors for k in ("ld2410", "pir", "mq134")):
        errors.append('"sensors" must contain at least one of [ld2410, pir, mq134]')
        return errors
    ld = sensors.get("ld2410")
    if ld is not None:
        if not isinstance(ld, dict):
            errors.append('"sensors.ld2410" must be an object')
        else:
            if not isinstance(ld.get("presence"), bool):
                errors.append('"sensors.ld2410.presence" must be a boolean')
            for key, hi in (("distance", 600), ("energy", 100)):
                v = ld.get(key)
                if not _is_number(v) or not 0 <= v <= hi:
                    errors.append('"sensors.ld2410.%s" must be a number in 0..%d' % (key, hi))
    pir = sensors.get("pir")
    if pir is not None and (
        not isinstance(pir, dict) or not isinstance(pir.get("motion_detected"), bool)
    ):
        errors.append('"sensors.pir.motion_detected" must be a boolean')
    mq = sensors.get("mq134")
    if mq is not None:
        if not isinstance(mq, dict):
            errors.append('"sensors.mq134" must be an object')
        else:
            v = mq.get("gas_concentration")
            if not _is_number(v) or v < 0:
                errors.append('"sensors.mq134.gas_concentration" must be a number >= 0')
            if mq.get("unit") not in ("ppm", "ppb"):
                errors.append('"sensors.mq134.unit" must be one of [ppm, ppb]')
    return errors


def validate_platform(r):
    """Errors of one platform-profile ingest body (contracts §2) as a list of strings."""
    if not isinstance(r, dict):
        return ["body must be an object"]
    errors = []
    if not isinstance(r.get("device_id"), str) or not r.get("device_id"):
        errors.append('"device_id" is required')
    try:
        ts = normalise_timestamp(r.get("timestamp"))
        when = datetime.fromisoformat(ts[:-1] + "+00:00")
        if (when - datetime.now(timezone.utc)).total_seconds() > 3600:
            errors.append('"timestamp" is more than 1 hour in the future')
    except (ValueError, TypeError):
        errors.append('"timestamp" must be a valid ISO 8601 date')
    loc = r.get("location")
    if (
        not isinstance(loc, dict)
        or not _is_number(loc.get("latitude"))
        or not _is_number(loc.get("longitude"))
    ):
        errors.append('"location" needs numeric latitude and longitude')
    data = r.get("sensor_data")
    if not isinstance(data, dict) or not data:
        errors.append('"sensor_data" must be a non-empty object')
    else:
        units = {"temperature": "celsius", "humidity": "percent", "pressure": "hpa"}
        for name, value in data.items():
            if name not in units or not isinstance(value, dict):
                errors.append('"sensor_data.%s" is not a known quantity' % name)
                continue
            if not _is_number(value.get("value")) or value.get("unit") != units[name]:
                errors.append(
                    '"sensor_data.%s" needs a numeric value and unit "%s"' % (name, units[name])
                )
            elif name == "temperature" and not -50 <= value["value"] <= 100:
                errors.append('"sensor_data.temperature.value" outside -50..100')
    status = r.get("device_status")
    if status is not None and not isinstance(status, dict):
        errors.append('"device_status" must be an object')
    return errors


class Fault:
    """One scripted answer, consumed by the next matching request."""

    def __init__(self, kind, status=None, retry_after=None, path=None):
        self.kind = kind  # "status" | "garbage" | "close"
        self.status = status
        self.retry_after = retry_after
        self.path = path


class HttpReceiver:
    """A threaded HTTP/1.1 server implementing the contract's ingestion endpoints.

    Validates bodies like the platform, de-duplicates by (device_id, UTC-ms timestamp) with 409,
    keeps connections alive, and answers scripted faults first. `accepted` lists every reading
    stored, in order; `requests` every request seen as (method, path, headers, body).
    """

    def __init__(self, port=None, tls_dir=None):
        self.host = HOST
        self.port = port or free_port()
        # HTTPS (contracts §2 is "over HTTPS") with a throw-away CA made in tls_dir
        self.ca = TestCA(tls_dir) if tls_dir is not None else None
        self.accepted = []
        self.duplicates = []
        self.rejected = []
        self.requests = []
        self.request_times = []  # time.monotonic() of each entry in `requests`
        self.api_key = None
        self.auth_scheme = "x-api-key"  # or "bearer"
        self.chunked = False  # answer with Transfer-Encoding: chunked
        self.outage = None  # a status (e.g. 503) answered to every request while set
        self.outage_retry_after = None
        self._faults = []
        self._seen = set()
        self._lock = threading.Lock()
        self._server = None
        self._thread = None

    @property
    def url(self):
        scheme = "https" if self.ca is not None else "http"
        return "%s://%s:%d" % (scheme, self.host, self.port)

    # -- scripting

    def script(self, kind, count=1, status=None, retry_after=None, path=None):
        """Queue `count` faults: "status" (answer `status`, e.g. 500/503/429/401, unprocessed),
        "garbage" (processed, but the body is not JSON), "close" (unprocessed, and the
        connection drops mid-response)."""
        if kind not in ("status", "garbage", "close"):
            raise ValueError("unknown fault kind %r" % kind)
        with self._lock:
            for _ in range(count):
                self._faults.append(Fault(kind, status, retry_after, path))

    def pending_faults(self):
        with self._lock:
            return len(self._faults)

    def _take_fault(self, path):
        with self._lock:
            for i, f in enumerate(self._faults):
                if f.path is None or f.path == path:
                    return self._faults.pop(i)
        return None

    # -- lifecycle

    def start(self):
        if self._server is not None:
            return self
        receiver = self

        class Handler(_Handler):
            owner = receiver

        self._server = _Server((self.host, self.port), Handler)
        if self.ca is not None:
            import ssl

            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(self.ca.cert_pem, self.ca.key_pem)
            self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)
            self._server = None

    # -- the contract

    def _store(self, reading):
        """Accept one valid reading; 'duplicate' if its key was seen (marked before storing)."""
        key = (reading["device_id"], normalise_timestamp(reading["timestamp"]))
        with self._lock:
            if key in self._seen:
                self.duplicates.append(reading)
                return "duplicate"
            self._seen.add(key)
            self.accepted.append(reading)
            return "accepted"

    def handle(self, method, path, headers, body):
        """(status, extra_headers, json_body) for one request; pure contract logic."""
        if method == "GET" and path == "/health":
            return 200, {}, {"status": "ok"}
        routes = ("/api/v1/sensor-data", "/api/v1/sensor-data/batch", "/v1/data/ingest")
        if path not in routes:
            return 404, {}, {"error": "Not found", "path": path}
        if method != "POST":
            return 405, {}, {"error": "Method not allowed"}
        denied = self._check_auth(path, headers)
        if denied is not None:
            return denied
        if (headers.get("content-type") or "").split(";")[0].strip() != "application/json":
            return 400, {}, {"error": "Content-Type must be application/json"}
        if len(body) > MAX_BODY:
            return 500, {}, {"error": "Internal server error"}
        try:
            data = json.loads(body)
        except ValueError:
            return 500, {}, {"error": "Internal server error"}  # the service's body parser
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        if path == "/api/v1/sensor-data/batch":
            return self._batch(data, now)
        errors = validate_platform(data) if path == "/v1/data/ingest" else validate_reading(data)
        if errors:
            with self._lock:
                self.rejected.append(data)
            return 400, {}, {"error": "Validation failed", "details": ", ".join(errors)}
        if self._store(data) == "duplicate":
            return 409, {}, {"error": "Duplicate reading"}
        return 202, {}, {"success": True, "message": "accepted", "timestamp": now}

    def _batch(self, data, now):
        if not isinstance(data, list) or not 1 <= len(data) <= MAX_BATCH:
            return (
                400,
                {},
                {
                    "error": "Validation failed",
                    "details": "body must be an array of 1 to %d readings" % MAX_BATCH,
                },
            )
        if any(item is None for item in data):
            return 500, {}, {"error": "Internal server error"}  # contracts §1: null item
        results = []
        for item in data:
            errors = validate_reading(item)
            if errors:
                with self._lock:
                    self.rejected.append(item)
                results.append({"status": "failed", "error": ", ".join(errors)})
            else:
                results.append({"status": self._store(item)})
        return 202, {}, {"success": True, "total": len(data), "results": results, "timestamp": now}

    def _check_auth(self, path, headers):
        if self.api_key is None:
            return None
        if self.auth_scheme == "bearer":
            given = headers.get("authorization") or ""
            given = given[7:] if given.startswith("Bearer ") else None
        else:
            given = headers.get("x-api-key")
        if not given:
            return 401, {}, {"error": "Unauthorized", "details": "missing credentials"}
        if given != self.api_key:
            return 403, {}, {"error": "Forbidden", "details": "invalid credentials"}
        return None


class _Server(ThreadingHTTPServer):
    allow_reuse_address = True  # restart on the same port right after stop()
    daemon_threads = True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive unless the client says close
    # Headers and body leave in separate writes: without this, Nagle holds the body until the
    # client's delayed ACK (~40 ms per request), which no real gateway would add.
    disable_nagle_algorithm = True
    owner = None

    def log_message(self, format, *args):  # keep pytest output clean
        pass

    def _read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self):
        owner = self.owner
        body = self._read_body()
        headers = {k.lower(): v for k, v in self.headers.items()}
        path = self.path.split("?")[0]
        with owner._lock:
            owner.requests.append((self.command, path, headers, body))
            owner.request_times.append(time.monotonic())
        fault = owner._take_fault(path)
        if fault is None and owner.outage is not None:
            fault = Fault("status", owner.outage, owner.outage_retry_after)
        if fault is not None and fault.kind == "close":
            self.wfile.write(b'HTTP/1.1 202 Accepted\r\nContent-Length: 100\r\n\r\n{"succ')
            self.wfile.flush()
            self.close_connection = True
            return
        if fault is not None and fault.kind == "garbage":  # handled, but the answer is mangled
            status = owner.handle(self.command, path, headers, body)[0]
            return self._send(
                status, {"Content-Type": "application/json"}, b"<html>\x00\xff not json"
            )
        if fault is not None:
            extra = {}
            if fault.retry_after is not None:
                extra["Retry-After"] = str(fault.retry_after)
            reason = {429: "Too Many Requests", 503: "Service Unavailable"}.get(
                fault.status, "Scripted fault"
            )
            return self._send(fault.status, extra, json.dumps({"error": reason}).encode())
        status, extra, doc = owner.handle(self.command, path, headers, body)
        extra = dict(extra)
        extra["Content-Type"] = "application/json; charset=utf-8"
        self._send(status, extra, json.dumps(doc).encode())

    def _send(self, status, headers, body):
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        if self.owner.chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            half = len(body) // 2
            for piece in (body[:half], body[half:]):
                if piece:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        self.wfile.flush()

    do_POST = _dispatch
    do_GET = _dispatch
    do_PUT = _dispatch


@pytest.fixture
def http_receiver():
    """A started `HttpReceiver` on a free loopback port; stopped after the test."""
    receiver = _started(lambda: HttpReceiver().start())
    try:
        yield receiver
    finally:
        receiver.stop()
