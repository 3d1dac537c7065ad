"""Port selection: --port wins, then $NBK_PORT, then the one known USB bridge; never a guess."""

import pytest
from nbk.errors import PortError
from nbk.ports import KNOWN_BRIDGES, ask_which, candidates, select_port


class Info:
    """What serial.tools.list_ports.comports() yields, reduced to what we read."""

    def __init__(self, device, vid=None, pid=None):
        self.device, self.vid, self.pid = device, vid, pid


def listing(*infos):
    return lambda: list(infos)


def test_every_bridge_in_the_brief_is_known():
    wanted = {
        (0x10C4, 0xEA60),
        (0x1A86, 0x7523),
        (0x1A86, 0x55D4),
        (0x0403, 0x6001),
        (0x0403, 0x6010),
        (0x0403, 0x6011),
        (0x0403, 0x6014),
        (0x0403, 0x6015),
        (0x303A, 0x1001),
        (0x303A, 0x4001),
    }
    assert set(KNOWN_BRIDGES) == wanted


def test_only_known_usb_ids_are_candidates():
    ports = listing(
        Info("/dev/ttyS0"),  # a motherboard UART: no USB id
        Info("/dev/ttyACM0", 0x2341, 0x0043),  # an Arduino Uno
        Info("/dev/ttyUSB0", 0x1A86, 0x7523),
    )
    assert candidates(ports) == [("/dev/ttyUSB0", "WCH CH340 1A86:7523")]
    assert select_port(None, ports, environ={}) == "/dev/ttyUSB0"


def test_explicit_port_wins_over_environment_and_discovery():
    ports = listing(Info("/dev/ttyUSB0", 0x10C4, 0xEA60))
    assert select_port("/dev/ttyX", ports, environ={"NBK_PORT": "/dev/ttyY"}) == "/dev/ttyX"
    assert select_port(None, ports, environ={"NBK_PORT": "/dev/ttyY"}) == "/dev/ttyY"


def test_several_boards_raise_an_error_listing_them():
    ports = listing(Info("/dev/ttyUSB1", 0x10C4, 0xEA60), Info("/dev/ttyACM0", 0x303A, 0x1001))
    with pytest.raises(PortError) as caught:
        select_port(None, ports, environ={})
    message = str(caught.value)
    assert "/dev/ttyACM0 (Espressif USB-Serial/JTAG 303A:1001)" in message
    assert "/dev/ttyUSB1 (Silicon Labs CP210x 10C4:EA60)" in message
    assert "--port" in message
    assert caught.value.exit_code == 4


def test_no_board_names_the_fix():
    with pytest.raises(PortError) as caught:
        select_port(None, listing(Info("/dev/ttyS0")), environ={})
    assert "no ESP32 board found" in str(caught.value) and "--port" in str(caught.value)


def answers(*replies):
    """A stand-in for the terminal: hands out `replies` in turn, then end of input ("")."""
    queue = list(replies)
    asked = []

    def read(prompt):
        asked.append(prompt)
        return queue.pop(0) if queue else ""

    return read, asked


def test_several_boards_on_a_terminal_become_a_numbered_question():
    ports = listing(Info("/dev/ttyUSB1", 0x10C4, 0xEA60), Info("/dev/ttyACM0", 0x303A, 0x1001))
    shown = []
    read, asked = answers("3", "two", "2\n")

    def ask(found):
        return ask_which(found, read=read, write=shown.append)

    assert select_port(None, ports, environ={}, ask=ask) == "/dev/ttyUSB1"
    text = "".join(shown)
    assert "1) /dev/ttyACM0 (Espressif USB-Serial/JTAG 303A:1001)" in text
    assert "2) /dev/ttyUSB1 (Silicon Labs CP210x 10C4:EA60)" in text
    assert asked == ["Which one [1-2]? "] * 3  # "3" and "two" were asked again
    assert text.count("answer with a number from 1 to 2") == 2


def test_the_question_takes_a_port_name_and_gives_up_at_end_of_input():
    found = [("/dev/ttyACM0", "a"), ("/dev/ttyUSB1", "b")]
    read, _ = answers("/dev/ttyUSB1\n")
    assert ask_which(found, read=read, write=lambda s: None) == "/dev/ttyUSB1"
    read, _ = answers()
    with pytest.raises(PortError) as caught:
        ask_which(found, read=read, write=lambda s: None)
    assert "no board chosen among /dev/ttyACM0, /dev/ttyUSB1; pass --port" in str(caught.value)


def test_one_board_is_taken_without_asking():
    def never(found):
        raise AssertionError("asked with one candidate")

    ports = listing(Info("/dev/ttyUSB0", 0x0403, 0x6015))
    assert select_port(None, ports, environ={}, ask=never) == "/dev/ttyUSB0"


def test_cli_port_error_in_json_is_a_document_and_exit_4(tmp_path):
    import json

    from click.testing import CliRunner
    from nbk.cli import main

    result = CliRunner().invoke(
        main, ["--json", "device", "info", "--port", str(tmp_path / "ttyNONE")]
    )
    assert result.exit_code == 4
    error = json.loads(result.stdout)
    assert error["exit_code"] == 4 and "no serial port at" in error["error"]
    assert len(result.stderr.splitlines()) == 1
