"""nbk device info | reset | shell against a virtual board."""

import json
import os
import sys
import time

from click.testing import CliRunner
from nbk.cli import main
from nbk.device import describe_mpy, shell_command
from nbk.transport import connect


def nbk(*args):
    return CliRunner().invoke(main, list(args))


def said(result):
    """The output with rich's line wrapping undone."""
    return " ".join(result.output.split())


def test_mpy_abi_decoded_from_sys_implementation():
    assert describe_mpy(0x2B06) == {"mpy": "6.3", "arch": "xtensawin"}  # ESP32
    assert describe_mpy(2822) == {"mpy": "6.3", "arch": "x64"}  # the Unix port here
    assert describe_mpy(None) == {"mpy": None, "arch": None}


def test_info_reports_what_the_board_runs(virtual_board):
    (virtual_board.root_path / "config.json").write_text('{"device_id": "node-7"}')
    result = nbk("--json", "device", "info", "--port", virtual_board.port)
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)
    assert facts["implementation"] == "micropython"
    assert facts["platform"] == "linux"
    assert facts["mpy"] == "6.3" and facts["arch"] == "x64"
    assert facts["version"].count(".") == 2
    assert 0 < facts["mem_free"] <= 96 * 1024  # the board's bounded heap, as an ESP32
    assert facts["device_id"] == "node-7"
    assert facts["port"] == virtual_board.port


def test_info_human_output_is_a_table(virtual_board):
    result = nbk("device", "info", "--port", virtual_board.port)
    assert result.exit_code == 0, result.output
    assert "implementation  micropython" in result.output


def test_soft_reset_loses_state_and_keeps_files(virtual_board):
    (virtual_board.root_path / "kept.txt").write_text("still here")
    with connect(virtual_board.port) as board:
        board.exec_code("marker = 1")
    result = nbk("--json", "device", "reset", "--port", virtual_board.port)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["confirmed"] is True
    with connect(virtual_board.port) as board:
        assert board.eval("'marker' in globals()") is False
        assert board.read_file("kept.txt") == b"still here"


def test_hard_reset_without_machine_reset_says_what_to_do(virtual_board):
    result = nbk("device", "reset", "--hard", "--port", virtual_board.port)
    assert result.exit_code == 3
    assert "no machine.reset" in said(result) and "drop --hard" in said(result)


def test_shell_opens_mpremote_repl_without_a_soft_reset():
    assert shell_command("/dev/ttyUSB0") == [
        sys.executable,
        "-m",
        "mpremote",
        "connect",
        "/dev/ttyUSB0",
        "resume",
        "repl",
    ]


def test_a_busy_port_is_reported_with_the_fix(virtual_board):
    with connect(virtual_board.port):
        result = nbk("device", "info", "--port", virtual_board.port)
    assert result.exit_code == 4
    assert "open in another program" in said(result)


def test_a_file_that_is_not_a_serial_port_says_so(tmp_path):
    not_a_port = tmp_path / "notes.txt"
    not_a_port.write_text("hello")
    result = nbk("device", "info", "--port", str(not_a_port))
    assert result.exit_code == 4
    assert "nbk: cannot open /" in said(result)
    assert "check it is the board's serial port or pass --port" in said(result)
    assert "open in another program" not in said(result)


def _running(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(") ")[1][0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def test_virtual_board_stops_every_process_it_started(tmp_path):
    from nbk.virtualboard import VirtualBoard

    board = VirtualBoard(tmp_path / "b").start()
    socat = board._socat.pid
    with open(os.path.join(board._state, "supervisor.pid")) as f:
        supervisor = int(f.read())
    assert _running(socat) and _running(supervisor)
    board.close()
    time.sleep(0.2)
    assert not _running(socat) and not _running(supervisor)
    assert not os.path.exists(board.port)


def test_the_board_directory_is_the_boards_root_and_nothing_above_it(virtual_board, tmp_path):
    outside = tmp_path / "host-file.txt"
    outside.write_text("host")
    with connect(virtual_board.port) as board:
        out = board.exec_code(
            "import os\n"
            "open('/abs.txt','w').write('a')\n"
            "os.mkdir('/d')\n"
            "os.chdir('/d')\n"
            "open('rel.txt','w').write('r')\n"
            "os.rename('/abs.txt','/d/moved.txt')\n"  # absolute rename: what firmware does
            "os.rename('rel.txt','/top.txt')\n"
            "os.chdir('/')\n"
            "print(sorted(os.listdir('/')), sorted(os.listdir('/d')))\n"
            "try:\n open(%r)\n print('reached the host')\n"
            "except OSError:\n print('confined')\n" % str(outside)
        )
    assert out.split(b"\n")[0].strip() == b"['d', 'top.txt'] ['moved.txt']"
    assert out.split(b"\n")[1].strip() == b"confined"
    assert (virtual_board.root_path / "d" / "moved.txt").read_text() == "a"
    assert (virtual_board.root_path / "top.txt").read_text() == "r"
