"""`nbk flash` at the esptool boundary: the calls it makes per board, and its advice for each
classic failure (some produced for real by esptool against a pty, the rest with esptool's own
message text)."""

import json
import os
import threading
import time

import pytest
import serial
from esptool.util import FatalError
from nbk import build as nbkbuild
from nbk import flash as nbkflash
from nbk.boards import load_board
from nbk.errors import PortError

from tests.host_tools.test_build import make_app, micropython_bin


class FakePort:
    def __init__(self):
        self.closed = False

    def close(self):
        self.closed = True


class FakeEsp:
    """What detect_chip returns: a loader for one chip on one port."""

    def __init__(self, chip_name, calls, port, stub=False):
        self.CHIP_NAME = chip_name
        self.IS_STUB = stub
        self._port = port
        self._calls = calls

    def change_baud(self, baud):
        self._calls.append(("change_baud", baud))


class FakeEsptool:
    """Stand-in for esptool.cmds: records every call; `fail` maps a function to an exception."""

    def __init__(self, chip_name="ESP32", fail=None):
        self.chip_name = chip_name
        self.fail = fail or {}
        self.calls = []
        self.port = FakePort()

    def _record(self, name, *args, **kwargs):
        self.calls.append((name, *args, *sorted(kwargs.items())))
        if name in self.fail:
            raise self.fail[name]

    def detect_chip(self, port, baud=115200, connect_attempts=7):
        self._record("detect_chip", port, baud=baud, connect_attempts=connect_attempts)
        return FakeEsp(self.chip_name, self.calls, self.port)

    def run_stub(self, esp):
        self._record("run_stub")
        return FakeEsp(esp.CHIP_NAME, self.calls, self.port, stub=True)

    def attach_flash(self, esp):
        self._record("attach_flash", esp.IS_STUB)

    def erase_flash(self, esp):
        self._record("erase_flash")

    def write_flash(self, esp, addr_data, **kwargs):
        self._record("write_flash", addr_data, **kwargs)

    def reset_chip(self, esp, reset_mode):
        self._record("reset_chip", reset_mode)

    def names(self):
        return [c[0] for c in self.calls]


@pytest.fixture
def built(tmp_path):
    """build(board, firmware=True) -> the board's build dir, made from a small app tree."""
    src = make_app(tmp_path / "src")

    def run(name, firmware=True):
        board = load_board(name)
        fw = micropython_bin(board, tmp_path)[0] if firmware else None
        nbkbuild.build(board, src, tmp_path / "build", firmware=fw)
        return board, tmp_path / "build" / name, fw

    return run


def test_flash_devkitc_writes_factory_bin_in_one_session(built):
    board, out, _ = built("esp32-devkitc")
    regions = nbkflash.flash_regions(board, out)
    assert regions == [(0x1000, out / "factory.bin")]
    api = FakeEsptool("ESP32")
    result = nbkflash.flash(board, regions, "/dev/ttyUSB0", api=api)
    assert api.calls == [
        ("detect_chip", "/dev/ttyUSB0", ("baud", 115200), ("connect_attempts", 3)),
        ("run_stub",),
        ("change_baud", 460800),
        ("attach_flash", True),  # on the stub, not the ROM loader
        ("write_flash", [(0x1000, str(out / "factory.bin"))], ("compress", True)),
        ("reset_chip", "hard-reset"),
    ]
    assert api.port.closed
    assert result["chip"] == "esp32" and result["erased"] is False
    assert result["regions"] == [
        {
            "offset": 0x1000,
            "path": str(out / "factory.bin"),
            "size": (out / "factory.bin").stat().st_size,
        }
    ]


def test_flash_esp32s3_writes_at_zero_and_erases_first_when_asked(built):
    board, out, _ = built("esp32-s3-devkitc-1")
    api = FakeEsptool("ESP32-S3")
    nbkflash.flash(
        board, nbkflash.flash_regions(board, out), "/dev/ttyACM0", erase=True, baud=921600, api=api
    )
    assert api.names() == [
        "detect_chip",
        "run_stub",
        "change_baud",
        "attach_flash",
        "erase_flash",
        "write_flash",
        "reset_chip",
    ]
    assert ("change_baud", 921600) in api.calls
    write = api.calls[api.names().index("write_flash")]
    assert write[1] == [(0x0, str(out / "factory.bin"))]


