"""`make demo`: one virtual node, live — the real firmware publishing to a local Mosquitto.

The firmware (firmware/, drivers/) runs alone in a bounded heap on the MicroPython Unix port,
its bytecode in ROMFS (simulator.unixport), as on a board and as tests/firmware/test_e2e.py
runs it; simulator.node holds its time to `--speed` x real time. Its sensors are simulated in
this process and reached over simulator.bridge, where the world script (simulator.node) sets
their truth at exact simulated ticks. A private Mosquitto is started on a free loopback port; a
paho client subscribes (QoS 1) to the node's data and status topics and prints each reading as
it arrives, every value coloured by its quality. At the end: what arrived, unique seqs, gaps,
duplicates.

    python -m simulator.demo                       # 60 s, 10 simulated minutes, busy office
    python -m simulator.demo --duration 20 --speed 30 --scenario quiet --profile platform

Exit status: 0 when readings arrived with no gap; 1 when nothing arrived, a reading was lost,
the node crashed (its last console lines are shown) or a tool is missing; 130 on Ctrl-C.
"""

import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import click
from nbk.boards import BoardError, list_boards, load_board
from rich.console import Console
from rich.text import Text

from simulator import unixport
from simulator.bridge_host import BridgeHost
from simulator.broker import BrokerError, Mosquitto
from simulator.node import end_ms
from simulator.prng import Prng
from simulator.world import World, host_parts, script_world

DEVICE_ID = "demo-node-1"
# The firmware alone in its heap (its parts are served over simulator.bridge): 128K ran every
# demo variant twice and 124K runs out in the first readings, so 132K keeps a 4K step of margin
# (docs/demo.md, "Memory"). Objects on this x86-64 port are about twice their ESP32 size.
DEFAULT_HEAP = "132K"
# Embedded defaults except the cadence: a reading every 10 simulated s so a minute of demo at
# 10x shows 60 of them; the uplink may not send more often than it samples (firmware.config).
INTERVALS = {"sampling_s": 10, "transmission_s": 10, "status_s": 60}
# The platform profile (contracts.md §2) needs a location: the demo office.
LOCATION = {"latitude": 52.520008, "longitude": 13.404954}
FINISH_GRACE_S = 3.0  # after the node's last PUBACK, how long its messages may still be in flight
TAIL_LINES = 15

QUALITY_STYLE = {"good": "green", "suspect": "yellow", "warming_up": "cyan", "bad": "bold red"}


class DemoError(Exception):
    """An expected failure, printed as one message without a traceback; exit 1."""


# ---- building the node ---------------------------------------------------------------------


def build_image(work):
    """The application as a ROMFS image of .mpy files in `work`; DemoError on failure."""
    try:
        return unixport.build_image(work)
    except unixport.UnixPortError as exc:
        raise DemoError(str(exc)) from None


def node_config(device_id, port, profile):
    """The node's config.json: embedded defaults, this broker, the demo cadence; validated."""
    from firmware.config import ConfigError, validate

    config = {
        "device_id": device_id,
        "uplink": {"transport": "mqtt", "host": "127.0.0.1", "port": port, "profile": profile},
        "intervals": dict(INTERVALS),
        "location": dict(LOCATION),
    }
    try:
        validate(config)
    except ConfigError as exc:
        raise DemoError("the demo's node config is invalid: %s" % exc) from None
    return config


def board_info(name):
    """/board.json for a board in boards/ (nbk.boards validates it); DemoError if unknown."""
    try:
        board = load_board(name)
    except BoardError as exc:
        raise DemoError(str(exc)) from None
    return board.description, board.to_device_dict()


