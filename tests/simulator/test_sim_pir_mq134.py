"""SimPIR and SimMQ134: the timing and ADC encoding they promise, and the drivers on them."""

from drivers.mq134 import MQ134
from drivers.pir import PIR
from drivers.sensor import BAD, GOOD, WARMING_UP
from simulator.clock import SimClock
from simulator.mq134 import SimMQ134
from simulator.pir import SimPIR
from tests.support.mptest import close_to, raises

RUN_ON_MICROPYTHON = True


class Recorder:
    """An irq handler that logs (ticks, level) of every call."""

    def __init__(self, clock):
        self.clock = clock
        self.edges = []

    def __call__(self, pin):
        self.edges.append((self.clock.ticks_ms(), pin.value()))


def _sim(clock, **kw):
    pin = SimPIR(clock, **kw)
    rec = Recorder(clock)
    pin.irq(trigger=SimPIR.IRQ_RISING | SimPIR.IRQ_FALLING, handler=rec)
    return pin, rec


# --- SimPIR timing -----------------------------------------------------------------------------


def test_spurious_pulses_only_during_warm_up_and_seeded():
    clock = SimClock()
    pin, rec = _sim(clock, seed=1, spurious_pulses=3, warmup_ms=60000)
    pin.advance(120000)
    assert len(rec.edges) == 6  # three pulses, rise and fall each
    assert all(t < 60000 for t, _ in rec.edges)
    assert [v for _, v in rec.edges] == [1, 0] * 3
    again, rec2 = _sim(SimClock(), seed=1, spurious_pulses=3, warmup_ms=60000)
    again.advance(120000)
    assert rec2.edges == rec.edges