def test_flash_with_firmware_writes_it_and_the_filesystem_together(built):
    board, out, _ = built("nb-node-v1", firmware=False)
    fw = micropython_bin(board, out.parent.parent)[0]
    regions = nbkflash.flash_regions(board, out, firmware=fw)
    assert regions == [(0x1000, fw), (board.fs_offset, out / "fs.img")]
    api = FakeEsptool("ESP32")
    nbkflash.flash(board, regions, "/dev/ttyUSB1", baud=115200, api=api)
    assert "change_baud" not in api.names()  # already at the ROM's rate
    write = api.calls[api.names().index("write_flash")]
    assert write[1] == [(0x1000, str(fw)), (0x4F0000, str(out / "fs.img"))]


def test_flash_without_factory_writes_the_filesystem_only(built):
    board, out, _ = built("esp32-devkitc", firmware=False)
    assert nbkflash.flash_regions(board, out) == [(0x200000, out / "fs.img")]


def test_erase_without_firmware_is_refused_before_connecting(built):
    board, out, _ = built("esp32-devkitc", firmware=False)
    api = FakeEsptool("ESP32")
    with pytest.raises(nbkflash.FlashError, match="--erase would wipe MicroPython"):
        nbkflash.flash(
            board, nbkflash.flash_regions(board, out), "/dev/ttyUSB0", erase=True, api=api
        )
    assert api.calls == []


def test_flash_with_nothing_built_says_how_to_build(tmp_path):
    board = load_board("esp32-devkitc")
    with pytest.raises(nbkflash.FlashError, match=r"nothing to flash in .*; run nbk build --board"):
        nbkflash.flash_regions(board, tmp_path)


def test_flash_refuses_firmware_for_another_chip(built, tmp_path):
    board, out, _ = built("esp32-devkitc", firmware=False)
    other = micropython_bin(load_board("esp32-s3-devkitc-1"), tmp_path)[0]
    with pytest.raises(
        nbkbuild.BuildError, match=r"image for esp32s3 .* board esp32-devkitc is esp32"
    ):
        nbkflash.flash_regions(board, out, firmware=other)


def test_wrong_chip_is_refused_before_writing(built):
    board, out, _ = built("esp32-devkitc")
    api = FakeEsptool("ESP32-S3")
    with pytest.raises(nbkflash.WrongChipError) as err:
        nbkflash.flash(board, nbkflash.flash_regions(board, out), "/dev/ttyUSB0", api=api)
    assert str(err.value) == (
        "the chip on /dev/ttyUSB0 is ESP32-S3 but board esp32-devkitc is esp32; pass the right "
        "--board (see nbk doctor)"
    )
    assert api.names() == ["detect_chip"]  # nothing loaded, nothing written
    assert api.port.closed


# esptool's messages, as loader.py builds them (for the cases a pty cannot produce).
WRONG_BOOT = (
    "Failed to connect to ESP32: Wrong boot mode detected (0x13)! The chip needs to be in "
    "download mode.\nFor troubleshooting steps visit: https://docs.espressif.com/"
)
NO_SYNC = (
    "Failed to connect to ESP32: Download mode successfully detected, but getting no sync "
    "reply: The serial TX path seems to be down."
)
PERMISSION = (
    "Could not open /dev/ttyUSB0, the port is busy or doesn't exist.\n([Errno 13] could not "
    "open port /dev/ttyUSB0: [Errno 13] Permission denied: '/dev/ttyUSB0')\n\nHint: Try to add "
    "user into dialout or uucp group.\n"
)


@pytest.mark.parametrize(
    ("where", "exc", "kind", "advice"),
    [
        ("detect_chip", FatalError(WRONG_BOOT), nbkflash.FlashError, "boot mode 0x13"),
        ("detect_chip", FatalError(NO_SYNC), nbkflash.FlashError, "TX) line is broken"),
        ("detect_chip", FatalError(PERMISSION), PortError, "add yourself to the dialout group"),
        (
            "write_flash",
            FatalError("MD5 of file does not match data in flash!"),
            nbkflash.FlashError,
            "verification failed after writing",
        ),
        (
            "write_flash",
            serial.SerialException("device reports readiness to read but returned no data"),
            PortError,
            "stopped answering",
        ),
        ("run_stub", FatalError("Timed out waiting for packet header"), nbkflash.FlashError, ""),
        (
            "write_flash",
            FatalError("'factory.bin' is not an ESP32 image. Use --force to flash anyway."),
            nbkflash.FlashError,
            "the image is not for the ESP32 on",
        ),
    ],
)
def test_classic_failures_become_one_line_advice(built, where, exc, kind, advice):
    board, out, _ = built("esp32-devkitc")
    api = FakeEsptool("ESP32", fail={where: exc})
    with pytest.raises(kind) as err:
        nbkflash.flash(board, nbkflash.flash_regions(board, out), "/dev/ttyUSB0", api=api)
    message = str(err.value)
    assert "\n" not in message
    assert advice in message
    assert "/dev/ttyUSB0" in message
    if where == "run_stub":
        assert message == "esptool failed on /dev/ttyUSB0: Timed out waiting for packet header"
    if where != "detect_chip":
        assert api.port.closed


