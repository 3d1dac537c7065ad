"""Click shims for the board-side commands: deploy, provision, monitor, device info|reset|shell.

Each command parses, picks the port, calls the library, hands the result to `Output.emit`.
"""

import glob
import os
import subprocess
import sys

import click
from rich.markup import escape

from nbk import deploy as deploy_lib
from nbk import device as device_lib
from nbk import monitor as monitor_lib
from nbk import ports
from nbk import provision as provision_lib
from nbk.errors import NbkError
from nbk.output import Output
from nbk.ports import pick_port
from nbk.transport import connect
from nbk.transport.base import DEFAULT_CHUNK

PASSWORD_ENV = "NBK_WIFI_PASSWORD"
port_option = click.option(
    "--port", "-p", help="Serial port (default: $NBK_PORT, else the one ESP32 found on USB)."
)


def _out(ctx):
    obj = ctx.find_root().obj
    if isinstance(obj, dict) and obj.get("out") is not None:
        return obj["out"]
    return Output()


def _default_src(board):
    """build/<board>/app; without --board, the only build/*/app there is."""
    if board:
        return os.path.join("build", board, "app")
    found = sorted(glob.glob(os.path.join("build", "*", "app")))
    if len(found) == 1:
        return found[0]
    if not found:
        raise NbkError("no build/<board>/app here; run `nbk build --board B` or pass --src DIR")
    raise NbkError("several builds found (%s); pick one with --board or --src" % ", ".join(found))


# -- deploy ---------------------------------------------------------------------------------
@click.command(short_help="Sync the built app to a board: changed files only, atomically.")
@port_option
@click.option(
    "--src", type=click.Path(file_okay=False), help="Tree to sync (default build/<board>/app)."
)
@click.option("--board", help="Board whose build to deploy (picks build/<board>/app).")
@click.option("--dest", default="", help="Device directory to sync into (default: the root).")
@click.option("--dry-run", is_flag=True, help="Show what would change; write nothing.")
@click.option(
    "--chunk-size",
    type=click.IntRange(256, 65536),
    default=DEFAULT_CHUNK,
    show_default=True,
    help="Payload bytes per raw-REPL exec (lower it on a board short of RAM).",
)
@click.pass_context
def deploy(ctx, port, src, board, dest, dry_run, chunk_size):
    """Sync the built application to the board: only changed files, atomically."""
    out = _out(ctx)
    src = src or _default_src(board)
    port = pick_port(port)
    with connect(port) as transport, _progress(out) as progress:
        result = deploy_lib.deploy(
            transport, src, dest=dest, dry_run=dry_run, chunk=chunk_size, progress=progress
        )
    result["port"] = port
    out.emit(result, human=_show_deploy)


def _show_deploy(console, result):
    dry = result["dry_run"]
    send, remove = ("would send", "would remove") if dry else ("sent", "removed")
    for style, verb, paths in (("green", send, result["sent"]), ("red", remove, result["removed"])):
        for what in _listing(paths):
            console.print("  [%s]%s[/] %s" % (style, verb, escape(what)), soft_wrap=True)
    console.print(
        "%s%s %d file(s), %d bytes; %s %d; %d unchanged; %.2fs on %s"
        % (
            "dry run, nothing written: " if dry else "",
            send,
            len(result["sent"]),
            result["bytes_to_send"],
            remove,
            len(result["removed"]),
            result["unchanged"],
            result["seconds"],
            escape(result["port"]),
        ),
        soft_wrap=True,
    )


LIST_EACH = 12  # up to this many paths are listed one by one; more are counted by directory


def _listing(paths):
    """Each path, or for a long list one line per directory ("app/a/drivers/ (11 files)")."""
    if len(paths) <= LIST_EACH:
        return list(paths)
    counts = {}
    for path in paths:
        folder = path.rsplit("/", 1)[0] + "/" if "/" in path else ""
        counts[folder] = counts.get(folder, 0) + 1
    return [
        "%s (%d file%s)" % (folder or "./", n, "" if n == 1 else "s")
        for folder, n in sorted(counts.items())
    ]


