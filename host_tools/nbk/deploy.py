"""Sync an application tree onto a board: hash on the device, send only what changed.

One exec hashes every file the deploy manages (device-side sha256), then stale files go, new
directories appear, and changed files are written atomically (temp name, sha256 check, rename)
several per exec. A record on the board (`.nbk-deploy.json`) lists the roots the last deploy
managed, so a stale file is only ever removed inside what nbk manages: a user's `config.json`
beside the app, or an OTA slot `app/b` beside the deployed `app/a`, is never touched.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from nbk.errors import NbkError
from nbk.mpy import MpyError, check_loadable, decode_sys_mpy, read_header
from nbk.transport.base import DEFAULT_CHUNK, TMP_SUFFIX, DeviceExecError, Transport

RECORD = ".nbk-deploy.json"
_SKIP_DIRS = {"__pycache__"}


def read_tree(src: str) -> dict[str, bytes]:
    """Return {relative posix path: bytes} for the files under `src` (no dotfiles, caches)."""
    if not os.path.isdir(src):
        raise NbkError(
            "no application directory at %s; run `nbk build` first or pass --src DIR" % src
        )
    files = {}
    for top, dirs, names in os.walk(src):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
        for name in sorted(names):
            if name.startswith(".") or name.endswith(TMP_SUFFIX):
                continue
            path = os.path.join(top, name)
            rel = os.path.relpath(path, src).replace(os.sep, "/")
            with open(path, "rb") as f:
                files[rel] = f.read()
    if not files:
        raise NbkError("%s holds no files to deploy; run `nbk build` or pass --src DIR" % src)
    return files


def _parents(path: str) -> list[str]:
    parts = path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def managed_roots(rels: Iterable[str]) -> list[str]:
    """The subtrees a deploy of `rels` owns: for each file, the shortest directory prefix that
    holds a file itself, else the file. A tree of main.py + app/a/pkg/x.mpy owns main.py and
    app/a/pkg, not app: a sibling app/b (the other OTA slot) is left alone."""
    rels = list(rels)
    dirs_with_files = {rel.rsplit("/", 1)[0] for rel in rels if "/" in rel}
    roots = set()
    for rel in rels:
        parents = _parents(rel)
        roots.add(next((p for p in parents if p in dirs_with_files), rel))
    return sorted(roots)


def _join(dest: str, rel: str) -> str:
    return dest.rstrip("/") + "/" + rel if dest else rel


def plan(
    local_hashes: dict[str, str],
    device_files: dict[str, tuple[int, str]],
    device_dirs: set[str],
    roots: Iterable[str],
    dest: str = "",
) -> dict[str, list[str]]:
    """Decide what to send and remove. Pure: hashes in, lists of device paths out.

    local_hashes: {rel path: sha256 hex}; device_files: {device path: (size, sha256 hex)};
    device_dirs: set of device paths; managed_roots: subtrees this deploy owns (relative).
    """
    want_files = {_join(dest, rel): digest for rel, digest in local_hashes.items()}
    want_dirs = {_join(dest, d) for rel in local_hashes for d in _parents(rel)}
    managed = {_join(dest, r) for r in roots}

    def is_managed(path: str) -> bool:
        return any(path == m or path.startswith(m + "/") for m in managed)

    send = sorted(p for p, d in want_files.items() if device_files.get(p, (0, None))[1] != d)
    stale = sorted(p for p in device_files if p not in want_files and is_managed(p))
    # A directory where a file must go (or the other way round) is cleared first.
    stale += sorted(p for p in device_files if p in want_dirs)
    stale_dirs = sorted(d for d in device_dirs if d not in want_dirs and is_managed(d))
    # Parents of what is sent; ones outside the scanned roots (e.g. "app" above "app/a/pkg")
    # may exist already, and makedirs ignores those.
    make = sorted({d for p in send for d in _parents(p)} - device_dirs)
    return {"send": send, "remove": sorted(set(stale)), "rmdir": stale_dirs, "mkdir": make}


def deploy(
    transport: Transport,
    src: str,
    dest: str = "",
    dry_run: bool = False,
    chunk: int = DEFAULT_CHUNK,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Make `dest` on the board hold exactly the tree at `src`; return what was done.

    progress(done_bytes, total_bytes) is called while files are written.
    """
    started = time.monotonic()
    if any(part in (".", "..") for part in dest.split("/")):
        raise NbkError("--dest %r must not contain '.' or '..'; name the directory plainly" % dest)
    tree = read_tree(src)
    check_board_loads(transport, tree)
    local_hashes = {rel: hashlib.sha256(data).hexdigest() for rel, data in tree.items()}
    roots_now = managed_roots(tree)
    record_path = _join(dest, RECORD)
    previous = _read_record(transport, record_path)
    managed = sorted(set(roots_now) | set(previous))
    device_files, device_dirs = transport.scan([_join(dest, r) for r in managed])
    actions = plan(local_hashes, device_files, device_dirs, managed, dest)
    sent_bytes = sum(len(tree[_rel(p, dest)]) for p in actions["send"])
    result: dict[str, Any] = {
        "src": src,
        "dest": dest or ".",
        "dry_run": dry_run,
        "files": len(tree),
        "unchanged": len(tree) - len(actions["send"]),
        "sent": actions["send"],
        "removed": actions["remove"] + actions["rmdir"],
        "bytes_sent": 0 if dry_run else sent_bytes,
        "bytes_to_send": sent_bytes,
    }
    if not dry_run:
        transport.remove(actions["remove"], actions["rmdir"])
        transport.makedirs(actions["mkdir"])
        items = [(p, tree[_rel(p, dest)]) for p in actions["send"]]
        if items:
            try:
                transport.write_files(items, chunk=chunk, progress=progress)
            except DeviceExecError as exc:
                # littlefs reports a full flash as OSError 28 (no errno.ENOSPC on MicroPython)
                if "28" in exc.traceback.splitlines()[-1] or "ENOSPC" in exc.traceback:
                    raise NbkError(
                        "the board's filesystem is full (%s); free space (nbk device info shows "
                        "fs_free) or make the application smaller" % exc
                    ) from None
                raise
        if sorted(previous) != roots_now:
            transport.write_files([(record_path, json.dumps({"roots": roots_now}).encode())])
    result["seconds"] = round(time.monotonic() - started, 3)
    return result


