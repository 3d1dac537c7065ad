"""MQ134 driver: circuit maths, compensation, faults and warm-up, against fakes and SimMQ134."""

from drivers.mq134 import (
    ABOVE_SUPPLY,
    MQ134,
    OPEN_CIRCUIT,
    SATURATED,
    MQ134Error,
    compensation_factor,
    ppm_from_ratio,
    ratio_from_ppm,
    rs_from_vout,
    vout_from_rs,
)
from drivers.sensor import BAD, GOOD, SUSPECT, WARMING_UP
from simulator.clock import SimClock
from simulator.mq134 import SimMQ134
from tests.support.mptest import IS_MICROPYTHON, close_to, raises

RUN_ON_MICROPYTHON = True


class FixedAdc:
    """Returns preset values in turn; no read_uv unless given."""

    def __init__(self, u16_values, uv_values=None):
        self.u16 = u16_values
        self.uv = uv_values
        self.i = 0
        self.j = 0
        if uv_values is None:
            self.read_uv = None
            del self.read_uv

    def read_u16(self):
        v = self.u16[self.i % len(self.u16)]
        self.i += 1
        return v


class FixedUvAdc(FixedAdc):
    def read_uv(self):
        v = self.uv[self.j % len(self.uv)]
        self.j += 1
        return v


class U16Only:
    def __init__(self, value):
        self.value = value

    def read_u16(self):
        return self.value


class FailingAdc:
    def read_u16(self):
        raise OSError(5)


def _ready(adc, clock=None, **kw):
    """A driver whose warm-up is over."""
    clock = clock or SimClock()
    kw.setdefault("warmup_ms", 0)
    return MQ134(adc, clock, **kw)


def test_compensation_factor_matches_reference_values():
    # sensors.md §4 [CALC]
    for t, h, cf in ((20, 33, 0.992), (20, 65, 0.934), (20, 85, 0.898), (0, 33, 1.395)):
        assert close_to(compensation_factor(t, h), cf, 0.0006), (t, h)
    assert close_to(compensation_factor(40, 33), 0.868, 0.0006)


def test_curve_and_circuit_reference_vector():
    # sensors.md §4: CO2 400 ppm -> Rs/R0 0.6407; R0 76.63k, RL 10k, Vc 5 V -> Rs 49.10k, 0.846 V
    ratio = ratio_from_ppm(400.0)
    assert close_to(ratio, 0.6407, 0.0001), ratio
    rs = 76630.0 * ratio
    assert close_to(rs, 49100.0, 10.0), rs
    assert close_to(vout_from_rs(rs, 5.0, 10000.0), 0.846, 0.001)
    assert close_to(rs_from_vout(vout_from_rs(rs, 5.0, 10000.0), 5.0, 10000.0), rs, 0.01)
    assert close_to(ppm_from_ratio(ratio), 400.0, 1e-6)


def test_read_u16_scaled_by_attenuation_when_no_read_uv():
    # 0x8000 at 11 dB: 32768/65535 * 3.9 V = 1.950 V at the pin, divider 2 -> 3.900 V out.
    gas = _ready(U16Only(0x8000), divider_ratio=2.0, load_ohm=10000.0, supply_v=5.0)
    r = gas.read()
    assert close_to(r.adc_volts, 1.95003, 0.0001), r.adc_volts
    assert close_to(r.volts, 3.90006, 0.0002)
    assert close_to(r.rs_raw_ohm, 10000.0 * (5.0 - r.volts) / r.volts, 0.001)
    assert (r.raw_u16, r.counts, r.samples) == (0x8000, 0x800, 16)
    gas6 = _ready(U16Only(0x8000), atten="ATTN_6DB")
    assert close_to(gas6.read().adc_volts, 1.10002, 0.0001)  # 2.2 V full scale


def test_read_uv_preferred_and_reference_vector_gives_400_ppm():
    adc = FixedUvAdc([0x3790], [846000])  # 0.846 V at the pin, no divider
    r = _ready(adc, load_ohm=10000.0, supply_v=5.0).read()
    assert close_to(r.volts, 0.846, 1e-9)
    assert close_to(r.rs_ohm, 49101.6, 1.0), r.rs_ohm
    assert close_to(r.ppm, 400.0, 1.5), r.ppm
    assert r.quality == GOOD and r.reason is None
    assert adc.j == 16  # one read_uv per sample


def test_read_returns_the_same_object_refilled():
    gas = _ready(SimMQ134(ppm=400.0))
    first = gas.read()
    assert gas.read() is first


def test_sim_round_trip_over_the_range():
    for ppm in (20.0, 100.0, 400.0, 1500.0, 5000.0):
        adc = SimMQ134(ppm=ppm, divider_ratio=2.0, load_ohm=10000.0)
        r = _ready(adc, divider_ratio=2.0, load_ohm=10000.0).read()
        assert r.quality in (GOOD, SUSPECT), (ppm, r.quality, r.reason)
        assert close_to(r.ppm, ppm, ppm * 0.03), (ppm, r.ppm)


def test_u16_path_round_trips_too():
    adc = SimMQ134(ppm=800.0, divider_ratio=1.5, load_ohm=20000.0)
    gas = _ready(adc, divider_ratio=1.5, load_ohm=20000.0, use_uv=False)
    assert close_to(gas.read().ppm, 800.0, 800.0 * 0.03)


