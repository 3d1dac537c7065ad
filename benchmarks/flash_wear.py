"""Flash wear of the store-and-forward buffer: bytes written and blocks erased per 1,000 readings.

Runs the real firmware.buffer on MicroPython's littlefs (vfs.VfsLfs2, 4096-byte blocks as on
the ESP32's flash, progsize 32 like the ESP32 port) over a RAM block device that counts what
littlefs writes and erases. Figures are ratios against the baseline measured in the same run:
flushing every reading on its own. Two link states: "down" (every reading is stored, then all
are acked when the link returns, which retires the segment files) and "up" (a transmission every
5 readings acks them, often before they reach flash).

    .venv/bin/python benchmarks/flash_wear.py      # re-runs itself on the MicroPython Unix port
"""

import sys

READINGS = 1000
BLOCK_SIZE = 4096
BLOCK_COUNT = 160  # 640 KB: holds 1,000 stored readings plus littlefs metadata
SEND_EVERY = 5  # link up: a transmission (and its acks) every 5 readings
POLICIES = (1, 4, 8, 16, 32)  # flush_every; 1 is the baseline


def _reading(i):
    """A typical neurobuild reading (about 330 bytes of canonical JSON)."""
    return {
        "device_id": "ESP32-0A1B2C3D",
        "ts_ms": 1795600000000 + i * 60000,
        "values": {
            "presence": [i % 3 == 0, "good"],
            "distance_cm": [123.4 + i % 50, "good"],
            "energy": [55 + i % 7, "good"],
            "occupancy": [0.25, "good"],
            "motion": [i % 2 == 0, "good"],
            "motion_events": [i % 4, "good"],
            "gas_ppm": [3.21 + i % 10 * 0.1, "good"],
            "temperature_c": [21.53 + i % 10 * 0.01, "good"],
            "humidity_pct": [45.12, "good"],
            "pressure_hpa": [1013.25, "good"],
        },
    }


def measure(flush_every, link_up):
    """-> (flash bytes written, blocks erased, payload bytes) for READINGS readings."""
    import vfs

    from firmware.buffer import Buffer
    from firmware.fs import OsFs
    from tests.support.blockdev import RamBlockDev

    dev = RamBlockDev(BLOCK_SIZE, BLOCK_COUNT)
    vfs.VfsLfs2.mkfs(dev)
    vfs.mount(vfs.VfsLfs2(dev, progsize=32), "/flash")
    from simulator.clock import SimClock

    clock = SimClock()
    buf = Buffer(
        OsFs("/flash"),
        capacity_records=2 * READINGS,
        segment_records=32,
        flush_every=flush_every,
        flush_age_ms=3600000,
        seq_block=64,
        clock=clock,
    )
    dev.reset_counts()
    payload = 0
    for i in range(READINGS):
        clock.advance(60000)
        buf.append(_reading(i))
        if link_up and i % SEND_EVERY == SEND_EVERY - 1:
            for seq, data in buf.pending(SEND_EVERY):
                payload += len(data)
                buf.ack(seq)
    buf.flush()
    if not link_up:
        while True:  # the link is back: everything is sent and acked
            recs = buf.pending(50)
            if not recs:
                break
            for seq, data in recs:
                payload += len(data)
                buf.ack(seq)
    result = (dev.bytes_written, dev.erases, payload)
    vfs.umount("/flash")
    return result


def run_on_micropython():
    print("Flash wear per %d readings (littlefs, %d-byte blocks)" % (READINGS, BLOCK_SIZE))
    for link_up in (False, True):
        print()
        print("link %s" % ("up: acked every %d readings" % SEND_EVERY if link_up else "down"))
        print("flush_every  KB written  erases  B/reading  x payload  vs baseline")
        base = None
        for flush_every in POLICIES:
            written, erases, payload = measure(flush_every, link_up)
            if base is None:
                base = (written, erases)
            print(
                "%11d  %10.1f  %6d  %9.0f  %9.2f  bytes %.3f, erases %.3f"
                % (
                    flush_every,
                    written / 1024,
                    erases,
                    written / READINGS,
                    written / payload,
                    written / base[0],
                    erases / base[1] if base[1] else 0.0,
                )
            )


def main():
    import os
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, root)
    from tests.support.micropython import micropython_executable

    code = "import sys; sys.path.insert(0, %r); sys.path.insert(0, %r)\n" % (
        root,
        os.path.join(root, "benchmarks"),
    )
    code += "import flash_wear; flash_wear.run_on_micropython()"
    cmd = [micropython_executable(), "-X", "heapsize=2M", "-c", code]
    return subprocess.run(cmd, check=False).returncode


if __name__ == "__main__":
    if sys.implementation.name == "micropython":
        run_on_micropython()
    else:
        sys.exit(main())
