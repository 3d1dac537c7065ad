"""LD2410 report parsing: frames per second and heap allocations per frame, against a naive
parser (slices + struct.unpack per frame) measured in the same run.

    .venv/bin/python benchmarks/ld2410_parse.py        # CPython, then the MicroPython Unix port
    .venv/bin/micropython benchmarks/ld2410_parse.py   # the Unix port only

The stream is half basic, half engineering reports, delivered in 64-byte reads like a UART
poll. Allocation is counted on MicroPython (micropython.mem_total deltas, else gc.mem_alloc
with the collector off); the target for the driver is 0 bytes per frame.
"""

import sys

IS_MICROPYTHON = sys.implementation.name == "micropython"
# Run as a script on either interpreter: the repository root is this file's parent directory.
sys.path.insert(0, (__file__.rsplit("/", 1)[0] if "/" in __file__ else ".") + "/..")

import gc  # noqa: E402
import struct  # noqa: E402

from drivers.ld2410 import LD2410  # noqa: E402

if IS_MICROPYTHON:
    from time import ticks_diff, ticks_us

    import micropython

    def now_us():
        return ticks_us()

    def elapsed_us(start):
        return ticks_diff(ticks_us(), start)

else:
    import time

    def now_us():
        return time.perf_counter_ns() // 1000

    def elapsed_us(start):
        return now_us() - start


BASIC = bytes.fromhex("f4f3f2f10d0002aa034f00644c006432005500f8f7f6f5")
ENGINEERING = bytes.fromhex(
    "f4f3f2f1230001aa031e003c000039000008083c220503030403060500003910130606080460015500f8f7f6f5"
)
FRAMES_PER_STREAM = 40
STREAM = (BASIC + ENGINEERING) * (FRAMES_PER_STREAM // 2)
# How the bytes arrive: one report per read (polling at the report rate), or fixed 64-byte
# reads that cut most frames in two.
DELIVERIES = (("one frame per read", (len(BASIC), len(ENGINEERING))), ("64-byte reads", (64,)))


def chunks(sizes):
    """STREAM cut as the UART would deliver it (made once: the parsers' cost is measured,
    not the copying a real UART does in C)."""
    out = []
    pos = 0
    k = 0
    while pos < len(STREAM):
        size = sizes[k % len(sizes)]
        out.append(STREAM[pos : pos + size])
        pos += size
        k += 1
    return out


class Driver:
    """Our parser, fed each read as poll() feeds it."""

    def __init__(self, reads):
        self.reads = reads
        self.radar = LD2410(None)

    def run(self):
        reads = self.reads
        radar = self.radar
        n = 0
        i = 0
        while i < len(reads):  # no iterator, no bound method: nothing to allocate
            n += radar.feed(reads[i])
            i += 1
        return n


class Naive:
    """What a first attempt looks like: concatenate, find the header, slice, struct.unpack."""

    def __init__(self, reads):
        self.reads = reads
        self.pending = b""
        self.last = None

    def run(self):
        n = 0
        for data in self.reads:
            buf = self.pending + data
            while True:
                i = buf.find(b"\xf4\xf3\xf2\xf1")
                if i < 0 or len(buf) < i + 6:
                    break
                length = struct.unpack("<H", buf[i + 4 : i + 6])[0]
                end = i + 10 + length
                if len(buf) < end:
                    break
                frame = buf[i:end]
                buf = buf[end:]
                if frame[-4:] == b"\xf8\xf7\xf6\xf5" and frame[7] == 0xAA:
                    fields = struct.unpack("<BHBHBH", frame[8:17])
                    gates = list(frame[19:28]) if frame[6] == 1 else None
                    self.last = (fields, gates)
                    n += 1
            self.pending = buf[i:] if i >= 0 else buf[-3:]
        return n


def frames_per_second(parser, budget_us=150000):
    parser.run()  # warm-up
    frames = 0
    start = now_us()
    while True:
        frames += parser.run()
        spent = elapsed_us(start)
        if spent >= budget_us:
            return frames * 1000000 // spent


def best_of(ours, base, rounds=3):
    """Best rate of each over alternating short runs: a shared machine's noise hits both."""
    fps = base_fps = 0
    for _ in range(rounds):
        fps = max(fps, frames_per_second(ours))
        base_fps = max(base_fps, frames_per_second(base))
    return fps, base_fps


def allocated_per_frame(parser, rounds=5):
    """GC-heap bytes allocated per frame on MicroPython (collector off while counting)."""
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    frames = 0
    for _ in range(rounds):
        frames += parser.run()
    used = gc.mem_alloc() - before
    gc.enable()
    return used / frames


def heap_locked_ok(parser):
    """True when a whole stream parses with the heap locked (any allocation raises)."""
    micropython.heap_lock()
    try:
        parser.run()
        return True
    except MemoryError:
        return False
    finally:
        micropython.heap_unlock()


def measure():
    if IS_MICROPYTHON:
        version = ".".join(str(v) for v in sys.implementation.version[:3])
        print("MicroPython %s, Unix port" % version)
    else:
        print("CPython %s" % sys.version.split()[0])
    for label, sizes in DELIVERIES:
        reads = chunks(sizes)
        ours = Driver(reads)
        base = Naive(reads)
        if ours.run() != FRAMES_PER_STREAM or base.run() != FRAMES_PER_STREAM:
            raise SystemExit("benchmark stream did not parse to %d frames" % FRAMES_PER_STREAM)
        fps, base_fps = best_of(ours, base)
        print("  %s:" % label)
        print(
            "    driver %7d frames/s, naive %7d frames/s: ratio %.2f"
            % (fps, base_fps, fps / base_fps)
        )
        if IS_MICROPYTHON:
            a = allocated_per_frame(ours)
            b = allocated_per_frame(base)
            locked = "yes" if heap_locked_ok(ours) else "NO"
            print(
                "    allocated per frame: driver %.1f bytes (target 0), naive %.1f bytes" % (a, b)
            )
            print("    driver parses with the heap locked: %s" % locked)


def main():
    measure()
    if not IS_MICROPYTHON:
        import os
        import subprocess

        micropython_bin = os.path.join(os.path.dirname(sys.executable), "micropython")
        if not os.path.exists(micropython_bin):
            print(
                "MicroPython Unix port not found beside %s: run `make test` first" % sys.executable
            )
            return 1
        result = subprocess.run(
            [micropython_bin, "-X", "heapsize=512K", os.path.abspath(__file__)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        sys.stdout.write(result.stdout)
        if result.returncode:
            sys.stdout.write(result.stderr)
            return result.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