def test_random_pulse_count_is_zero_to_three():
    counts = set()
    for seed in range(12):
        pin, rec = _sim(SimClock(), seed=seed)
        pin.advance(61000)
        counts.add(len(rec.edges) // 2)
    assert counts <= {0, 1, 2, 3} and len(counts) > 1


def test_motion_ignored_in_warm_up_then_seen_when_warm():
    clock = SimClock()
    pin, rec = _sim(clock, spurious_pulses=0, warmup_ms=10000)
    pin.set_motion(True)
    pin.advance(9999)
    assert rec.edges == []
    pin.advance(1)
    assert rec.edges == [(10000, 1)]


def test_repeatable_trigger_holds_while_moving_then_blocks():
    clock = SimClock()
    pin, rec = _sim(clock, spurious_pulses=0, warmup_ms=0, hold_ms=2500, block_ms=2500)
    pin.advance(1000)
    pin.set_motion(True)  # t = 1000
    pin.advance(20000)
    pin.set_motion(False)  # t = 21000: output falls 2.5 s later
    pin.set_motion(True)  # moving again at once: still high, timer restarts
    pin.advance(1000)
    pin.set_motion(False)  # t = 22000
    pin.advance(3000)  # fall at 24500, blind until 27000
    pin.set_motion(True)  # t = 25000: blind
    pin.advance(10000)
    assert rec.edges == [(1000, 1), (24500, 0), (27000, 1)]


def test_single_trigger_mode_pulses_while_moving():
    clock = SimClock()
    pin, rec = _sim(
        clock, spurious_pulses=0, warmup_ms=0, hold_ms=2000, block_ms=3000, retrigger=False
    )
    pin.set_motion(True)
    pin.advance(11000)
    assert rec.edges == [(0, 1), (2000, 0), (5000, 1), (7000, 0), (10000, 1)]


def test_update_catches_up_after_the_clock_moved():
    clock = SimClock()
    pin, rec = _sim(clock, spurious_pulses=0, warmup_ms=0, hold_ms=2000)
    pin.set_motion(True)
    clock.advance(500)
    pin.set_motion(False)
    clock.advance(5000)
    pin.update()
    assert [v for _, v in rec.edges] == [1, 0]
    assert pin.value() == 0 and pin.next_edge_ms() is None


def test_reading_the_pin_catches_the_model_up():
    clock = SimClock()
    pin, rec = _sim(clock, spurious_pulses=0, warmup_ms=0)
    pin.set_motion(True)  # rise fires here, at t = 0
    clock.advance(500)
    pin.set_motion(False)
    clock.advance(10000)  # moved by someone else: the fall is still owed
    assert len(rec.edges) == 1
    assert pin.value() == 0
    assert rec.edges == [(0, 1), (10500, 0)]  # fired late, at the time of the look


def test_sim_pir_is_an_input():
    pin = SimPIR(SimClock())
    assert "input" in str(raises(ValueError, pin.value, 1))


# --- SimPIR + PIR driver -----------------------------------------------------------------------


def test_pir_driver_on_the_sim_through_a_visit():
    clock = SimClock()
    pin = SimPIR(clock, seed=5, spurious_pulses=2, warmup_ms=60000)
    pir = PIR(pin, clock, warmup_ms=60000, hold_ms=3000)
    pin.advance(30000)
    r = pir.read()
    assert (r.quality, r.motion, r.events_total) == (WARMING_UP, False, 0)
    pin.advance(35000)
    r = pir.read()
    assert r.quality == GOOD and r.ignored == 2 and not r.motion
    pin.set_motion(True)  # someone walks in at 65 s and moves for 20 s
    entered = clock.ticks_ms()
    pin.advance(20000)
    r = pir.read()
    assert (r.motion, r.events, r.last_motion_ms) == (True, 1, clock.ticks_ms())
    pin.set_motion(False)
    pin.advance(2500 + 2999)  # sensor hold, then ours
    assert pir.read().motion
    pin.advance(1)
    r = pir.read()
    assert (r.motion, r.events_total) == (False, 1)
    assert r.last_motion_ms == entered + 20000 + 2500  # when the output fell


def test_single_trigger_pulses_merge_into_one_event():
    clock = SimClock()
    pin = SimPIR(clock, spurious_pulses=0, warmup_ms=0, hold_ms=2000, block_ms=2500)
    pin.retrigger = False
    pir = PIR(pin, clock, warmup_ms=0, hold_ms=3000)
    pin.set_motion(True)
    pin.advance(30000)
    r = pir.read()
    assert r.events == 1 and r.motion  # gaps of 2.5 s sit inside the 3 s hold
    short = SimPIR(SimClock(), spurious_pulses=0, warmup_ms=0, hold_ms=2000, block_ms=2500)
    short.retrigger = False
    pir2 = PIR(short, short._clock, warmup_ms=0, hold_ms=1000)
    short.set_motion(True)
    short.advance(30000)
    assert pir2.read().events == 7  # rises at 0, 4.5, 9 ... 27 s: every gap > 1 s hold


def test_pir_with_a_schedule_queue_on_the_sim():
    clock = SimClock()
    pin = SimPIR(clock, spurious_pulses=0, warmup_ms=0)
    queue = []
    pir = PIR(pin, clock, warmup_ms=0, schedule=lambda fn, arg: queue.append((fn, arg)))
    pin.set_motion(True)
    pin.advance(1000)
    assert len(queue) == 1
    while queue:
        fn, arg = queue.pop(0)
        fn(arg)
    assert pir._taken == 1
    assert pir.read().events == 1


# --- SimMQ134 ----------------------------------------------------------------------------------


def test_sim_adc_encodes_like_the_esp32_port():
    adc = SimMQ134()
    adc.set_fault("saturated")
    assert (adc.read(), adc.read_u16(), adc.read_uv()) == (4095, 65535, 3900000)
    adc.set_fault("disconnected")
    assert (adc.read(), adc.read_u16(), adc.read_uv()) == (0, 0, 0)
    adc.set_fault(None)
    raw = adc.read()
    assert adc.read_u16() == (raw << 4) | (raw >> 8)
    assert adc.read_uv() % 1000 == 0  # 1 mV steps
    assert adc.reads == 9


def test_sim_reference_vector():
    # sensors.md §4: 400 ppm, R0 76.63k, RL 10k, Vc 5 V -> Rs 49.10 kohm, Vout 0.846 V
    adc = SimMQ134(ppm=400.0, r0_ohm=76630.0, load_ohm=10000.0, supply_v=5.0)
    assert close_to(adc.rs_ohm() / 0.992, 49100.0, 15.0)  # the sim applies CF(20, 33)
    adc2 = SimMQ134(ppm=400.0, divider_ratio=2.0)
    assert close_to(adc2.pin_volts() * 2.0, SimMQ134(ppm=400.0).pin_volts(), 1e-9)


def test_more_gas_means_more_volts_and_clipping_at_full_scale():
    low = SimMQ134(ppm=100.0).read_uv()
    high = SimMQ134(ppm=1000.0).read_uv()
    assert high > low
    assert SimMQ134(ppm=1e9, supply_v=5.0).read() == 4095  # 5 V into a 3.9 V range


def test_driver_on_the_sim_reads_truth_and_faults():
    clock = SimClock()
    adc = SimMQ134(ppm=250.0, divider_ratio=2.0, load_ohm=10000.0)
    gas = MQ134(adc, clock, divider_ratio=2.0, load_ohm=10000.0, warmup_ms=1000)
    assert gas.read().quality == WARMING_UP
    clock.advance(1000)
    r = gas.read()
    assert r.quality == GOOD and close_to(r.ppm, 250.0, 7.5), r.ppm
    adc.set_fault("disconnected")
    assert (gas.read().quality, gas.read().reason) == (BAD, "open_circuit")
