"""`nbk` command line: parses arguments, calls the library, prints. No logic lives here."""

import sys

import click

from nbk import __version__
from nbk.errors import NbkError
from nbk.output import Output


class _Group(click.Group):
    """Catches NbkError once, prints it as one line, and exits with its code."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except NbkError as exc:
            out = ctx.obj.get("out") if isinstance(ctx.obj, dict) else None
            (out or Output()).error(str(exc), exc.exit_code)
            sys.exit(exc.exit_code)


@click.group(cls=_Group)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document for scripts.")
@click.option("-q", "--quiet", is_flag=True, help="Print only results and errors.")
@click.version_option(__version__, prog_name="nbk")
@click.pass_context
def main(ctx, as_json, quiet):
    """NeuroBuild bench tool: build, flash, deploy, provision and monitor sensor nodes."""
    ctx.ensure_object(dict)
    ctx.obj["json"] = as_json
    ctx.obj["out"] = Output(as_json=as_json, quiet=quiet)


# Command groups register below, one line each.
from nbk.commands import device_cmds  # noqa: E402

main.add_command(device_cmds.deploy)
main.add_command(device_cmds.provision)
main.add_command(device_cmds.monitor)
main.add_command(device_cmds.device)
from nbk.commands import build_cmds  # noqa: E402

main.add_command(build_cmds.build)
main.add_command(build_cmds.flash)
main.add_command(build_cmds.doctor)
from nbk.commands import board_cmds  # noqa: E402

main.add_command(board_cmds.boards)
