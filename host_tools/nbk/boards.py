"""Board definitions: load a boards/<name>.toml, check its wiring and flash layout, describe it.

A board file names the chip, the flash layout MicroPython uses on it and the GPIO of every
sensor. `load_board` refuses a file that could not work on the hardware (a pin used twice, an
output on an input-only or strapping pin, the gas sensor on ADC2, partitions that overlap) with a
`BoardError` naming the file, the key and the reason. Chip facts: sensors.md §5,
esp32-tooling.md §1.

    board = load_board("esp32-devkitc")
    board.fs_offset, board.fs_size          # where the littlefs image goes
    json.dumps(board.to_device_dict())      # /board.json on the device
"""

from __future__ import annotations

import difflib
import itertools
import tomllib
from pathlib import Path
from typing import Any

from nbk.errors import NbkError

BOARDS_DIR = Path(__file__).resolve().parents[2] / "boards"

FS_BLOCK_SIZE = 4096  # MicroPython mounts `vfs` as littlefs with 4096-byte blocks (§1.3)
_PARTITION_TABLE_SIZE = 0x1000
_APP_ALIGN = 0x10000  # ESP-IDF: app partitions start on a 64 KiB boundary
_DATA_ALIGN = 0x1000  # data partitions on a flash sector
_ADC_MAX_V = 3.6  # ESP32 absolute maximum on any pin (sensors.md §5)

_ATTENUATIONS = {"0dB": "ATTN_0DB", "2.5dB": "ATTN_2_5DB", "6dB": "ATTN_6DB", "11dB": "ATTN_11DB"}
_FLASH_SIZES = {"2MB": 2 << 20, "4MB": 4 << 20, "8MB": 8 << 20, "16MB": 16 << 20, "32MB": 32 << 20}


class BoardError(NbkError):
    """A board file is missing, unreadable or describes wiring/flash that cannot work."""

    def __init__(self, path: Path | str, key: str | None, reason: str) -> None:
        self.path = str(path)
        self.key = key
        self.reason = reason
        where = "%s: %s" % (self.path, key) if key else self.path
        super().__init__("%s: %s" % (where, reason))


class _Chip:
    """What the loader must know about one chip family's pins and boot."""

    def __init__(
        self,
        name: str,
        gpios: set[int],
        input_only: set[int],
        strapping: set[int],
        flash_pins: set[int],
        psram_pins: dict[str, set[int]],
        adc1: set[int],
        adc2: set[int],
        usb_pins: set[int],
        bootloader_offset: int,
    ) -> None:
        self.name = name
        self.gpios = gpios
        self.input_only = input_only
        self.strapping = strapping
        self.flash_pins = flash_pins
        self.psram_pins = psram_pins
        self.adc1 = adc1
        self.adc2 = adc2
        self.usb_pins = usb_pins
        self.bootloader_offset = bootloader_offset


def _span(a: int, b: int) -> set[int]:
    return set(range(a, b + 1))


# sensors.md §5 and esp32-tooling.md §1.1.
CHIPS = {
    "esp32": _Chip(
        "esp32",
        gpios=_span(0, 19) | {21, 22, 23, 25, 26, 27} | _span(32, 39),
        input_only=_span(34, 39),
        strapping={0, 2, 5, 12, 15},
        flash_pins=_span(6, 11),
        psram_pins={"quad": {16, 17}},  # WROVER: PSRAM clock/CS
        adc1=_span(32, 39),
        adc2={0, 2, 4, 12, 13, 14, 15, 25, 26, 27},
        usb_pins=set(),
        bootloader_offset=0x1000,
    ),
    "esp32s3": _Chip(
        "esp32s3",
        gpios=_span(0, 21) | _span(26, 48),
        input_only=set(),
        strapping={0, 3, 45, 46},
        flash_pins=_span(26, 32),
        psram_pins={"octal": _span(33, 37)},
        adc1=_span(1, 10),
        adc2=_span(11, 20),
        usb_pins={19, 20},  # native USB D-/D+
        bootloader_offset=0x0,
    ),
}

