"""File operations on a MicroPython board, built only on `exec` of device code.

A link (serial today) implements `exec_code` and `close`; everything here is plain device-side
Python sent over the raw REPL, the way mpremote's `Transport` builds its `fs_*` calls. What we
add: whole-tree hashing in one round trip, several files per exec, base64 payloads decoded on
the device with `binascii.a2b_base64`, and writes that are verified (sha256) before an atomic
`os.rename` over the old file.

Device paths are relative to the board's working directory ("/" on an ESP32 at boot and on
the virtual board), and reach device code only through `repr()`.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from nbk.errors import DeviceError


class DeviceExecError(DeviceError):
    """Device code raised: `traceback` holds the board's text, the message its last line."""

    def __init__(self, message: str, traceback: str = "") -> None:
        super().__init__(message)
        self.traceback = traceback


TMP_SUFFIX = ".nbk~"
DEFAULT_CHUNK = 4096  # raw bytes per exec: ~5.5 KB of source, safe on a 96 KB heap

# Prelude for writes, sent once per session. `_nbkw.c` compares the sha256 of what reached the
# flash with the host's before the rename, so a torn transfer never replaces a good file.
# FAT refuses to rename onto an existing name (littlefs replaces it), hence the fallback.
_WRITER = """\
import os,hashlib
from binascii import a2b_base64,hexlify
class _NbkW:
 def o(s,p):
  s.p=p;s.f=open(p+%(tmp)r,'wb');s.h=hashlib.sha256()
 def w(s,b):
  b=a2b_base64(b);s.h.update(b);s.f.write(b)
 def c(s,x):
  s.f.close();t=s.p+%(tmp)r
  if hexlify(s.h.digest())!=x:
   os.remove(t);raise OSError('nbk: hash mismatch '+s.p)
  try:os.rename(t,s.p)
  except OSError:os.remove(s.p);os.rename(t,s.p)
_nbkw=_NbkW()
""" % {"tmp": TMP_SUFFIX}

# Walks the given roots and prints one line per entry: "F\\t<size>\\t<sha256>\\t<path>" or
# "D\\t\\t\\t<path>". One 512-byte buffer for every file: nothing grows with the tree.
_SCAN = """\
import os,hashlib
from binascii import hexlify
def _nbks(roots):
 b=bytearray(512);m=memoryview(b);st=list(roots)
 while st:
  p=st.pop()
  try:s=os.stat(p)
  except OSError:continue
  if s[0]&0x4000:
   print('D\\t\\t\\t'+p)
   for e in os.ilistdir(p):
    st.append(p+'/'+e[0])
  else:
   h=hashlib.sha256()
   with open(p,'rb') as f:
    while 1:
     n=f.readinto(b)
     if not n:break
     h.update(m[:n])
   print('F\\t%d\\t%s\\t%s'%(s[6],hexlify(h.digest()).decode(),p))
"""


