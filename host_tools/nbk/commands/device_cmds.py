"""Click shims for the board-side commands: deploy, provision, monitor, device info|reset|shell.

Each command parses, picks the port, calls the library, hands the result to `Output.emit`.
"""

import glob
import os
import subprocess
import sys

import click

from nbk import deploy as deploy_lib
from nbk import device as device_lib
from nbk import monitor as monitor_lib
from nbk import provision as provision_lib
from nbk.errors import NbkError
from nbk.output import Output
from nbk.ports import select_port
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
@click.command()
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
    port = select_port(port)
    with connect(port) as transport, _progress(out) as progress:
        result = deploy_lib.deploy(
            transport, src, dest=dest, dry_run=dry_run, chunk=chunk_size, progress=progress
        )
    result["port"] = port
    out.emit(result, human=_show_deploy)


def _show_deploy(console, result):
    verb = "would send" if result["dry_run"] else "sent"
    for path in result["sent"]:
        console.print("  [green]%s[/] %s" % (verb, path))
    for path in result["removed"]:
        console.print(
            "  [red]%s[/] %s" % ("would remove" if result["dry_run"] else "removed", path)
        )
    console.print(
        "%s %d file(s), %d bytes; removed %d; %d unchanged; %.2fs on %s"
        % (
            verb,
            len(result["sent"]),
            result["bytes_to_send"],
            len(result["removed"]),
            result["unchanged"],
            result["seconds"],
            result["port"],
        )
    )


class _progress:
    """A rich progress bar fed by deploy's progress(done, total); silent with --quiet."""

    def __init__(self, out):
        self.out = out
        self.bar = None
        self.task = None

    def __enter__(self):
        if self.out.quiet:
            return None
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
@click.command()
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
        wifi_password = click.prompt(
            "Wi-Fi password", hide_input=True, default="", show_default=False
        )
    port = select_port(port)
    result = {"device_id": device_id, "requested_id": device_id}
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
            result["device_id"],
            result["port"],
            config["network"]["ssid"],
            config["uplink"]["url"],
            " (registered, API key stored)" if result["registered"] else "",
        )
    )


def _provision_batch(out, path, register_url, record):
    rows = provision_lib.read_batch(path)
    outcomes = provision_lib.provision_batch(rows, connect, register_url=register_url)
    lines, report = [], []
    for row, result, error in outcomes:
        if result is None:
            partial = {"device_id": row["device_id"], "requested_id": row["device_id"]}
            lines.append(provision_lib.record_line(partial, row["port"], "failed", error))
            report.append({"port": row["port"], "status": "failed", "error": error})
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
            console.print("  [green]ok[/]     %s  %s" % (item["port"], item["device_id"]))
        else:
            console.print("  [red]failed[/] %s  %s" % (item["port"], item["error"]))


# -- monitor --------------------------------------------------------------------------------
@click.command()
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
    fixed = port

    def resolve():
        return select_port(fixed)

    def show(event):
        if not keep(event):
            return
        if out.as_json:
            sys.stdout.write(json.dumps(event, sort_keys=True) + "\n")
            sys.stdout.flush()
        else:
            out.console.print(monitor_lib.format_event(event), highlight=False)

    try:
        monitor_lib.Monitor(resolve).run(show, duration_s=duration, wait_s=wait)
    except KeyboardInterrupt:
        pass


# -- device info | reset | shell --------------------------------------------------------------
@click.group()
def device():
    """Ask the board about itself, reset it, or open its REPL."""


@device.command()
@port_option
@click.pass_context
def info(ctx, port):
    """MicroPython version, .mpy ABI, memory, filesystem, device id, what nbk deployed."""
    port = select_port(port)
    with connect(port) as transport:
        facts = device_lib.info(transport)
    facts["port"] = port
    _out(ctx).emit(facts, human=_show_info)


def _show_info(console, facts):
    for key in sorted(facts):
        console.print("%-15s %s" % (key, facts[key]))


@device.command()
@port_option
@click.option("--hard", is_flag=True, help="machine.reset() (as the reset button), not Ctrl-D.")
@click.pass_context
def reset(ctx, port, hard):
    """Soft-reset the board (Ctrl-D: state lost, files kept), or hard-reset with --hard."""
    port = select_port(port)
    with connect(port) as transport:
        result = device_lib.reset(transport, hard=hard)
    result["port"] = port
    _out(ctx).emit(result, human=lambda c, r: c.print("%s reset of %s" % (r["reset"], r["port"])))


@device.command()
@port_option
def shell(port):
    """Open the board's interactive REPL (mpremote, no soft reset); Ctrl-] leaves."""
    port = select_port(port)
    code = subprocess.call(device_lib.shell_command(port))
    if code:
        raise NbkError("the REPL on %s ended with exit code %d; is the port free?" % (port, code))
