"""Store-and-forward buffer: readings wait in flash, with a sequence number, until acknowledged.

Readings are batched in RAM and flushed to segment files in `dirname/` (one flush = one append,
so flash wear grows with flushes, not readings). A segment `<first seq>.seg` holds the records
whose seq lies in [first, first + segment_records); each record is a 10-byte header
`<HII` = payload length, seq, CRC32 (of length, seq and payload) followed by the payload, the
canonical JSON of the reading. `pending()` hands out what is not acknowledged yet, oldest first,
always the same bytes, so a retransmission is byte-identical; `ack()` may come in any order, and
a segment file goes once none of its records is waited for. A record acked while still in RAM
never reaches flash.

Power cuts: littlefs commits a file on close, so a cut loses at most the unflushed RAM batch; on
other filesystems a torn tail is cut off at the first record whose length or CRC fails. Seqs are
reserved in blocks of `seq_block` in the file `seq` before any of them is used, so a seq never
repeats across reboots (a reboot skips the rest of the block). Acks live in RAM: after a reboot
acked-but-not-retired records are sent again, and the receiver de-duplicates by (device, seq).

    buf = Buffer(OsFs("/flash"), capacity_records=2000)
    seq = buf.append({"device_id": "n1", "timestamp": "...", "sensors": {...}})
    for seq, payload in buf.pending(10):
        ...publish payload; on PUBACK: buf.ack(seq)
"""

import json
import struct

try:
    from binascii import crc32
except ImportError:  # pragma: no cover - a CPython without binascii.crc32
    from zlib import crc32

from drivers.compat import SYSTEM_CLOCK, const

_HDR_LEN = const(10)
_MAX_PAYLOAD = const(4096)  # a reading is a few hundred bytes; a larger length is corruption
_ENOSPC = const(28)  # littlefs "no space"; MicroPython's errno has no ENOSPC (toolchain.md §3)
_SEG = ".seg"
_TMP = ".tmp"
_SEQ_FILE = "seq"


try:  # CPython escapes non-ASCII by default; MicroPython writes UTF-8 as is: so do we
    json.dumps("", ensure_ascii=False)  # pyright: ignore[reportCallIssue]  (CPython only)
    _STR_KW = {"ensure_ascii": False}
except TypeError:  # MicroPython's json.dumps takes no ensure_ascii
    _STR_KW = {}


def _dumps_str(s):
    return json.dumps(s, **_STR_KW)


