"""The real application on a virtual board with simulated hardware (simulator/hw).

The end-to-end test runs real processes: `nbk build`, `nbk deploy`, `nbk provision`, a reset,
then the unchanged boot.py -> main.py -> firmware.esp32_board -> App on the MicroPython Unix
port, publishing to a Mosquitto started here. The unit tests check the fake modules' surface
under CPython against simulated parts on a SimClock.
"""

import json
import sys
import threading
import time

import pytest
from click.testing import CliRunner
from nbk.cli import main
from nbk.monitor import Monitor
from nbk.virtualboard import SIMULATED_HEAP, VirtualBoard, board_mac

from drivers.ld2410 import LD2410
from drivers.mq134 import MQ134
from simulator.clock import SimClock
from simulator.hw.hardware import SimHardware
from simulator.hw.room import PERIOD_MS, SCRIPT, Room
from tests.support.micropython import REPO_ROOT
from tests.support.mptest import raises
from tests.support.servers import mosquitto, validate_reading  # noqa: F401  (fixture)

HW_DIR = str(REPO_ROOT / "simulator" / "hw")
FAKES = ("machine", "network", "esp32", "ntptime")
# boards/nb-node-v1.toml as `nbk build` writes it to /board.json (the parts this test needs)
INFO = {
    "ld2410": {"uart": 2, "tx": 17, "rx": 16, "out": 4, "baudrate": 256000},
    "pir": {"pin": 13},
    "mq134": {"adc": 33, "atten": "ATTN_11DB", "divider_ratio": 1.5, "load_ohm": 20000.0},
    "i2c": {"id": 0, "sda": 21, "scl": 22, "freq": 100000},
    "battery": {"adc": 35, "atten": "ATTN_11DB", "divider_ratio": 2.0},
}


def nbk(*args, env=None):
    return CliRunner().invoke(main, list(args), env=env)


# -- the fake modules under CPython ---------------------------------------------------------------
@pytest.fixture
def fakes():
    """simulator/hw's machine, network, esp32, ntptime imported as the firmware imports them,
    on a SimClock, with resets recorded instead of ending the process."""
    saved = {name: sys.modules.pop(name, None) for name in FAKES}
    sys.path.insert(0, HW_DIR)
    try:
        import esp32
        import machine
        import network
        import ntptime

        clock = SimClock(1000)
        wall = [1795341600000]
        machine.BOARD.set_clock(clock)
        machine.BOARD.hardware = SimHardware(INFO, clock, lambda: wall[0] + clock.ticks_ms())
        resets = []
        machine.BOARD.kill = resets.append
        yield machine, network, esp32, ntptime, clock, resets
    finally:
        sys.path.remove(HW_DIR)
        for name in FAKES:
            sys.modules.pop(name, None)
            if saved[name] is not None:
                sys.modules[name] = saved[name]


def test_pins_reach_the_parts_board_json_names(fakes):
    machine = fakes[0]
    pir = machine.Pin(13, machine.Pin.IN)
    seen = []
    pir.irq(handler=seen.append, trigger=machine.Pin.IRQ_RISING | machine.Pin.IRQ_FALLING)
    hw = machine.BOARD.hardware
    hw.pir.advance(61000)  # past the HC-SR501 warm-up
    hw.pir.set_motion(True)
    assert pir.value() == 1 and seen and seen[-1] is pir  # the handler gets the machine.Pin
    free = machine.Pin(5, machine.Pin.OUT)
    free.value(1)
    assert machine.Pin(5).value() == 1  # plain GPIO keeps its level
    assert machine.Pin(26, machine.Pin.IN, machine.Pin.PULL_UP).value() == 1
    err = raises(ValueError, machine.Pin, 13, machine.Pin.OUT)
    assert "GPIO13 is driven by a part" in str(err)


def test_uart_i2c_and_adc_carry_the_simulated_sensors(fakes):
    machine, _, _, _, clock, _ = fakes
    uart = machine.UART(2, baudrate=256000, tx=17, rx=16, rxbuf=512)
    radar = LD2410(uart, clock)
    machine.BOARD.hardware.radar.set_targets([(180, "stationary", 60)])
    clock.advance(350)
    radar.poll()
    assert radar.read().stationary_distance_cm == 180
    i2c = machine.I2C(0, sda=machine.Pin(21), scl=machine.Pin(22), freq=100000)
    assert i2c.scan() == [0x76]
    assert i2c.readfrom_mem(0x76, 0xD0, 1) == b"\x60"  # BME280 chip id
    assert machine.I2C(1, sda=machine.Pin(18), scl=machine.Pin(19)).scan() == []
    gas_adc = machine.ADC(machine.Pin(33), atten=machine.ADC.ATTN_11DB)
    gas = MQ134(gas_adc, clock, warmup_ms=0, divider_ratio=1.5, load_ohm=20000.0, supply_v=5.0)
    sim = machine.BOARD.hardware.gas
    gas.set_environment(sim.temperature_c, sim.humidity_pct)  # as the app does from the BME280
    ppm = gas.read().ppm
    assert abs(ppm - sim.ppm) < 0.05 * sim.ppm, (ppm, sim.ppm)  # the room's gas, via the circuit
    battery = machine.ADC(machine.Pin(35))
    assert battery.read_uv() == 1975000  # a 3.95 V cell behind the 100k/100k divider
    err = raises(ValueError, machine.ADC, machine.Pin(5))
    assert "GPIO5 has no ADC channel" in str(err)
    assert "use 0, 1 or 2" in str(raises(ValueError, machine.UART, 3))


