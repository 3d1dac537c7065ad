"""`nbk flash`: write a build to a board through esptool's library API, in one session.

One connection does it all: detect the chip (refuse a board file that names another chip), load
the stub, optionally erase, write compressed (esptool verifies each region's MD5 after writing),
hard-reset. esptool's own output is routed through `esptool_logger`, so the caller decides what
reaches the screen; its failures become one-line `NbkError`s that say what to do.

    >>> regions = flash_regions(load_board("esp32-devkitc"), Path("build/esp32-devkitc"))
    >>> flash(board, regions, port="/dev/ttyUSB0", progress=lambda done, total, what: ...)
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from nbk.errors import NbkError, PortError

ROM_BAUD = 115200  # every ESP ROM bootloader syncs at this rate; the stub then changes it
DEFAULT_BAUD = 460800
DEFAULT_CONNECT_ATTEMPTS = 3

ProgressFn = Callable[[int, int, str], None]


class FlashError(NbkError):
    """The board was reached but flashing could not be done (wrong chip, no download mode...)."""


class WrongChipError(FlashError):
    """The connected chip is not the one the board file names."""


def _make_logger(sink: Callable[[str], None] | None, progress: ProgressFn | None) -> Any:
    """An esp-pylib logger (esptool >= 5.6 logs through it) feeding `sink` and `progress`."""
    from esp_pylib.logger import EspLogBase

    class _Logger(EspLogBase):  # type: ignore[misc]
        def __init__(self) -> None:
            self.partial = ""  # esptool prints "Connecting..." then dots with end=""

        def print(self, *args: Any, **kwargs: Any) -> None:
            end = kwargs.get("end")
            text = (kwargs.get("sep") or " ").join(str(a) for a in args)
            self.partial += text + ("\n" if end is None else end)
            *lines, self.partial = self.partial.split("\n")
            for line in lines:
                if line.strip() and sink is not None:
                    sink(line.strip())

        def flush(self) -> None:
            if self.partial.strip() and sink is not None:
                sink(self.partial.strip())
            self.partial = ""

        def _line(self, prefix: str, args: tuple[Any, ...]) -> None:
            self.flush()  # a note interrupts a "Connecting..." line: keep both readable
            self.print(prefix + " ".join(str(a) for a in args))

        def note(self, *args: Any) -> None:
            self._line("Note: ", args)

        def hint(self, *args: Any) -> None:
            self._line("Hint: ", args)

        def warn(self, *args: Any, suggestion: str | None = None) -> None:
            self._line("Warning: ", args)

        def err(self, *args: Any, suggestion: str | None = None) -> None:
            self._line("Error: ", args)

        warning = warn  # esptool still calls the pre-5.6 names too
        error = err

        def debug(self, *args: Any) -> None:
            pass

        def set_verbosity(self, mode: int | str) -> None:
            pass

        def progress_bar(
            self,
            cur_iter: int,
            total_iters: int,
            prefix: str = "",
            suffix: str = "",
            bar_length: int = 30,
        ) -> None:
            if progress is not None:
                progress(cur_iter, total_iters, prefix.strip())

    return _Logger()


@contextlib.contextmanager
def esptool_logger(
    sink: Callable[[str], None] | None = None, progress: ProgressFn | None = None
) -> Iterator[None]:
    """Route esptool's output to `sink` (None: drop it) and its progress bars to `progress`.

    esptool keeps one process-wide logger (esp-pylib's EspLog.instance, swapped with
    EspLog.set_logger); the previous one is back on exit, so these calls nest.
    """
    import esptool.logger  # noqa: F401  (installs esptool's logger if nothing has yet)
    from esp_pylib.logger import EspLog

    previous = EspLog.instance
    logger = _make_logger(sink, progress)
    EspLog.set_logger(logger)
    try:
        yield
    finally:
        EspLog.instance = previous
        logger.flush()


def chip_key(chip_name: str) -> str:
    """esptool's CHIP_NAME ('ESP32-S3') in board-file form ('esp32s3')."""
    return re.sub(r"[^a-z0-9]", "", chip_name.lower())


def flash_regions(
    board: Any, build_dir: Path, firmware: Path | None = None
) -> list[tuple[int, Path]]:
    """What to write, as (offset, file), from a build directory and an optional firmware .bin.

    - with `firmware`: it at the bootloader offset, plus fs.img at fs_offset when built;
    - else factory.bin (firmware + filesystem) at the bootloader offset;
    - else fs.img alone (the board already runs MicroPython).
    Raises BuildError/FlashError for overlaps, a foreign image or an empty build.
    """
    from nbk.build import check_firmware, check_regions

    build_dir = Path(build_dir)
    fs_img = build_dir / "fs.img"
    factory = build_dir / "factory.bin"
    if firmware is not None:
        firmware = Path(firmware)
        try:
            data = firmware.read_bytes()
        except OSError as exc:
            raise FlashError(f"cannot read firmware {firmware}: {exc.strerror}") from None
        check_firmware(data, board, name=firmware.name)
        regions = [(board.bootloader_offset, firmware)]
        if fs_img.is_file():
            regions.append((board.fs_offset, fs_img))
    elif factory.is_file():
        regions = [(board.bootloader_offset, factory)]
    elif fs_img.is_file():
        regions = [(board.fs_offset, fs_img)]
    else:
        raise FlashError(
            f"nothing to flash in {build_dir}; run nbk build --board {board.name} "
            "--firmware micropython.bin, or pass --firmware"
        )
    check_regions(
        [(off, path.name, path.stat().st_size) for off, path in regions], board.flash_size
    )
    return regions


