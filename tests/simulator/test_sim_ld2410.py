"""Simulated LD2410: report timing and content for ground-truth targets, byte-exact ACKs
(reference vectors TV4-TV9), persistence, restart, every fault switch; and the shared Prng."""

from drivers.ld2410 import LD2410, LD2410Error, encode_command
from simulator.clock import SimClock
from simulator.ld2410 import SimLD2410
from simulator.prng import Prng
from tests.support.mptest import IS_MICROPYTHON, raises

RUN_ON_MICROPYTHON = True


def hx(text):
    return bytes(int(h, 16) for h in text.split())


def rig(model="LD2410C", seed=1, **kw):
    clock = SimClock()
    sim = SimLD2410(clock, seed=seed, model=model, **kw)
    return clock, sim, LD2410(sim, clock)


def run(clock, radar, ms):
    """Advance `ms` in 100 ms steps, polling like a firmware loop; return reports decoded."""
    count = 0
    for _ in range(ms // 100):
        clock.advance(100)
        count += radar.poll()
    return count


def drain(sim):
    data = sim.read()
    return b"" if data is None else data


def ask(sim, frame):
    """Write a command frame; return the bytes the module answers."""
    drain(sim)
    sim.write(frame)
    return drain(sim)


ENABLE = encode_command(0x00FF, b"\x01\x00")
END = encode_command(0x00FE)


def test_prng_is_per_instance_and_repeatable():
    a, b = Prng(5), Prng(5)
    seq = [a.next_u32() for _ in range(5)]
    assert seq == [b.next_u32() for _ in range(5)]
    assert seq != [Prng(6).next_u32() for _ in range(5)]
    assert all(0 <= x < 1 << 32 for x in seq) and len(set(seq)) == 5
    r = Prng(9)
    draws = [r.randint(3, 6) for _ in range(400)]
    assert min(draws) == 3 and max(draws) == 6
    floats = [r.random() for _ in range(400)]
    assert min(floats) >= 0.0 and max(floats) < 1.0 and 0.4 < sum(floats) / 400 < 0.6
    assert not r.chance(0) and r.chance(1)
    assert "empty range" in str(raises(ValueError, r.randint, 5, 4))
    assert "int" in str(raises(TypeError, Prng, "x"))


def test_reports_every_100_ms_for_targets():
    clock, sim, radar = rig()
    sim.set_targets([(120, "moving", 70)])
    clock.advance(99)
    assert sim.any() == 0
    clock.advance(1)
    assert radar.poll() == 1
    clock.advance(1000)
    assert radar.poll() == 10
    r = radar.read()
    assert (r.target_state, r.moving_distance_cm, r.moving_energy) == (1, 120, 70)
    assert r.detection_distance_cm == 120 and r.presence and radar.bytes_discarded == 0


def test_basic_frame_bytes():
    clock, sim, _ = rig()
    sim.set_targets([(300, "stationary", 55), (150, "moving", 80)])
    clock.advance(100)
    assert drain(sim) == hx("F4 F3 F2 F1 0D 00 02 AA 03 96 00 50 2C 01 37 96 00 55 00 F8 F7 F6 F5")


def test_thresholds_and_max_gates_decide_detection():
    clock, sim, radar = rig()
    # Gate 2 (150-224 cm) moving threshold is 40 by default: energy 40 is not above it.
    sim.set_targets([(160, "moving", 40)])
    clock.advance(100)
    radar.poll()
    assert radar.report.target_state == 0 and not radar.report.presence
    sim.set_targets([(160, "moving", 41), (650, "stationary", 90)])  # 650 cm: gate 8
    clock.advance(100)
    radar.poll()
    assert radar.report.target_state == 3 and radar.report.stationary_distance_cm == 650
    with radar.config_mode():
        radar.set_max_gates(8, 5, 5)
    clock.advance(100)
    radar.poll()
    assert radar.report.target_state == 1
    # Undetected: the last distance stays, with the energy now at that gate [TAS][MG].
    assert radar.report.stationary_distance_cm == 650
    assert radar.report.stationary_energy == 90


def test_engineering_gate_energies_and_clutter():
    clock, sim, radar = rig()
    sim.set_clutter(moving=[5, 6, 7, 8, 9, 10, 11, 12, 13], stationary=[0] * 8 + [99])
    sim.set_targets([(380, "moving", 66)])  # 380 // 75 = gate 5
    sim.set_light(77)
    with radar.config_mode():
        radar.set_engineering_mode(True)
    clock.advance(100)
    radar.poll()
    r = radar.report
    assert (
        r.engineering and r.gate_count == 9 and (r.max_moving_gate, r.max_stationary_gate) == (8, 8)
    )
    assert list(r.moving_gate_energy) == [5, 6, 7, 8, 9, 66, 11, 12, 13]
    # Clutter above the gate-8 threshold (20) is a false stationary target at the gate centre.
    assert r.stationary_gate_energy[8] == 99 and r.stationary_distance_cm == 8 * 75 + 37
    assert (r.target_state, r.light, r.out_pin) == (3, 77, 1)


def test_noise_jitters_clutter_within_its_amplitude():
    clock, sim, radar = rig(seed=11)
    sim.set_clutter(moving=[20] * 9, stationary=[30] * 9)
    sim.noise = 3
    with radar.config_mode():
        radar.set_engineering_mode(True)
    seen = set()
    for _ in range(30):
        clock.advance(100)
        radar.poll()
        seen.update(radar.report.moving_gate_energy)
        assert all(27 <= e <= 33 for e in radar.report.stationary_gate_energy[2:])
    assert min(seen) >= 17 and max(seen) <= 23 and len(seen) > 3


def test_no_reports_in_config_mode_and_acks_exact():
    clock, sim, radar = rig()
    # TV4: enable config and end config.
    assert ask(sim, ENABLE) == hx("FD FC FB FA 08 00 FF 01 00 00 01 00 40 00 04 03 02 01")
    clock.advance(1000)
    assert sim.any() == 0
    # TV5: read parameters, factory defaults.
    assert ask(sim, hx("FD FC FB FA 02 00 61 00 04 03 02 01")) == hx(
        "FD FC FB FA 1C 00 61 01 00 00 AA 08 08 08 32 32 28 1E 14 0F 0F 0F 0F 00 00 28 28 1E"
        " 1E 14 14 14 05 00 04 03 02 01"
    )
    # TV7 and TV8.
    tv7 = "14 00 60 00 00 00 08 00 00 00 01 00 08 00 00 00 02 00 05 00 00 00"
    assert ask(sim, hx("FD FC FB FA " + tv7 + " 04 03 02 01")) == hx(
        "FD FC FB FA 04 00 60 01 00 00 04 03 02 01"
    )
    tv8 = "14 00 64 00 00 00 FF FF 00 00 01 00 28 00 00 00 02 00 28 00 00 00"
    assert ask(sim, hx("FD FC FB FA " + tv8 + " 04 03 02 01")) == hx(
        "FD FC FB FA 04 00 64 01 00 00 04 03 02 01"
    )
    # TV9: light set and get.
    assert ask(sim, hx("FD FC FB FA 06 00 AD 00 01 60 00 00 04 03 02 01")) == hx(
        "FD FC FB FA 04 00 AD 01 00 00 04 03 02 01"
    )
    assert ask(sim, encode_command(0x00AE)) == hx(
        "FD FC FB FA 08 00 AE 01 00 00 01 60 00 00 04 03 02 01"
    )
    assert ask(sim, END) == hx("FD FC FB FA 04 00 FE 01 00 00 04 03 02 01")
    clock.advance(100)
    assert radar.poll() == 1  # reporting again


def test_firmware_and_mac_acks():
    sim = rig(model="LD2410", firmware=(1, 0x02, 0x22062416))[1]
    ask(sim, ENABLE)
    # TV6.
    assert ask(sim, hx("FD FC FB FA 02 00 A0 00 04 03 02 01")) == hx(
        "FD FC FB FA 0C 00 A0 01 00 00 00 01 02 01 16 24 06 22 04 03 02 01"
    )
    # The base LD2410 has no Bluetooth: MAC is refused (status 1).
    assert ask(sim, encode_command(0x00A5, b"\x01\x00")) == hx(
        "FD FC FB FA 04 00 A5 01 01 00 04 03 02 01"
    )
    _, sim, radar = rig(seed=42)
    with radar.config_mode():
        mac = radar.read_mac()
        assert radar.read_firmware_version() == "2.44.24073110"
    assert mac == ":".join("%02x" % b for b in sim.mac)
    assert mac != rig(seed=43)[1].mac


def test_commands_outside_config_mode_fail():
    radar = rig()[2]
    err = raises(LD2410Error, radar.read_parameters)
    assert "refused: status 1" in str(err)


def test_gate_size_restart_and_persistence():
    clock, sim, radar = rig()
    sim.set_targets([(90, "moving", 90)])
    with radar.config_mode():
        radar.set_engineering_mode(True)
        radar.set_gate_size_cm(20)
        radar.set_gate_sensitivity(4, 33, 44)
        radar.set_bluetooth(False)
        assert radar.read_gate_size_cm() == 75  # applies after restart
        radar.restart()
    assert not radar.in_config
    clock.advance(999)
    assert sim.any() == 0  # silent while restarting
    sim.write(ENABLE)  # commands are not heard while booting
    assert sim.any() == 0
    clock.advance(101)
    assert radar.poll() == 1
    assert not radar.report.engineering  # a restart leaves engineering mode
    assert sim.bluetooth is False
    with radar.config_mode():
        radar.set_engineering_mode(True)
        assert radar.read_gate_size_cm() == 20
        p = radar.read_parameters()
        assert (p.moving_sensitivity[4], p.stationary_sensitivity[4]) == (33, 44)
    clock.advance(100)
    radar.poll()
    assert radar.report.moving_gate_energy[4] == 90  # 90 // 20 = gate 4


def test_factory_reset_applies_after_restart():
    clock, _, radar = rig()
    with radar.config_mode():
        radar.set_max_gates(3, 4, 30)
        radar.set_gate_sensitivity(None, 60, 70)
        radar.factory_reset()
        assert radar.read_parameters().no_one_duration_s == 30
        radar.restart()
    clock.advance(1000)
    with radar.config_mode():
        p = radar.read_parameters()
    assert (p.max_moving_gate, p.max_stationary_gate, p.no_one_duration_s) == (8, 8, 5)
    assert list(p.moving_sensitivity) == [50, 50, 40, 30, 20, 15, 15, 15, 15]
    assert list(p.stationary_sensitivity) == [0, 0, 40, 40, 30, 30, 20, 20, 20]


def test_baud_change_needs_the_host_to_follow():
    clock, sim, radar = rig()
    with radar.config_mode():
        radar.set_baud_rate(115200)
        radar.restart()
    clock.advance(1500)
    radar.poll()
    assert radar.frames_ok == radar.acks  # nothing decodable at the wrong speed
    assert radar.bytes_discarded > 0
    sim.init(baudrate=115200)
    clock.advance(100)
    assert radar.poll() == 1


def test_out_pin_holds_for_no_one_duration_and_light_gate():
    clock, sim, radar = rig()
    pin = sim.out_pin
    sim.set_targets([(100, "moving", 90)])
    clock.advance(100)
    assert pin.value() == 1
    sim.set_targets([])
    clock.advance(4900)
    assert pin.value() == 1  # held for the no-one duration (5 s)
    clock.advance(100)
    assert pin.value() == 0
    with radar.config_mode():
        radar.set_light_control(1, 0x60, 1)  # assert only when darker than 0x60; idle high
    sim.set_light(200)
    sim.set_targets([(100, "moving", 90)])
    clock.advance(300)
    assert pin.value() == 1  # idle level high: nobody yet, the light condition fails
    sim.set_light(10)
    clock.advance(100)
    assert pin.value() == 0  # occupied, inverted


def test_auto_thresholds():
    clock, sim, radar = rig()
    sim.set_clutter(moving=[30] * 9, stationary=[25] * 9)
    with radar.config_mode():
        radar.start_auto_thresholds(2)
        assert radar.read_auto_threshold_status() == 1
    run(clock, radar, 500)
    assert radar.report.target_state == 4 and not radar.report.presence
    run(clock, radar, 11400)  # 2 s to leave the room + 10 s measuring
    assert radar.report.target_state == 4
    run(clock, radar, 100)
    assert radar.report.target_state == 5 and radar.read().quality == "suspect"
    run(clock, radar, 1000)
    assert radar.report.target_state == 0  # empty room: clutter is below the new thresholds
    with radar.config_mode():
        assert radar.read_auto_threshold_status() == 2
        p = radar.read_parameters()
    assert list(p.moving_sensitivity) == [40] * 9
    assert list(p.stationary_sensitivity) == [0, 0] + [35] * 7
    sim.set_targets([(100, "stationary", 90)])
    with radar.config_mode():
        radar.start_auto_thresholds(0)
    run(clock, radar, 10100)
    assert radar.report.target_state == 6  # someone stayed in the room


def test_faults_silent_and_stuck():
    clock, sim, radar = rig()
    sim.set_targets([(100, "moving", 90)])
    sim.silent = True
    clock.advance(1000)
    assert radar.poll() == 0 and radar.read().quality == "bad"
    assert "no ACK within" in str(raises(LD2410Error, radar.enable_config))
    sim.clear_faults()
    clock.advance(100)
    radar.poll()
    sim.stuck = True
    sim.set_targets([(400, "stationary", 90)])
    clock.advance(300)
    assert radar.poll() == 3
    assert radar.report.moving_distance_cm == 100 and radar.report.target_state == 1


def test_faults_garbage_flips_and_drops_are_survived():
    clock, sim, radar = rig(seed=3)
    sim.set_targets([(100, "moving", 90)])
    sim.garbage_rate = 0.5
    got = run(clock, radar, 10000)
    assert got == 100 and radar.bytes_discarded > 100  # garbage only between frames
    sim.clear_faults()
    sim.flip_rate = 0.01
    sim.drop_rate = 0.01
    got = run(clock, radar, 10000)
    assert 40 < got < 100 and radar.report.moving_distance_cm == 100
    assert radar.bad_footers + radar.bad_payloads + radar.bad_lengths > 0


def test_receive_buffer_is_bounded():
    clock, sim, radar = rig()
    clock.advance(3600 * 1000)  # an hour unread: the UART buffer overflowed, nothing piled up
    assert sim.any() <= 256
    assert radar.poll() >= 10
    clock.advance(100)
    assert radar.poll() == 1


def test_ground_truth_is_validated():
    _, sim, _ = rig()
    assert "kind" in str(raises(ValueError, sim.set_targets, [(100, "running", 50)]))
    assert "distance" in str(raises(ValueError, sim.set_targets, [(-1, "moving", 50)]))
    assert "energy" in str(raises(ValueError, sim.set_targets, [(1, "moving", 101)]))
    assert "clutter" in str(raises(ValueError, sim.set_clutter, [1, 2]))
    assert "light" in str(raises(ValueError, sim.set_light, 256))
    assert "model" in str(raises(ValueError, SimLD2410, SimClock(), 0, "LD2420"))


def test_instance_memory_is_small():
    # A fleet runs thousands of simulated radars: about 1 KB each, measured the native way.
    clock = SimClock()
    if IS_MICROPYTHON:
        import gc

        gc.collect()
        before = gc.mem_alloc()
        sims = [SimLD2410(clock, seed=i) for i in range(20)]
        gc.collect()
        used = gc.mem_alloc() - before
    else:
        from tests.support.allocations import allocated_by
        from tests.support.micropython import REPO_ROOT

        # The instances are allocated at the call site (this file), their contents in simulator/.
        used, sims = allocated_by(
            (__file__, REPO_ROOT / "simulator" / "*"),
            lambda: [SimLD2410(clock, seed=i) for i in range(20)],
        )
    per_sim = used // len(sims)
    assert 200 < per_sim < 1500, per_sim
