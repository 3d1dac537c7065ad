"""Where the firmware's heap goes: what each module costs to import, and what the running app holds.

Runs on the MicroPython Unix port with the code compiled into a ROMFS image mounted outside the
heap, as tests/firmware/test_e2e.py does, so bytecode stays out of the heap and only what a
device also pays is counted: qstrs, function and class objects, module dicts, module-level
literals, and the objects the app makes. Figures (KiB, gc.mem_alloc after gc.collect):

- per module, imported in dependency order (each line is what that module adds), with the
  qstrs it adds and the qstr pool growth (pools double, so the growth lands on whichever
  module needs the next pool);
- the running node on simulated parts with a transport that accepts every reading (no network)
  except during a three-minute outage, after which the backlog goes out in full batches: heap
  after the firmware's imports, after the simulators are built (their own share is subtracted
  from the firmware's), after boot (`prepare`), after the drivers and uplink are built, after
  each simulated minute;
- with --smallest, the smallest -X heapsize completing the run (bisection; near the edge a
  fragmented heap can fail at one size and pass at a smaller one, so read it as +-4K).

    .venv/bin/python benchmarks/firmware_modules_heap.py [--src DIR] [--smallest]

`--src DIR` measures another tree holding drivers/, firmware/ and simulator/ (say, a copy made
before a change) for a before/after comparison.
"""

import argparse
import json
import os
import re
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from simulator import unixport  # noqa: E402

# Dependency order: each module's own imports come earlier, so its line is its own cost.
RUNTIME_MODULES = (
    "drivers.compat",
    "drivers.sensor",
    "drivers.ld2410",
    "drivers.pir",
    "drivers.mq134",
    "drivers.env",
    "drivers.bme280",
    "firmware",
    "firmware.board",
    "firmware.fs",
    "firmware.log",
    "firmware.clock",
    "firmware.status",
    "firmware.validate",
    "firmware.window",
    "firmware.telemetry",
    "firmware.buffer",
    "firmware.uplink",
    "firmware.uplink.link",
    "firmware.app",
    "firmware.bootrecord",
    "firmware.uplink.mqtt",
    "firmware.uplink.http",
    "firmware.config",
    "firmware.settings",
    "firmware.parts",
    "firmware.remote_config",
)
# Imported at boot (or for a remote config) and dropped again (firmware.app.unload): their cost
# is transient, not resident, on a running MQTT node; so is what it never imports.
NOT_RESIDENT = (
    "drivers.env",
    "firmware.bootrecord",
    "firmware.config",
    "firmware.settings",
    "firmware.parts",
    "firmware.remote_config",
    "firmware.uplink.http",
)
# Not imported by the reference node (other environment parts); measured for completeness.
OTHER_MODULES = ("drivers.sht3x", "drivers.aht20")

# Both programs go into the ROMFS image beside the code (simulator.unixport runs them from there,
# so their own bytecode stays out of the heap too); parameters come as JSON in the file named by
# sys.argv[1]: an argument of 256 bytes or more kills the Unix port (unixport.MAX_ARG_BYTES).
IMPORTS = """
import gc, json, micropython, sys


def used():
    gc.collect()
    return gc.mem_alloc()


with open(sys.argv[1]) as f:
    MODULES = json.load(f)["modules"]
for name in MODULES:
    before = used()
    __import__(name)
    after = used()
    print("@mod %s %d" % (name, after - before))
    micropython.qstr_info()
"""

