"""Pytest plugin: run dual test modules a second time, test by test, on the MicroPython Unix port.

A module that sets `RUN_ON_MICROPYTHON = True` gets, for each `test_*` function, a sibling item
`test_*[micropython]` that runs the same function in a fresh `micropython -X heapsize=...`
process with a scratch working directory. `RUN_ON_MICROPYTHON = "only"` keeps just the
MicroPython items (import MicroPython-only modules such as `vfs` inside the test functions).
"""

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.support.micropython import REPO_ROOT, micropython_executable

RUNNER = Path(__file__).with_name("mpy_runner.py")
PASS_MARKER = "@@MPY-PASS@@"
DEFAULT_TIMEOUT_S = 120


def pytest_addoption(parser):
    group = parser.getgroup("micropython")
    group.addoption(
        "--mpy-heap",
        default=os.environ.get("NBK_MPY_HEAP", "96K"),
        help="heap of the MicroPython Unix port for dual tests (default 96K, or $NBK_MPY_HEAP)",
    )


class MicroPythonFailure(Exception):
    """A dual test failed on MicroPython; carries the interpreter's output."""


class MicroPythonItem(pytest.Item):
    """One test function run on the MicroPython Unix port in its own process."""

    def __init__(self, *, module_name, import_root, func_name, heap, timeout_s, lineno, **kwargs):
        super().__init__(**kwargs)
        self.module_name = module_name
        self.import_root = import_root
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
            "%s:%s" % (self.import_root, REPO_ROOT),
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


def _import_root(module):
    """The directory from which `module.__name__` imports (its file minus the dotted path)."""
    path = Path(module.__file__).resolve().with_suffix("")
    for _ in module.__name__.split("."):
        path = path.parent
    return str(path)


def _dual_mode(item):
    module = getattr(item, "module", None)
    return getattr(module, "RUN_ON_MICROPYTHON", False) if module is not None else False


def pytest_collection_modifyitems(session, config, items):
    micropython_executable()  # fail loudly, not skip, when the interpreter is missing
    default_heap = config.getoption("--mpy-heap")
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
                import_root=_import_root(module),
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
            "MicroPython Unix port (heap %s): %d tests passed, %d tests failed"
            % (self.heap, self.passed, self.failed)
        )


def pytest_configure(config):
    config.pluginmanager.register(_Tally(config.getoption("--mpy-heap")), "nbk-mpy-tally")