def explain(exc: BaseException, port: str) -> NbkError:
    """Turn an esptool/pyserial failure into one line that names the cause and the fix."""
    text = str(exc)
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    if "Could not open" in text or "could not open port" in text:
        if re.search(r"Permission denied|Errno 13", text):
            return PortError(
                f"no permission to open {port}; add yourself to the dialout group "
                "(sudo usermod -aG dialout $USER, then log in again) or run nbk doctor"
            )
        if re.search(r"Errno 2\b|No such file|FileNotFoundError", text):
            return PortError(
                f"{port} does not exist; plug the board in, check the cable, or pick the port "
                "from nbk doctor"
            )
        return PortError(
            f"{port} is busy: another program holds it (a serial monitor, nbk monitor, "
            "mpremote); close it and retry"
        )
    m = re.search(r"Wrong boot mode detected \(([^)]*)\)", text)
    if m:
        return FlashError(
            f"the chip on {port} booted its firmware (boot mode {m.group(1)}), not the download "
            "mode: hold BOOT (GPIO0), tap EN/RST, release BOOT, then retry"
        )
    if "No serial data received" in text:
        return FlashError(
            f"no answer from a chip on {port} (no serial data): check it is the board's port "
            "and a data cable, or enter download mode by hand: hold BOOT, tap EN/RST, release"
        )
    if "getting no sync reply" in text:
        return FlashError(
            f"the chip on {port} is in download mode but never replies: the host-to-chip (TX) "
            "line is broken; check the RX pin wiring or the USB-serial adapter"
        )
    if "Invalid head of packet" in text:
        # Most often the application's own console output: auto-reset into the ROM loader did
        # not happen, so the firmware kept talking. Line noise is the rarer cause.
        return FlashError(
            f"serial noise on {port} ({first}): the board is probably running its firmware, not "
            "the download mode; hold BOOT (GPIO0), tap EN/RST, release BOOT and retry; if it "
            "persists, use a shorter cable, power the board well, or pass --baud 115200"
        )
    m = re.search(r"is not an? (ESP[\w-]+) image", text)
    if m:  # esptool's own check of the image at the bootloader offset
        return FlashError(
            f"the image is not for the {m.group(1)} on {port} ({first}); build with the "
            "board's MicroPython (nbk build --board B --firmware ...)"
        )
    if "does not match data in flash" in text or "Write failed" in text:
        return FlashError(
            f"verification failed after writing on {port} ({first}); retry with --erase, "
            "then check the flash chip and power supply"
        )
    if type(exc).__name__ == "SerialException":
        return PortError(f"{port} stopped answering ({first}); replug the board and retry")
    return FlashError(f"esptool failed on {port}: {first}")


def _explain_for(board: Any, exc: BaseException, port: str) -> NbkError:
    """`explain`, plus the native-USB caveat: in download mode an ESP32-S3's own USB port
    re-enumerates as 303A:1001, often under another name (esp32-tooling.md §7)."""
    error = explain(exc, port)
    if getattr(board, "native_usb", False) and isinstance(error, (FlashError, PortError)):
        text = str(error)
        if text.startswith(("no answer", f"{port} does not exist")):
            error = type(error)(
                text + f"; on the {board.chip}'s native USB the port changes in download mode: "
                "find it with nbk doctor"
            )
    return error


def _esptool_api() -> Any:
    import esptool.cmds

    return esptool.cmds


def _failures() -> tuple[type[BaseException], ...]:
    """The exception types esptool and pyserial raise for expected failures."""
    import serial
    from esptool.util import FatalError

    return (FatalError, serial.SerialException, OSError)


def flash(
    board: Any,
    regions: list[tuple[int, Path]],
    port: str,
    erase: bool = False,
    baud: int = DEFAULT_BAUD,
    connect_attempts: int = DEFAULT_CONNECT_ATTEMPTS,
    api: Any = None,
    log: Callable[[str], None] | None = None,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Write `regions` to the board on `port` in one esptool session; returns what was done.

    `api` is esptool.cmds unless a test passes a stand-in with the same functions. Raises
    WrongChipError when the chip differs from `board.chip`, PortError/FlashError with advice for
    the classic failures.
    """
    if erase and all(off != board.bootloader_offset for off, _ in regions):
        raise FlashError(
            "--erase would wipe MicroPython and only the filesystem would be written back; "
            "pass --firmware micropython.bin (or build with --firmware), or drop --erase"
        )
    api = api or _esptool_api()
    failures = _failures()
    started = time.monotonic()
    with esptool_logger(log, progress):
        try:
            esp = api.detect_chip(port, baud=ROM_BAUD, connect_attempts=connect_attempts)
        except failures as exc:
            raise _explain_for(board, exc, port) from None
        try:
            chip = chip_key(esp.CHIP_NAME)
            if chip != board.chip:
                raise WrongChipError(
                    f"the chip on {port} is {esp.CHIP_NAME} but board {board.name} is "
                    f"{board.chip}; pass the right --board (see nbk doctor)"
                )
            esp = api.run_stub(esp)
            if baud != ROM_BAUD:
                esp.change_baud(baud)
            api.attach_flash(esp)
            if erase:
                api.erase_flash(esp)
            api.write_flash(esp, [(off, str(path)) for off, path in regions], compress=True)
            api.reset_chip(esp, "hard-reset")
        except NbkError:
            raise
        except failures as exc:
            raise _explain_for(board, exc, port) from None
        finally:
            with contextlib.suppress(Exception):
                esp._port.close()  # ESPLoader's context-manager exit does exactly this
    return {
        "port": port,
        "board": board.name,
        "chip": chip,
        "erased": erase,
        "baud": baud,
        "regions": [
            {"offset": off, "path": str(path), "size": Path(path).stat().st_size}
            for off, path in regions
        ],
        "seconds": round(time.monotonic() - started, 2),
    }