# The node as test_e2e runs it, with a transport that accepts everything instead of a network.
# Its phases run in main() and each mark awaits once, so that on the webassembly port (which
# collects only between task steps) a mark ends a step: firmware_heap_32bit.py runs this same
# program there. On the Unix port the awaits change nothing.
RUN = """
import asyncio, gc, json, micropython, os, sys

with open(sys.argv[1]) as f:
    PARAMS = json.load(f)
marks = {}
live = []


async def used():
    # The webassembly port collects only between task steps (its gc.collect() asks for one):
    # let this step end before reading the heap. The Unix port collects at gc.collect().
    gc.collect()
    await asyncio.sleep_ms(0)
    gc.collect()
    return gc.mem_alloc()


class Sink:
    # Accepts every reading, except during the outage: then readings pile up in the buffer
    # and go out in full batches afterwards, the heaviest moment of the uplink.

    def __init__(self, clock, acked):
        self.clock = clock
        self.acked = acked
        self.n = 0
        self.largest = 0

    async def send(self, items):
        await asyncio.sleep_ms(0)  # a network send waits on its socket at least once
        now = self.clock.ticks_ms()
        if PARAMS["outage"][0] <= now < PARAMS["outage"][1]:
            raise OSError(111, "simulated outage")
        self.n += len(items)
        self.largest = max(self.largest, len(items))
        return [(self.acked, None)] * len(items)


async def watch(clock):
    while True:
        await clock.sleep_ms_async(60000)
        live.append(await used())


async def main():
    micropython.qstr_info()
    marks["start"] = await used()
    # The firmware's modules first (those the running node imports), so that the simulators'
    # figure below counts only what they add: they share firmware.board and driver helpers.
    from firmware.app import prepare
    from firmware.log import Log
    from firmware.uplink.link import ACKED
    import drivers.ld2410, drivers.pir, drivers.mq134, drivers.env, drivers.bme280
    marks["firmware imported"] = await used()
    from simulator.board import VirtualClock
    from simulator.parts import sim_board, set_environment
    clock = VirtualClock()
    os.mkdir("node")
    board = sim_board(clock, "node")
    board.radar.set_targets([(150, "moving", 60)])
    if board.pir is not None:
        board.pir.set_motion(True)
    set_environment(board, 22.0, 45.0, 1005.0)
    board.gas.ppm = 50.0
    marks["simulators"] = await used()
    from firmware.config import save_config
    save_config(board.fs, {"device_id": "bench", "uplink": {"host": "127.0.0.1"},
                           "intervals": {"sampling_s": 10, "transmission_s": 30, "status_s": 60}})
    del save_config
    sink = Sink(clock, ACKED)
    app, reason = prepare(board, Log(clock, write=lambda line: None, fs=board.fs))
    if app is None:
        raise SystemExit("safe mode: %s" % reason)
    marks["after boot (prepare)"] = await used()
    app.transport = sink
    app.setup_sensors()
    app.setup_uplink()
    marks["drivers and uplink built"] = await used()
    asyncio.create_task(clock.run())
    asyncio.create_task(watch(clock))
    await app.run(PARAMS["duration"])
    drained = await app.uplink.drain(app.buffer, 300000)
    micropython.qstr_info()
    print("RESULT " + json.dumps({"marks": marks, "live": live, "sent": sink.n,
                                  "readings": app.readings, "drained": drained,
                                  "largest": sink.largest}))


asyncio.run(main())
"""


def _in_tree(src_root, module):
    """True when `module` exists in the tree at `src_root` (an older tree may lack newer ones)."""
    return os.path.exists(os.path.join(src_root, *module.split(".")) + ".py")


def build_romfs(src_root, workdir):
    """The node's drivers/, firmware/ and simulator/ of `src_root` plus the two programs above."""
    extra = {"bench_imports.py": IMPORTS, "bench_run.py": RUN}
    return str(unixport.build_image(workdir, extra=extra, source_root=src_root))