def test_a_missed_watchdog_feed_resets_the_board(fakes):
    machine, _, _, _, clock, resets = fakes
    wdt = machine.WDT(timeout=30000)
    clock.advance(29000)
    wdt.feed()
    clock.advance(29000)
    wdt.feed()
    assert wdt.feeds == 2 and resets == []
    clock.advance(30001)
    machine.Pin(13).value()  # any hardware access notices the expired watchdog
    assert resets == [machine.SIGNAL_WDT]
    machine.reset()
    assert resets[-1] == machine.SIGNAL_HARD


def test_reset_cause_mac_rtc_memory_and_freq(fakes, monkeypatch):
    machine, _, _, _, _, _ = fakes
    monkeypatch.setenv(machine.ENV_RESET_CAUSE, str(machine.WDT_RESET))
    monkeypatch.setenv(machine.ENV_MAC, "240ac4a1b2c3")
    assert machine.reset_cause() == machine.WDT_RESET
    assert machine.unique_id() == bytes.fromhex("240ac4a1b2c3")
    rtc = machine.RTC()
    rtc.memory(b"state")
    assert machine.RTC().memory() == b"state"
    assert "2048 bytes" in str(raises(ValueError, rtc.memory, bytes(2049)))
    assert machine.freq() == 240000000
    assert "240000000" in str(raises(ValueError, machine.freq, 100))
    with pytest.raises(SystemExit):
        machine.soft_reset()


def test_wlan_joins_after_a_short_delay(fakes):
    machine, network, _, _, clock, _ = fakes
    wlan = network.WLAN(network.STA_IF)
    assert network.WLAN(network.STA_IF) is wlan  # one object per interface, as on the port
    assert "Wifi Not Started" in str(raises(OSError, wlan.connect, "bench"))
    wlan.active(True)
    network.hostname("vb-node-1")
    wlan.connect("bench", "bench-pass-1")
    assert not wlan.isconnected() and wlan.status() == network.STAT_CONNECTING
    clock.advance(network.CONNECT_MS)
    assert wlan.isconnected() and wlan.status() == network.STAT_GOT_IP
    assert wlan.status("rssi") == network.RSSI_DBM
    assert wlan.ifconfig()[0] == "127.0.0.1"
    assert wlan.config("mac") == machine.unique_id()
    assert network.hostname() == "vb-node-1"


def test_esp32_partitions_and_ntptime(fakes):
    _, _, esp32, ntptime, _, _ = fakes
    running = esp32.Partition(esp32.Partition.RUNNING)
    assert running.info() == (0, 0x10, 0x10000, 0x270000, "ota_0", False)
    assert running.get_next_update().info()[4] == "ota_1"
    esp32.Partition.mark_app_valid_cancel_rollback()
    assert abs(ntptime.time() - time.time()) < 2  # seconds since 1970 on the Unix port


def test_the_room_is_quiet_with_someone_walking_in_now_and_then():
    room = Room(seed=1)
    assert room.people_at(0) == [] and room.people_at(PERIOD_MS - 1) == []
    kinds = {p[1] for m in SCRIPT for p in m[2]}
    assert kinds == {"moving", "stationary"}
    assert room.people_at(PERIOD_MS + 45000) == [(150, "stationary", 55)]  # it repeats
    t, rh, hpa, ppm = room.air_at(123456)
    assert 20.9 < t < 22.1 and 42.5 < rh < 47.5 and 1013 < hpa < 1013.4 and 3.8 < ppm < 4.2


def test_unknown_hardware_is_refused_naming_the_choices(tmp_path):
    err = raises(ValueError, VirtualBoard, tmp_path, hardware="esp32")
    assert "none, simulated" in str(err)
    assert VirtualBoard(tmp_path, hardware="simulated").heap == SIMULATED_HEAP
    assert VirtualBoard(tmp_path).heap == "96K"