# Every GPIO a board file may name: key -> (direction, whether it must be an ADC pin).
# "out" = driven by the ESP32 (UART TX; I2C lines are open-drain, driven low by the ESP32);
# "in" = driven by a sensor (it holds the level while the chip samples its straps at reset).
_PIN_KEYS = {
    "ld2410.tx": ("out", False),
    "ld2410.rx": ("in", False),
    "ld2410.out": ("in", False),
    "pir.pin": ("in", False),
    "mq134.adc": ("in", True),
    "i2c.sda": ("out", False),
    "i2c.scl": ("out", False),
    "battery.adc": ("in", True),
}

# Allowed keys per table with their types; anything else is a typo worth reporting.
_SCHEMA: dict[str, dict[str, tuple[type, ...]]] = {
    "": {
        "description": (str,),
        "chip": (str,),
        "module": (str,),
        "psram": (str,),
        "native_usb": (bool,),
        "micropython_board": (str,),
        "flash": (dict,),
        "serial": (dict,),
        "ld2410": (dict,),
        "pir": (dict,),
        "mq134": (dict,),
        "i2c": (dict,),
        "battery": (dict,),
    },
    "flash": {
        "size": (str, int),
        "mode": (str,),
        "freq": (str,),
        "bootloader_offset": (int,),
        "partition_table_offset": (int,),
        "partition_table": (str,),
        "partitions": (list,),
        "filesystem": (dict,),
    },
    "flash.filesystem": {"offset": (int,), "size": (int,), "block_size": (int,)},
    "flash.partitions": {
        "name": (str,),
        "type": (str,),
        "subtype": (str,),
        "offset": (int,),
        "size": (int,),
    },
    "serial": {"upload_baud": (int,), "monitor_baud": (int,), "usb_ids": (list,)},
    "ld2410": {"uart": (int,), "tx": (int,), "rx": (int,), "out": (int,), "baudrate": (int,)},
    "pir": {"pin": (int,)},
    "mq134": {
        "adc": (int,),
        "attenuation": (str,),
        "divider_ratio": (float, int),
        "load_ohm": (float, int),
        "supply_v": (float, int),
    },
    "i2c": {"id": (int,), "sda": (int,), "scl": (int,), "freq": (int,)},
    "battery": {"adc": (int,), "attenuation": (str,), "divider_ratio": (float, int)},
}
_REQUIRED = {
    "": ("chip", "flash", "serial", "ld2410", "pir", "mq134", "i2c"),
    "flash": (
        "size",
        "mode",
        "freq",
        "bootloader_offset",
        "partition_table_offset",
        "partition_table",
        "partitions",
        "filesystem",
    ),
    "flash.filesystem": ("offset", "size"),
    "flash.partitions": ("name", "type", "subtype", "offset", "size"),
    "serial": ("usb_ids",),
    "ld2410": ("uart", "tx", "rx", "out"),
    "pir": ("pin",),
    "mq134": ("adc", "attenuation", "divider_ratio", "load_ohm", "supply_v"),
    "i2c": ("id", "sda", "scl"),
    "battery": ("adc", "divider_ratio"),
}


class Partition:
    """One row of the partition table (or the filesystem region), offsets in bytes."""

    def __init__(self, name: str, type_: str, subtype: str, offset: int, size: int) -> None:
        self.name = name
        self.type = type_
        self.subtype = subtype
        self.offset = offset
        self.size = size

    @property
    def end(self) -> int:
        return self.offset + self.size

    def __repr__(self) -> str:
        return "Partition(%r, %s/%s, 0x%X, 0x%X)" % (
            self.name,
            self.type,
            self.subtype,
            self.offset,
            self.size,
        )