_BOARD_MPY = (
    "import sys\n"
    "print(repr((getattr(sys.implementation,'_mpy',None),"
    "'.'.join(str(v) for v in sys.implementation.version[:3]))))"
)


def check_board_loads(transport: Transport, tree: dict[str, bytes]) -> None:
    """Refuse, before anything is sent, .mpy files the board's MicroPython cannot import: the
    application would only fail at its next boot, far from the bench (mpy.check_loadable)."""
    headers = {}
    for rel, data in tree.items():
        if rel.endswith(".mpy"):
            try:
                headers[rel] = read_header(data)
            except MpyError as exc:
                raise NbkError("%s in the build: %s; rebuild with nbk build" % (rel, exc)) from None
    if not headers:
        return
    value, version = _ask_mpy(transport)
    if value is None:
        raise NbkError(
            "the board's MicroPython %s cannot load .mpy files; deploy the .py sources instead"
            % version
        )
    major, sub, arch = decode_sys_mpy(value)
    for rel, header in sorted(headers.items()):
        try:
            check_loadable(header, (major, sub), arch, rel)
        except MpyError as exc:
            what = str(exc).split("; ")[0]  # the fact; the fix for nbk users follows
            raise NbkError(
                "the board runs MicroPython %s and cannot load this build: %s; nothing sent, "
                "rebuild with nbk build --micropython %s" % (version, what, version)
            ) from None


def _ask_mpy(transport: Transport) -> tuple[int | None, str]:
    out = transport.exec_code(_BOARD_MPY).decode().strip()
    try:
        value, version = ast.literal_eval(out)
    except (ValueError, SyntaxError, TypeError):
        raise NbkError(
            "board answered %r when asked for its .mpy version; is it running MicroPython?"
            % out[:80]
        ) from None
    return value, version


def _rel(path: str, dest: str) -> str:
    return path[len(dest.rstrip("/")) + 1 :] if dest else path


def _read_record(transport: Transport, path: str) -> list[str]:
    """Top-level names the previous deploy owned ([] on a fresh board)."""
    try:
        record = json.loads(transport.read_file(path))
    except DeviceExecError as exc:
        if "ENOENT" in exc.traceback or "Errno 2" in exc.traceback:
            return []
        raise
    except ValueError:
        return []  # a torn or foreign record: manage only what this tree holds
    roots = record.get("roots") if isinstance(record, dict) else None
    if not isinstance(roots, list):
        return []
    # Never trust a path from the board: relative, no "." or ".." parts, never the record.
    return [r for r in roots if isinstance(r, str) and r != RECORD and _safe_path(r)]


def _safe_path(path: str) -> bool:
    return all(part not in ("", ".", "..") for part in path.split("/"))