# -- the application end to end ----------------------------------------------------------------
def test_the_built_application_runs_on_simulated_hardware(tmp_path, mosquitto):  # noqa: F811
    built = nbk("-q", "build", "--board", "nb-node-v1", "--out", str(tmp_path / "build"))
    assert built.exit_code == 0, built.output
    board = VirtualBoard(tmp_path / "node", run_main=True, hardware="simulated")
    events, stop = [], threading.Event()
    monitor = Monitor(lambda: board.port, backoff_s=(0.05, 0.2))
    watcher = threading.Thread(
        target=monitor.run, args=(events.append,), kwargs={"stop": stop.is_set, "wait_s": 10}
    )
    try:
        board.start()
        app = tmp_path / "build" / "nb-node-v1" / "app"
        deployed = nbk("-q", "deploy", "--port", board.port, "--src", str(app))
        assert deployed.exit_code == 0, deployed.output
        server = "mqtt://127.0.0.1:%d" % mosquitto.port
        provisioned = nbk(
            *("provision", "--port", board.port, "--device-id", "vb-node-1"),
            *("--wifi-ssid", "bench", "--server", server),
            *("--record", str(tmp_path / "record.jsonl")),
            env={"NBK_WIFI_PASSWORD": "bench-pass-1"},
        )
        assert provisioned.exit_code == 0, provisioned.output
        # A reading every 2 s instead of every minute, so the test sees several.
        config_path = board.root_path / "config.json"
        config = json.loads(config_path.read_text())
        config["intervals"].update({"sampling_s": 2, "transmission_s": 2})
        config_path.write_text(json.dumps(config))
        with mosquitto.subscriber("neurobuild/sensors/vb-node-1/data") as data:
            watcher.start()
            deadline = time.monotonic() + 5
            while not events and time.monotonic() < deadline:  # the console is being read
                time.sleep(0.02)
            board.press_reset()  # the EN button: boot.py and main.py run from power-on
            readings = data.wait_for(3, timeout_s=20)
        assert len(readings) >= 3, events
        stop.set()
        watcher.join(5)
        logs = {(e["mod"], e["msg"]): e.get("kv") for e in events if e["kind"] == "log"}
        assert logs[("boot", "booting")]["reset_cause"] == "power_on", events
        assert logs[("app", "started")] == {"device": "vb-node-1", "uplink": "mqtt"}
        assert logs[("uplink", "connected")]["port"] == mosquitto.port
        for message in readings:
            reading = json.loads(message.payload)
            assert validate_reading(reading) == [], reading
            assert reading["timestamp"].startswith(time.strftime("%Y-", time.gmtime()))  # NTP
            env = reading["environment"]
            assert 20.9 < env["temperature_c"] < 22.1 and 1012.5 < env["pressure_hpa"] < 1014
        # The app is still running: Ctrl-C from nbk stops it and the REPL answers.
        info = nbk("--json", "device", "info", "--port", board.port)
        assert info.exit_code == 0, info.output
        facts = json.loads(info.stdout)
        assert facts["unique_id"] == board_mac(board.root) and facts["freq_hz"] == 240000000
        # machine.reset() at the REPL: the board boots the application again, as HARD_RESET.
        assert nbk("device", "reset", "--hard", "--port", board.port).exit_code == 0
        record = board.root_path / "boot.json"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and json.loads(record.read_text())["boots"] < 2:
            time.sleep(0.05)
        after = json.loads(record.read_text())
        assert after["boots"] == 2 and after["reset_cause"] == "hard", after
    finally:
        stop.set()
        if watcher.is_alive():
            watcher.join(5)
        board.close()


# Each boot appends machine.reset_cause() and ends the next way: watchdog, deep sleep, soft
# reset, then returns to the REPL. Nothing here needs the application or /board.json.
RESET_CYCLE = """\
import machine, time
try:
    causes = open('causes').read()
except OSError:
    causes = ''
cause = machine.reset_cause()
open('causes', 'w').write(causes + str(cause) + ',')
if cause == machine.PWRON_RESET:
    wdt = machine.WDT(timeout=100)
    time.sleep_ms(150)
    wdt.feed()  # too late: the watchdog has already fired
elif cause == machine.WDT_RESET:
    machine.deepsleep(50)
elif cause == machine.DEEPSLEEP_RESET:
    machine.soft_reset()
"""


def test_watchdog_deep_sleep_and_soft_reset_reboot_with_their_cause(tmp_path):
    root = tmp_path / "board"
    root.mkdir()
    (root / "main.py").write_text(RESET_CYCLE)
    board = VirtualBoard(root, run_main=True, hardware="simulated")
    try:
        board.start(timeout=15)  # returns at the REPL, after the fourth boot's main.py
        assert (root / "causes").read_text() == "1,3,4,5,"
    finally:
        board.close()