def test_native_usb_board_is_told_the_port_may_change(built):
    board, out, _ = built("esp32-s3-devkitc-1")
    no_data = FatalError("Failed to connect to ESP32-S3: No serial data received.")
    api = FakeEsptool("ESP32-S3", fail={"detect_chip": no_data})
    with pytest.raises(nbkflash.FlashError) as err:
        nbkflash.flash(board, nbkflash.flash_regions(board, out), "/dev/ttyACM0", api=api)
    assert str(err.value).endswith(
        "; on the esp32s3's native USB the port changes in download mode: find it with nbk doctor"
    )


def test_wrong_boot_mode_advice_says_how_to_enter_download_mode(built):
    board, out, _ = built("esp32-devkitc")
    api = FakeEsptool(fail={"detect_chip": FatalError(WRONG_BOOT)})
    with pytest.raises(nbkflash.FlashError) as err:
        nbkflash.flash(board, nbkflash.flash_regions(board, out), "/dev/ttyUSB0", api=api)
    assert str(err.value) == (
        "the chip on /dev/ttyUSB0 booted its firmware (boot mode 0x13), not the download mode: "
        "hold BOOT (GPIO0), tap EN/RST, release BOOT, then retry"
    )


# ---------------------------------------------------------------- real esptool, fake wires


@pytest.fixture
def pty():
    """A pseudo-terminal: (master fd, slave path). Nothing answers unless the test does."""
    master, slave = os.openpty()
    yield master, os.ttyname(slave)
    os.close(master)
    os.close(slave)


def _real_flash(board, out, port):
    return nbkflash.flash(board, nbkflash.flash_regions(board, out), port, connect_attempts=1)


def test_real_esptool_busy_port(built, pty):
    board, out, _ = built("esp32-devkitc")
    _, port = pty
    holder = serial.Serial(port, exclusive=True)  # a serial monitor holding the port
    try:
        with pytest.raises(PortError) as err:
            _real_flash(board, out, port)
    finally:
        holder.close()
    assert str(err.value).startswith(f"{port} is busy: another program holds it")


def test_real_esptool_port_that_does_not_exist(built):
    board, out, _ = built("esp32-devkitc")
    with pytest.raises(PortError, match="/dev/ttyNBK9 does not exist; plug the board in"):
        _real_flash(board, out, "/dev/ttyNBK9")


def test_real_esptool_no_serial_data(built, pty):
    board, out, _ = built("esp32-devkitc")
    _, port = pty
    with pytest.raises(nbkflash.FlashError) as err:
        _real_flash(board, out, port)
    assert str(err.value).startswith(f"no answer from a chip on {port} (no serial data)")


def test_real_esptool_serial_noise(built, pty):
    board, out, _ = built("esp32-devkitc")
    master, port = pty
    stop = threading.Event()

    def chatter():  # a board running its firmware, printing at the wrong moment
        while not stop.is_set():
            os.write(master, b"I (312) cpu_start: Starting scheduler\r\n")
            time.sleep(0.02)

    talker = threading.Thread(target=chatter, daemon=True)
    talker.start()
    try:
        with pytest.raises(nbkflash.FlashError) as err:
            _real_flash(board, out, port)
    finally:
        stop.set()
        talker.join()
    message = str(err.value)
    assert message.startswith(f"serial noise on {port} (")
    assert "running its firmware" in message and "hold BOOT (GPIO0), tap EN/RST" in message


def test_esptool_output_and_progress_are_routed(built, monkeypatch):
    """The default API is esptool.cmds; its log lines and progress reach our callbacks."""
    import esptool.cmds
    from esptool.logger import log

    board, out, _ = built("esp32-devkitc")
    fake = FakeEsptool("ESP32")
    for name in ("detect_chip", "run_stub", "attach_flash", "erase_flash", "reset_chip"):
        monkeypatch.setattr(esptool.cmds, name, getattr(fake, name))

    def write_flash(esp, addr_data, **kwargs):
        fake.write_flash(esp, addr_data, **kwargs)
        log.print("Compressed 4096 bytes to 64...")
        with log.progress(total=4096, unit="B") as bar:
            bar.update(2048)
            bar.update(2048)

    monkeypatch.setattr(esptool.cmds, "write_flash", write_flash)
    lines, steps = [], []
    nbkflash.flash(
        board,
        nbkflash.flash_regions(board, out),
        "/dev/ttyUSB0",
        log=lines.append,
        progress=lambda done, total, what: steps.append((done, total)),
    )
    assert fake.names()[-2:] == ["write_flash", "reset_chip"]
    assert lines == ["Compressed 4096 bytes to 64..."]
    assert steps == [(2048, 4096), (4096, 4096)]
    log.print("after")  # esptool's own logger is back once flash() returns
    assert lines == ["Compressed 4096 bytes to 64..."]


