"""nbk deploy: the sync plan, and end to end on a virtual board (MicroPython Unix port on a pty)."""

import hashlib
import json
import os
import time

import pytest
from click.testing import CliRunner
from nbk.cli import main
from nbk.commands.device_cmds import _default_src
from nbk.deploy import RECORD, managed_roots, plan
from nbk.errors import NbkError
from nbk.transport import connect
from nbk.transport.base import TMP_SUFFIX, DeviceExecError

APP = {
    "main.py": b"import app.core\napp.core.run()\n",
    "app/__init__.py": b"",
    "app/core.py": b"from app.util import VALUE\ndef run():\n    print('app running', VALUE)\n",
    "app/util.py": b"VALUE = 2\n",
    "app/data/blob.bin": bytes(range(256)) * 40,  # 10 KB: spans several exec chunks
}


def write_tree(root, files):
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def nbk(*args):
    result = CliRunner().invoke(main, list(args))
    return result


def said(result):
    """The output with rich's line wrapping undone."""
    return " ".join(result.output.split())


def deploy_json(port, src, *extra):
    result = nbk("--json", "deploy", "--port", port, "--src", str(src), *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def board_files(root):
    found = {}
    for top, _dirs, names in os.walk(root):
        for name in names:
            path = os.path.join(top, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, root).replace(os.sep, "/")] = f.read()
    return found


# -- the plan (pure) ------------------------------------------------------------------------
def sha(data):
    return hashlib.sha256(data).hexdigest()


def test_plan_sends_only_changed_and_missing_files():
    local = {"main.py": sha(b"new"), "app/a.py": sha(b"same"), "app/b.py": sha(b"b")}
    device = {"main.py": (3, sha(b"old")), "app/a.py": (4, sha(b"same"))}
    actions = plan(local, device, {"app"}, ["main.py", "app"])
    assert actions["send"] == ["app/b.py", "main.py"]
    assert actions["remove"] == [] and actions["rmdir"] == [] and actions["mkdir"] == []


def test_plan_removes_stale_files_only_inside_managed_roots():
    local = {"app/a.py": sha(b"a")}
    device = {
        "app/a.py": (1, sha(b"a")),
        "app/old.py": (1, sha(b"x")),
        "app/gone/x.py": (1, sha(b"x")),
        "config.json": (2, sha(b"{}")),
    }
    actions = plan(local, device, {"app", "app/gone"}, ["app"])
    assert actions["remove"] == ["app/gone/x.py", "app/old.py"]
    assert actions["rmdir"] == ["app/gone"]
    assert actions["send"] == []


def test_plan_clears_a_file_where_a_directory_must_go():
    local = {"lib/x.py": sha(b"x")}
    actions = plan(local, {"lib": (3, sha(b"old"))}, set(), ["lib"])
    assert actions["remove"] == ["lib"]
    assert actions["mkdir"] == ["lib"]
    assert actions["send"] == ["lib/x.py"]


def test_managed_roots_stop_where_files_start():
    rels = ["main.py", "boot.py", "app/a/drivers/pir.mpy", "app/a/firmware/app.mpy"]
    # app/b (the other OTA slot) is outside every root, so a deploy never removes it.
    assert managed_roots(rels) == ["app/a/drivers", "app/a/firmware", "boot.py", "main.py"]
    assert managed_roots(["app/__init__.py", "app/x/y.py"]) == ["app"]


# -- end to end on the virtual board -----------------------------------------------------------
def test_deploy_then_the_app_runs_on_the_board(virtual_board, tmp_path):
    src = write_tree(tmp_path / "src", APP)
    result = deploy_json(virtual_board.port, src)
    assert result["sent"] == sorted(APP)
    assert result["bytes_sent"] == sum(len(d) for d in APP.values())
    on_board = board_files(virtual_board.root)
    for rel, data in APP.items():
        assert on_board[rel] == data
    assert not [p for p in on_board if p.endswith(TMP_SUFFIX)]
    with connect(virtual_board.port) as board:
        assert board.exec_code("import main") == b"app running 2\n"


def test_no_change_deploy_sends_no_file_contents(virtual_board, tmp_path):
    src = write_tree(tmp_path / "src", APP)
    deploy_json(virtual_board.port, src)
    again = deploy_json(virtual_board.port, src)
    assert again["sent"] == [] and again["removed"] == []
    assert again["bytes_sent"] == 0 and again["unchanged"] == len(APP)


