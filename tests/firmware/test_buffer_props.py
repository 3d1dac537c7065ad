"""Properties of the store-and-forward buffer against a model, over random op sequences (CPython).

Ops: append, flush, ack of any pending record (out of order), ack of an unknown seq, reboot
(reopen from flash, RAM lost). The model says what must be pending; seqs never repeat.
"""

import json
import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.buffer import Buffer, canonical_json
from firmware.fs import OsFs
from simulator.clock import SimClock

_OPS = st.lists(
    st.one_of(
        st.just(("append", 0)),
        st.just(("append", 0)),
        st.just(("append", 0)),
        st.just(("flush", 0)),
        st.tuples(st.just("ack"), st.integers(0, 50)),
        st.tuples(st.just("ack_unknown"), st.integers(1, 1000)),
        st.just(("reboot", 0)),
    ),
    max_size=80,
)


def _open(root, params):
    return Buffer(OsFs(root), clock=SimClock(), **params)


@settings(max_examples=150, deadline=None)
@given(
    ops=_OPS,
    segment_records=st.integers(1, 9),
    flush_every=st.integers(1, 6),
    seq_block=st.integers(1, 20),
    capacity=st.integers(3, 30),
)
def test_buffer_matches_the_model(ops, segment_records, flush_every, seq_block, capacity):
    params = {
        "segment_records": segment_records,
        "flush_every": flush_every,
        "seq_block": seq_block,
        "capacity_records": capacity,
    }
    with tempfile.TemporaryDirectory() as root:
        buf = _open(root, params)
        payloads = {}  # every seq ever handed out -> its bytes
        waiting = []  # model of pending(): unacked seqs, oldest first
        durable = set()  # flushed and not acked: must survive a reboot
        dropped = 0
        for op, arg in ops:
            if op == "append":
                reading = {"n": len(payloads)}
                seq = buf.append(reading)
                assert seq not in payloads, "seq %d handed out twice" % seq
                assert all(seq > s for s in payloads)
                payloads[seq] = canonical_json(reading)
                waiting.append(seq)
                if len(waiting) > capacity:
                    gone = waiting.pop(0)
                    durable.discard(gone)
                    dropped += 1
                if buf.stats()["unflushed"] == 0:
                    durable.update(waiting)
            elif op == "flush":
                assert buf.flush()
                durable.update(waiting)
            elif op == "ack" and waiting:
                seq = waiting.pop(arg % len(waiting))
                durable.discard(seq)
                assert buf.ack(seq)
                assert not buf.ack(seq)
            elif op == "ack_unknown":
                if arg not in waiting:
                    assert not buf.ack(arg)
            elif op == "reboot":
                high = max(payloads) if payloads else 0
                buf = _open(root, params)
                got = [s for s, _ in buf.pending(1000)]
                # acked-but-not-retired records may come back (RAM-only ones are gone); if they
                # push the buffer over capacity, boot drops the oldest, and says how many
                dropped = buf.stats()["dropped"]
                lost = durable - set(got)
                assert len(lost) <= dropped, "lost %r" % sorted(lost)
                waiting = got
                durable = set(got)
                assert buf.stats()["next_seq"] > high
            recs = buf.pending(1000)
            assert [s for s, _ in recs] == waiting
            for seq, data in recs:
                assert data == payloads[seq]
            stats = buf.stats()
            assert stats["depth"] == len(waiting)
            assert stats["dropped"] == dropped
            assert stats["torn"] == 0 and stats["write_errors"] == 0


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(value=st.dictionaries(st.text(max_size=6), _JSON, max_size=6))
def test_canonical_json_round_trips_and_ignores_key_order(value):
    data = canonical_json(value)
    assert json.loads(data) == value
    reordered = dict(reversed(list(value.items())))
    assert canonical_json(reordered) == data
    assert (
        data
        == json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    )