class Transport:
    """A board reached through `exec_code`; subclasses supply the link."""

    def __init__(self) -> None:
        self._writer_ready = False

    # -- the link: subclasses implement these -------------------------------------------
    def exec_code(self, code: str, timeout: float = 10.0) -> bytes:
        """Run `code` on the board; return its stdout bytes. Raises DeviceError on a traceback."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- operations ------------------------------------------------------------------------
    def eval(self, expression: str, timeout: float = 10.0) -> Any:
        """Evaluate a Python literal expression on the board and return its value."""
        out = self.exec_code("print(repr(%s))" % expression, timeout=timeout)
        try:
            return _literal(out.decode().strip())
        except (ValueError, SyntaxError) as exc:
            raise DeviceError(
                "board answered %r to %s, not a Python literal; is this a MicroPython board?"
                % (out[:80], expression)
            ) from exc

    def scan(
        self, roots: Iterable[str], timeout: float = 30.0
    ) -> tuple[dict[str, tuple[int, str]], set[str]]:
        """Hash every file under `roots` on the board in one round trip.

        Returns ({path: (size, sha256 hex)}, set of directory paths). Missing roots are skipped.
        """
        roots = [r for r in roots if r]
        if not roots:
            return {}, set()
        code = _SCAN + "_nbks(%r)\ndel _nbks" % (roots,)
        out = self.exec_code(code, timeout=timeout).decode()
        files: dict[str, tuple[int, str]] = {}
        dirs: set[str] = set()
        for line in out.splitlines():
            kind, size, digest, path = line.rstrip("\r").split("\t", 3)
            if kind == "D":
                dirs.add(path)
            else:
                files[path] = (int(size), digest)
        return files, dirs

    def makedirs(self, paths: Iterable[str], timeout: float = 10.0) -> None:
        """Create the directories `paths` (parents first), ignoring ones that exist."""
        if not paths:
            return
        ordered = sorted(set(paths), key=lambda p: p.count("/"))
        code = "import os\nfor p in %r:\n try:os.mkdir(p)\n except OSError:pass\n" % (ordered,)
        self.exec_code(code, timeout=timeout)

    def remove(
        self, files: Iterable[str] = (), dirs: Iterable[str] = (), timeout: float = 10.0
    ) -> None:
        """Remove `files`, then the directories `dirs` deepest first (each must end up empty)."""
        file_list = list(files)
        dir_list = sorted(dirs, key=lambda p: -p.count("/"))
        if not file_list and not dir_list:
            return
        code = "import os\nfor p in %r:\n os.remove(p)\nfor p in %r:\n os.rmdir(p)\n" % (
            file_list,
            dir_list,
        )
        self.exec_code(code, timeout=timeout)

    def write_files(
        self,
        items: Sequence[tuple[str, bytes]],
        chunk: int = DEFAULT_CHUNK,
        progress: Callable[[int, int], None] | None = None,
        timeout: float = 30.0,
    ) -> int:
        """Write [(path, data bytes)] atomically, several small files per exec.

        Each file goes to `path + TMP_SUFFIX`, is checked against its sha256 on the board, then
        renamed over `path`. `progress(done_bytes, total_bytes)` is called after each exec.
        Returns the number of payload bytes sent.
        """
        if chunk < 64:
            raise ValueError("chunk %d is too small; use at least 64 bytes" % chunk)
        if not self._writer_ready:
            self.exec_code(_WRITER, timeout=timeout)
            self._writer_ready = True
        total = sum(len(data) for _, data in items)
        done = 0
        lines: list[str] = []
        budget = 0
        for path, data in items:
            lines.append("_nbkw.o(%r)" % path)
            offset = 0
            while True:
                piece = data[offset : offset + max(0, chunk - budget)]
                if piece:
                    lines.append("_nbkw.w(%r)" % base64.b64encode(piece))
                    offset += len(piece)
                    budget += len(piece)
                    done += len(piece)
                if offset >= len(data):
                    break
                # This exec is full: flush it and keep the file open for the next one.
                self.exec_code("\n".join(lines), timeout=timeout)
                lines, budget = [], 0
                if progress:
                    progress(done, total)
            lines.append("_nbkw.c(%r)" % hashlib.sha256(data).hexdigest().encode())
            budget += 64  # the open/close lines cost a little source too
            if budget >= chunk:
                self.exec_code("\n".join(lines), timeout=timeout)
                lines, budget = [], 0
                if progress:
                    progress(done, total)
        if lines:
            self.exec_code("\n".join(lines), timeout=timeout)
            if progress:
                progress(done, total)
        return total

    def read_file(self, path: str, timeout: float = 10.0) -> bytes:
        """Return the bytes of a (small) file on the board; DeviceError if it is missing."""
        code = (
            "from binascii import b2a_base64\n"
            "with open(%r,'rb') as f:\n while 1:\n  b=f.read(384)\n  if not b:break\n"
            "  print(b2a_base64(b).decode().strip())\n" % path
        )
        out = self.exec_code(code, timeout=timeout)
        return b"".join(base64.b64decode(line) for line in out.split())

    def read_json(self, path: str, timeout: float = 10.0) -> Any:
        """Read and parse a JSON file on the board."""
        raw = self.read_file(path, timeout=timeout)
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise DeviceError(
                "%s on the board is not valid JSON (%s); re-provision it" % (path, exc)
            ) from exc


def _literal(text: str) -> Any:
    return ast.literal_eval(text)