def test_changed_file_sent_stale_removed_user_files_kept(virtual_board, tmp_path):
    src = write_tree(tmp_path / "src", APP)
    deploy_json(virtual_board.port, src)
    root = virtual_board.root
    with open(os.path.join(root, "config.json"), "w") as f:
        f.write('{"device_id": "keep-me"}')
    (src / "app" / "util.py").write_bytes(b"VALUE = 3\n")
    (src / "app" / "data" / "blob.bin").unlink()
    (src / "app" / "data").rmdir()
    result = deploy_json(virtual_board.port, src)
    assert result["sent"] == ["app/util.py"]
    assert result["removed"] == ["app/data/blob.bin", "app/data"]
    assert not os.path.exists(os.path.join(root, "app", "data"))
    with open(os.path.join(root, "config.json")) as f:
        assert json.load(f) == {"device_id": "keep-me"}
    with connect(virtual_board.port) as board:
        assert board.exec_code("import main") == b"app running 3\n"


def test_root_file_dropped_from_the_tree_is_removed_next_time(virtual_board, tmp_path):
    src = write_tree(tmp_path / "src", dict(APP, **{"extra.py": b"x = 1\n"}))
    deploy_json(virtual_board.port, src)
    with open(os.path.join(virtual_board.root, RECORD)) as f:
        assert "extra.py" in json.load(f)["roots"]
    (src / "extra.py").unlink()
    result = deploy_json(virtual_board.port, src)
    assert result["removed"] == ["extra.py"]
    assert not os.path.exists(os.path.join(virtual_board.root, "extra.py"))


def test_dry_run_writes_nothing(virtual_board, tmp_path):
    src = write_tree(tmp_path / "src", APP)
    result = deploy_json(virtual_board.port, src, "--dry-run")
    assert result["dry_run"] is True and result["sent"] == sorted(APP)
    assert result["bytes_sent"] == 0
    assert board_files(virtual_board.root) == {}
    # Over a deployed tree: a change and a stale file are reported, neither is acted on.
    deploy_json(virtual_board.port, src)
    before = board_files(virtual_board.root)
    (src / "app" / "util.py").write_bytes(b"VALUE = 3\n")
    (src / "app" / "data" / "blob.bin").unlink()
    result = deploy_json(virtual_board.port, src, "--dry-run")
    assert result["sent"] == ["app/util.py"]
    assert result["removed"] == ["app/data/blob.bin", "app/data"]  # the emptied directory too
    assert result["bytes_to_send"] == len(b"VALUE = 3\n") and result["bytes_sent"] == 0
    assert board_files(virtual_board.root) == before
    human = nbk("deploy", "--port", virtual_board.port, "--src", str(src), "--dry-run")
    assert human.exit_code == 0, human.output
    lines = human.output.splitlines()
    assert lines[:3] == [
        "  would send app/util.py",
        "  would remove app/data/blob.bin",
        "  would remove app/data",
    ]
    assert lines[3].startswith(
        "dry run, nothing written: would send 1 file(s), 10 bytes; would remove 2; 3 unchanged;"
    )
    assert len(lines) == 4 and board_files(virtual_board.root) == before


def test_deploy_into_a_directory_with_small_chunks_on_a_64k_heap(board_factory, tmp_path):
    board = board_factory("small", heap="64K")
    big = os.urandom(40000)
    src = write_tree(tmp_path / "src", {"lib/big.bin": big, "lib/a.py": b"A = 1\n"})
    result = deploy_json(board.port, src, "--dest", "apps/one", "--chunk-size", "1024")
    assert result["sent"] == ["apps/one/lib/a.py", "apps/one/lib/big.bin"]
    with open(os.path.join(board.root, "apps", "one", "lib", "big.bin"), "rb") as f:
        assert f.read() == big


