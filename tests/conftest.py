"""Test setup shared by every package's tests: the dual CPython/MicroPython runner."""

pytest_plugins = ["tests.support.mpy_plugin"]