class NodeProcess:
    """The node on the Unix port; a thread reads its console lines into `console` and
    `events`, another keeps its stderr (a traceback, when it dies)."""

    def __init__(self, image, work, spec, config, info, heap):
        self.work = Path(work)
        fs = self.work / spec["fs"]
        fs.mkdir()
        (fs / "config.json").write_text(json.dumps(config))
        (fs / "board.json").write_text(json.dumps(info))
        (self.work / "spec.json").write_text(json.dumps(spec))
        self.image = image
        self.heap = heap
        self.console = []  # every stdout line, in order
        self.events = None  # set by start(): a queue the reader thread feeds
        self._proc = None
        self._stderr = b""
        self._stderr_reader = None

    @property
    def pid(self):
        return self._proc.pid if self._proc is not None else None

    def start(self, events):
        self.events = events
        try:
            self._proc = unixport.launch(
                self.image,
                "simulator.node:main",
                ["spec.json"],
                heap=self.heap,
                cwd=self.work,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # Ctrl-C reaches the demo only; it stops the node itself
            )
        except unixport.UnixPortError as exc:
            raise DemoError(str(exc)) from None
        threading.Thread(target=self._read_stdout, daemon=True).start()
        self._stderr_reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._stderr_reader.start()

    def _read_stdout(self):
        for raw in self._proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.console.append(line)
            self.events.put(("console", line))
        self.events.put(("exit", None))

    def _read_stderr(self):
        self._stderr = self._proc.stderr.read()

    def wait(self, timeout_s):
        try:
            return self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def stop(self):
        """Terminate (then kill) the node; safe to call twice."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(3)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(3)

    def stderr_text(self):
        """Everything the node wrote to stderr (waits briefly for the reader once it exited)."""
        if self._stderr_reader is not None:
            self._stderr_reader.join(2)
        return self._stderr.decode("utf-8", "replace")


# ---- watching the broker -------------------------------------------------------------------


class Feed:
    """A paho 2.x client subscribed with QoS 1 to the node's topics; messages go to `events`."""

    def __init__(self, host, port, topics, events):
        import paho.mqtt.client as mqtt

        self.topics = topics
        self._events = events
        self._subscribed = threading.Event()
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="nbk-demo-%d" % os.getpid()
        )
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed.set()
        self._client.on_message = self._on_message
        self._host = host
        self._port = port

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        client.subscribe([(t, 1) for t in self.topics])

    def _on_message(self, client, userdata, msg):
        self._events.put(("mqtt", (msg.topic, bytes(msg.payload))))

    def start(self, timeout_s=5.0):
        """Connect and wait for the SUBACK, so nothing the node publishes is missed."""
        self._client.connect(self._host, self._port, keepalive=30)
        self._client.loop_start()
        if not self._subscribed.wait(timeout_s):
            self.stop()
            raise DemoError(
                "the broker on %s:%d did not acknowledge the subscription within %.0f s"
                % (self._host, self._port, timeout_s)
            )

    def stop(self):
        self._client.disconnect()
        self._client.loop_stop()


class Tally:
    """Counts readings as they arrive: unique keys, duplicates, and gaps against the node.

    The key is (device_id, seq) for the neurobuild profile (contracts.md §1 extras); the
    platform profile carries no seq, so its key is the timestamp, unique per reading.
    """

    def __init__(self):
        self.received = 0
        self.keys = set()
        self.seqs = set()
        self.duplicates = 0
        self.bad_payloads = 0
        self.statuses = 0

    def add(self, reading):
        """Count one decoded reading; returns False for a duplicate."""
        self.received += 1
        seq = reading.get("seq")
        key = (reading.get("device_id"), seq if seq is not None else reading.get("timestamp"))
        if key in self.keys:
            self.duplicates += 1
            return False
        self.keys.add(key)
        if isinstance(seq, int):
            self.seqs.add(seq)
        return True

    def missing(self, produced=None):
        """Seqs (or, without seqs, a count) the node produced that never arrived.

        `produced` is the node's own count of readings (seqs 1..produced), when it said.
        """
        if self.seqs:
            last = produced if produced is not None else max(self.seqs)
            return sorted(set(range(1, last + 1)) - self.seqs)
        if produced is None:
            return []
        return list(range(len(self.keys) + 1, produced + 1))


# ---- showing it ----------------------------------------------------------------------------