def run_script(image, entry, params, heap, workdir, timeout=120):
    """Run program `entry` on MicroPython with the image at /rom; (returncode, stdout, stderr).

    `params` go as JSON in params.json of the run's fresh working directory.
    """
    cwd = tempfile.mkdtemp(dir=workdir)
    with open(os.path.join(cwd, "params.json"), "w") as f:
        json.dump(params, f)
    proc = unixport.run(image, entry, ["params.json"], heap=heap, cwd=cwd, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


_QSTR = re.compile(r"n_qstr=(\d+), n_str_data_bytes=(\d+), n_total_bytes=(\d+)")


def module_costs(image, modules, workdir):
    """[(module, heap bytes added, qstrs added, qstr pool bytes added)] in import order."""
    rc, out, err = run_script(image, "bench_imports", {"modules": list(modules)}, "1024K", workdir)
    if rc != 0:
        raise SystemExit("importing the modules failed:\n" + (out + err)[-3000:])
    rows = []
    qstrs = None
    last_q = None
    for line in out.splitlines():
        if line.startswith("@mod "):
            _, name, delta = line.split()
            rows.append([name, int(delta), 0, 0])
            continue
        m = _QSTR.search(line)
        if m and rows:
            qstrs = (int(m.group(1)), int(m.group(3)))
            if last_q is not None:
                rows[-1][2] = qstrs[0] - last_q[0]
                rows[-1][3] = qstrs[1] - last_q[1]
            else:
                rows[-1][2], rows[-1][3] = qstrs
            last_q = qstrs
    return rows


OUTAGE_START_MS = 120000  # the sink refuses for three minutes from the second minute on
OUTAGE_MS = 180000


def run_app(image, heap, workdir, duration_ms):
    """The RESULT of one run of the node, or None when it did not complete (out of memory)."""
    outage = (OUTAGE_START_MS, OUTAGE_START_MS + OUTAGE_MS)
    params = {"duration": duration_ms, "outage": list(outage)}
    rc, out, err = run_script(image, "bench_run", params, heap, workdir)
    lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    if rc != 0 or not lines:
        return None, (out + err)[-3000:]
    return json.loads(lines[-1][len("RESULT ") :]), ""


def smallest_heap(image, workdir, duration_ms, lo_k=32, hi_k=512):
    """Bisection on -X heapsize (KiB): the smallest that completes the run."""
    while hi_k - lo_k > 2:
        mid = (lo_k + hi_k) // 2
        if run_app(image, "%dK" % mid, workdir, duration_ms)[0] is None:
            lo_k = mid
        else:
            hi_k = mid
    return hi_k


def kib(n):
    return "%7.1f" % (n / 1024.0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--src", default=REPO, help="tree with drivers/ firmware/ simulator/")
    parser.add_argument("--smallest", action="store_true", help="bisect the smallest heap")
    parser.add_argument("--minutes", type=int, default=10, help="simulated minutes to run")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="nbk-modheap-") as workdir:
        image = build_romfs(args.src, workdir)
        print("source: %s   ROMFS image: %d bytes" % (args.src, os.path.getsize(image)))
        modules = [m for m in RUNTIME_MODULES + OTHER_MODULES if _in_tree(args.src, m)]
        rows = module_costs(image, modules, workdir)
        print("import cost per module (KiB; qstrs added and their pool bytes):")
        total = {"drivers": 0, "firmware": 0}
        for name, delta, nq, qbytes in rows:
            note = ""
            if name in OTHER_MODULES:
                note = "   (not loaded by the reference node)"
            elif name in NOT_RESIDENT:
                note = "   (boot or remote config only: dropped again)"
            print("  %-24s %s   %4d qstrs %s%s" % (name, kib(delta), nq, kib(qbytes), note))
            if name not in NOT_RESIDENT and name not in OTHER_MODULES:
                total[name.split(".")[0]] += delta
        print("  drivers resident            %s" % kib(total["drivers"]))
        print(
            "  firmware resident (MQTT)    %s   (asyncio included; without the modules "
            "dropped after boot)" % kib(total["firmware"])
        )
        duration = args.minutes * 60000
        result, why = run_app(image, "1024K", workdir, duration)
        if result is None:
            raise SystemExit("the node run failed at 1024K:\n" + why)
        marks = result["marks"]
        sims = marks["simulators"] - marks["firmware imported"]  # what the simulators add
        print(
            "running node, fake uplink, %d simulated minutes (KiB; firmware = total minus the "
            "interpreter's start %s and the simulators' %s):"
            % (args.minutes, kib(marks["start"]).strip(), kib(sims).strip())
        )
        base = marks["start"] + sims

        def share(key):
            return kib(
                marks[key] - base if key != "firmware imported" else marks[key] - marks["start"]
            )

        for key in ("firmware imported", "after boot (prepare)", "drivers and uplink built"):
            print("  %-26s %s   firmware %s" % (key, kib(marks[key]), share(key)))
        live = result["live"]
        print("  live each minute           " + " ".join(kib(x).strip() for x in live))
        print(
            "  steady (last minute)       %s   firmware %s" % (kib(live[-1]), kib(live[-1] - base))
        )
        print(
            "  readings %d, delivered %d (all: %s), largest batch %d"
            % (result["readings"], result["sent"], result["drained"], result["largest"])
        )
        if args.smallest:
            k = smallest_heap(image, workdir, duration)
            print("smallest -X heapsize completing the run: %dK (simulators included)" % k)


if __name__ == "__main__":
    main()