def test_a_torn_write_never_replaces_the_old_file(virtual_board, tmp_path):
    src = write_tree(tmp_path / "src", {"keep.py": b"old = 1\n"})
    deploy_json(virtual_board.port, src)
    with connect(virtual_board.port) as board:
        board.write_files([("x.py", b"warm-up")])  # loads the device-side writer
        # Bytes that do not match the announced sha256: as if the link corrupted them.
        board.exec_code("_nbkw.o('keep.py')\n_nbkw.w(b'bmV3ID0gMgo=')")
        error = None
        try:
            board.exec_code("_nbkw.c(b'%s')" % ("0" * 64))
        except DeviceExecError as exc:
            error = exc
    assert error is not None and "hash mismatch" in str(error)
    with open(os.path.join(virtual_board.root, "keep.py"), "rb") as f:
        assert f.read() == b"old = 1\n"
    assert not os.path.exists(os.path.join(virtual_board.root, "keep.py" + TMP_SUFFIX))


def test_deployed_main_boots_after_a_reset(board_factory, tmp_path):
    board = board_factory("boots", run_main=True)
    boot_proof = b"import app.core\napp.core.run()\nopen('booted.txt', 'w').write('yes')\n"
    src = write_tree(tmp_path / "src", dict(APP, **{"main.py": boot_proof}))
    deploy_json(board.port, src)
    assert not (board.root_path / "booted.txt").exists()
    result = nbk("--json", "device", "reset", "--port", board.port)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"reset": "soft", "confirmed": True, "port": board.port}
    deadline = time.monotonic() + 10
    while not (board.root_path / "booted.txt").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (board.root_path / "booted.txt").read_text() == "yes"


def test_missing_source_and_missing_port_fail_in_one_line(tmp_path, virtual_board):
    result = nbk("deploy", "--port", virtual_board.port, "--src", str(tmp_path / "nope"))
    assert result.exit_code == 1
    assert "no application directory at" in said(result) and "--src" in said(result)
    src = write_tree(tmp_path / "src", APP)
    result = nbk("deploy", "--port", str(tmp_path / "ttyNOPE"), "--src", str(src))
    assert result.exit_code == 4
    assert "no serial port at" in said(result) and "--port" in said(result)


# A 16 KB littlefs in the board's RAM, mounted at /ram: the flash filesystem an ESP32 has.
RAMDISK = """\
import vfs
class RamDisk:
    def __init__(self, blocks):
        self.data = bytearray(blocks * 512)
        self.blocks = blocks
    def readblocks(self, n, buf, off=0):
        start = n * 512 + off
        buf[:] = self.data[start:start + len(buf)]
    def writeblocks(self, n, buf, off=0):
        start = n * 512 + off
        self.data[start:start + len(buf)] = buf
    def ioctl(self, op, arg):
        if op == 4:
            return self.blocks
        if op == 5:
            return 512
        return 0
disk = RamDisk(32)
vfs.VfsLfs2.mkfs(disk)
vfs.mount(vfs.VfsLfs2(disk), '/ram')
"""


def test_on_littlefs_updates_replace_files_and_a_full_flash_keeps_the_old_one(
    virtual_board, tmp_path
):
    with connect(virtual_board.port) as board:
        board.exec_code(RAMDISK)
    src = write_tree(tmp_path / "src", {"main.py": b"v = 1\n"})
    deploy_json(virtual_board.port, src, "--dest", "/ram")
    (src / "main.py").write_bytes(b"v = 2\n")  # rename over an existing file on littlefs
    assert deploy_json(virtual_board.port, src, "--dest", "/ram")["sent"] == ["/ram/main.py"]
    (src / "main.py").write_bytes(os.urandom(40000))  # more than the 16 KB disk holds
    result = nbk("deploy", "--port", virtual_board.port, "--src", str(src), "--dest", "/ram")
    assert result.exit_code == 1
    assert "filesystem is full" in said(result)
    with connect(virtual_board.port) as board:
        assert board.read_file("/ram/main.py") == b"v = 2\n"


def test_dest_with_dot_dot_is_refused(virtual_board, tmp_path):
    src = write_tree(tmp_path / "src", APP)
    result = nbk("deploy", "--port", virtual_board.port, "--src", str(src), "--dest", "a/../..")
    assert result.exit_code == 1 and "must not contain" in said(result)


def test_default_source_is_the_only_build_or_the_named_board(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NbkError, match="run `nbk build --board B` or pass --src"):
        _default_src(None)
    (tmp_path / "build" / "esp32-devkitc" / "app").mkdir(parents=True)
    assert _default_src(None) == os.path.join("build", "esp32-devkitc", "app")
    (tmp_path / "build" / "nb-node-v1" / "app").mkdir(parents=True)
    assert _default_src("nb-node-v1") == os.path.join("build", "nb-node-v1", "app")
    with pytest.raises(NbkError, match=r"several builds found .*--board"):
        _default_src(None)