# (header, width, decimals) of each column of a reading row
_COLUMNS = (
    ("seq", 5, 0),
    ("time", 8, None),
    ("here", 4, None),  # ld2410 presence
    ("cm", 4, 0),  # ld2410 distance of the nearest target
    ("enrg", 4, 0),  # ld2410 energy of the strongest
    ("occ", 4, 2),  # fraction of the window occupied
    ("pir", 4, None),  # motion
    ("gas ppm", 7, 1),
    ("°C", 6, 2),
    ("%RH", 5, 1),
    ("hPa", 7, 1),
)


def header_line():
    text = Text()
    for name, width, _ in _COLUMNS:
        text.append(name.rjust(width) + " ", style="bold")
    return text


def _cell(text, value, quality, width, places):
    if value is None:
        shown = "-"
    elif value is True:
        shown = "yes"
    elif value is False:
        shown = "no"
    elif isinstance(value, (int, float)) and places is not None:
        shown = "%.*f" % (places, value)
    else:
        shown = str(value)
    text.append(shown.rjust(width) + " ", style=QUALITY_STYLE.get(quality, ""))


def reading_line(r):
    """One reading (either profile) as a coloured row under header_line()."""
    q = r.get("quality", {})
    sensors = r.get("sensors", {})
    ld = sensors.get("ld2410", {})
    env = r.get("environment", {})
    data = r.get("sensor_data", {})  # platform profile
    cells = [
        (r.get("seq"), None),
        (r.get("timestamp", "")[11:19], None),
        (ld.get("presence"), q.get("presence")),
        (ld.get("distance"), q.get("distance_cm")),
        (ld.get("energy"), q.get("energy")),
        (r.get("occupancy"), q.get("occupancy")),
        (sensors.get("pir", {}).get("motion_detected"), q.get("motion")),
        (sensors.get("mq134", {}).get("gas_concentration"), q.get("gas_ppm")),
    ]
    for name, key in (("temperature_c", "temperature"), ("humidity_pct", "humidity")):
        cells.append(_env_cell(env, data, q, name, key))
    cells.append(_env_cell(env, data, q, "pressure_hpa", "pressure"))
    text = Text()
    for (value, quality), (_, width, places) in zip(cells, _COLUMNS, strict=True):
        _cell(text, value, quality, width, places)
    return text


def _env_cell(env, data, q, name, key):
    if name in env:
        return env[name], q.get(name)
    item = data.get(key)
    if isinstance(item, dict):
        return item.get("value"), item.get("quality")
    return None, None


def status_line(s):
    """A status message (retained, or the last will) as one line."""
    if not s.get("online", True):
        return Text("  status: node offline (last will)", style="bold red")
    parts = ["up %ss" % s.get("uptime_s", "?")]
    if "free_heap" in s:
        parts.append("free heap %d B" % s["free_heap"])
    parts.append("buffer %s" % s.get("buffer_depth", "?"))
    if s.get("buffer_drops"):
        parts.append("drops %d" % s["buffer_drops"])
    if "uplink" in s:
        uplink = "uplink %s" % s["uplink"]
        if "breaker" in s:  # the circuit breaker in front of the uplink (contracts.md §6)
            uplink += " (breaker %s)" % str(s["breaker"]).replace("_", "-")
        parts.append(uplink)
    parts.append("fw %s" % s.get("firmware_version", "?"))
    return Text("  status: " + ", ".join(parts), style="blue")


