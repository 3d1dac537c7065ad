"""The firmware's heap on a 32-bit MicroPython, measured beside the 64-bit Unix port.

The Unix port the tests use is x86-64: pointers, object headers and GC blocks are twice their
ESP32 size. This runs the node of benchmarks/firmware_modules_heap.py (simulated parts in the
process, a transport that accepts every reading except during a three-minute outage, ten
simulated minutes, then drain) on the webassembly port (wasm32, MicroPython 1.29 from npm,
installed by `make bench` into build/wasm32) and, in the same run and from the same ROMFS
image, on the Unix port as the baseline. Figures in KiB (gc.mem_alloc after a collection),
with the ratios wasm32 / x64: the live heap after the imports, after boot, each simulated
minute; the simulators' share and the interpreter's start, which the firmware's share leaves
out; the dynamic qstrs (their pools double: a few more can move KiBs between marks); whether
the run completes in 96K and 64K on wasm32; the smallest heap completing it (bisection, +-4K).

How the webassembly port differs from a board, and what this does about it:

- Its heap grows: when a collection cannot satisfy an allocation it adds an area (at least as
  large as the heap so far) and frees it again once empty, so the heap total after a run can
  hide growth. benchmarks/wasm32_run.mjs takes the C heap away once the VM is up: an allocation
  that does not fit raises MemoryError, as on a board.
- It collects garbage only when a call from JavaScript returns (gc.collect() just asks for
  one), and its asyncio runs every ready task in one such call. BOOT (`wasm32_boot` in the
  image) runs one task step per call and asks for a collection after each, so every step
  starts on a collected heap; the program (firmware_modules_heap.RUN) takes each mark in a step
  of its own, and its sink yields once per send, as a network send does. What one step
  allocates is still not collected before the step ends (boot, `prepare`, is one step), so the
  wasm32 smallest heap is an upper bound for a board; the per-step figures printed with it say
  how much.

    .venv/bin/python benchmarks/firmware_heap_32bit.py [--src DIR] [--minutes N] [--quick]

`--quick` skips the bisections (about half a minute).
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

import firmware_modules_heap as modheap  # noqa: E402

from simulator import unixport  # noqa: E402

PORT_PACKAGE = "@micropython/micropython-webassembly-pyscript"
PORT_DIR = os.path.join(REPO, "build", "wasm32", "node_modules", *PORT_PACKAGE.split("/"))
DRIVER = os.path.join(REPO, "benchmarks", "wasm32_run.mjs")


# The Python half of wasm32_run.mjs, imported from the image on the webassembly port.
BOOT = '''
"""Runs a program on the webassembly port as the Unix port runs it.

This port collects garbage only when a call from JavaScript returns (its gc.collect() just asks
for one), and its asyncio runs every ready task in one such call. So _run_iter here runs one
task step per call and asks for a collection after each: every step starts on a collected heap.

