"""Board files load, describe the hardware correctly, refuse broken wiring, and match PlatformIO."""

import configparser
import json
from pathlib import Path

import pytest
from nbk.boards import BOARDS_DIR, BoardError, list_boards, load_board
from nbk.errors import NbkError

REPO = Path(__file__).resolve().parents[2]


def _variant(tmp_path, board, old, new, name=None):
    """A copy of boards/<board>.toml with one text edit, so each test breaks exactly one thing."""
    text = (BOARDS_DIR / (board + ".toml")).read_text()
    assert old in text, "test setup: %r not in %s" % (old, board)
    path = tmp_path / ((name or board) + ".toml")
    path.write_text(text.replace(old, new, 1))
    return path


def _error(path):
    with pytest.raises(BoardError) as info:
        load_board(path)
    return info.value


# --- the shipped boards ---------------------------------------------------------------------


def test_list_boards_names_every_file():
    assert list_boards() == ["esp32-devkitc", "esp32-s3-devkitc-1", "nb-node-v1"]


def test_esp32_devkitc_layout_matches_micropython_4mib_table():
    b = load_board("esp32-devkitc")
    assert (b.name, b.chip, b.flash_size) == ("esp32-devkitc", "esp32", 4 * 1024 * 1024)
    assert b.flash_size_name == "4MB" and (b.flash_mode, b.flash_freq) == ("dio", "40m")
    assert (b.bootloader_offset, b.app_offset) == (0x1000, 0x10000)
    # partitions-4MiBplus.csv: factory 0x10000/0x1F0000, vfs from 0x200000 to the end.
    assert (b.fs_offset, b.fs_size, b.fs_block_size) == (0x200000, 0x200000, 4096)
    assert b.usb_ids == [(0x10C4, 0xEA60), (0x1A86, 0x55D4)]
    assert b.path == BOARDS_DIR / "esp32-devkitc.toml"
    assert not b.is_ota


def test_s3_boots_from_zero_and_has_native_usb_ids():
    b = load_board("esp32-s3-devkitc-1")
    assert (b.chip, b.flash_size, b.bootloader_offset) == ("esp32s3", 8 << 20, 0x0)
    assert (b.fs_offset, b.fs_size) == (0x200000, 0x600000)
    assert (0x303A, 0x4001) in b.usb_ids


def test_nb_node_has_two_ota_slots_and_a_battery():
    b = load_board("nb-node-v1")
    assert b.is_ota
    assert [(p.name, p.offset, p.size) for p in b.app_partitions] == [
        ("ota_0", 0x10000, 0x270000),
        ("ota_1", 0x280000, 0x270000),
    ]
    assert (b.fs_offset, b.fs_size) == (0x4F0000, 0x310000)
    assert b.pins["battery.adc"] == 35


def test_load_by_path_equals_load_by_name():
    by_path = load_board(str(BOARDS_DIR / "nb-node-v1.toml"))
    assert by_path.name == "nb-node-v1"
    assert by_path.to_device_dict() == load_board("nb-node-v1").to_device_dict()


def test_pins_lists_every_gpio_once_by_key():
    b = load_board("esp32-devkitc")
    assert b.pins == {
        "ld2410.tx": 25,
        "ld2410.rx": 26,
        "ld2410.out": 27,
        "pir.pin": 14,
        "mq134.adc": 34,
        "i2c.sda": 21,
        "i2c.scl": 22,
    }


def test_device_dict_is_json_with_the_circuit_the_driver_needs():
    d = json.loads(json.dumps(load_board("nb-node-v1").to_device_dict()))
    assert d["chip"] == "esp32" and d["board"] == "nb-node-v1"
    assert d["mq134"] == {
        "adc": 33,
        "atten": "ATTN_11DB",
        "divider_ratio": 1.5,
        "load_ohm": 20000.0,
        "supply_v": 5.0,
    }
    assert d["battery"] == {"adc": 35, "atten": "ATTN_11DB", "divider_ratio": 2.0}
    assert d["ld2410"] == {"uart": 2, "tx": 17, "rx": 16, "out": 4, "baudrate": 256000}
    assert d["i2c"] == {"id": 0, "sda": 21, "scl": 22, "freq": 100000}
    assert d["pir"] == {"pin": 13}
    assert d["pins"]["mq134.adc"] == 33 and len(d["pins"]) == 8
    assert load_board("esp32-devkitc").to_device_dict()["battery"] is None


