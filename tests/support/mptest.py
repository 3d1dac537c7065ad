"""Test helpers for both CPython and MicroPython: dual tests import nothing from pytest."""

import sys

IS_MICROPYTHON = sys.implementation.name == "micropython"


def raises(exc_type, fn, *args, **kwargs):
    """Call fn and return the exception it raised; fail if it raised nothing or something else."""
    try:
        fn(*args, **kwargs)
    except exc_type as exc:
        return exc
    except Exception as exc:  # the wrong kind: say which, keep the original visible
        raise AssertionError(
            "expected %s, got %s: %s" % (exc_type.__name__, type(exc).__name__, exc)
        ) from exc
    raise AssertionError("expected %s, nothing was raised" % exc_type.__name__)


def close_to(actual, expected, tol):
    """True when |actual - expected| <= tol; use as `assert close_to(x, 25.0, 0.01), x`."""
    return abs(actual - expected) <= tol