Its names are asyncio.core's, already in the port's qstr table: the program's dynamic qstrs end
near a pool doubling (1,260), which a few dozen new names would cross (KiBs moved between marks).
"""

import asyncio, gc, js, micropython, os, sys
from asyncio import core
from time import ticks_diff, ticks_ms

# Per task step: the most live at its start (after a collection), the most held at its end
# (nothing is collected during a step), the most allocated in one step of the program's main
# task (boot) and of the other tasks (the running node).
state = [0, 0, 0, 0]
_top_level_task = None  # the program's main task
_exit = js.wasm32Exit  # looked up now: a lookup needs heap


def _run_iter():
    """One turn of core._run_iter's loop, then back to JS. Never raises: the port makes an
    error reaching JS a string on the heap, and on a full heap it then spins forever."""
    try:
        t = core._task_queue.peek()
        if t is None:
            return
        dt = ticks_diff(t.ph_key, ticks_ms())
        if dt > 0:
            _schedule_run_iter(dt)
            return
        core._task_queue.pop()
        core.cur_task = t
        before = gc.mem_alloc()  # locals cost no qstr: only names of functions and arguments do
        exc = t.data
        try:
            if not exc:
                t.coro.send(None)
            else:
                t.data = None
                t.coro.throw(exc)
        except (core.CancelledError, Exception) as er:
            done(t, exc, er)
        core.cur_task = core._top_level_task
        held = gc.mem_alloc()
        which = 2 if t is _top_level_task else 3
        state[0] = max(state[0], before)
        state[1] = max(state[1], held)
        state[which] = max(state[which], held - before)
        gc.collect()
        _schedule_run_iter(0)
    except BaseException as er:
        close(er)


_schedule_run_iter = js.wasm32Scheduler(_run_iter)  # _run_iter handed to JS once, not per sleep
core._schedule_run_iter = _schedule_run_iter
core.new_event_loop()  # its task queue calls _schedule_run_iter on every push


def done(t, exc, er):
    """Task `t` finished with `er` (StopIteration or an exception), as core._run_iter does."""
    if t.state:
        waiting = False
        if t.state is True:
            t.state = None
        elif callable(t.state):
            t.state(t, er)
            t.state = False
            waiting = True
        else:
            while t.state.peek():
                core._task_queue.push(t.state.pop())
                waiting = True
            t.state = False
        if not waiting and not isinstance(er, (core.CancelledError, StopIteration)):
            core._task_queue.push(t)
        t.data = er
    elif t.state is None:
        t.data = exc
        core._exc_context["exception"] = exc
        core._exc_context["future"] = t
        core.Loop.call_exception_handler(core._exc_context)


def close(er=None):
    """End the process: status 1 after printing `er` (what fits), else 0."""
    try:
        if er is not None:
            sys.print_exception(er)
        print("STEPS", *state)
    except MemoryError:
        pass
    micropython.mem_info()
    _exit(0 if er is None else 1)


async def _promote_to_task(coro):
    try:
        await coro
    except BaseException as er:
        close(er)
    close()


def create_task(coro):
    """asyncio.run here (this port has none): main() becomes a task, as asyncio.run makes it."""
    global _top_level_task
    _top_level_task = asyncio.create_task(_promote_to_task(coro))


def run(t):
    """Import program `t` from /rom in /run (sys.argv = [t, "params.json"]); close() when it
    ends."""
    sys.path.remove("/rom")
    sys.path.insert(0, "/rom")
    os.chdir("/run")
    sys.argv[:] = [t, "params.json"]
    asyncio.run = create_task
    micropython.mem_info()
    try:
        __import__(t)
    except BaseException as er:
        close(er)
    if core._task_queue.peek() is None:
        close()
'''


def node_or_exit():
    """The node executable, or SystemExit saying how to get the port."""
    node = shutil.which("node")
    if node is None:
        raise SystemExit("node is not installed: this benchmark needs Node.js 20+ and npm")
    if not os.path.isfile(os.path.join(PORT_DIR, "micropython.mjs")):
        raise SystemExit(
            "the wasm32 MicroPython is not in build/wasm32: run `make bench` (it installs %s "
            "with npm)" % PORT_PACKAGE
        )
    return node


def build_image(src_root, workdir):
    """drivers/, firmware/ and simulator/ of `src_root`, firmware_modules_heap.RUN as bench_run,
    and BOOT."""
    extra = {"bench_run.py": modheap.RUN, "wasm32_boot.py": BOOT}
    return str(unixport.build_image(_subdir(workdir, "both"), extra=extra, source_root=src_root))


def _subdir(workdir, name):
    """Each image in its own folder: build_image always writes app.romfs."""
    path = os.path.join(workdir, name)
    os.makedirs(path, exist_ok=True)
    return path


def run_params(duration_ms):
    start = modheap.OUTAGE_START_MS
    return {"duration": duration_ms, "outage": [start, start + modheap.OUTAGE_MS]}


_TOTAL = re.compile(r"GC: total: (\d+)")
_STEPS = re.compile(r"^STEPS (\d+) (\d+) (\d+) (\d+)$", re.M)


def run_wasm(node, image, heap_k, duration_ms, timeout=120):
    """One run on wasm32: {"result": RESULT or None, "totals": GC heap totals at start and
    end, "steps": BOOT's per-step figures, "qstrs": [(dynamic qstrs, their pools' bytes)] at
    the program's start and end, "why": the output's tail when it did not complete}."""
    cmd = [node, DRIVER, image, str(heap_k), json.dumps(run_params(duration_ms)), "bench_run"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        out, ok = proc.stdout + proc.stderr, proc.returncode == 0
    except subprocess.TimeoutExpired as exc:
        out, ok = (exc.stdout or b"").decode(errors="replace") + "\n(timed out)", False
    lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    steps = _STEPS.search(out)
    return {
        "result": json.loads(lines[-1][len("RESULT ") :]) if ok and lines else None,
        "totals": [int(t) for t in _TOTAL.findall(out)],
        "steps": [int(n) for n in steps.groups()] if steps else None,
        "qstrs": _qstrs(out),
        "why": "" if ok and lines else out[-3000:],
    }


def run_x64(image, workdir, duration_ms):
    """One run on the Unix port at 1024K (as firmware_modules_heap.run_app, keeping the
    output): (RESULT, qstrs), or SystemExit with the output's tail."""
    rc, out, err = modheap.run_script(image, "bench_run", run_params(duration_ms), "1024K", workdir)
    lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    if rc != 0 or not lines:
        raise SystemExit("the x64 run failed at 1024K:\n" + (out + err)[-3000:])
    return json.loads(lines[-1][len("RESULT ") :]), _qstrs(out)


def _qstrs(out):
    """[(dynamic qstrs, bytes of their pools)] at the program's start and end."""
    return [(int(n), int(total)) for n, _, total in modheap._QSTR.findall(out)]


def smallest_wasm(node, image, duration_ms, lo_k=32, hi_k=512):
    """Bisection on the wasm32 heap (KiB), as firmware_modules_heap.smallest_heap does on x64."""
    while hi_k - lo_k > 2:
        mid = (lo_k + hi_k) // 2
        if run_wasm(node, image, mid, duration_ms)["result"] is None:
            lo_k = mid
        else:
            hi_k = mid
    return hi_k