def test_compensation_recovers_truth_in_warm_humid_air():
    adc = SimMQ134(ppm=400.0, temperature_c=35.0, humidity_pct=80.0)
    gas = _ready(adc)
    uncompensated = gas.read().ppm
    assert not close_to(uncompensated, 400.0, 40.0), uncompensated  # the error is real
    gas.set_environment(35.0, 80.0)
    r = gas.read()
    assert close_to(r.ppm, 400.0, 12.0), r.ppm
    assert close_to(r.rs_ohm * compensation_factor(35.0, 80.0), r.rs_raw_ohm, 0.01)
    gas.set_environment(None, None)
    assert close_to(gas.read().ppm, uncompensated, 1e-6)


def test_environment_outside_the_fit_is_suspect():
    gas = _ready(SimMQ134(ppm=400.0, temperature_c=50.0))
    gas.set_environment(50.0, 30.0)
    r = gas.read()
    assert r.quality == SUSPECT and r.reason == "environment_out_of_range"


def test_warm_up_then_good():
    clock = SimClock()
    gas = MQ134(SimMQ134(ppm=400.0), clock, warmup_ms=120000)
    r = gas.read()
    assert r.quality == WARMING_UP and r.reason == "warming_up"
    assert r.ppm is not None  # values still computed for calibration logs
    clock.advance(119999)
    assert gas.read().quality == WARMING_UP
    clock.advance(1)
    assert gas.read().quality == GOOD
    gas.restart_warmup()
    assert gas.read().quality == WARMING_UP


def test_saturated_and_open_circuit_are_bad_with_reason():
    adc = SimMQ134(ppm=400.0)
    gas = _ready(adc)
    adc.set_fault("saturated")
    r = gas.read()
    assert (r.quality, r.reason) == (BAD, SATURATED)
    assert r.ppm is None and r.rs_ohm is None and r.counts == 4095
    adc.set_fault("disconnected")
    r = gas.read()
    assert (r.quality, r.reason, r.counts) == (BAD, OPEN_CIRCUIT, 0)
    assert r.ratio is None
    adc.set_fault(None)
    assert gas.read().quality == GOOD


def test_faults_beat_warm_up():
    adc = SimMQ134(ppm=400.0)
    adc.set_fault("disconnected")
    r = MQ134(adc, SimClock(), warmup_ms=60000).read()
    assert (r.quality, r.reason) == (BAD, OPEN_CIRCUIT)


def test_a_few_clipped_samples_make_it_suspect():
    adc = FixedAdc([0x8000, 0x8000, 0x8000, 0xFFFF])  # one in four at full scale
    r = _ready(adc, divider_ratio=2.0, samples=8).read()
    assert (r.quality, r.reason) == (SUSPECT, "some_samples_clipped")
    assert r.ppm is not None


def test_pin_above_linear_range_is_suspect():
    # 2.6 V at the pin with 11 dB attenuation: past the 2.45 V linear end.
    r = _ready(FixedUvAdc([0xAAAA], [2600000]), divider_ratio=1.5).read()
    assert (r.quality, r.reason) == (SUSPECT, "above_linear_range")


def test_output_above_supply_means_wrong_divider():
    # 2.6 V at the pin through a (claimed) 2:1 divider would be 5.2 V from a 5 V module.
    r = _ready(FixedUvAdc([0xAAAA], [2600000]), divider_ratio=2.0, supply_v=5.0).read()
    assert (r.quality, r.reason) == (BAD, ABOVE_SUPPLY)


def test_stuck_sensor_ignores_the_gas():
    adc = SimMQ134(ppm=400.0)
    gas = _ready(adc)
    before = gas.read().raw_u16
    adc.set_fault("stuck")
    adc.ppm = 3000.0
    assert gas.read().raw_u16 == before
    adc.set_fault(None)
    assert gas.read().raw_u16 != before


def test_averaging_tames_noise_and_is_seeded():
    adc = SimMQ134(ppm=400.0, seed=7)
    adc.noise_counts = 20
    r = _ready(adc, samples=64).read()
    assert close_to(r.ppm, 400.0, 30.0), r.ppm
    again = SimMQ134(ppm=400.0, seed=7)
    again.noise_counts = 20
    assert _ready(again, samples=64).read().raw_u16 == r.raw_u16


def test_adc_error_is_wrapped_with_cause():
    gas = _ready(FailingAdc())
    err = raises(MQ134Error, gas.read)
    assert isinstance(err.cause, OSError)
    assert "ADC read failed" in str(err)


def test_bad_parameters_raise_value_error():
    adc = SimMQ134()
    assert "attenuation" in str(raises(ValueError, MQ134, adc, atten="ATTN_12DB"))
    assert "divider_ratio" in str(raises(ValueError, MQ134, adc, divider_ratio=0.5))
    raises(ValueError, MQ134, adc, load_ohm=0)
    raises(ValueError, MQ134, adc, b=0)
    assert "1..64" in str(raises(ValueError, MQ134, adc, samples=65))
    assert "fault" in str(raises(ValueError, adc.set_fault, "melted"))


def test_sampling_allocates_nothing():
    if not IS_MICROPYTHON:
        return  # heap_lock exists only on MicroPython; the CPython run checks the sums
    import micropython

    gas = _ready(FixedUvAdc([0x4000, 0x4100], [1000000, 1010000]), samples=64)
    micropython.heap_lock()
    try:
        gas.sample()
    finally:
        micropython.heap_unlock()
    assert gas._sum_u16 == 32 * (0x4000 + 0x4100)
    assert gas._sum_uv == 32 * 2010000


def test_sample_sums_are_exact():
    gas = _ready(FixedUvAdc([1, 0xFFFF, 0x100], [5, 6, 7]), samples=6)
    gas.sample()
    assert gas._sum_u16 == 2 * (1 + 0xFFFF + 0x100)
    assert gas._sum_uv == 2 * 18
    assert (gas._n_saturated, gas._n_open) == (2, 2)
