"""Structured log lines on the console, a ring of recent lines, and the last crash in flash.

Every line is exactly `@nbk {"t":<ticks ms>,"lvl":"I|W|E|D","mod":"<module>","msg":"<text>",
"kv":{...}}`, one per line: `nbk monitor` finds the marker and decodes the JSON. The ring lives
in RAM and is written to flash only on `save()` and with a crash record, to spare flash wear.

    log = Log(board.clock, fs=board.fs)
    log.info("mqtt", "connected", {"host": "10.0.0.2"})
"""

import json
import sys

MARKER = "@nbk "
LEVELS = "DIWE"  # ascending severity: a level filter keeps this letter and those after it
RING_PATH = "log_ring.txt"
CRASH_PATH = "crash.json"

_JSON_SEP = (",", ":")


def format_line(t_ms, lvl, mod, msg, kv=None):
    """The console line for one event (no newline); kv must be JSON-able."""
    return "%s{%s,%s,%s,%s,%s}" % (
        MARKER,
        '"t":%d' % t_ms,
        '"lvl":"%s"' % lvl,
        '"mod":' + json.dumps(mod),
        '"msg":' + json.dumps(msg),
        '"kv":' + json.dumps(kv or {}, separators=_JSON_SEP),
    )


def _print_line(line):
    print(line)


class Log:
    """Writes structured lines; keeps the most recent ones in a ring of `ring_bytes` bytes.

    `write` receives each line (default: print, i.e. the console UART); `fs` (optional) is
    where `save()` and `record_crash()` persist. `level` drops less severe lines ("D" keeps all).
    The ring is one bytearray allocated here: a ring of separate strings would put a new
    long-lived block in the heap with every line, between short-lived ones, and fragment it.
    A line longer than the ring is printed but not kept.
    """

    def __init__(self, clock, write=None, fs=None, ring_bytes=2048, level="I"):
        if level not in LEVELS or len(level) != 1:
            raise ValueError("log level %r: use one of D, I, W, E" % (level,))
        if ring_bytes < 2:
            raise ValueError("ring_bytes %r: must be at least 2" % (ring_bytes,))
        self._clock = clock
        self._write = write or _print_line
        self._fs = fs
        self._min = LEVELS.index(level)
        self._ring = bytearray(ring_bytes)
        self._start = 0  # where the oldest kept line begins
        self._used = 0  # bytes kept, each line followed by "\n"
        self.counts = [0, 0, 0, 0]  # lines per level, D I W E, including filtered ones

    def log(self, lvl, mod, msg, kv=None):
        idx = LEVELS.find(lvl)
        if idx < 0 or len(lvl) != 1:
            raise ValueError("log level %r: use one of D, I, W, E" % (lvl,))
        self.counts[idx] += 1
        if idx < self._min:
            return None
        try:
            line = format_line(self._clock.ticks_ms(), lvl, mod, msg, kv)
        except (TypeError, ValueError) as exc:  # a kv value json cannot encode: log that instead
            line = format_line(self._clock.ticks_ms(), lvl, mod, msg, {"kv_error": str(exc)})
        self._keep(line.encode())
        self._write(line)
        return line

    def _keep(self, data):
        """Append `data` and a newline to the ring, dropping the oldest whole lines for room."""
        ring = self._ring
        size = len(ring)
        n = len(data) + 1
        if n > size:
            return
        while self._used + n > size:
            nl = ring.find(b"\n", self._start)
            if nl < 0:  # the oldest line wraps around the end
                nl = ring.find(b"\n")
            dropped = (nl - self._start) % size + 1
            self._start = (nl + 1) % size
            self._used -= dropped
        end = (self._start + self._used) % size
        first = min(len(data), size - end)
        mv = memoryview(data)
        ring[end : end + first] = mv[:first]
        if first < len(data):
            ring[: len(data) - first] = mv[first:]
        ring[(end + len(data)) % size] = 10  # "\n"
        self._used += n

    def debug(self, mod, msg, kv=None):
        return self.log("D", mod, msg, kv)

    def info(self, mod, msg, kv=None):
        return self.log("I", mod, msg, kv)

    def warn(self, mod, msg, kv=None):
        return self.log("W", mod, msg, kv)

    def error(self, mod, msg, kv=None):
        return self.log("E", mod, msg, kv)

    def recent(self):
        """The kept lines, oldest first."""
        ring = self._ring
        start = self._start
        end = start + self._used
        if end <= len(ring):
            kept = ring[start:end]
        else:
            kept = ring[start:] + ring[: end - len(ring)]
        return kept.decode().split("\n")[:-1]

    def save(self):
        """Write the ring to flash (replacing the previous copy); no-op without an fs."""
        if self._fs is None:
            return
        tmp = RING_PATH + ".tmp"
        with self._fs.open(tmp, "w") as f:
            for line in self.recent():
                f.write(line)
                f.write("\n")
        self._fs.rename(tmp, RING_PATH)

    def record_crash(self, exc, where="app"):
        """Log an exception at level E and keep it, with the ring, as the last crash in flash."""
        import gc

        gc.collect()  # a MemoryError crash: the unwound frames' memory is garbage by now
        trace = format_exception(exc)
        self.error(where, "crash", {"exc": "%s: %s" % (type(exc).__name__, exc)})
        if self._fs is None:
            return trace
        record = {"t": self._clock.ticks_ms(), "where": where, "trace": trace}
        record["recent"] = self.recent()
        tmp = CRASH_PATH + ".tmp"
        with self._fs.open(tmp, "w") as f:
            f.write(json.dumps(record))
        self._fs.rename(tmp, CRASH_PATH)
        return trace


def read_crash(fs):
    """The last crash record written by `record_crash`, or None (missing or unreadable)."""
    try:
        with fs.open(CRASH_PATH, "r") as f:
            return json.loads(f.read())
    except (OSError, ValueError):
        return None


def format_exception(exc):
    """The traceback of `exc` as text, on both interpreters."""
    if hasattr(sys, "print_exception"):  # MicroPython
        import io

        buf = io.StringIO()
        sys.print_exception(exc, buf)  # pyright: ignore[reportArgumentType]
        return buf.getvalue()  # pyright: ignore[reportAttributeAccessIssue]
    import traceback

    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