def world_line(t_ms, label):
    """A moment of the world script, at its simulated minutes:seconds."""
    t = t_ms // 1000
    return Text("  >> %d:%02d  %s" % (t // 60, t % 60, label), style="bold magenta")


def console_line(line):
    """A node console line worth showing (warnings, errors, app and uplink news), or None."""
    if not line.startswith("@nbk "):
        return None
    try:
        entry = json.loads(line[5:])
    except ValueError:
        return Text("  node: " + line, style="dim")
    mod, msg, lvl = entry.get("mod"), entry.get("msg", ""), entry.get("lvl")
    if lvl in ("W", "E"):
        kv = entry.get("kv") or {}
        detail = (" (%s)" % json.dumps(kv)) if kv else ""
        return Text(
            "  node %s %s: %s%s" % (lvl, mod, msg, detail), style="yellow" if lvl == "W" else "red"
        )
    if mod in ("app", "uplink"):
        return Text("  node: %s %s" % (mod, msg), style="dim")
    return None


def finished_counts(console):
    """The kv of the node's `node finished` line, or None when it never got there."""
    for line in reversed(console):
        if line.startswith("@nbk ") and '"msg":"finished"' in line:
            try:
                return json.loads(line[5:]).get("kv")
            except ValueError:
                return None
    return None


# ---- the demo ------------------------------------------------------------------------------


class Options:
    def __init__(
        self,
        duration_s=60.0,
        speed=10.0,
        profile="neurobuild",
        board="nb-node-v1",
        seed=1,
        scenario="busy",
        heap=DEFAULT_HEAP,
        device_id=DEVICE_ID,
    ):
        self.duration_s = duration_s
        self.speed = speed
        self.profile = profile
        self.board = board
        self.seed = seed
        self.scenario = scenario
        self.heap = heap
        self.device_id = device_id


def run_demo(opts, console):
    """Run the whole demo; returns the exit status. DemoError for expected failures."""
    from firmware.status import FIRMWARE_VERSION
    from firmware.telemetry import data_topic, status_topic

    description, info = board_info(opts.board)
    work = tempfile.mkdtemp(prefix="nbk-demo-")
    broker = node = feed = host = None
    try:
        try:
            broker = Mosquitto(Path(work)).start()
        except BrokerError as exc:
            raise DemoError(str(exc)) from None
        image = build_image(work)
        config = node_config(opts.device_id, broker.port, opts.profile)
        prefix = config["uplink"].get("topic_prefix", "neurobuild/sensors")
        topics = [data_topic(prefix, opts.device_id), status_topic(prefix, opts.device_id)]
        events = queue.Queue()
        host = parts_host(work, opts, info, events)
        spec = {
            "fs": "node",
            "bridge": host.address,
            "seed": opts.seed,
            "speed": opts.speed,
            "duration_s": opts.duration_s,
        }
        feed = Feed(broker.host, broker.port, topics, events)
        feed.start()
        node = NodeProcess(image, work, spec, config, info, opts.heap)
        node.start(events)  # its lines wait in `events` until the header is out
        _print_header(console, opts, broker, node, host, description, FIRMWARE_VERSION, topics)
        return _watch(console, opts, node, host, events, topics)
    except KeyboardInterrupt:
        console.print("\n[bold]interrupted:[/] stopping the node and the broker")
        return 130
    finally:
        if node is not None:
            node.stop()
        if host is not None:
            host.close()
        if feed is not None:
            feed.stop()
        if broker is not None:
            broker.stop()
        shutil.rmtree(work, ignore_errors=True)


def parts_host(work, opts, info, events):
    """The node's simulated parts, served over simulator.bridge from a thread of this process,
    with the world script playing on them; each labelled moment goes to `events` as
    ("world", (t_ms, label)). Started; close() it."""
    parts = host_parts(Path(work) / "parts", seed=opts.seed, info=info)
    world = World(opts.scenario, Prng(opts.seed + 100))
    host = BridgeHost(parts)
    script_world(host, world, lambda t_ms, label, people: events.put(("world", (t_ms, label))))
    return host.__enter__()


def _print_header(console, opts, broker, node, host, description, version, topics):
    # the node stops half a window after the last whole one (simulator.node.end_ms)
    sim_s = end_ms(opts.duration_s * opts.speed * 1000, INTERVALS["sampling_s"] * 1000) // 1000
    console.print("[bold]NeuroBuild demo: one virtual node[/]")
    console.print("  broker    %s (Mosquitto, pid %s)" % (broker.url, broker.pid))
    console.print("  device    %s, firmware %s" % (opts.device_id, version))
    console.print("  board     %s: %s" % (opts.board, description))
    console.print(
        "  runtime   MicroPython Unix port, heap %s for the firmware alone, code in ROMFS (pid %s)"
        % (opts.heap, node.pid)
    )
    console.print("  parts     simulated here, reached over simulator.bridge on %s" % host.address)
    console.print(
        "  time      %gx real time: %.0f s show %d min %02d s, a reading every %d s"
        % (opts.speed, sim_s / opts.speed, sim_s // 60, sim_s % 60, INTERVALS["sampling_s"])
    )
    console.print("  world     %s, seed %d; profile %s" % (opts.scenario, opts.seed, opts.profile))
    console.print("  topics    %s (QoS 1)" % ", ".join(topics))
    legend = Text("  quality   ")
    for q, style in QUALITY_STYLE.items():
        legend.append(q, style=style)
        legend.append(" ")
    console.print(legend)
    console.print()


def stall_limit_s(speed):
    """Real seconds without a word from the node after which it counts as hung: three
    readings' worth at this speed, and never less than 30 s (a loaded machine is slow)."""
    return max(30.0, 3 * INTERVALS["sampling_s"] / speed)


def _watch(console, opts, node, host, events, topics):
    """Show events until the node finishes, crashes or hangs; return the exit status."""
    view = View(console, topics)
    started = time.monotonic()
    stall_s = stall_limit_s(opts.speed)
    last_event = started
    finish_by = counts = None
    while True:
        now = time.monotonic()
        if finish_by is not None and (
            now > finish_by or len(view.tally.keys) >= counts["readings"]
        ):
            break
        if now - last_event > stall_s:
            node.stop()
            _show_tail(console, node, host)
            raise DemoError("the node said nothing for %.0f s: hung, stopped it" % stall_s)
        try:
            kind, item = events.get(timeout=0.2)
        except queue.Empty:
            continue
        last_event = now
        if kind == "exit" and counts is None:
            counts = _finished(console, opts, node, host, view.tally)
            counts["real_s"] = time.monotonic() - started
            finish_by = time.monotonic() + FINISH_GRACE_S
        else:
            view.show(kind, item)
    return _summary(console, view.tally, counts)


class View:
    """Prints what arrives: readings as rows (a header every 20), status, node lines, and the
    world script's moments."""

    def __init__(self, console, topics):
        self.console = console
        self.data_topic, self.status_topic = topics
        self.tally = Tally()
        self.rows = 0

    def show(self, kind, item):
        if kind == "console":
            shown = console_line(item)
            if shown is not None:
                self.console.print(shown)
        elif kind == "mqtt":
            self.message(*item)
        elif kind == "world":
            self.console.print(world_line(*item))

    def message(self, topic, payload):
        try:
            doc = json.loads(payload)
        except ValueError:
            self.tally.bad_payloads += 1
            self.console.print(
                Text("  unreadable payload on %s: %r" % (topic, payload[:80]), "red")
            )
            return
        if topic == self.status_topic:
            self.tally.statuses += 1
            self.console.print(status_line(doc))
            return
        if self.rows % 20 == 0:
            self.console.print(header_line())
        self.rows += 1
        line = reading_line(doc)
        if not self.tally.add(doc):
            line.append(" duplicate", style="yellow")
        self.console.print(line)


def _finished(console, opts, node, host, tally):
    """The node's final counts once it exited; DemoError with its last lines if it crashed."""
    code = node.wait(5)
    counts = finished_counts(node.console)
    if code == 0 and counts is not None:
        return counts
    _show_tail(console, node, host)
    hint = ""
    last = node.console[-TAIL_LINES:] + node.stderr_text().splitlines()[-TAIL_LINES:]
    if any("MemoryError" in ln for ln in last):
        hint = "; it ran out of heap at %s: pass a larger --heap" % opts.heap
    raise DemoError(
        "the node crashed (exit status %s) after %d readings arrived%s"
        % (code, tally.received, hint)
    )


def _show_tail(console, node, host=None):
    console.print("[bold red]the node's last console lines:[/]")
    for line in node.console[-TAIL_LINES:]:
        console.print(Text("  " + line))
    err = node.stderr_text().strip()
    if err:
        console.print("[bold red]its stderr:[/]")
        for line in err.splitlines()[-TAIL_LINES:]:
            console.print(Text("  " + line))
    if host is not None and host.errors:  # a simulated part failed, not the firmware
        console.print("[bold red]the simulated parts failed (bridge host):[/]")
        for line in host.errors[-1].strip().splitlines()[-TAIL_LINES:]:
            console.print(Text("  " + line))


def _summary(console, tally, counts):
    produced = counts.get("readings")
    missing = tally.missing(produced)
    console.print()
    console.print("[bold]summary[/]")
    console.print("  readings produced by the node  %s" % produced)
    console.print("  readings received             %d" % tally.received)
    console.print("  unique readings               %d" % len(tally.keys))
    console.print("  gaps (lost readings)          %d" % len(missing))
    console.print("  duplicates                    %d" % tally.duplicates)
    console.print("  status messages               %d" % tally.statuses)
    if "sim_ms" in counts and counts.get("real_s"):
        sim_s = counts["sim_ms"] / 1000
        console.print(
            "  simulated time                %.0f s in %.1f s real (%.1fx)"
            % (sim_s, counts["real_s"], sim_s / counts["real_s"])
        )
    if "heap_max_alloc" in counts:
        console.print("  node heap, most in use        %d B" % counts["heap_max_alloc"])
    if tally.received == 0:
        raise DemoError("no reading arrived from the node; is the broker reachable from it?")
    if missing:
        shown = ", ".join(str(s) for s in missing[:20])
        raise DemoError("%d readings never arrived (seq %s)" % (len(missing), shown))
    if tally.duplicates:
        console.print(
            "[yellow]  duplicates are QoS 1 redeliveries: same seq, same bytes (counted once)[/]"
        )
    console.print("[green]every reading arrived[/]")
    return 0


# ---- command line --------------------------------------------------------------------------


def _positive(ctx, param, value):
    if value <= 0:
        raise click.BadParameter("must be greater than 0, got %g" % value)
    return value


def _heap_size(ctx, param, value):
    if re.fullmatch(r"[1-9][0-9]*[KkMm]?", value) is None:
        raise click.BadParameter("%r is not a size such as 192K or 1M" % value)
    return value.upper()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--duration",
    "duration_s",
    type=float,
    default=60.0,
    show_default=True,
    callback=_positive,
    help="Real seconds to run.",
)
@click.option(
    "--speed",
    type=float,
    default=10.0,
    show_default=True,
    callback=_positive,
    help="Simulated seconds per real second (1 = real time).",
)
@click.option(
    "--profile",
    type=click.Choice(["neurobuild", "platform"]),
    default="neurobuild",
    show_default=True,
    help="Telemetry profile (contracts.md §1 / §2).",
)
@click.option(
    "--board",
    type=click.Choice(list_boards()),
    default="nb-node-v1",
    show_default=True,
    help="Board definition in boards/ (its MQ-134 circuit is simulated).",
)
@click.option(
    "--seed",
    type=int,
    default=1,
    show_default=True,
    help="Seed of the simulated parts' noise and the uplink's jitter.",
)
@click.option(
    "--scenario",
    type=click.Choice(["busy", "quiet"]),
    default="busy",
    show_default=True,
    help="World script: a busy office day or a quiet night.",
)
@click.option(
    "--heap",
    default=DEFAULT_HEAP,
    show_default=True,
    callback=_heap_size,
    help="MicroPython heap for the node: the firmware alone (its parts run in the demo).",
)
def main(duration_s, speed, profile, board, seed, scenario, heap):
    """One virtual node, live: the real firmware on the MicroPython Unix port, simulated
    sensors, a private Mosquitto, and its readings shown as they arrive."""
    console = Console(highlight=False, soft_wrap=True)
    opts = Options(duration_s, speed, profile, board, seed, scenario, heap)
    try:
        code = run_demo(opts, console)
    except DemoError as exc:
        message = Text("demo failed: ", style="bold red")
        message.append(str(exc))  # plain text: a message may hold [brackets]
        console.print(message)
        code = 1
    except KeyboardInterrupt:  # a second Ctrl-C while cleaning up
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
