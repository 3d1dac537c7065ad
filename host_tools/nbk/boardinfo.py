"""What `nbk boards` shows: a board as JSON-ready facts, its flash map as the chip sees it.

The flash map lists every region from the ROM's point of view (bootloader, partition table,
partitions, the littlefs `vfs` region MicroPython registers after the last partition) in
offset order, with the gaps between them, and says which build artifact `nbk flash` writes
where. Offsets and sizes stay integers in JSON; the human view prints them in hex.
"""

from __future__ import annotations

from typing import Any

from nbk.boards import Board, load_board
from nbk.boards import list_boards as _names

PARTITION_TABLE_SIZE = 0x1000  # ESP-IDF: the table occupies one 4 KiB sector


def usb_id_text(ids: list[tuple[int, int]]) -> list[str]:
    return ["%04X:%04X" % pair for pair in ids]


def summary(board: Board) -> dict[str, Any]:
    """One row of `nbk boards`: what a technician matches against the board on the bench."""
    return {
        "name": board.name,
        "description": board.description,
        "chip": board.chip,
        "module": board.module,
        "flash": board.flash_size_name,
        "ota": board.is_ota,
        "usb_ids": usb_id_text(board.usb_ids),
    }


def flash_map(board: Board) -> list[dict[str, Any]]:
    """Every region of the flash in offset order, with "(unused)" rows for gaps, to the end."""
    regions = [
        _region(
            "bootloader",
            "rom",
            "bootloader",
            board.bootloader_offset,
            board.partition_table_offset - board.bootloader_offset,
        ),
        _region(
            "partition table",
            "rom",
            "partitions",
            board.partition_table_offset,
            PARTITION_TABLE_SIZE,
        ),
    ]
    regions += [_region(p.name, p.type, p.subtype, p.offset, p.size) for p in board.partitions]
    regions.append(_region("vfs", "data", "littlefs", board.fs_offset, board.fs_size))
    regions.sort(key=lambda r: r["offset"])
    filled: list[dict[str, Any]] = []
    at = 0
    for region in regions:
        if region["offset"] > at:
            filled.append(_region("(unused)", "", "", at, region["offset"] - at))
        filled.append(region)
        at = max(at, region["offset"] + region["size"])
    if at < board.flash_size:
        filled.append(_region("(unused)", "", "", at, board.flash_size - at))
    return filled


def _region(name: str, type_: str, subtype: str, offset: int, size: int) -> dict[str, Any]:
    return {"name": name, "type": type_, "subtype": subtype, "offset": offset, "size": size}


def details(board: Board) -> dict[str, Any]:
    """Everything `nbk boards show` prints: identity, flash layout, where nbk writes, pins."""
    facts = summary(board)
    facts.update(
        {
            "file": str(board.path),
            "psram": board.psram,
            "native_usb": board.native_usb,
            "micropython_board": board.micropython_board,
            "flash_size": board.flash_size,
            "flash_mode": board.flash_mode,
            "flash_freq": board.flash_freq,
            "partition_table": board.partition_table,
            "layout": flash_map(board),
            "writes": {
                "factory.bin": board.bootloader_offset,
                "firmware": board.bootloader_offset,
                "fs.img": board.fs_offset,
            },
            "filesystem": {
                "offset": board.fs_offset,
                "size": board.fs_size,
                "block_size": board.fs_block_size,
                "block_count": board.fs_size // board.fs_block_size,
            },
            "pins": dict(board.pins),
            "upload_baud": board.upload_baud,
            "monitor_baud": board.monitor_baud,
        }
    )
    return facts


def all_summaries() -> list[dict[str, Any]]:
    """Every board in boards/, loaded and checked (a broken file raises its BoardError)."""
    return [summary(load_board(name)) for name in _names()]
