"""Block devices in RAM for `vfs.VfsLfs2` on MicroPython: counting, and failing on demand.

They speak the extended block protocol littlefs uses (`writeblocks(block, buf, off)`, ioctl 6 =
erase). A failing write returns -5 (EIO) instead of raising: littlefs handles a negative return
natively, while an exception unwinding through its C code leaves file objects whose finalisers
print stray tracebacks later (toolchain.md §3).

    dev = RamBlockDev(512, 64)
    vfs.VfsLfs2.mkfs(dev)
    dev.fail_from(12, TORN)          # the 12th write or erase and all later ones fail
"""

_IOCTL_BLOCK_COUNT = 4
_IOCTL_BLOCK_SIZE = 5
_IOCTL_ERASE = 6
_EIO = -5

EIO = "eio"  # the failing operation writes nothing and returns -5
TORN = "torn"  # the failing operation writes its first half, then returns -5


class RamBlockDev:
    """A flash chip in a bytearray; counts what littlefs does to it (for the wear benchmark)."""

    def __init__(self, block_size=512, block_count=64):
        if block_size < 128 or block_size & (block_size - 1):
            raise ValueError("block_size must be a power of two >= 128, got %r" % (block_size,))
        if block_count < 8:
            raise ValueError("block_count must be >= 8, got %r" % (block_count,))
        self.block_size = block_size
        self.block_count = block_count
        # one bytearray per block: no single large allocation in a fragmented 96K heap
        self._erased = memoryview(b"\xff" * block_size)
        self.blocks = [memoryview(bytearray(self._erased)) for _ in range(block_count)]
        self.reset_counts()
        self._fail_at = 0  # 0 = healthy; else the op number (writes + erases) that fails first
        self._mode = EIO
        self.failed = False  # set once an operation has failed: the power is gone

    def reset_counts(self):
        self.writes = 0  # writeblocks calls
        self.bytes_written = 0
        self.erases = 0
        self.ops = 0  # writes + erases: what fail_from counts

    def fail_from(self, k, mode=EIO):
        """Make the k-th write-or-erase from now on (1-based), and every later one, fail."""
        if mode not in (EIO, TORN):
            raise ValueError("mode must be EIO or TORN, got %r" % (mode,))
        self.ops = 0
        self._fail_at = k
        self._mode = mode
        self.failed = False

    def heal(self):
        """Power back on: the same bytes, every operation works again."""
        self._fail_at = 0
        self.failed = False

    def _fails(self, block, start, length, fill):
        """Count one op; on a failing one write what a torn op leaves; -> True if it failed."""
        self.ops += 1
        if not self._fail_at or self.ops < self._fail_at:
            return False
        if not self.failed and self._mode == TORN:
            half = length // 2
            src = self._erased if fill is None else fill
            self.blocks[block][start : start + half] = src[:half]
        self.failed = True
        return True

    def readblocks(self, block, buf, off=0):
        buf[:] = self.blocks[block][off : off + len(buf)]

    def writeblocks(self, block, buf, off=None):
        start = off or 0
        if self._fails(block, start, len(buf), buf):
            return _EIO
        self.blocks[block][start : start + len(buf)] = buf
        self.writes += 1
        self.bytes_written += len(buf)
        return 0

    def ioctl(self, op, arg):
        if op == _IOCTL_BLOCK_COUNT:
            return self.block_count
        if op == _IOCTL_BLOCK_SIZE:
            return self.block_size
        if op == _IOCTL_ERASE:
            if self._fails(arg, 0, self.block_size, None):
                return _EIO
            self.blocks[arg][:] = self._erased
            self.erases += 1
        return 0