def test_partition_csv_lists_rows_without_vfs():
    csv = load_board("esp32-devkitc").partition_csv().splitlines()
    assert csv[1:] == [
        "nvs, data, nvs, 0x9000, 0x6000,",
        "phy_init, data, phy, 0xf000, 0x1000,",
        "factory, app, factory, 0x10000, 0x1f0000,",
    ]


# --- wiring errors: file, key and reason ----------------------------------------------------


def test_pin_used_twice(tmp_path):
    path = _variant(tmp_path, "esp32-devkitc", "pin = 14", "pin = 25")
    err = _error(path)
    assert err.key == "pir.pin" and str(path) in str(err)
    assert "GPIO25 is already used by ld2410.tx" in str(err)


def test_output_on_input_only_pin(tmp_path):
    err = _error(_variant(tmp_path, "esp32-devkitc", "tx = 25 ", "tx = 35 "))
    assert err.key == "ld2410.tx"
    assert "input-only" in err.reason


def test_output_on_strapping_pin(tmp_path):
    err = _error(_variant(tmp_path, "esp32-devkitc", "sda = 21", "sda = 12"))
    assert err.key == "i2c.sda"
    assert "GPIO12 is a strapping pin" in err.reason and "boot mode" in err.reason


def test_sensor_driving_a_strapping_pin(tmp_path):
    err = _error(_variant(tmp_path, "esp32-s3-devkitc-1", "pin = 15", "pin = 46"))
    assert err.key == "pir.pin" and "strapping" in err.reason


def test_gas_sensor_on_adc2_names_wifi_and_alternatives(tmp_path):
    err = _error(_variant(tmp_path, "esp32-devkitc", "adc = 34", "adc = 4"))
    assert err.key == "mq134.adc"
    assert "ADC2" in err.reason and "Wi-Fi" in err.reason
    assert "32, 33" in err.reason  # free ADC1 pins offered


def test_gas_sensor_on_pin_without_adc(tmp_path):
    err = _error(_variant(tmp_path, "esp32-devkitc", "adc = 34", "adc = 23"))
    assert err.key == "mq134.adc" and "has no ADC" in err.reason


def test_s3_adc2_refused_too(tmp_path):
    err = _error(_variant(tmp_path, "esp32-s3-devkitc-1", "adc = 4 ", "adc = 12 "))
    assert err.key == "mq134.adc" and "ADC2" in err.reason


def test_pin_that_does_not_exist(tmp_path):
    err = _error(_variant(tmp_path, "esp32-devkitc", "pin = 14", "pin = 24"))
    assert err.key == "pir.pin" and "GPIO24 does not exist on the esp32" in err.reason


def test_flash_and_psram_and_usb_pins_refused(tmp_path):
    err = _error(_variant(tmp_path, "esp32-devkitc", "pin = 14", "pin = 7"))
    assert "SPI flash" in err.reason
    err = _error(_variant(tmp_path, "esp32-s3-devkitc-1", "pin = 15", "pin = 35"))
    assert "octal PSRAM" in err.reason
    err = _error(_variant(tmp_path, "esp32-s3-devkitc-1", "pin = 15", "pin = 19"))
    assert "native USB" in err.reason


def test_divider_that_overdrives_the_pin(tmp_path):
    err = _error(_variant(tmp_path, "esp32-devkitc", "divider_ratio = 2.0", "divider_ratio = 1.2"))
    assert err.key == "mq134.divider_ratio"
    assert "4.17 V on the pin" in err.reason and "at least 1.52" in err.reason


def test_uart0_is_the_console(tmp_path):
    err = _error(_variant(tmp_path, "esp32-devkitc", "uart = 2", "uart = 0"))
    assert err.key == "ld2410.uart" and "REPL" in err.reason


# --- flash layout errors --------------------------------------------------------------------


def test_partitions_overlapping(tmp_path):
    err = _error(_variant(tmp_path, "esp32-devkitc", "size = 0x6000", "size = 0x7000"))
    assert err.key == "flash.partitions[1]"
    assert "partition 'phy_init' at 0xF000 overlaps partition 'nvs'" in err.reason


def test_app_overlapping_the_filesystem(tmp_path):
    err = _error(_variant(tmp_path, "esp32-devkitc", "size = 0x1F0000", "size = 0x200000"))
    assert err.key == "flash.filesystem" and "overlaps partition 'factory'" in err.reason


