"""`nbk boards`: the list, one board's flash map and pins, --json, and one-line errors."""

import json

from click.testing import CliRunner
from nbk.boards import list_boards, load_board
from nbk.cli import main


def nbk(*args):
    return CliRunner().invoke(main, list(args))


def test_list_names_every_board_with_its_chip_flash_and_usb_ids():
    result = nbk("--json", "boards")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["boards"]
    assert [r["name"] for r in rows] == list_boards()
    node = next(r for r in rows if r["name"] == "nb-node-v1")
    assert (node["chip"], node["flash"], node["ota"]) == ("esp32", "8MB", True)
    assert node["usb_ids"] == ["1A86:55D4", "1A86:7523"]
    human = nbk("boards", "list")
    assert human.exit_code == 0
    lines = human.output.splitlines()
    assert lines[0].split() == ["board", "chip", "flash", "ota", "usb", "ids", "description"]
    s3 = next(line for line in lines if line.startswith("esp32-s3-devkitc-1 "))
    assert s3.split()[1:5] == ["esp32s3", "8MB", "no", "303A:4001,303A:1001,10C4:EA60"]


def test_show_maps_the_whole_flash_in_order_and_says_what_nbk_writes_where():
    board = load_board("nb-node-v1")
    result = nbk("--json", "boards", "show", "nb-node-v1")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    layout = shown["layout"]
    at = 0
    for region in layout:  # contiguous from 0 to the end of flash: no overlap, no hole
        assert region["offset"] == at, region
        at += region["size"]
    assert at == board.flash_size == 8 << 20
    names = [r["name"] for r in layout]
    assert names == [
        "(unused)",
        "bootloader",
        "partition table",
        "nvs",
        "otadata",
        "phy_init",
        "ota_0",
        "ota_1",
        "vfs",
    ]
    vfs = layout[-1]
    assert (vfs["offset"], vfs["size"], vfs["subtype"]) == (0x4F0000, 0x310000, "littlefs")
    assert shown["writes"]["fs.img"] == 0x4F0000 and shown["writes"]["factory.bin"] == 0x1000
    assert shown["filesystem"]["block_count"] == 0x310000 // 4096
    assert shown["pins"] == board.pins and shown["pins"]["battery.adc"] == 35


def test_show_human_output_prints_offsets_in_hex_and_pins_by_gpio():
    result = nbk("boards", "show", "esp32-s3-devkitc-1")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    # The S3's ROM reads the bootloader at 0x0: no unused sector in front of it.
    first = lines[lines.index(next(x for x in lines if x.lstrip().startswith("offset"))) + 1]
    assert " ".join(first.split()) == (
        "0x000000 0x008000 32 KiB bootloader rom/bootloader factory.bin or firmware"
    )
    assert "0x200000  0x800000     6 MiB  vfs" in result.output
    pin_lines = lines[lines.index("pin         GPIO") + 1 :]
    gpios = [int(line.split()[1]) for line in pin_lines]
    assert gpios == sorted(gpios) and len(gpios) == len(load_board("esp32-s3-devkitc-1").pins)


def test_unknown_board_is_one_line_with_a_suggestion_and_a_json_error():
    result = nbk("boards", "show", "esp32-devkit")
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert "unknown board 'esp32-devkit'; did you mean 'esp32-devkitc'?" in line
    result = nbk("--json", "boards", "show", "esp32-devkit")
    error = json.loads(result.stdout)
    assert error["exit_code"] == 1 and "did you mean 'esp32-devkitc'" in error["error"]