def shares(result):
    """Heap figures (bytes) of one run: totals, and the firmware's share of them."""
    marks, live = result["marks"], result["live"]
    sims = marks["simulators"] - marks["firmware imported"]
    base = marks["start"] + sims
    return {
        "interpreter's start": marks["start"],
        "simulators' share": sims,
        "firmware imported (its share)": marks["firmware imported"] - marks["start"],
        "after boot, firmware's share": marks["after boot (prepare)"] - base,
        "uplink built, firmware's share": marks["drivers and uplink built"] - base,
        "steady (last minute), total": live[-1],
        "steady, firmware's share": live[-1] - base,
        "largest live minute, firmware": max(live) - base,
    }


def kib(n):
    return n / 1024.0


def print_live(x64, w32):
    """The live-heap table: x64, wasm32, ratio."""
    print("live heap, KiB (after a collection)      x64   wasm32   wasm32/x64")
    a, b = shares(x64), shares(w32)
    for key in a:
        print("  %-34s %7.1f  %7.1f   %6.2f" % (key, kib(a[key]), kib(b[key]), b[key] / a[key]))
    for name, res in (("x64", x64), ("wasm32", w32)):
        minutes = " ".join("%.1f" % kib(x) for x in res["live"])
        print("  each minute, %-6s  %s" % (name, minutes))
        print(
            "  readings %d, delivered %d (all: %s), largest batch %d"
            % (res["readings"], res["sent"], res["drained"], res["largest"])
        )


def print_qstrs(x64, w32):
    """Pools double, so a few qstrs more or less can move a whole pool (KiB) between marks."""
    for name, q in (("x64", x64), ("wasm32", w32)):
        print(
            "  %-6s dynamic qstrs %d at the start, %d at the end; their pools %.1f, %.1f KiB"
            % (name, q[0][0], q[-1][0], kib(q[0][1]), kib(q[-1][1]))
        )


def print_steps(steps):
    """BOOT's per-step figures: what this port's collection between task steps costs."""
    print(
        "wasm32 task steps (this port collects only between them): most live at a step's start "
        "%.1f KiB, most held at a step's end %.1f KiB; most allocated within one step: boot "
        "%.1f KiB, running node %.1f KiB" % tuple(kib(n) for n in steps)
    )


def print_fits(node, image, duration_ms, steady_fw):
    """Whether the whole run (simulators in the heap) completes in 96K and 64K on wasm32."""
    print("wasm32, the whole run in a fixed heap (simulators included):")
    for k in (96, 64):
        run = run_wasm(node, image, k, duration_ms)
        totals = run["totals"]
        if run["result"]:
            outcome = "completes"
        else:
            errors = re.findall(r"^(\w+Error\b.*)$", run["why"], re.M)
            why = errors[-1].rstrip(": ") if errors else "no result"
            outcome = "does not complete (%s)" % why
        grew = len(totals) > 1 and totals[-1] != totals[0]
        print(
            "  heapsize %dK (GC heap %s bytes, %s): the run %s; the firmware's steady share "
            "%.1f KiB is %d%% of it"
            % (
                k,
                totals[0] if totals else "?",
                "grew" if grew else "did not grow",
                outcome,
                kib(steady_fw),
                round(100.0 * steady_fw / (k * 1024)),
            )
        )


def print_smallest(node, image, workdir, duration_ms):
    """Bisections: the same program on both ports."""
    k64 = modheap.smallest_heap(image, workdir, duration_ms)
    k32 = smallest_wasm(node, image, duration_ms)
    print("smallest heap completing the run (simulators included; +-4K):")
    print("  x64 -X heapsize %dK, wasm32 heapsize %dK: ratio %.2f" % (k64, k32, k32 / k64))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--src", default=REPO, help="tree with drivers/ firmware/ simulator/")
    parser.add_argument("--minutes", type=int, default=10, help="simulated minutes to run")
    parser.add_argument("--quick", action="store_true", help="skip the bisections")
    args = parser.parse_args(argv)
    node = node_or_exit()
    duration = args.minutes * 60000
    with tempfile.TemporaryDirectory(prefix="nbk-heap32-") as workdir:
        image = build_image(args.src, workdir)
        version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout
        print(
            "wasm32: %s %s (node %s); x64: the Unix port; one ROMFS image (%d bytes); "
            "%d simulated minutes"
            % (PORT_PACKAGE, _port_version(), version.strip(), os.path.getsize(image), args.minutes)
        )
        x64, x64_qstrs = run_x64(image, workdir, duration)
        w32 = run_wasm(node, image, 1024, duration)
        if w32["result"] is None:
            raise SystemExit("the wasm32 run failed at 1024K:\n" + w32["why"])
        print_live(x64, w32["result"])
        print_qstrs(x64_qstrs, w32["qstrs"])
        print_steps(w32["steps"])
        print_fits(node, image, duration, shares(w32["result"])["steady, firmware's share"])
        if not args.quick:
            print_smallest(node, image, workdir, duration)


def _port_version():
    with open(os.path.join(PORT_DIR, "package.json")) as f:
        return json.load(f)["version"]


if __name__ == "__main__":
    main()