def test_filesystem_beyond_flash(tmp_path):
    text = "offset = 0x200000\nsize = 0x200000"
    err = _error(_variant(tmp_path, "esp32-devkitc", text, "offset = 0x200000\nsize = 0x300000"))
    assert err.key == "flash.filesystem" and "beyond the 4 MB flash" in err.reason


def test_filesystem_not_where_micropython_puts_it(tmp_path):
    text = "offset = 0x200000\nsize = 0x200000"
    err = _error(_variant(tmp_path, "esp32-devkitc", text, "offset = 0x300000\nsize = 0x100000"))
    assert err.key == "flash.filesystem.offset" and "0x200000" in err.reason


def test_app_partition_misaligned(tmp_path):
    err = _error(_variant(tmp_path, "esp32-devkitc", "offset = 0x10000", "offset = 0x11000"))
    assert err.key == "flash.partitions[2].offset" and "aligned to 0x10000" in err.reason


def test_ota_slots_need_otadata(tmp_path):
    path = _variant(tmp_path, "nb-node-v1", 'subtype = "ota"\n', 'subtype = "coredump"\n')
    err = _error(path)
    assert err.key == "flash.partitions" and "otadata" in err.reason


def test_bootloader_offset_must_match_the_chip(tmp_path):
    err = _error(
        _variant(tmp_path, "esp32-devkitc", "bootloader_offset = 0x1000", "bootloader_offset = 0x0")
    )
    assert err.key == "flash.bootloader_offset" and "0x1000" in err.reason


# --- file-level errors ----------------------------------------------------------------------


def test_typo_in_a_key_suggests_the_right_one(tmp_path):
    err = _error(_variant(tmp_path, "esp32-devkitc", "load_ohm =", "load_ohms ="))
    assert err.key == "mq134.load_ohms" and "did you mean 'load_ohm'" in err.reason


def test_missing_key_and_wrong_type(tmp_path):
    err = _error(_variant(tmp_path, "esp32-devkitc", "sda = 21\n", ""))
    assert err.key == "i2c.sda" and "missing" in err.reason
    err = _error(_variant(tmp_path, "esp32-devkitc", "pin = 14", 'pin = "14"'))
    assert err.key == "pir.pin" and "must be an integer" in err.reason


def test_unknown_board_name_suggests_and_lists():
    with pytest.raises(BoardError) as info:
        load_board("esp32-devkit")
    assert "did you mean 'esp32-devkitc'?" in str(info.value)
    assert "nb-node-v1" in str(info.value)


def test_broken_toml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("chip = \n")
    assert "not valid TOML" in str(_error(bad))
    assert "no such board file" in str(_error(tmp_path / "none.toml"))


def test_board_error_is_an_nbk_error():
    assert issubclass(BoardError, NbkError)


# --- platformio.ini agrees with boards/ -----------------------------------------------------


def _pio_envs():
    ini = configparser.ConfigParser(inline_comment_prefixes=(";",))
    ini.read(REPO / "platformio.ini")
    return {s[4:]: ini[s] for s in ini.sections() if s.startswith("env:")}


def test_platformio_has_exactly_one_env_per_board():
    envs = _pio_envs()
    linked = [env["custom_nbk_board"] for env in envs.values()]
    assert sorted(linked) == list_boards()  # each board once, no env without a board
    assert all(name == env["custom_nbk_board"] for name, env in envs.items())


def test_platformio_envs_match_chip_flash_and_speeds():
    for name, env in _pio_envs().items():
        b = load_board(env["custom_nbk_board"])
        assert env["board_build.mcu"] == b.chip, name
        assert env["board_upload.flash_size"] == b.flash_size_name, name
        assert env["board_build.flash_mode"] == b.flash_mode, name
        assert int(env["board_build.f_flash"].rstrip("L")) == int(b.flash_freq[:-1]) * 10**6
        assert env["board_build.partitions"] == b.partition_table, name
        assert int(env["upload_speed"]) == b.upload_baud, name
        assert int(env["monitor_speed"]) == b.monitor_baud, name
        expected_pio_board = "esp32-s3-devkitc-1" if b.chip == "esp32s3" else "esp32dev"
        assert env["board"] == expected_pio_board, name
