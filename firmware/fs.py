"""The filesystem the firmware writes to: `os`/`open` under one root directory.

Storage code (buffer, config) takes an object with exactly these methods, so a test or the fleet
simulator can pass an in-memory filesystem, and a test on MicroPython can pass a root on a
`vfs.VfsLfs2` mount over a block device that fails on demand.

    fs = OsFs("/flash")          # on the board: OsFs("") is the littlefs root
    with fs.open("config.json", "w") as f:
        f.write("{}")
"""

import os


class OsFs:
    """Paths are relative to `root` ("" = the current directory); "/" separates parts."""

    def __init__(self, root=""):
        if root not in ("", "/"):
            root = root.rstrip("/")
        self._root = root or "."
        self._prefix = "" if root == "" else ("/" if root == "/" else root + "/")

    def path(self, name):
        """The path the interpreter sees for `name`."""
        return self._prefix + name

    def open(self, name, mode="r"):
        return open(self._prefix + name, mode)

    def rename(self, src, dst):
        """Replace `dst` by `src` in one step (littlefs and POSIX rename replace a file)."""
        os.rename(self._prefix + src, self._prefix + dst)

    def remove(self, name):
        os.remove(self._prefix + name)

    def listdir(self, name=""):
        return os.listdir(self._prefix + name if name else self._root)

    def mkdir(self, name):
        os.mkdir(self._prefix + name)

    def exists(self, name):
        try:
            os.stat(self._prefix + name)
        except OSError:
            return False
        return True

    def size(self, name):
        """Size in bytes; OSError(ENOENT) when missing."""
        return os.stat(self._prefix + name)[6]

    def sync(self):
        """Push OS buffers to storage where the port has `os.sync` (littlefs commits on close)."""
        sync = getattr(os, "sync", None)
        if sync is not None:
            sync()
