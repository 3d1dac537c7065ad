"""Click shims for `nbk boards`: list the boards, show one with its flash layout and pins."""

from __future__ import annotations

from functools import partial
from typing import Any

import click
from rich.markup import escape

from nbk import boardinfo
from nbk.boards import load_board
from nbk.output import Output


def _out(ctx: click.Context) -> Output:
    obj = ctx.find_root().obj
    if isinstance(obj, dict) and obj.get("out") is not None:
        return obj["out"]  # type: ignore[no-any-return]
    return Output()


@click.group(
    invoke_without_command=True,
    short_help="List the boards; `nbk boards show NAME` for one in full.",
)
@click.pass_context
def boards(ctx: click.Context) -> None:
    """List the boards nbk knows (boards/*.toml); `nbk boards show NAME` for one in full."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_cmd)


@boards.command("list")
@click.pass_context
def list_cmd(ctx: click.Context) -> None:
    """One line per board: name, chip, flash size, USB ids, description."""
    _out(ctx).emit({"boards": boardinfo.all_summaries()}, human=_show_list)


def _show_list(console: Any, result: dict[str, Any]) -> None:
    # Plain columns, never wrapped: tables truncate in a pipe, and technicians grep this.
    rows = [("board", "chip", "flash", "ota", "usb ids", "description")]
    for b in result["boards"]:
        rows.append(
            (
                b["name"],
                b["chip"],
                b["flash"],
                "yes" if b["ota"] else "no",
                ",".join(b["usb_ids"]),
                b["description"],
            )
        )
    for line in _columns(rows):
        console.print(escape(line), soft_wrap=True, highlight=False)


@boards.command(
    "show",
    short_help="One board: chip, flash layout and the GPIO of every sensor.",
)
@click.argument("name")
@click.pass_context
def show(ctx: click.Context, name: str) -> None:
    """A board's chip, flash layout (what goes where) and the GPIO of every sensor.

    NAME is a file name in boards/ (e.g. esp32-devkitc) or a path to a .toml file.
    """
    _out(ctx).emit(boardinfo.details(load_board(name)), human=_show_board)


def _show_board(console: Any, b: dict[str, Any]) -> None:
    say = partial(console.print, soft_wrap=True, highlight=False)
    say("[bold]%s[/]: %s" % (escape(b["name"]), escape(b["description"])))
    say(
        "chip %s, module %s, PSRAM %s, native USB %s; MicroPython build %s"
        % (
            b["chip"],
            escape(b["module"] or "?"),
            b["psram"],
            "yes" if b["native_usb"] else "no",
            escape(b["micropython_board"] or "?"),
        )
    )
    say(
        "flash %s %s @ %s (%s); upload %d baud, console %d baud; USB %s"
        % (
            b["flash"],
            b["flash_mode"],
            b["flash_freq"],
            escape(b["partition_table"]),
            b["upload_baud"],
            b["monitor_baud"],
            " ".join(b["usb_ids"]),
        )
    )
    writes = _writes_by_offset(b["writes"])
    rows = [("offset", "end", "size", "name", "type", "nbk writes")]
    for r in b["layout"]:
        rows.append(
            (
                "0x%06X" % r["offset"],
                "0x%06X" % (r["offset"] + r["size"]),
                _size(r["size"]),
                r["name"],
                "/".join(x for x in (r["type"], r["subtype"]) if x),
                writes.get(r["offset"], "") if r["type"] else "",
            )
        )
    say("")
    for line in _columns(rows, right=(0, 1, 2)):
        say(escape(line))
    fs = b["filesystem"]
    say(
        "littlefs: %d blocks of %d B at 0x%X (nbk build writes fs.img for it)"
        % (fs["block_count"], fs["block_size"], fs["offset"])
    )
    say("")
    pins = sorted(b["pins"].items(), key=lambda item: item[1])
    for line in _columns([("pin", "GPIO")] + [(k, str(g)) for k, g in pins], right=(1,)):
        say(escape(line))


def _columns(rows: list[tuple[str, ...]], right: tuple[int, ...] = ()) -> list[str]:
    """Rows as lines of space-padded columns (the last one unpadded)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def _writes_by_offset(writes: dict[str, int]) -> dict[int, str]:
    by_offset: dict[int, list[str]] = {}
    for artifact, offset in writes.items():
        by_offset.setdefault(offset, []).append(artifact)
    return {offset: " or ".join(sorted(names)) for offset, names in by_offset.items()}


def _size(size: int) -> str:
    if size >= 1 << 20 and size % (1 << 20) == 0:
        return "%d MiB" % (size >> 20)
    if size >= 1024:
        return "%g KiB" % (size / 1024)
    return "%d B" % size