def mpy_file(major, sub, arch_code=0):
    """The 4-byte .mpy header (py/persistentcode.c): 'M', version, sub | arch << 2, int bits."""
    return bytes([0x4D, major, sub | arch_code << 2, 31]) + b"\x00" * 12


def test_a_build_the_board_cannot_import_is_refused_before_sending(virtual_board, tmp_path):
    # The virtual board is MicroPython 1.2x on x64: .mpy v6.x, native code for x64 only.
    for files, words in (
        ({"lib/old.mpy": mpy_file(5, 0)}, "lib/old.mpy is .mpy v5 but the target"),
        (
            {"lib/native.mpy": mpy_file(6, 3, arch_code=10)},  # 10: xtensawin
            "lib/native.mpy holds native code for xtensawin but the board needs x64",
        ),
    ):
        src = write_tree(tmp_path / ("src%d" % len(words)), {"main.py": b"x = 1\n", **files})
        result = nbk("deploy", "--port", virtual_board.port, "--src", str(src))
        assert result.exit_code == 1
        (line,) = result.stderr.splitlines()
        assert "the board runs MicroPython 1." in line and words in line
        assert "nothing sent, rebuild with nbk build --micropython 1." in line
        assert board_files(virtual_board.root) == {}


def test_the_built_application_boots_from_a_deploy_up_to_the_radio(board_factory, tmp_path):
    """nbk build, deploy, provision, reset: boot.py picks slot /app/a, main.py imports the
    application's .mpy modules from it, and stops where the ESP32 hardware starts (the Unix
    port has no `network`), recording the failed boot as the firmware does on a board.
    128K heap: the same objects take about a third more room on this 64-bit port."""
    board = board_factory("node", run_main=True, heap="128K")
    built = nbk("-q", "build", "--board", "esp32-devkitc", "--out", str(tmp_path / "build"))
    assert built.exit_code == 0, built.output
    app = tmp_path / "build" / "esp32-devkitc" / "app"
    first = deploy_json(board.port, app)
    assert first["unchanged"] == 0 and first["sent"]
    assert deploy_json(board.port, app)["bytes_sent"] == 0
    provisioned = CliRunner().invoke(
        main,
        ["provision", "--port", board.port, "--device-id", "lab-node-9", "--wifi-ssid", "bench"]
        + ["--server", "mqtt://127.0.0.1:1883", "--record", str(tmp_path / "record.jsonl")],
        env={"NBK_WIFI_PASSWORD": "bench-pass-1"},
    )
    assert provisioned.exit_code == 0, provisioned.output
    assert nbk("device", "reset", "--port", board.port).exit_code == 0
    record = board.root_path / "boot.json"
    deadline = time.monotonic() + 15
    while not record.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    crash = json.loads(record.read_text())["last_crash"]
    assert crash.startswith("import: ImportError") and "'network'" in crash, crash


def test_a_long_list_is_counted_by_directory_a_short_one_listed():
    from nbk.commands.device_cmds import LIST_EACH, _listing

    few = ["main.py", "app/a/x.mpy"]
    assert _listing(few) == few
    many = ["boot.py", "main.py"] + ["app/a/drivers/d%d.mpy" % i for i in range(LIST_EACH)]
    assert _listing(many) == ["./ (2 files)", "app/a/drivers/ (%d files)" % LIST_EACH]


def test_an_error_raised_on_the_board_is_one_line_with_exit_3(virtual_board, tmp_path):
    (virtual_board.root_path / "main.py").write_text("x = 1\n")
    src = write_tree(tmp_path / "src", {"a.py": b"A = 1\n"})
    # --dest names a file: the board cannot create main.py/a.py.nbk~
    result = nbk("deploy", "--port", virtual_board.port, "--src", str(src), "--dest", "main.py")
    assert result.exit_code == 3
    (line,) = result.stderr.splitlines()
    assert line.startswith("nbk: board raised OSError: 20 (ENOTDIR, Not a directory); ")
    assert line.endswith("check the board (nbk device info, nbk monitor) and retry")
    assert (virtual_board.root_path / "main.py").read_text() == "x = 1\n"