def _encode(value):
    """The JSON text of `value`. Each container joins only its own items, so no list grows
    with the whole reading: a long list is one large block, hard to find in a fragmented heap."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        # NaN/inf are not JSON: a value that is no number is sent as null (its quality says why)
        return repr(value) if value == value and value - value == 0 else "null"
    if isinstance(value, str):
        return _dumps_str(value)
    if isinstance(value, dict):
        items = []
        for key in sorted(value):
            if not isinstance(key, str):
                raise TypeError("reading keys must be str, got %r" % (key,))
            items.append(_dumps_str(key) + ":" + _encode(value[key]))
        return "{" + ",".join(items) + "}"
    if isinstance(value, (list, tuple)):
        items = []
        for item in value:
            items.append(_encode(item))
        return "[" + ",".join(items) + "]"
    raise TypeError("cannot encode %s in a reading" % type(value).__name__)


def canonical_json(value):
    """UTF-8 JSON with sorted keys and no spaces: the same reading always gives the same bytes."""
    return _encode(value).encode()


class Buffer:
    """Readings with seqs, persisted in segment files until acknowledged; see the module doc."""

    def __init__(
        self,
        fs,
        dirname="buf",
        capacity_records=1000,
        segment_records=32,
        flush_every=8,
        flush_age_ms=60000,
        seq_block=64,
        clock=SYSTEM_CLOCK,
    ):
        for name, value, low in (
            ("capacity_records", capacity_records, 1),
            ("segment_records", segment_records, 1),
            ("flush_every", flush_every, 1),
            ("flush_age_ms", flush_age_ms, 0),
            ("seq_block", seq_block, 1),
        ):
            if not isinstance(value, int) or value < low:
                raise ValueError("Buffer %s must be an int >= %d, got %r" % (name, low, value))
        self._fs = fs
        self._dir = dirname
        self._capacity = capacity_records
        self._n = segment_records
        self._flush_every = flush_every
        self._flush_age_ms = flush_age_ms
        self._seq_block = seq_block
        self._clock = clock
        self._hdr = bytearray(_HDR_LEN)
        self._hdr_mv = memoryview(self._hdr)
        self._segs = []  # oldest first: [first_seq, live_count, live bitmap (bit = seq - first)]
        self._open = None  # the segment flushes append to; None after boot or a failed write
        self._ram = []  # (seq, payload) not flushed yet, oldest first
        self._ram_since = 0  # ticks when the oldest RAM record arrived
        self._depth = 0
        self._next_seq = 1
        self._seq_limit = 1  # seqs below this are reserved in the seq file
        self.dropped = 0
        self.bytes_written = 0
        self.torn = 0  # records cut off as torn or corrupt (at boot or when read)
        self.write_errors = 0
        self._recover()

    # -- public API -------------------------------------------------------------------------

    def append(self, reading):
        """Give `reading` (a dict) the next seq, store it in `reading["seq"]`, queue it; -> seq.

        Raises OSError if the seq reservation cannot be written (flash broken), TypeError or
        ValueError for a reading that cannot be encoded (then no seq is used).
        """
        if not isinstance(reading, dict):
            raise TypeError("a reading is a dict, got %s" % type(reading).__name__)
        seq = self._next_seq
        reading["seq"] = seq
        payload = canonical_json(reading)
        if len(payload) > _MAX_PAYLOAD:
            raise ValueError("reading is %d bytes encoded, max %d" % (len(payload), _MAX_PAYLOAD))
        if seq >= self._seq_limit:
            self._reserve(seq + self._seq_block)
        self._next_seq = seq + 1
        if not self._ram:
            self._ram_since = self._clock.ticks_ms()
        self._ram.append((seq, payload))
        self._depth += 1
        self._enforce_capacity()
        if len(self._ram) >= self._flush_every:
            self.flush()
        else:
            self.flush_if_due()
        return seq

    def flush(self):
        """Write the RAM batch to flash; -> True when nothing remains unflushed.

        After True a power cut loses none of these readings. On a write error the batch stays
        in RAM (retried at the next flush) and `write_errors` counts it; it never raises.
        """
        if not self._ram:
            return True
        for attempt in (0, 1):
            try:
                self._write()
                return True
            except OSError as exc:
                self.write_errors += 1
                self._open = None  # the tail of that file may be torn: never append after it
                if attempt or (exc.args and exc.args[0] != _ENOSPC) or not self._drop_segment():
                    break
        limit = 4 * self._flush_every  # flash is failing: keep RAM bounded, drop the oldest
        while len(self._ram) > limit:
            self._ram.pop(0)
            self._depth -= 1
            self.dropped += 1
        return False

    def flush_if_due(self):
        """Flush when the oldest RAM record is `flush_age_ms` old; -> flush() or None."""
        if self._ram:
            age = self._clock.ticks_diff(self._clock.ticks_ms(), self._ram_since)
            if age >= self._flush_age_ms:
                return self.flush()
        return None

    def pending(self, n):
        """Up to `n` unacknowledged records as (seq, payload bytes), oldest first."""
        out = []
        for seg in list(self._segs):  # a copy: reading may retire a segment whose file is gone
            if len(out) >= n:
                return out
            if seg[1]:
                self._read_live(seg, out, n)
        for rec in self._ram:
            if len(out) >= n:
                break
            out.append(rec)
        return out

    def ack(self, seq):
        """The peer has `seq`; -> False when it was not waiting (unknown, or acked before)."""
        ram = self._ram
        for i in range(len(ram)):
            if ram[i][0] == seq:
                ram.pop(i)
                self._depth -= 1
                return True
        n = self._n
        for seg in self._segs:
            i = seq - seg[0]
            if 0 <= i < n and seg[2][i >> 3] & (1 << (i & 7)):
                self._clear(seg, i)
                return True
        return False

    def stats(self):
        """Counters for the status message."""
        return {
            "depth": self._depth,
            "dropped": self.dropped,
            "next_seq": self._next_seq,
            "bytes_written": self.bytes_written,
            "segments": len(self._segs),
            "unflushed": len(self._ram),
            "torn": self.torn,
            "write_errors": self.write_errors,
        }

    # -- flash layout -----------------------------------------------------------------------

    def _path(self, name):
        return self._dir + "/" + name

    def _seg_path(self, first):
        return self._dir + "/" + str(first) + _SEG

    def _reserve(self, limit):
        """Persist `limit` (temp file renamed over `seq`) before any seq below it is used."""
        tmp = self._path(_SEQ_FILE + _TMP)
        data = str(limit)
        with self._fs.open(tmp, "w") as f:
            f.write(data)
        self._fs.rename(tmp, self._path(_SEQ_FILE))
        self.bytes_written += len(data)
        self._seq_limit = limit

    def _write(self):
        """Append the RAM batch to segment files; written records leave the batch as they go."""
        ram = self._ram
        n = self._n
        hdr = self._hdr
        while ram:
            seg = self._open
            new = seg is None or ram[0][0] >= seg[0] + n
            if new:
                seg = [ram[0][0], 0, bytearray((n + 7) >> 3)]
            end = seg[0] + n
            count = 0
            # "wb" for a new segment: a file left by a failed attempt at the same name is replaced
            with self._fs.open(self._seg_path(seg[0]), "wb" if new else "ab") as f:
                for seq, payload in ram:
                    if seq >= end:
                        break
                    struct.pack_into("<HI", hdr, 0, len(payload), seq)
                    crc = crc32(payload, crc32(self._hdr_mv[0:6]))
                    struct.pack_into("<I", hdr, 6, crc)
                    f.write(hdr)
                    f.write(payload)
                    count += 1
            # closed without error: committed (littlefs commits on close)
            for k in range(count):
                i = ram[k][0] - seg[0]
                seg[2][i >> 3] |= 1 << (i & 7)
            seg[1] += count
            self.bytes_written += count * _HDR_LEN
            for k in range(count):
                self.bytes_written += len(ram[k][1])
            del ram[:count]
            if new:
                self._segs.append(seg)
                self._open = seg

    def _next_record(self, f, first, last):
        """Read one record; -> (seq, payload), or None at the end (a torn tail counts in `torn`)."""
        hdr = self._hdr
        got = f.readinto(hdr)
        if not got:
            return None
        if got == _HDR_LEN:
            length, seq, crc = struct.unpack("<HII", hdr)
            if length <= _MAX_PAYLOAD and last < seq < first + self._n:
                payload = f.read(length)
                if len(payload) == length and crc32(payload, crc32(self._hdr_mv[0:6])) == crc:
                    return seq, payload
        self.torn += 1
        return None

    def _read_live(self, seg, out, n):
        """Append seg's live records to `out` until it holds `n`; lost records are dropped."""
        first, bitmap = seg[0], seg[2]
        seen = 0
        last = first - 1
        try:
            with self._fs.open(self._seg_path(first), "rb") as f:
                while len(out) < n:
                    rec = self._next_record(f, first, last)
                    if rec is None:
                        break
                    last = rec[0]
                    i = last - first
                    if bitmap[i >> 3] & (1 << (i & 7)):
                        out.append(rec)
                        seen += 1
                        if seen == seg[1]:
                            return
                if len(out) >= n:
                    return
        except OSError:
            self.torn += 1
        # the file ended before every live record was found: they are gone, count them dropped
        for i in range(self._n):
            if first + i > last and bitmap[i >> 3] & (1 << (i & 7)):
                self.dropped += 1
                self._clear(seg, i)

    def _clear(self, seg, i):
        seg[2][i >> 3] &= ~(1 << (i & 7)) & 0xFF
        seg[1] -= 1
        self._depth -= 1
        if seg[1] == 0:
            self._retire(seg)

    def _retire(self, seg):
        """Remove a segment nobody waits for; a failed remove only means resending after boot."""
        self._segs.remove(seg)
        if seg is self._open:
            self._open = None
        try:
            self._fs.remove(self._seg_path(seg[0]))
        except OSError:
            self.write_errors += 1

    def _drop_segment(self):
        """Drop every record of the oldest segment (flash full); -> False if there is none."""
        if not self._segs:
            return False
        seg = self._segs[0]
        self.dropped += seg[1]
        self._depth -= seg[1]
        seg[1] = 0
        self._retire(seg)
        return True

    def _enforce_capacity(self):
        while self._depth > self._capacity:
            self.dropped += 1
            for seg in self._segs:
                if seg[1]:
                    bitmap = seg[2]
                    i = 0
                    while not bitmap[i >> 3] & (1 << (i & 7)):
                        i += 1
                    self._clear(seg, i)
                    break
            else:
                self._ram.pop(0)
                self._depth -= 1

    # -- boot -------------------------------------------------------------------------------

    def _recover(self):
        """Rebuild the index from flash after any reboot or power cut; never raises."""
        fs = self._fs
        try:
            names = fs.listdir(self._dir)
        except OSError:
            names = ()
            try:
                fs.mkdir(self._dir)
            except OSError:
                self.write_errors += 1
        firsts = []
        limit = 1
        for name in names:
            if name.endswith(_TMP):  # an interrupted seq reservation
                try:
                    fs.remove(self._path(name))
                except OSError:
                    pass
            elif name == _SEQ_FILE:
                limit = self._read_limit()
            elif name.endswith(_SEG):
                try:
                    firsts.append(int(name[: -len(_SEG)]))
                except ValueError:
                    pass  # not ours: leave it
        firsts.sort()
        high = 0
        for first in firsts:
            high = self._load_segment(first, high)
        self._next_seq = self._seq_limit = max(limit, high + 1)
        self._enforce_capacity()

    def _read_limit(self):
        try:
            with self._fs.open(self._path(_SEQ_FILE), "r") as f:
                return int(f.read())
        except (OSError, ValueError):
            return 1

    def _load_segment(self, first, high):
        """Index one segment file; records at or below `high` (already seen) stay dead; -> high."""
        n = self._n
        seg = [first, 0, bytearray((n + 7) >> 3)]
        last = first - 1
        try:
            with self._fs.open(self._seg_path(first), "rb") as f:
                while True:
                    rec = self._next_record(f, first, last)
                    if rec is None:
                        break
                    last = rec[0]
                    if last > high:
                        i = last - first
                        seg[2][i >> 3] |= 1 << (i & 7)
                        seg[1] += 1
                        high = last
        except OSError:
            self.torn += 1
        if seg[1]:
            self._segs.append(seg)
            self._depth += seg[1]
        else:
            try:
                self._fs.remove(self._seg_path(first))
            except OSError:
                pass
        return high
