"""Power cuts under the store-and-forward buffer, on real littlefs (MicroPython's VfsLfs2).

A scripted run (appends, auto and explicit flushes, out-of-order acks that retire segments, seq
reservations) is first run on a healthy RAM flash to count its writes and erases, N. Then, for
every k in 1..N, the same run starts on a freshly formatted flash whose k-th write-or-erase and
every later one fail (power gone); the node "boots" on the healed flash and reopens the buffer,
which must hold every reading flushed before the cut, byte-identical and CRC-valid, and must
never hand out a seq used before. The last test cuts config saves the same way: boot must
always find a valid config (the old or the new one), never fall into safe mode.
"""

RUN_ON_MICROPYTHON = "only"
# The simulated flash chip (RamBlockDev: its blocks are bytearrays) lives in the same heap as the
# buffer under test and takes a third of it; 128K leaves the firmware's code the room it has at 96K.
MICROPYTHON_HEAP = "128K"

_MOUNT = "/flash"
_READINGS = 40


def _buffer(clock):
    from firmware.buffer import Buffer
    from firmware.fs import OsFs

    return Buffer(
        OsFs(_MOUNT),
        capacity_records=500,
        segment_records=8,
        flush_every=3,
        flush_age_ms=10000,
        seq_block=5,
        clock=clock,
    )


def _script(log):
    """The node's life until the power goes; fills `log`, returns at the first failure."""
    from firmware.buffer import canonical_json
    from simulator.clock import SimClock

    clock = SimClock()
    buf = _buffer(clock)
    expected = log["expected"]
    acked = log["acked"]

    def cut():
        s = buf.stats()
        return s["write_errors"] > 0

    def note_durable():
        # RAM holds the newest unacked seqs; everything older is on flash
        unacked = sorted(s for s in expected if s not in acked)
        keep = len(unacked) - buf.stats()["unflushed"]
        for s in unacked[:keep]:
            log["durable"][s] = True

    try:
        for i in range(_READINGS):
            clock.advance(1000)
            reading = {"device_id": "n1", "i": i, "sensors": {"pir": {"motion_detected": i % 2}}}
            seq = buf.append(reading)
            expected[seq] = canonical_json(reading)
            if cut():
                return
            note_durable()
            if i % 5 == 4:
                if not buf.flush():
                    return
                note_durable()
            if i % 4 == 3:
                recs = buf.pending(4)
                for j in (2, 0, 3):  # out of order, one left waiting
                    if j < len(recs):
                        buf.ack(recs[j][0])
                        acked[recs[j][0]] = True
                if cut():
                    return
        if not buf.flush():
            return
        note_durable()
        for seq, _ in buf.pending(1000):  # the link is back: everything acked, files retired
            buf.ack(seq)
            acked[seq] = True
        if cut():
            return
        log["retired"] = buf.stats()["segments"] == 0
        for i in range(3):
            reading = {"device_id": "n1", "i": 100 + i}
            seq = buf.append(reading)
            expected[seq] = canonical_json(reading)
        if buf.flush():
            note_durable()
    except OSError:  # the seq reservation could not be written: append refused, power gone
        return


def _check_after_boot(log, k):
    from firmware.buffer import canonical_json
    from simulator.clock import SimClock

    buf = _buffer(SimClock())
    recs = buf.pending(1000)
    seen = {}
    last = 0
    for seq, payload in recs:
        assert seq > last, "k=%d: pending not strictly increasing at seq %d" % (k, seq)
        last = seq
        assert seq in log["expected"], "k=%d: seq %d was never appended" % (k, seq)
        assert payload == log["expected"][seq], "k=%d: seq %d payload changed" % (k, seq)
        seen[seq] = True
    for seq in log["durable"]:
        if seq not in log["acked"]:
            assert seq in seen, "k=%d: flushed seq %d lost by the cut" % (k, seq)
    stats = buf.stats()
    assert stats["torn"] == 0, "k=%d: %d torn records on littlefs" % (k, stats["torn"])
    assert stats["depth"] == len(recs), (k, stats, len(recs))
    high = max(log["expected"]) if log["expected"] else 0
    reading = {"device_id": "n1", "i": -1}
    seq = buf.append(reading)
    assert seq > high, "k=%d: seq %d reused after boot (highest before: %d)" % (k, seq, high)
    assert buf.flush(), "k=%d: flash not writable after boot" % k
    assert buf.pending(1000)[-1] == (seq, canonical_json(reading))