class Board:
    """A validated board: chip, flash layout and wiring. Build it with `load_board`."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        flash = data["flash"]
        fs = flash["filesystem"]
        self.path = path
        self.name = path.stem
        self.description: str = data.get("description", self.name)
        self.chip: str = data["chip"]
        self.module: str = data.get("module", "")
        self.psram: str = data.get("psram", "none")
        self.native_usb: bool = data.get("native_usb", False)
        self.micropython_board: str = data.get("micropython_board", "")
        self.flash_size: int = _flash_size(flash["size"])
        self.flash_mode: str = flash["mode"]
        self.flash_freq: str = flash["freq"]
        self.bootloader_offset: int = flash["bootloader_offset"]
        self.partition_table_offset: int = flash["partition_table_offset"]
        self.partition_table: str = flash["partition_table"]
        self.partitions = [
            Partition(p["name"], p["type"], p["subtype"], p["offset"], p["size"])
            for p in flash["partitions"]
        ]
        self.fs_offset: int = fs["offset"]
        self.fs_size: int = fs["size"]
        self.fs_block_size: int = fs.get("block_size", FS_BLOCK_SIZE)
        apps = self.app_partitions
        self.app_offset: int = apps[0].offset if apps else 0
        serial = data["serial"]
        self.upload_baud: int = serial.get("upload_baud", 460800)
        self.monitor_baud: int = serial.get("monitor_baud", 115200)
        self.usb_ids: list[tuple[int, int]] = [_usb_id(s) for s in serial["usb_ids"]]
        self.ld2410: dict[str, int] = {"baudrate": 256000, **data["ld2410"]}
        self.pir: dict[str, int] = dict(data["pir"])
        self.mq134: dict[str, Any] = dict(data["mq134"])
        self.i2c: dict[str, int] = {"freq": 400000, **data["i2c"]}
        battery = data.get("battery")
        self.battery: dict[str, Any] | None = (
            {"attenuation": "11dB", **battery} if battery is not None else None
        )
        # Every GPIO in use, by its key in the file ("pir.pin": 14).
        self.pins: dict[str, int] = {}
        for key in _PIN_KEYS:
            table, field = key.split(".")
            section = data.get(table)
            if section is not None and field in section:
                self.pins[key] = section[field]

    @property
    def app_partitions(self) -> list[Partition]:
        """App slots by offset: one `factory`, or `ota_0`, `ota_1` on OTA layouts."""
        return sorted((p for p in self.partitions if p.type == "app"), key=lambda p: p.offset)

    @property
    def flash_size_name(self) -> str:
        """The size as esptool and PlatformIO spell it: "4MB"."""
        return "%dMB" % (self.flash_size >> 20)

    @property
    def is_ota(self) -> bool:
        return any(p.subtype.startswith("ota_") for p in self.app_partitions)

    def partition_csv(self) -> str:
        """The ESP-IDF partition CSV of this layout (without `vfs`, as MicroPython ships it)."""
        lines = ["# Name, Type, SubType, Offset, Size, Flags"]
        for p in self.partitions:
            lines.append("%s, %s, %s, 0x%x, 0x%x," % (p.name, p.type, p.subtype, p.offset, p.size))
        return "\n".join(lines) + "\n"

    def to_device_dict(self) -> dict[str, Any]:
        """What the firmware reads as /board.json: chip, wiring, MQ-134 circuit, battery.

        Attenuations are MicroPython constant names (`getattr(ADC, "ATTN_11DB")`).
        """
        mq = self.mq134
        device: dict[str, Any] = {
            "board": self.name,
            "chip": self.chip,
            "pins": dict(self.pins),  # every GPIO by key, for logs and wiring checks
            "ld2410": {k: self.ld2410[k] for k in ("uart", "tx", "rx", "out", "baudrate")},
            "pir": {"pin": self.pir["pin"]},
            "mq134": {
                "adc": mq["adc"],
                "atten": _ATTENUATIONS[mq["attenuation"]],
                "divider_ratio": float(mq["divider_ratio"]),
                "load_ohm": float(mq["load_ohm"]),
                "supply_v": float(mq["supply_v"]),
            },
            "i2c": {k: self.i2c[k] for k in ("id", "sda", "scl", "freq")},
            "battery": None,
        }
        if self.battery is not None:
            device["battery"] = {
                "adc": self.battery["adc"],
                "atten": _ATTENUATIONS[self.battery["attenuation"]],
                "divider_ratio": float(self.battery["divider_ratio"]),
            }
        return device

    def __repr__(self) -> str:
        return "Board(%r, chip=%r, flash=%d MB)" % (self.name, self.chip, self.flash_size >> 20)


def list_boards(boards_dir: Path | None = None) -> list[str]:
    """Names of the boards in boards/ (file stems), sorted."""
    directory = boards_dir or BOARDS_DIR
    return sorted(p.stem for p in directory.glob("*.toml"))


def load_board(name_or_path: str | Path, boards_dir: Path | None = None) -> Board:
    """Load and validate a board by name (a stem in boards/) or by path to a .toml file.

    Raises BoardError naming the file, the key and what is wrong.
    """
    path = _resolve(name_or_path, boards_dir or BOARDS_DIR)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise BoardError(path, None, "not valid TOML: %s" % exc) from exc
    except OSError as exc:
        raise BoardError(path, None, "cannot read: %s" % exc.strerror) from exc
    _check_schema(path, data)
    _check_values(path, data)
    board = Board(path, data)
    _check_flash(board)
    _check_pins(board)
    return board


def _resolve(name_or_path: str | Path, boards_dir: Path) -> Path:
    text = str(name_or_path)
    if text.endswith(".toml") or "/" in text or "\\" in text:
        path = Path(text)
        if not path.is_file():
            raise BoardError(path, None, "no such board file")
        return path
    path = boards_dir / (text + ".toml")
    if not path.is_file():
        known = list_boards(boards_dir)
        close = difflib.get_close_matches(text, known, n=1)
        hint = "did you mean %r? " % close[0] if close else ""
        raise BoardError(
            path, None, "unknown board %r; %sknown boards: %s" % (text, hint, ", ".join(known))
        )
    return path


def _check_schema(path: Path, data: dict[str, Any]) -> None:
    _check_table(path, "", data)
    flash = data["flash"]
    _check_table(path, "flash", flash)
    _check_table(path, "flash.filesystem", flash["filesystem"])
    for i, row in enumerate(flash["partitions"]):
        if not isinstance(row, dict):
            raise BoardError(path, "flash.partitions[%d]" % i, "must be a table")
        _check_table(path, "flash.partitions", row, "flash.partitions[%d]" % i)
    for table in ("serial", "ld2410", "pir", "mq134", "i2c", "battery"):
        if table in data:
            _check_table(path, table, data[table])


def _check_table(path: Path, schema_key: str, table: dict[str, Any], label: str = "") -> None:
    label = label or schema_key
    allowed = _SCHEMA[schema_key]
    for key, value in table.items():
        full = "%s.%s" % (label, key) if label else key
        if key not in allowed:
            close = difflib.get_close_matches(key, list(allowed), n=1)
            hint = "; did you mean %r?" % close[0] if close else ""
            raise BoardError(path, full, "unknown key%s" % hint)
        types = allowed[key]
        # bool is an int in Python: a `true` where a number belongs is still a mistake.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            names = " or ".join(_TYPE_NAMES[t] for t in types)
            raise BoardError(path, full, "must be %s, got %r" % (names, value))
    for key in _REQUIRED[schema_key]:
        if key not in table:
            full = "%s.%s" % (label, key) if label else key
            raise BoardError(path, full, "missing (required)")


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true/false"}
_TYPE_NAMES.update({dict: "a table", list: "a list"})


def _check_values(path: Path, data: dict[str, Any]) -> None:
    chip = data["chip"]
    if chip not in CHIPS:
        raise BoardError(path, "chip", "unknown chip %r; use one of %s" % (chip, sorted(CHIPS)))
    psram = data.get("psram", "none")
    if psram not in ("none", "quad", "octal"):
        raise BoardError(path, "psram", "must be none, quad or octal, got %r" % psram)
    flash = data["flash"]
    if not isinstance(flash["size"], int) and flash["size"] not in _FLASH_SIZES:
        raise BoardError(
            path,
            "flash.size",
            "unknown size %r; use one of %s" % (flash["size"], ", ".join(_FLASH_SIZES)),
        )
    if flash["mode"] not in ("qio", "qout", "dio", "dout"):
        raise BoardError(path, "flash.mode", "must be qio, qout, dio or dout")
    expected_boot = CHIPS[chip].bootloader_offset
    if flash["bootloader_offset"] != expected_boot:
        raise BoardError(
            path,
            "flash.bootloader_offset",
            "0x%X, but the %s ROM loads the bootloader from 0x%X"
            % (flash["bootloader_offset"], chip, expected_boot),
        )
    block = flash["filesystem"].get("block_size", FS_BLOCK_SIZE)
    if block != FS_BLOCK_SIZE:
        raise BoardError(
            path,
            "flash.filesystem.block_size",
            "%d, but MicroPython mounts vfs with %d-byte blocks" % (block, FS_BLOCK_SIZE),
        )
    for i, text in enumerate(data["serial"]["usb_ids"]):
        try:
            _usb_id(text)
        except ValueError:
            raise BoardError(
                path, "serial.usb_ids[%d]" % i, "%r is not VID:PID in hex, e.g. 10C4:EA60" % text
            ) from None
    for table in ("mq134", "battery"):
        section = data.get(table)
        if section is None:
            continue
        atten = section.get("attenuation", "11dB")
        if atten not in _ATTENUATIONS:
            raise BoardError(
                path,
                table + ".attenuation",
                "%r; use one of %s" % (atten, ", ".join(_ATTENUATIONS)),
            )
        if section["divider_ratio"] < 1:
            raise BoardError(
                path,
                table + ".divider_ratio",
                "%r: the ratio is V_sensor / V_pin, so at least 1 (1 = no divider)"
                % section["divider_ratio"],
            )
    mq = data["mq134"]
    for key in ("load_ohm", "supply_v"):
        if mq[key] <= 0:
            raise BoardError(path, "mq134." + key, "must be positive, got %r" % mq[key])
    worst = mq["supply_v"] / mq["divider_ratio"]
    if worst > _ADC_MAX_V:
        raise BoardError(
            path,
            "mq134.divider_ratio",
            "a %.1f V sensor output would put %.2f V on the pin (absolute max %.1f V); "
            "use a ratio of at least %.2f"
            % (mq["supply_v"], worst, _ADC_MAX_V, mq["supply_v"] / 3.3),
        )


def _check_flash(board: Board) -> None:
    path = board.path
    # The fixed regions first: bootloader up to the table, the table itself.
    regions = [
        (
            "flash.bootloader_offset",
            "bootloader",
            board.bootloader_offset,
            board.partition_table_offset,
        ),
        (
            "flash.partition_table_offset",
            "partition table",
            board.partition_table_offset,
            board.partition_table_offset + _PARTITION_TABLE_SIZE,
        ),
    ]
    if board.partition_table_offset <= board.bootloader_offset:
        raise BoardError(
            path, "flash.partition_table_offset", "must come after the bootloader offset"
        )
    names: set[str] = set()
    for i, p in enumerate(board.partitions):
        key = "flash.partitions[%d]" % i
        if p.name in names:
            raise BoardError(path, key + ".name", "partition %r is defined twice" % p.name)
        names.add(p.name)
        if p.type not in ("app", "data"):
            raise BoardError(path, key + ".type", "must be app or data, got %r" % p.type)
        if p.size <= 0:
            raise BoardError(path, key + ".size", "must be positive, got %d" % p.size)
        align = _APP_ALIGN if p.type == "app" else _DATA_ALIGN
        if p.offset % align:
            raise BoardError(
                path,
                key + ".offset",
                "0x%X is not aligned to 0x%X (%s partitions)" % (p.offset, align, p.type),
            )
        regions.append((key, "partition %r" % p.name, p.offset, p.end))
    fs_key = "flash.filesystem"
    if board.fs_size <= 0 or board.fs_size % board.fs_block_size:
        raise BoardError(
            path,
            fs_key + ".size",
            "0x%X is not a positive multiple of the %d-byte block"
            % (board.fs_size, board.fs_block_size),
        )
    if board.fs_offset % _DATA_ALIGN:
        raise BoardError(path, fs_key + ".offset", "0x%X is not sector aligned" % board.fs_offset)
    regions.append((fs_key, "the filesystem", board.fs_offset, board.fs_offset + board.fs_size))
    for key, what, _start, end in regions:
        if end > board.flash_size:
            raise BoardError(
                path,
                key,
                "%s ends at 0x%X, beyond the %d MB flash (0x%X)"
                % (what, end, board.flash_size >> 20, board.flash_size),
            )
    ordered = sorted(regions, key=lambda r: r[2])
    for (_, what_a, start_a, end_a), (key_b, what_b, start_b, _) in itertools.pairwise(ordered):
        if start_b < end_a:
            raise BoardError(
                path,
                key_b,
                "%s at 0x%X overlaps %s (0x%X-0x%X)" % (what_b, start_b, what_a, start_a, end_a),
            )
    # MicroPython (v1.26+) registers vfs itself, from the last partition to the end of flash
    # (esp32-tooling.md §1.2): an image written anywhere else would not be the one it mounts.
    last_end = max(p.end for p in board.partitions) if board.partitions else 0
    if board.fs_offset != last_end:
        raise BoardError(
            path,
            fs_key + ".offset",
            "0x%X, but MicroPython puts vfs right after the last partition, at 0x%X"
            % (board.fs_offset, last_end),
        )
    if board.fs_offset + board.fs_size != board.flash_size:
        raise BoardError(
            path,
            fs_key + ".size",
            "0x%X, but vfs runs to the end of flash: 0x%X"
            % (board.fs_size, board.flash_size - board.fs_offset),
        )
    apps = board.app_partitions
    if not apps:
        raise BoardError(path, "flash.partitions", "no app partition: MicroPython needs one")
    if board.is_ota:
        ota = [p for p in apps if p.subtype.startswith("ota_")]
        if len(ota) < 2:
            raise BoardError(path, "flash.partitions", "an OTA layout needs ota_0 and ota_1")
        if not any(p.type == "data" and p.subtype == "ota" for p in board.partitions):
            raise BoardError(
                path, "flash.partitions", "ota_N app slots need an `otadata` (data/ota) partition"
            )


def _check_pins(board: Board) -> None:
    chip = CHIPS[board.chip]
    path = board.path
    reserved = dict.fromkeys(chip.flash_pins, "is wired to the SPI flash")
    for pin in chip.psram_pins.get(board.psram, ()):
        reserved[pin] = "is wired to the %s PSRAM on this module" % board.psram
    if board.native_usb:
        for pin in chip.usb_pins:
            reserved[pin] = "carries native USB (D-/D+) on this board"
    seen: dict[int, str] = {}
    for key, gpio in board.pins.items():
        direction, analog = _PIN_KEYS[key]
        label = "GPIO%d" % gpio
        if gpio not in chip.gpios:
            raise BoardError(path, key, "%s does not exist on the %s" % (label, chip.name))
        if gpio in seen:
            raise BoardError(path, key, "%s is already used by %s" % (label, seen[gpio]))
        seen[gpio] = key
        if gpio in reserved:
            raise BoardError(path, key, "%s %s" % (label, reserved[gpio]))
        if direction == "out" and gpio in chip.input_only:
            raise BoardError(path, key, "%s is input-only on the %s" % (label, chip.name))
        if gpio in chip.strapping:
            why = (
                "an output there"
                if direction == "out"
                else "the sensor drives it while the chip samples its straps at reset, and"
            )
            raise BoardError(
                path, key, "%s is a strapping pin: %s can change the boot mode" % (label, why)
            )
        if analog:
            if gpio in chip.adc2:
                raise BoardError(
                    path,
                    key,
                    "%s is on ADC2, which cannot be read while Wi-Fi is on; use an ADC1 pin (%s)"
                    % (label, _pin_list(chip.adc1 - set(seen))),
                )
            if gpio not in chip.adc1:
                raise BoardError(
                    path, key, "%s has no ADC; use an ADC1 pin (%s)" % (label, _pin_list(chip.adc1))
                )
    uart = board.ld2410["uart"]
    if not 0 <= uart <= 2:
        raise BoardError(path, "ld2410.uart", "UART %d does not exist (0-2)" % uart)
    if uart == 0:
        raise BoardError(path, "ld2410.uart", "UART 0 is the REPL console; use 1 or 2")
    if board.i2c["id"] not in (0, 1):
        raise BoardError(path, "i2c.id", "I2C %d does not exist (0 or 1)" % board.i2c["id"])


def _pin_list(pins: set[int]) -> str:
    return ", ".join(str(p) for p in sorted(pins))


def _flash_size(value: str | int) -> int:
    return value if isinstance(value, int) else _FLASH_SIZES[value]


def _usb_id(text: str) -> tuple[int, int]:
    vid, sep, pid = text.partition(":")
    if not sep or len(vid) != 4 or len(pid) != 4:
        raise ValueError(text)
    return int(vid, 16), int(pid, 16)
