"""Deploy speed: `nbk deploy` against `mpremote fs cp -r` of the same files, same virtual board.

Two trees: the built application (`nbk build --board esp32-devkitc`, what a technician
deploys) and this repo's firmware/ and drivers/ sources plus a main.py. Each figure is the
median of several runs of the real command line (process start included for both tools). A
no-change deploy must send no file contents: we count the bytes of device code nbk sends
in-process to show it.

    .venv/bin/python benchmarks/deploy.py [--runs 3]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "host_tools"))

from nbk.deploy import deploy  # noqa: E402
from nbk.transport import connect  # noqa: E402
from nbk.virtualboard import VirtualBoard  # noqa: E402

BIN = os.path.dirname(sys.executable)


def make_app(dest):
    """Copy firmware/ and drivers/ (.py only) and a main.py into `dest`; return (files, bytes)."""
    count = size = 0
    for package in ("firmware", "drivers"):
        for top, dirs, names in os.walk(os.path.join(REPO, package)):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for name in names:
                if not name.endswith(".py"):
                    continue
                src = os.path.join(top, name)
                dst = os.path.join(dest, os.path.relpath(src, REPO))
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                shutil.copyfile(src, dst)
                count += 1
                size += os.path.getsize(dst)
    with open(os.path.join(dest, "main.py"), "w") as f:
        f.write("print('app booted')\n")
    return count + 1, size + 20


def clear(root):
    for name in os.listdir(root):
        path = os.path.join(root, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


def timed(command, cwd=None):
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)
    if done.returncode:
        raise SystemExit("%s failed:\n%s%s" % (" ".join(command), done.stdout, done.stderr))
    return time.perf_counter() - started


def nbk_command(port, src):
    return [os.path.join(BIN, "nbk"), "-q", "deploy", "--port", port, "--src", src]


def mpremote_command(port, src):
    # `fs cp -r DIR :` would flatten DIR into the root (toolchain.md §4): name each entry.
    entries = sorted(os.listdir(src))
    return [
        os.path.join(BIN, "mpremote"),
        "connect",
        port,
        "resume",
        "fs",
        "cp",
        "-r",
        *entries,
        ":.",  # "." not ":": the Unix port cannot stat "" (the empty root path)
    ]


def wire_bytes_of_no_change_deploy(port, src):
    """Bytes of device code nbk sends for a deploy when nothing changed (in-process count)."""
    with connect(port) as board:
        deploy(board, src)  # the board last saw mpremote's copy: make it nbk's first
        sent = []
        original = board.exec_code

        def counting(code, timeout=10.0):
            sent.append(len(code))
            return original(code, timeout=timeout)

        board.exec_code = counting
        result = deploy(board, src)
    return result, sum(sent), len(sent)


def make_built_app(scratch):
    """`nbk build --board esp32-devkitc`'s device tree (.mpy modules, boot.py, main.py,
    board.json): what a technician deploys. Returns (dir, files, bytes)."""
    out = os.path.join(scratch, "build")
    subprocess.run(
        [os.path.join(BIN, "nbk"), "-q", "build", "--board", "esp32-devkitc", "--out", out],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    app = os.path.join(out, "esp32-devkitc", "app")
    sizes = [
        os.path.getsize(os.path.join(top, name)) for top, _, names in os.walk(app) for name in names
    ]
    return app, len(sizes), sum(sizes)


def measure(board, root, src, runs):
    """Median seconds of (full, no-change) deploys for each tool, and the no-change wire count."""
    figures = {}
    for name, command in (("nbk", nbk_command), ("mpremote", mpremote_command)):
        full, same = [], []
        for _ in range(runs):
            clear(root)
            full.append(timed(command(board.port, src), cwd=src))
            same.append(timed(command(board.port, src), cwd=src))
        figures[name] = (statistics.median(full), statistics.median(same))
    return figures, wire_bytes_of_no_change_deploy(board.port, src)


def report(title, files, size, runs, figures, wire):
    nbk_full, nbk_same = figures["nbk"]
    mp_full, mp_same = figures["mpremote"]
    result, code_bytes, execs = wire
    print("%s: %d files, %d bytes; virtual board; median of %d runs" % (title, files, size, runs))
    print("%-22s %10s %10s %8s" % ("", "nbk s", "mpremote s", "ratio"))
    print("%-22s %10.3f %10.3f %7.2fx" % ("full deploy", nbk_full, mp_full, mp_full / nbk_full))
    print(
        "%-22s %10.3f %10.3f %7.2fx" % ("no-change deploy", nbk_same, mp_same, mp_same / nbk_same)
    )
    print(
        "no-change deploy: %d file bytes sent, %d bytes of device code in %d execs "
        "(%d files unchanged)" % (result["bytes_sent"], code_bytes, execs, result["unchanged"])
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    scratch = tempfile.mkdtemp(prefix="nbk-bench-")
    try:
        built, built_files, built_size = make_built_app(scratch)
        src = os.path.join(scratch, "app")
        files, size = make_app(src)
        root = os.path.join(scratch, "board")
        with VirtualBoard(root) as board:
            built_figures = measure(board, root, built, args.runs)
            source_figures = measure(board, root, src, args.runs)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report("built application (.mpy)", built_files, built_size, args.runs, *built_figures)
    print()
    report("application sources (.py)", files, size, args.runs, *source_figures)
    print("ratio = mpremote time / nbk time (above 1: nbk is faster)")


if __name__ == "__main__":
    main()