class _progress:
    """A rich progress bar fed by deploy's progress(done, total); silent with --quiet."""

    def __init__(self, out):
        self.out = out
        self.bar = None
        self.task = None

    def __enter__(self):
        if self.out.quiet or not self.out.console.is_terminal:
            return None  # a bar in a log file or pipe is only noise
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

        self.bar = bar = Progress(
            TextColumn("deploy"),
            BarColumn(),
            DownloadColumn(),
            console=self.out.console,
            transient=True,
        )
        bar.start()

        def update(done, total):
            if self.task is None:
                self.task = bar.add_task("deploy", total=total)
            bar.update(self.task, completed=done)

        return update

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()


# -- provision ------------------------------------------------------------------------------
@click.command(short_help="Write identity, Wi-Fi and uplink to a board; verify; register.")
@port_option
@click.option("--device-id", help="Device id to write (the service's id wins with --register).")
@click.option("--wifi-ssid", help="Wi-Fi network name.")
@click.option(
    "--wifi-password",
    envvar=PASSWORD_ENV,
    help="Wi-Fi password (better: $%s, or typed at the prompt). Never printed." % PASSWORD_ENV,
)
@click.option("--server", help="Uplink URL, e.g. mqtt://10.0.0.2:1883.")
@click.option("--register", "register_url", help="Device-management service URL to register with.")
@click.option("--device-type", default="ESP32", show_default=True, help="deviceType to register.")
@click.option(
    "--batch",
    type=click.Path(dir_okay=False),
    help="CSV of boards (port,device_id,wifi_ssid,wifi_password,server[,register]).",
)
@click.option(
    "--record",
    default="provisioning.jsonl",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="JSON-lines record appended for the technician (no secrets).",
)
@click.pass_context
def provision(
    ctx,
    port,
    device_id,
    wifi_ssid,
    wifi_password,
    server,
    register_url,
    device_type,
    batch,
    record,
):
    """Write config and credentials to the board, verify them, optionally register it."""
    out = _out(ctx)
    if batch:
        _provision_batch(out, batch, register_url, record)
        return
    missing = [
        flag
        for flag, value in (
            ("--device-id", device_id),
            ("--wifi-ssid", wifi_ssid),
            ("--server", server),
        )
        if not value
    ]
    if missing:
        raise click.UsageError("missing %s (or pass --batch FILE)" % ", ".join(missing))
    if wifi_password is None:
        if not sys.stdin.isatty():
            raise NbkError(
                "no Wi-Fi password given; set $%s or pass --wifi-password" % PASSWORD_ENV
            )
        # Typed blind, so typed twice; empty is an open network. Asked on stderr: stdout may be
        # carrying --json.
        wifi_password = click.prompt(
            "Wi-Fi password",
            hide_input=True,
            confirmation_prompt=True,
            default="",
            show_default=False,
            err=True,
        )
    port = pick_port(port)
    result = provision_lib.attempt(device_id, wifi_ssid, server)
    try:
        with connect(port) as transport:
            result = provision_lib.provision(
                transport,
                device_id,
                wifi_ssid,
                wifi_password,
                server,
                register_url=register_url,
                device_type=device_type,
            )
    except NbkError as exc:
        provision_lib.append_record(
            record, [provision_lib.record_line(result, port, status="failed", error=str(exc))]
        )
        raise
    provision_lib.append_record(record, [provision_lib.record_line(result, port)])
    result["port"] = port
    out.emit(result, human=_show_provision)


def _show_provision(console, result):
    config = result["config"]
    console.print(
        "provisioned [bold]%s[/] on %s: ssid %s, uplink %s%s; verified by read-back"
        % (
            escape(result["device_id"]),
            escape(result["port"]),
            escape(config["network"]["ssid"]),
            escape(config["uplink"]["url"]),
            " (registered, API key stored)" if result["registered"] else "",
        ),
        soft_wrap=True,
    )


def _provision_batch(out, path, register_url, record):
    rows = provision_lib.read_batch(path)
    outcomes = provision_lib.provision_batch(rows, connect, register_url=register_url)
    lines, report = [], []
    for row, result, error in outcomes:
        if result is None:
            partial = provision_lib.attempt(row["device_id"], row["wifi_ssid"], row["server"])
            lines.append(provision_lib.record_line(partial, row["port"], "failed", error))
            report.append(
                {
                    "port": row["port"],
                    "device_id": row["device_id"],
                    "status": "failed",
                    "error": error,
                }
            )
        else:
            lines.append(provision_lib.record_line(result, row["port"]))
            report.append(dict(result, port=row["port"], status="ok"))
    provision_lib.append_record(record, lines)
    failed = sum(1 for item in report if item["status"] != "ok")
    out.emit({"boards": report, "failed": failed}, human=_show_batch)
    if failed:
        raise NbkError(
            "%d of %d board(s) failed; see above, fix and rerun those rows" % (failed, len(report))
        )


