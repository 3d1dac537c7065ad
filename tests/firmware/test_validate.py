"""Validation: range, timestamp, stuck, spike and warm-up give each value a quality."""

from drivers.sensor import BAD, GOOD, SUSPECT, WARMING_UP
from firmware.validate import (
    MAX_AHEAD_MS,
    MIN_EPOCH_MS,
    Validator,
    check_range,
    check_timestamp,
    worse,
)
from simulator.clock import SimClock

RUN_ON_MICROPYTHON = True

_NOW = 1795600000000  # 2026-11-25


def test_worse_orders_qualities_and_treats_unknown_as_bad():
    assert worse(GOOD, SUSPECT) == SUSPECT
    assert worse(WARMING_UP, SUSPECT) == WARMING_UP
    assert worse(BAD, WARMING_UP) == BAD
    assert worse(GOOD, GOOD) == GOOD
    assert worse(GOOD, "excellent") == BAD


def test_range_limits_per_quantity():
    assert check_range("temperature_c", 21.5) == GOOD
    assert check_range("temperature_c", 85) == GOOD
    assert check_range("temperature_c", 85.01) == BAD
    assert check_range("temperature_c", -40.5) == BAD
    assert check_range("humidity_pct", 101.0) == BAD
    assert check_range("pressure_hpa", 250.0) == BAD
    assert check_range("distance_cm", 601) == BAD
    assert check_range("gas_ppm", -0.1) == BAD
    assert check_range("presence", True) == GOOD
    assert check_range("presence", 1) == BAD  # a bool quantity takes only bools


def test_non_numbers_are_bad():
    for value in (None, "21.5", True, float("nan"), [1]):
        assert check_range("temperature_c", value) == BAD, value
    assert check_range("unknown_quantity", 1e9) == GOOD  # no limit known: range says nothing


def test_timestamp_sanity():
    assert check_timestamp(_NOW, _NOW, True) == GOOD
    assert check_timestamp(_NOW + MAX_AHEAD_MS, _NOW, True) == GOOD
    assert check_timestamp(_NOW + MAX_AHEAD_MS + 1, _NOW, True) == BAD
    assert check_timestamp(_NOW, _NOW, False) == SUSPECT  # never synced by NTP
    assert check_timestamp(946684800000, _NOW, False) == BAD  # RTC at 2000-01-01
    assert check_timestamp(MIN_EPOCH_MS - 1, _NOW, True) == BAD
    assert check_timestamp(_NOW, _NOW, True, last_ms=_NOW) == BAD  # same millisecond
    assert check_timestamp(_NOW - 5, _NOW, True, last_ms=_NOW) == BAD  # went backwards
    assert check_timestamp(float(_NOW), _NOW, True) == BAD
    assert check_timestamp("2026-11-25T00:00:00Z", _NOW, True) == BAD


def test_validator_keeps_timestamp_order():
    v = Validator(SimClock(5000))
    assert v.check_time(_NOW, _NOW, True) == GOOD
    assert v.check_time(_NOW, _NOW, True) == BAD
    assert v.check_time(_NOW - 1000, _NOW, True) == BAD
    assert v.check_time(_NOW + 1, _NOW, True) == GOOD  # the bad ones did not move the mark


def test_a_spike_is_suspect_and_a_confirmed_step_is_not():
    v = Validator(SimClock(5000))
    assert v.check("temperature_c", 21.0) == GOOD
    assert v.check("temperature_c", 21.4) == GOOD
    assert v.check("temperature_c", 35.0) == SUSPECT  # +13.6 in one sample
    assert v.check("temperature_c", 21.5) == GOOD  # back: it was a spike
    assert v.check("temperature_c", 30.0) == SUSPECT
    assert v.check("temperature_c", 30.2) == GOOD  # the new level holds: a step (heater on)
    assert v.check("temperature_c", 30.1) == GOOD


def test_a_stuck_value_becomes_suspect():
    v = Validator(SimClock(5000), stuck={"pressure_hpa": 4})
    qualities = [v.check("pressure_hpa", 1013.25) for _ in range(5)]
    assert qualities == [GOOD, GOOD, GOOD, SUSPECT, SUSPECT]
    assert v.check("pressure_hpa", 1013.27) == GOOD


def test_warm_up_then_good():
    clock = SimClock(5000)
    v = Validator(clock, warmup_ms={"gas_ppm": 1000})
    assert v.check("gas_ppm", 3.0) == WARMING_UP
    assert v.check("temperature_c", 20.0) == GOOD  # no warm-up for this one
    clock.advance(999)
    assert v.check("gas_ppm", 3.1) == WARMING_UP
    clock.advance(1)
    assert v.check("gas_ppm", 3.1) == GOOD
    v.restart_warmup()
    assert v.check("gas_ppm", 3.1) == WARMING_UP


def test_driver_quality_is_never_improved():
    v = Validator(SimClock(5000))
    assert v.check("humidity_pct", 45.0, SUSPECT) == SUSPECT
    assert v.check("humidity_pct", 45.0, BAD) == BAD
    assert v.check("gas_ppm", None, WARMING_UP) == WARMING_UP
    assert v.check("gas_ppm", None, GOOD) == BAD


def test_bad_values_are_kept_with_their_quality_and_do_not_poison_history():
    v = Validator(SimClock(5000))
    values = {
        "temperature_c": [21.0, GOOD],
        "humidity_pct": [140.0, GOOD],
        "presence": [True, GOOD],
        "distance_cm": [250.0, SUSPECT],
    }
    assert v.check_values(values) == BAD
    assert values == {
        "temperature_c": [21.0, GOOD],
        "humidity_pct": [140.0, BAD],
        "presence": [True, GOOD],
        "distance_cm": [250.0, SUSPECT],
    }
    assert v.check("temperature_c", 150.0) == BAD
    assert v.check("temperature_c", 21.3) == GOOD  # 150 was not taken as the reference


def test_validators_share_no_state():
    a = Validator(SimClock(5000), stuck={"humidity_pct": 2})
    b = Validator(SimClock(5000), stuck={"humidity_pct": 2})
    a.check("humidity_pct", 40.0)
    assert a.check("humidity_pct", 40.0) == SUSPECT
    assert b.check("humidity_pct", 40.0) == GOOD
