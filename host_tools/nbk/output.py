"""Where command output goes: rich text for people, one JSON document for scripts.

Library modules never print; they return values or report progress through a callback. Click
commands hand the result to `emit`, which picks the form from the global `--json` flag.
"""

import json
import sys

from rich.console import Console
from rich.markup import escape


class Output:
    """Per-invocation output settings (no module state: tests run many invocations per process)."""

    def __init__(self, as_json=False, quiet=False):
        self.as_json = as_json
        self.quiet = quiet
        self.emitted = False  # a JSON document is on stdout already: an error adds none
        # Human output goes to stdout; with --json it moves to stderr so stdout stays parseable.
        self.console = Console(file=sys.stderr if as_json else sys.stdout, highlight=False)
        self.err_console = Console(file=sys.stderr, highlight=False)

    def emit(self, result, human=None):
        """Print `result` as JSON (with --json) or call `human(console, result)` / print it."""
        if self.as_json:
            sys.stdout.write(json.dumps(result, indent=2, sort_keys=True, default=str) + "\n")
            sys.stdout.flush()
            self.emitted = True
        elif human is not None:
            human(self.console, result)
        elif result is not None:
            self.console.print(result)

    def info(self, message):
        if not self.quiet:
            self.console.print(message, soft_wrap=True)

    def error(self, message, exit_code=1):
        """One line on stderr; with --json also {"error", "exit_code"} on stdout for scripts,
        unless the command printed its own document (a batch report) before failing."""
        if self.as_json and not self.emitted:
            self.emit({"error": message, "exit_code": exit_code})
        # soft_wrap: an error stays one line (scripts grep it), whatever the terminal width.
        self.err_console.print(
            "[bold red]nbk:[/] " + escape(message), markup=True, highlight=False, soft_wrap=True
        )