def _cut_every_write(mode):
    import vfs

    import firmware.buffer  # noqa: F401  compiling from source needs a big transient heap: first
    from tests.support.blockdev import RamBlockDev

    dev = RamBlockDev(512, 40)

    def fresh():
        dev.heal()
        vfs.VfsLfs2.mkfs(dev)
        vfs.mount(vfs.VfsLfs2(dev), _MOUNT)

    fresh()
    dev.fail_from(1 << 30)  # count only
    dry = {"expected": {}, "acked": {}, "durable": {}}
    _script(dry)
    total = dev.ops
    vfs.umount(_MOUNT)
    # the healthy run did it all: every reading, every segment retired, then three more
    assert len(dry["expected"]) == _READINGS + 3 and dry.get("retired"), sorted(dry)
    for seq in dry["expected"]:
        assert seq in dry["durable"] or seq in dry["acked"], seq
    cuts = 0
    for k in range(1, total + 1):
        fresh()
        dev.fail_from(k, mode)
        log = {"expected": {}, "acked": {}, "durable": {}}
        _script(log)
        cuts += dev.failed
        vfs.umount(_MOUNT)
        dev.heal()
        vfs.mount(vfs.VfsLfs2(dev), _MOUNT)
        _check_after_boot(log, k)
        vfs.umount(_MOUNT)
    assert cuts == total, (cuts, total)  # every k really cut the run
    return total


def test_power_cut_at_every_write_eio():
    _cut_every_write("eio")


def test_power_cut_at_every_write_torn():
    _cut_every_write("torn")


def test_power_cut_during_config_saves_never_loses_a_valid_config():
    """Same cut at every write, around save_config: boot always finds the old or the new one."""
    import vfs

    # config.py first: compiling it from source needs ~80 KB of heap for a moment (an .mpy
    # on the device does not); the 8 KB flash comes after
    from firmware.config import load_config, save_config
    from firmware.fs import OsFs
    from tests.support.blockdev import RamBlockDev

    dev = RamBlockDev(512, 16)
    base = {"device_id": "n1", "uplink": {"url": "mqtt://10.0.0.2"}}

    def run():
        fs = OsFs(_MOUNT)
        for interval in (30, 45, 90):
            config = dict(base)
            config["intervals"] = {"sampling_s": interval}
            try:
                save_config(fs, config)
            except OSError:
                return

    def fresh():
        dev.heal()
        vfs.VfsLfs2.mkfs(dev)
        vfs.mount(vfs.VfsLfs2(dev), _MOUNT)
        save_config(OsFs(_MOUNT), base)  # provisioned: sampling_s 60

    fresh()
    dev.fail_from(1 << 30)
    run()
    total = dev.ops
    vfs.umount(_MOUNT)
    assert total > 5, total
    for mode in ("eio", "torn"):
        for k in range(1, total + 1):
            fresh()
            dev.fail_from(k, mode)
            run()
            vfs.umount(_MOUNT)
            dev.heal()
            vfs.mount(vfs.VfsLfs2(dev), _MOUNT)
            config, problems = load_config(OsFs(_MOUNT), keep_last_good=False)
            assert config["safe_mode"] is None, (mode, k, problems)
            assert config["intervals"]["sampling_s"] in (60, 30, 45, 90), (mode, k)
            vfs.umount(_MOUNT)