# ---------------------------------------------------------------- the command line


def test_cli_flash_json(built, monkeypatch):
    import esptool.cmds
    from click.testing import CliRunner
    from nbk.cli import main

    board, out, _ = built("esp32-devkitc")
    fake = FakeEsptool("ESP32")
    for name in ("detect_chip", "run_stub", "attach_flash", "erase_flash", "write_flash"):
        monkeypatch.setattr(esptool.cmds, name, getattr(fake, name))
    monkeypatch.setattr(esptool.cmds, "reset_chip", fake.reset_chip)
    args = ["--json", "flash", "--board", "esp32-devkitc", "--port", "/dev/ttyUSB0"]
    result = CliRunner().invoke(main, [*args, "--out", str(out.parent), "--erase"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["erased"] is True and report["baud"] == board.upload_baud
    assert report["regions"][0]["offset"] == 0x1000
    assert "erase_flash" in fake.names()


def test_cli_flash_missing_port_exit_code(built):
    from click.testing import CliRunner
    from nbk.cli import main

    _, out, _ = built("esp32-devkitc")
    args = ["flash", "--board", "esp32-devkitc", "--port", "/dev/ttyNBK9"]
    result = CliRunner().invoke(main, [*args, "--out", str(out.parent)])
    assert result.exit_code == PortError.exit_code
    assert "/dev/ttyNBK9 does not exist; plug the board in" in " ".join(result.stderr.split())


def test_esptool_logger_joins_partial_lines():
    from esptool.logger import log

    lines = []
    with nbkflash.esptool_logger(lines.append):
        log.print("Connecting...", end="")
        log.print(".", end="")
        log.print(".", end="")
        log.note("slow port")
        log.print("Chip is ESP32")
        log.print("trailing", end="")
    assert lines == ["Connecting.....", "Note: slow port", "Chip is ESP32", "trailing"]


def test_esptool_logger_nests_and_restores():
    from esptool.logger import log

    outer, inner = [], []
    with nbkflash.esptool_logger(outer.append):
        log.print("a")
        with nbkflash.esptool_logger(inner.append):
            log.warning("b")
        log.print("c")
    assert outer == ["a", "c"] and inner == ["Warning: b"]


def test_cli_flash_human_output_shows_esptool_lines_and_summary(built, monkeypatch):
    import esptool.cmds
    from click.testing import CliRunner
    from esptool.logger import log
    from nbk.cli import main

    _, out, _ = built("esp32-s3-devkitc-1")
    fake = FakeEsptool("ESP32-S3")
    for name in ("detect_chip", "run_stub", "attach_flash", "erase_flash", "reset_chip"):
        monkeypatch.setattr(esptool.cmds, name, getattr(fake, name))

    def write_flash(esp, addr_data, **kwargs):
        fake.write_flash(esp, addr_data, **kwargs)
        log.print("Flash will be erased from 0x00000000 to 0x007fffff...")
        for _ in addr_data:  # one bar per region, as esptool draws them
            with log.progress(total=1000, unit="B") as bar:
                bar.update(1000)
        log.print("Hash of data verified.")

    monkeypatch.setattr(esptool.cmds, "write_flash", write_flash)
    args = ["flash", "-b", "esp32-s3-devkitc-1", "-p", "/dev/ttyACM0", "--out", str(out.parent)]
    result = CliRunner().invoke(main, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"{out / 'factory.bin'} -> 0x0 on /dev/ttyACM0"
    assert "Flash will be erased from 0x00000000 to 0x007fffff..." in lines
    assert "Hash of data verified." in lines
    size = (out / "factory.bin").stat().st_size
    assert lines[-1].startswith(f"Flashed {size} bytes to esp32-s3-devkitc-1 (esp32s3) on ")
    assert lines[-1].endswith("s; verified and reset.")
    quiet = CliRunner().invoke(main, ["-q", *args], env={"COLUMNS": "200"})
    assert quiet.exit_code == 0
    # --quiet: the result line only, no esptool chatter
    assert len(quiet.stdout.splitlines()) == 1
    assert quiet.stdout.startswith(f"Flashed {size} bytes to esp32-s3-devkitc-1")