def _show_batch(console, result):
    for item in result["boards"]:
        if item["status"] == "ok":
            line = "  [green]ok[/]     %s  %s" % (escape(item["port"]), escape(item["device_id"]))
        else:
            line = "  [red]failed[/] %s  %s: %s" % (
                escape(item["port"]),
                escape(item["device_id"]),
                escape(item["error"]),
            )
        console.print(line, soft_wrap=True)


# -- monitor --------------------------------------------------------------------------------
@click.command(short_help="Show a board's console, log lines decoded; survives resets.")
@port_option
@click.option(
    "--level", "-l", default="D", show_default=True, help="Lowest level shown: D I W E C."
)
@click.option("--module", "-m", "modules", multiple=True, help="Only this module (repeatable).")
@click.option("--duration", type=float, help="Stop after this many seconds (default: Ctrl-C).")
@click.option("--wait", type=float, default=0.0, help="Seconds to wait for the board to appear.")
@click.pass_context
def monitor(ctx, port, level, modules, duration, wait):
    """Show the board's console, decoding structured log lines; survives resets and unplugging.

    With --json, prints one JSON object per line (JSON lines) as events arrive.
    """
    import json

    out = _out(ctx)
    keep = monitor_lib.Filter(level, modules)
    chosen = {"port": port}

    def resolve():
        # Asked again on every reconnect (a re-plugged board may get another name), but a
        # board the user picked from several stays picked: the question is asked once.
        if chosen["port"]:
            return chosen["port"]

        def ask(found):
            chosen["port"] = ports.ask_which(found)
            return chosen["port"]

        return ports.select_port(None, ask=ask if ports.interactive() else None)

    def show(event):
        if not keep(event):
            return
        if out.as_json:
            sys.stdout.write(json.dumps(event, sort_keys=True) + "\n")
            sys.stdout.flush()
        else:
            out.console.print(monitor_lib.format_event(event), highlight=False, soft_wrap=True)

    try:
        monitor_lib.Monitor(resolve).run(show, duration_s=duration, wait_s=wait)
    except KeyboardInterrupt:
        pass


# -- device info | reset | shell --------------------------------------------------------------
@click.group()
def device():
    """Ask the board about itself, reset it, or open its REPL."""


@device.command(short_help="MicroPython, .mpy ABI, memory, files, device id of the board.")
@port_option
@click.pass_context
def info(ctx, port):
    """MicroPython version, .mpy ABI, memory, filesystem, device id, what nbk deployed."""
    port = pick_port(port)
    with connect(port) as transport:
        facts = device_lib.info(transport)
    facts["port"] = port
    _out(ctx).emit(facts, human=_show_info)


def _show_info(console, facts):
    for key in sorted(facts):
        console.print(escape("%-15s %s" % (key, facts[key])), soft_wrap=True)


@device.command(short_help="Soft-reset the board (Ctrl-D), or hard-reset with --hard.")
@port_option
@click.option("--hard", is_flag=True, help="machine.reset() (as the reset button), not Ctrl-D.")
@click.pass_context
def reset(ctx, port, hard):
    """Soft-reset the board (Ctrl-D: state lost, files kept), or hard-reset with --hard."""
    port = pick_port(port)
    with connect(port) as transport:
        result = device_lib.reset(transport, hard=hard)
    result["port"] = port
    _out(ctx).emit(result, human=lambda c, r: c.print("%s reset of %s" % (r["reset"], r["port"])))


@device.command(short_help="Open the board's REPL through mpremote (Ctrl-] leaves).")
@port_option
def shell(port):
    """Open the board's interactive REPL (mpremote, no soft reset); Ctrl-] leaves."""
    port = pick_port(port)
    code = subprocess.call(device_lib.shell_command(port))
    if code:
        raise NbkError("the REPL on %s ended with exit code %d; is the port free?" % (port, code))
