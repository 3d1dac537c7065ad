"""Properties of the MQ134 driver against SimMQ134 over random circuits, gases and climates."""

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.mq134 import MQ134, compensation_factor, vout_from_rs
from drivers.sensor import BAD, GOOD, SUSPECT, WARMING_UP
from simulator.clock import SimClock
from simulator.mq134 import SimMQ134

circuits = st.fixed_dictionaries(
    {
        "divider_ratio": st.floats(1.0, 3.0),
        "load_ohm": st.floats(1000.0, 47000.0),
        "supply_v": st.sampled_from([3.3, 5.0]),
    }
)
climates = st.tuples(st.floats(-10.0, 45.0), st.floats(5.0, 94.0))
ppms = st.floats(5.0, 10000.0)
FULL_SCALE_11DB = 3.9


def _pair(ppm, circuit, climate=(20.0, 33.0), use_uv=None):
    adc = SimMQ134(ppm=ppm, temperature_c=climate[0], humidity_pct=climate[1], **circuit)
    gas = MQ134(adc, SimClock(), warmup_ms=0, use_uv=use_uv, **circuit)
    gas.set_environment(*climate)
    return adc, gas


@settings(max_examples=200, deadline=None)
@given(ppm=ppms, circuit=circuits, climate=climates, use_uv=st.booleans())
def test_driver_inverts_the_sim_within_quantisation(ppm, circuit, climate, use_uv):
    adc, gas = _pair(ppm, circuit, climate, use_uv)
    r = gas.read()
    if r.quality == BAD:  # clipped or below the ADC's floor: nothing to invert
        return
    # Push the driver's Rs back through the circuit: it must land within ~1 count of the pin.
    pin_v = vout_from_rs(r.rs_raw_ohm, circuit["supply_v"], circuit["load_ohm"])
    pin_v /= circuit["divider_ratio"]
    assert abs(pin_v - adc.pin_volts()) <= 1.5 * FULL_SCALE_11DB / 4095 + 0.0005
    # Compensation divides by the same factor the sim applied, so Rs/R0 is the curve's ratio.
    assert math.isclose(r.rs_ohm / r.rs_raw_ohm, 1.0 / compensation_factor(*climate))


@settings(max_examples=100, deadline=None)
@given(low=ppms, factor=st.floats(1.01, 50.0), circuit=circuits)
def test_more_gas_never_reads_less(low, factor, circuit):
    a = _pair(low, circuit)[1].read()
    b = _pair(min(low * factor, 20000.0), circuit)[1].read()
    if a.quality == GOOD and b.quality == GOOD:
        assert b.ppm >= a.ppm


@settings(max_examples=300, deadline=None)
@given(values=st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=16), circuit=circuits)
def test_any_adc_values_give_a_quality_and_no_exception(values, circuit):
    class Replay:
        def __init__(self):
            self.i = 0

        def read_u16(self):
            self.i += 1
            return values[self.i % len(values)]

    r = MQ134(Replay(), SimClock(), warmup_ms=0, samples=16, **circuit).read()
    assert r.quality in (GOOD, SUSPECT, BAD, WARMING_UP)
    if r.quality == BAD:
        assert r.ppm is None and r.reason in ("open_circuit", "saturated", "above_supply")
    else:
        assert r.ppm > 0 and math.isfinite(r.ppm) and r.rs_ohm > 0


@settings(max_examples=100, deadline=None)
@given(ppm=st.floats(50.0, 3000.0), climate=climates)
def test_compensation_recovers_ppm_in_any_climate(ppm, climate):
    circuit = {"divider_ratio": 2.0, "load_ohm": 10000.0, "supply_v": 5.0}
    r = _pair(ppm, circuit, climate)[1].read()
    if r.quality != BAD:
        assert math.isclose(r.ppm, ppm, rel_tol=0.06), (r.ppm, ppm, r.reason)
