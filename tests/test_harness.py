"""The dual runner itself: a MicroPython failure must fail the test and show its traceback."""

import subprocess
import sys
import textwrap

from tests.support.micropython import REPO_ROOT, run_micropython


def test_run_micropython_reports_interpreter_and_heap():
    proc = run_micropython(
        "import gc\nprint(sys.implementation.name, gc.mem_free() + gc.mem_alloc() < 97 * 1024)",
        heap="96K",
    )
    assert proc.stdout.split() == ["micropython", "True"]


def test_run_micropython_failure_carries_traceback():
    try:
        run_micropython("def f():\n    raise ValueError('boom here')\nf()")
    except AssertionError as exc:
        assert "ValueError: boom here" in str(exc)
        assert "line 4" in str(exc)  # the prelude adds two lines
    else:
        raise AssertionError("a failing MicroPython script must raise")


def test_dual_module_runs_twice_and_failure_shows_micropython_traceback(tmp_path):
    pkg = tmp_path / "sampletests" / "sample"
    pkg.mkdir(parents=True)
    (tmp_path / "sampletests" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "test_dual.py").write_text(
        textwrap.dedent(
            """
            import sys
            RUN_ON_MICROPYTHON = True

            def test_ok():
                assert 1 + 1 == 2

            def test_fails_only_on_micropython():
                assert sys.implementation.name != "micropython", "ran on " + sys.implementation.name
            """
        )
    )
    (tmp_path / "conftest.py").write_text(
        "import sys\nsys.path.insert(0, %r)\npytest_plugins = ['tests.support.mpy_plugin']\n"
        % str(REPO_ROOT)
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(pkg)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "1 failed, 3 passed" in out, out
    assert "test_fails_only_on_micropython[micropython]" in out, out
    assert "AssertionError: ran on micropython" in out, out
    assert "MicroPython Unix port (default heap 96K): 1 tests passed, 1 tests failed" in out, out
