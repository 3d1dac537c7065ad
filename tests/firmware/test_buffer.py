"""Store-and-forward buffer: seqs, batching, acks, capacity, recovery (CPython and MicroPython)."""

from firmware.buffer import Buffer, canonical_json
from firmware.fs import OsFs
from simulator.clock import SimClock
from tests.support.mptest import raises

RUN_ON_MICROPYTHON = True

_HDR = 10


class _TornFile:
    """A file whose writes stop halfway through the 2nd call: a cut in the middle of a record."""

    def __init__(self, f):
        self._f = f
        self._calls = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()

    def write(self, data):
        self._calls += 1
        if self._calls == 2:
            self._f.write(data[: len(data) // 2])
            raise OSError(5)
        return self._f.write(data)


class _FlakyFs(OsFs):
    """OsFs whose next `fail` opens for writing raise OSError(errno), or tear (`tear` = True)."""

    def __init__(self, root=""):
        super().__init__(root)
        self.fail = 0
        self.errno = 5
        self.tear = False

    def open(self, name, mode="r"):
        if self.fail and ("w" in mode or "a" in mode):
            self.fail -= 1
            if self.tear:
                return _TornFile(super().open(name, mode))
            raise OSError(self.errno)
        return super().open(name, mode)


def _buf(fs=None, **kw):
    args = {"segment_records": 4, "flush_every": 100, "seq_block": 10, "clock": SimClock(1000)}
    args.update(kw)
    return Buffer(fs or OsFs(""), **args)


def _reading(i):
    return {"device_id": "node-1", "i": i, "sensors": {"pir": {"motion_detected": True}}}


def _segments(fs=None):
    fs = fs or OsFs("")
    return sorted(n for n in fs.listdir("buf") if n.endswith(".seg"))


def test_canonical_json_is_sorted_compact_and_stable():
    value = {"b": [1, 2.5, None], "a": {"y": False, "x": "é\n"}, "c": True}
    assert (
        canonical_json(value) == '{"a":{"x":"é\\n","y":false},"b":[1,2.5,null],"c":true}'.encode()
    )
    assert canonical_json({"v": float("nan"), "w": float("inf")}) == b'{"v":null,"w":null}'
    assert str(raises(TypeError, canonical_json, {1: 2})) == "reading keys must be str, got 1"
    assert "object" in str(raises(TypeError, canonical_json, {"a": object()}))


def test_append_numbers_readings_and_pending_is_oldest_first():
    buf = _buf()
    r = _reading(0)
    assert buf.append(r) == 1
    assert r["seq"] == 1
    assert [buf.append(_reading(i)) for i in (1, 2)] == [2, 3]
    recs = buf.pending(10)
    assert [s for s, _ in recs] == [1, 2, 3]
    assert recs[0][1] == canonical_json(r)
    assert buf.pending(2) == recs[:2]
    assert buf.stats()["depth"] == 3


def test_payload_is_byte_identical_in_ram_on_flash_and_after_reboot():
    buf = _buf()
    for i in range(6):
        buf.append(_reading(i))
    before = buf.pending(10)
    assert buf.flush()
    assert buf.pending(10) == before
    assert _buf().pending(10) == before


def test_flush_every_batches_writes_into_one_append():
    buf = _buf(flush_every=4)
    for i in range(3):
        buf.append(_reading(i))
    assert buf.stats()["unflushed"] == 3
    assert _segments() == []
    buf.append(_reading(3))
    assert buf.stats()["unflushed"] == 0
    assert _segments() == ["1.seg"]
    size = sum(_HDR + len(p) for _, p in buf.pending(10))
    assert OsFs("").size("buf/1.seg") == size
    assert buf.stats()["bytes_written"] == size + len("11")  # + the seq reservation "11"


def test_flush_when_the_oldest_reading_is_old_enough():
    clock = SimClock(1000)
    buf = _buf(clock=clock, flush_age_ms=5000)
    buf.append(_reading(0))
    clock.advance(4999)
    assert buf.flush_if_due() is None
    buf.append(_reading(1))  # age counts from the oldest unflushed reading
    assert buf.stats()["unflushed"] == 2
    clock.advance(1)
    assert buf.flush_if_due() is True
    assert buf.stats()["unflushed"] == 0


def test_segments_split_by_seq_range():
    buf = _buf(flush_every=3)
    for i in range(10):
        buf.append(_reading(i))
    buf.flush()
    assert _segments() == ["1.seg", "5.seg", "9.seg"]
    assert [s for s, _ in buf.pending(20)] == list(range(1, 11))


def test_out_of_order_acks_retire_a_segment_only_when_all_are_acked():
    buf = _buf()
    for i in range(6):
        buf.append(_reading(i))
    buf.flush()
    assert _segments() == ["1.seg", "5.seg"]
    for seq in (3, 1, 4):
        assert buf.ack(seq)
    assert _segments() == ["1.seg", "5.seg"]
    assert [s for s, _ in buf.pending(10)] == [2, 5, 6]
    assert buf.ack(2)
    assert _segments() == ["5.seg"]
    assert not buf.ack(2)  # acked twice
    assert not buf.ack(99)  # never appended
    assert buf.stats()["depth"] == 2


def test_a_reading_acked_in_ram_never_reaches_flash():
    buf = _buf()
    buf.append(_reading(0))
    buf.append(_reading(1))
    assert buf.ack(1)
    assert buf.ack(2)
    assert buf.flush()
    assert _segments() == []
    assert buf.stats()["bytes_written"] == len("11")  # only the seq reservation


def test_reboot_recovers_unacked_readings_and_never_reuses_a_seq():
    buf = _buf(seq_block=10)
    for i in range(5):
        buf.append(_reading(i))
    buf.flush()
    buf.ack(1)
    buf.ack(2)
    buf.ack(3)
    buf.ack(4)  # segment 1..4 retired
    buf.append(_reading(5))  # seq 6, in RAM only: lost by the reboot, its seq never reused
    again = _buf(seq_block=10)
    assert [s for s, _ in again.pending(10)] == [5]
    assert again.stats()["next_seq"] == 11  # skips the rest of the reserved block 1..10
    assert again.append(_reading(6)) == 11


def test_full_buffer_drops_the_oldest_and_counts_them():
    buf = _buf(capacity_records=5, flush_every=3)
    for i in range(8):
        buf.append(_reading(i))
    stats = buf.stats()
    assert stats["dropped"] == 3
    assert stats["depth"] == 5
    assert [s for s, _ in buf.pending(10)] == [4, 5, 6, 7, 8]
    assert _segments() == ["1.seg", "5.seg"]  # 1.seg still holds 4


def test_torn_tail_is_cut_off_at_boot_without_raising():
    buf = _buf()
    for i in range(3):
        buf.append(_reading(i))
    buf.flush()
    good = buf.pending(10)
    with open("buf/1.seg", "ab") as f:
        f.write(b"\x40\x00\x04\x00\x00")  # half a header: the cut came mid-write
    again = _buf()
    assert again.pending(10) == good
    assert again.stats()["torn"] == 1
    assert again.append(_reading(3)) == 11  # the reboot skipped the rest of the block 1..10
    assert again.flush()
    assert _segments() == ["1.seg", "11.seg"]  # never appends after a torn tail
    assert [s for s, _ in _buf().pending(10)] == [1, 2, 3, 11]


def test_a_bad_crc_cuts_the_segment_at_that_record():
    buf = _buf()
    for i in range(3):
        buf.append(_reading(i))
    buf.flush()
    with open("buf/1.seg", "rb") as f:
        data = bytearray(f.read())
    second = _HDR + len(buf.pending(1)[0][1])
    data[second + _HDR + 3] ^= 0x01  # one flipped bit in the second payload
    with open("buf/1.seg", "wb") as f:
        f.write(data)
    again = _buf()
    assert [s for s, _ in again.pending(10)] == [1]
    assert again.stats()["torn"] == 1


def test_junk_in_the_buffer_directory_never_stops_boot():
    fs = OsFs("")
    fs.mkdir("buf")
    with fs.open("buf/seq", "w") as f:
        f.write("not a number")
    with fs.open("buf/seq.tmp", "w") as f:
        f.write("12")
    with fs.open("buf/notes.seg", "w") as f:
        f.write("x")
    with fs.open("buf/7.seg", "wb") as f:
        f.write(b"\xff" * 40)  # erased flash, no record
    buf = _buf()
    assert buf.stats()["depth"] == 0
    assert buf.append(_reading(0)) == 1
    names = fs.listdir("buf")
    assert "seq.tmp" not in names and "7.seg" not in names
    assert "notes.seg" in names  # not ours: left alone


def test_write_error_keeps_the_batch_and_starts_a_new_segment():
    fs = _FlakyFs("")
    buf = _buf(fs)
    buf.append(_reading(0))
    assert buf.flush()
    buf.append(_reading(1))
    fs.fail = 1
    assert not buf.flush()
    stats = buf.stats()
    assert stats["write_errors"] == 1 and stats["unflushed"] == 1
    assert buf.flush()
    assert _segments(fs) == ["1.seg", "2.seg"]
    assert [s for s, _ in _buf().pending(10)] == [1, 2]


def test_a_write_torn_mid_record_is_never_appended_after():
    fs = _FlakyFs("")
    buf = _buf(fs)
    buf.append(_reading(0))
    assert buf.flush()
    buf.append(_reading(1))
    fs.fail = 1
    fs.tear = True  # header of seq 2 written, half its payload, then the error
    assert not buf.flush()
    buf.append(_reading(2))
    assert buf.flush()
    assert _segments(fs) == ["1.seg", "2.seg"]
    expected = buf.pending(10)
    assert [s for s, _ in expected] == [1, 2, 3]
    again = _buf()
    assert again.pending(10) == expected  # the torn half-record in 1.seg is cut off
    assert again.stats()["torn"] == 1


def test_no_space_drops_the_oldest_segment_and_retries():
    fs = _FlakyFs("")
    buf = _buf(fs)
    for i in range(5):
        buf.append(_reading(i))
    assert buf.flush()
    buf.append(_reading(5))
    fs.errno = 28
    fs.fail = 1
    assert buf.flush()
    stats = buf.stats()
    assert stats["dropped"] == 4 and stats["write_errors"] == 1
    assert [s for s, _ in buf.pending(10)] == [5, 6]


def test_seq_reservation_failure_refuses_the_reading():
    fs = _FlakyFs("")
    buf = _buf(fs)
    fs.fail = 1
    r = _reading(0)
    assert raises(OSError, buf.append, r).args[0] == 5
    assert buf.stats()["next_seq"] == 1
    assert buf.append(_reading(1)) == 1


def test_a_deleted_segment_counts_its_readings_as_dropped():
    buf = _buf()
    for i in range(6):
        buf.append(_reading(i))
    buf.flush()
    OsFs("").remove("buf/1.seg")
    assert [s for s, _ in buf.pending(10)] == [5, 6]
    assert buf.stats()["dropped"] == 4
    assert buf.stats()["depth"] == 2


def test_bad_arguments_are_named():
    err = raises(ValueError, Buffer, OsFs(""), segment_records=0)
    assert str(err) == "Buffer segment_records must be an int >= 1, got 0"
    assert "flush_every" in str(raises(ValueError, Buffer, OsFs(""), flush_every="8"))
    buf = _buf()
    assert "dict" in str(raises(TypeError, buf.append, [1]))
    assert "object" in str(raises(TypeError, buf.append, {"x": object()}))
    assert "bytes encoded" in str(raises(ValueError, buf.append, {"x": "a" * 5000}))
    assert buf.append(_reading(0)) == 1  # refused readings used no seq
