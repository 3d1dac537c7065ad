"""Telemetry properties (hypothesis, CPython): both profiles against the contracts' schemas.

For arbitrary readings (values in and out of range, any quality, values missing), an encoded
payload is JSON that passes the schema written out below from contracts.md §1 and §2, is the
same bytes however the reading's dict was built, carries its timestamp as ISO-8601 UTC with
milliseconds, and keeps every number within the encoder's decimals. When the profile has
nothing it could carry, encode raises TelemetryError naming the reading.
"""

import calendar
import datetime
import json
import re
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.telemetry import NEUROBUILD, PLATFORM, PROFILES, TelemetryError, encode
from tests.support.micropython import run_micropython

QUALITIES = ("good", "suspect", "bad", "warming_up")
_ID = re.compile(r"^[A-Za-z0-9_-]+$")
_ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
_MAX_TS = 253402300799999  # 9999-12-31T23:59:59.999Z: the last instant ISO-8601 writes in 4 digits

# the encoder's documented decimals per value (firmware/telemetry.py _VALUE_PLACES)
PLACES = {
    "distance_cm": 1,
    "energy": 1,
    "occupancy": 3,
    "motion_events": 0,
    "gas_ppm": 3,
    "gas_rs_ohm": 0,
    "temperature_c": 2,
    "humidity_pct": 2,
    "pressure_hpa": 2,
    "battery_pct": 0,
    "rssi_dbm": 0,
}
OUT_OF_RANGE_PLACES = 3  # values set aside in "out_of_range" are written with 3 decimals
JS_SAFE = 2**53 - 1  # the service's Joi number() refuses more ("number.unsafe") unless .unsafe()


# -- the contracts' schemas, written from contracts.md


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_envelope(doc):
    """device_id and timestamp, common to §1 and §2."""
    assert isinstance(doc, dict), doc
    assert isinstance(doc.get("device_id"), str) and _ID.match(doc["device_id"]), doc
    ts = doc.get("timestamp")
    assert isinstance(ts, str) and _ISO_MS.match(ts), ts


def check_neurobuild(doc):
    """contracts §1 (the ingestion service's Joi schema)."""
    check_envelope(doc)
    sensors = doc.get("sensors")
    assert isinstance(sensors, dict) and sensors, doc
    assert set(sensors) <= {"ld2410", "pir", "mq134"}, sensors
    if "ld2410" in sensors:
        ld = sensors["ld2410"]
        assert set(ld) == {"presence", "distance", "energy"}, ld
        assert isinstance(ld["presence"], bool)
        assert is_number(ld["distance"]) and 0 <= ld["distance"] <= 600, ld
        assert is_number(ld["energy"]) and 0 <= ld["energy"] <= 100, ld
    if "pir" in sensors:
        assert set(sensors["pir"]) == {"motion_detected"}
        assert isinstance(sensors["pir"]["motion_detected"], bool)
    if "mq134" in sensors:
        mq = sensors["mq134"]
        assert set(mq) == {"gas_concentration", "unit"}, mq
        assert is_number(mq["gas_concentration"]) and 0 <= mq["gas_concentration"] <= JS_SAFE, mq
        assert mq["unit"] in ("ppm", "ppb")


_PLATFORM_DATA = {
    "temperature": ("celsius", -50, 100),  # the database's constraint (contracts §2)
    "humidity": ("percent", 0, 100),
    "pressure": ("hpa", None, None),
}


def check_platform(doc):
    """contracts §2 (cross-phase ingest): location, sensor_data with units, device_status."""
    check_envelope(doc)
    loc = doc.get("location")
    assert isinstance(loc, dict) and set(loc) == {"latitude", "longitude"}, loc
    assert is_number(loc["latitude"]) and -90 <= loc["latitude"] <= 90
    assert is_number(loc["longitude"]) and -180 <= loc["longitude"] <= 180
    data = doc.get("sensor_data")
    assert isinstance(data, dict) and data and set(data) <= set(_PLATFORM_DATA), data
    for key, item in data.items():
        unit, lo, hi = _PLATFORM_DATA[key]
        assert set(item) == {"value", "unit", "quality"}, item
        assert item["unit"] == unit and item["quality"] in QUALITIES, item
        assert is_number(item["value"]), item
        if lo is not None:
            assert lo <= item["value"] <= hi, (key, item)
    status = doc.get("device_status")
    assert isinstance(status, dict), doc
    assert set(status) <= {"battery_level", "signal_strength", "firmware_version"}, status
    if "battery_level" in status:
        assert is_number(status["battery_level"]) and 0 <= status["battery_level"] <= 100
    if "signal_strength" in status:
        assert is_number(status["signal_strength"])
    if "firmware_version" in status:
        assert isinstance(status["firmware_version"], str)


def epoch_ms(iso):
    """The epoch ms of our ISO-8601 string, by the standard library's calendar."""
    dt = datetime.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ")
    dt = dt.replace(tzinfo=datetime.timezone.utc)
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    return (dt - epoch) // datetime.timedelta(milliseconds=1)


def close_enough(written, value, places):
    """A value written with `places` decimals: off by at most half a unit in the last place,
    plus float error of the scaling (relative 2**-52 twice)."""
    if isinstance(value, int) and places == 0:
        return written == value
    return abs(written - value) <= 0.5 * 10**-places + abs(value) * 4.5e-16 + 1e-300


# -- strategies

# Finite numbers a node can produce: counts, physical values, and wild ones from a broken
# sensor, up to the largest finite double (and the edges of 2**53, where the encoding changes).
_number = st.one_of(
    st.integers(-(10**6), 10**6),
    st.floats(-1e4, 1e4, allow_nan=False),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from((2.0**53, -(2.0**53), 2.0**53 - 1, 9007199254740.991, 1.7976931348623157e308)),
)
_quality = st.sampled_from(QUALITIES)


def _pair(values):
    return st.tuples(values, _quality).map(list)


_VALUE_STRATEGIES = {
    "presence": _pair(st.booleans()),
    "distance_cm": _pair(st.one_of(st.integers(-50, 700), _number)),
    "energy": _pair(st.one_of(st.integers(-5, 120), _number)),
    "occupancy": _pair(st.floats(0, 1)),
    "motion": _pair(st.booleans()),
    "motion_events": _pair(st.integers(0, 10**4)),
    "gas_ppm": _pair(st.one_of(st.none(), st.floats(0, 1000), _number)),  # None: no estimate
    "gas_rs_ohm": _pair(st.floats(0, 1e7)),
    "temperature_c": _pair(st.one_of(st.floats(-60, 110), _number)),
    "humidity_pct": _pair(st.one_of(st.floats(-5, 105), _number)),
    "pressure_hpa": _pair(st.one_of(st.floats(250, 1150), _number)),
    "battery_pct": _pair(st.one_of(st.integers(-20, 200), _number)),
    "rssi_dbm": _pair(st.one_of(st.integers(-127, 0), _number)),
}

_values = st.fixed_dictionaries({}, optional=_VALUE_STRATEGIES)
_reading = st.fixed_dictionaries(
    {"seq": st.integers(0, 2**31), "ts_ms": st.integers(0, _MAX_TS), "values": _values}
)
_printable = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters='"\\'),
    max_size=12,
)
_device = st.fixed_dictionaries(
    {
        "device_id": st.from_regex(r"[A-Za-z0-9_-]{1,24}", fullmatch=True),
        "location": st.fixed_dictionaries(
            {"latitude": st.floats(-90, 90), "longitude": st.floats(-180, 180)}
        ),
    },
    optional={
        "gas_unit": st.sampled_from(("ppm", "ppb")),
        "firmware_version": _printable,
        "battery_pct": st.integers(-20, 200),
        "rssi_dbm": st.integers(-127, 0),
    },
)


def in_range(pair, lo, hi):
    return is_number(pair[0]) and lo <= pair[0] <= hi


def neurobuild_carries_something(values, device):
    """contracts §1 needs one sensor object: a whole in-range radar, the PIR, or a gas value
    that, in the unit sent, Joi takes as a safe number."""
    radar = all(k in values for k in ("presence", "distance_cm", "energy"))
    radar = radar and in_range(values["distance_cm"], 0, 600)
    radar = radar and in_range(values["energy"], 0, 100)
    scale = 1000 if device.get("gas_unit") == "ppb" else 1
    gas = "gas_ppm" in values and in_range(values["gas_ppm"], 0, JS_SAFE)
    gas = gas and values["gas_ppm"][0] * scale <= JS_SAFE
    return radar or "motion" in values or gas


def platform_carries_something(values):
    return any(
        name in values and in_range(values[name], lo, hi)
        for name, lo, hi in (
            ("temperature_c", -50, 100),
            ("humidity_pct", 0, 100),
            ("pressure_hpa", 300, 1100),
        )
    )


def encode_or_error(reading, profile, device):
    try:
        return encode(reading, profile, device)
    except TelemetryError as exc:
        return exc


# -- properties


@settings(max_examples=200, deadline=None)
@given(reading=_reading, device=_device)
def test_neurobuild_payloads_match_the_schema_or_the_reading_is_refused(reading, device):
    out = encode_or_error(reading, NEUROBUILD, device)
    if isinstance(out, TelemetryError):
        assert not neurobuild_carries_something(reading["values"], device), (reading, out)
        assert "reading %d" % reading["seq"] in str(out)
        return
    assert neurobuild_carries_something(reading["values"], device)
    doc = json.loads(out)
    check_neurobuild(doc)
    values = reading["values"]
    assert doc["device_id"] == device["device_id"] and doc["seq"] == reading["seq"]
    # every value's quality rides along, whether or not the profile carries the value
    assert doc["quality"] == {name: pair[1] for name, pair in values.items()}


@settings(max_examples=200, deadline=None)
@given(reading=_reading, device=_device)
def test_platform_payloads_match_the_schema_or_the_reading_is_refused(reading, device):
    out = encode_or_error(reading, PLATFORM, device)
    if isinstance(out, TelemetryError):
        assert not platform_carries_something(reading["values"]), (reading, out)
        assert "reading %d" % reading["seq"] in str(out)
        return
    assert platform_carries_something(reading["values"])
    doc = json.loads(out)
    check_platform(doc)
    assert doc["device_id"] == device["device_id"]


@settings(max_examples=200, deadline=None)
@given(data=st.data(), reading=_reading, device=_device, profile=st.sampled_from(PROFILES))
def test_same_reading_gives_the_same_bytes(data, reading, device, profile):
    first = encode_or_error(reading, profile, device)
    names = list(reading["values"])
    order = data.draw(st.permutations(names), label="value order")
    again = {
        "values": {name: list(reading["values"][name]) for name in order},
        "ts_ms": reading["ts_ms"],
        "seq": reading["seq"],
    }
    device_again = {k: device[k] for k in reversed(list(device))}
    second = encode_or_error(again, profile, device_again)
    if isinstance(first, TelemetryError):
        assert isinstance(second, TelemetryError) and str(first) == str(second)
    else:
        assert first == second  # contracts §1: a retransmission is byte-identical


def as_source(value):
    """Python source for a reading or device that MicroPython rebuilds bit for bit: floats go
    as their IEEE-754 bits, since the two runtimes' float parsers may round a literal apart."""
    if isinstance(value, dict):
        return "{%s}" % ", ".join("%s: %s" % (as_source(k), as_source(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "[%s]" % ", ".join(as_source(v) for v in value)
    if isinstance(value, float):
        return "F(%d)" % struct.unpack("<Q", struct.pack("<d", value))[0]
    return repr(value)  # None, bool, int, ASCII str


_ON_MICROPYTHON = """
import struct
from binascii import hexlify
from firmware.telemetry import TelemetryError, encode

def F(bits):
    return struct.unpack("<d", struct.pack("<Q", bits))[0]

for reading, profile, device in [%s]:
    try:
        print(hexlify(encode(reading, profile, device)).decode())
    except TelemetryError:
        print("refused")
"""


# At most 12 cases per example: 40 or more in one example ran past Hypothesis's entropy budget
# per input often enough (depending on the random seed, not on load) to fail the run now and
# then with FailedHealthCheck "data_too_large". More, smaller examples compare as many cases.
@settings(max_examples=16, deadline=None)
@given(
    cases=st.lists(st.tuples(_reading, st.sampled_from(PROFILES), _device), min_size=1, max_size=12)
)
def test_unix_port_encodes_the_same_bytes_as_cpython(cases):
    """The module's promise: a retransmission from the device is byte-identical to what the
    fleet simulator (CPython) would send for the same reading."""
    source = ", ".join("(%s, %r, %s)" % (as_source(r), p, as_source(d)) for r, p, d in cases)
    lines = run_micropython(_ON_MICROPYTHON % source, heap="2M", timeout=60).stdout.split()
    assert len(lines) == len(cases)
    for (reading, profile, device), line in zip(cases, lines, strict=True):
        out = encode_or_error(reading, profile, device)
        want = "refused" if isinstance(out, TelemetryError) else out.hex()
        assert line == want, (
            reading,
            profile,
            device,
            bytes.fromhex(line) if line != "refused" else line,
        )


_EPOCH = datetime.datetime(1970, 1, 1)
_years = st.one_of(st.integers(1970, 9999), st.sampled_from((1972, 2000, 2024, 2100, 2400, 9996)))


def _month_edge(year, month, last):
    """The first or the last millisecond of a month (leap days and 100/400-year rules)."""
    if last:
        day = calendar.monthrange(year, month)[1]
        return datetime.datetime(year, month, day, 23, 59, 59, 999000)
    return datetime.datetime(year, month, 1)


_instants = st.one_of(
    st.datetimes(_EPOCH, datetime.datetime(9999, 12, 31, 23, 59, 59, 999999)),
    st.builds(_month_edge, _years, st.integers(1, 12), st.booleans()),
)


@settings(max_examples=300, deadline=None)
@given(when=_instants)
def test_timestamps_are_iso_utc_ms_and_round_trip(when):
    when = when.replace(microsecond=when.microsecond // 1000 * 1000)
    ts_ms = (when - _EPOCH) // datetime.timedelta(milliseconds=1)
    want = when.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (when.microsecond // 1000)
    device = {"device_id": "n", "location": {"latitude": 0, "longitude": 0}}
    for profile, values in (
        (NEUROBUILD, {"motion": [True, "good"]}),
        (PLATFORM, {"temperature_c": [20, "good"]}),
    ):
        reading = {"seq": 1, "ts_ms": ts_ms, "values": values}
        stamp = json.loads(encode(reading, profile, device))["timestamp"]
        assert _ISO_MS.match(stamp), stamp
        assert stamp == want, (ts_ms, stamp, want)
        assert epoch_ms(stamp) == ts_ms, (ts_ms, stamp)


@settings(max_examples=200, deadline=None)
@given(reading=_reading, device=_device)
def test_numbers_survive_within_the_documented_decimals(reading, device):
    values = reading["values"]
    out = encode_or_error(reading, NEUROBUILD, device)
    if not isinstance(out, TelemetryError):
        doc = json.loads(out)
        sensors = doc["sensors"]
        if "ld2410" in sensors:
            assert sensors["ld2410"]["presence"] == values["presence"][0]
            for key, name in (("distance", "distance_cm"), ("energy", "energy")):
                assert close_enough(sensors["ld2410"][key], values[name][0], PLACES[name])
        if "pir" in sensors:
            assert sensors["pir"]["motion_detected"] == values["motion"][0]
        if "mq134" in sensors:
            scale = 1000 if device.get("gas_unit") == "ppb" else 1
            assert sensors["mq134"]["unit"] == device.get("gas_unit", "ppm")
            written = sensors["mq134"]["gas_concentration"]
            assert close_enough(written, values["gas_ppm"][0] * scale, 3)
        for name in ("occupancy", "motion_events", "gas_rs_ohm"):
            if name in values:
                assert close_enough(doc[name], values[name][0], PLACES[name])
        for name in ("temperature_c", "humidity_pct", "pressure_hpa"):
            if name in values:
                assert close_enough(doc["environment"][name], values[name][0], PLACES[name])
        for name, written in doc.get("out_of_range", {}).items():
            if values[name][0] is None:
                assert written is None
            else:
                assert close_enough(written, values[name][0], OUT_OF_RANGE_PLACES)
    out = encode_or_error(reading, PLATFORM, device)
    if not isinstance(out, TelemetryError):
        doc = json.loads(out)
        for key, name in (
            ("temperature", "temperature_c"),
            ("humidity", "humidity_pct"),
            ("pressure", "pressure_hpa"),
        ):
            if key in doc["sensor_data"]:
                item = doc["sensor_data"][key]
                assert close_enough(item["value"], values[name][0], PLACES[name])
                assert item["quality"] == values[name][1]
        for key, name in (("battery_level", "battery_pct"), ("signal_strength", "rssi_dbm")):
            # contracts §2: device_status has no quality, so what the device knows to be wrong
            # (quality bad; a battery level off 0..100) is left out, never clamped
            if name in values:
                source, known_bad = values[name][0], values[name][1] == "bad"
            else:
                source, known_bad = device.get(name), False
            if key == "battery_level" and source is not None:
                known_bad = known_bad or not 0 <= source <= 100
            if source is None or known_bad:
                assert key not in doc["device_status"], (source, doc["device_status"])
            else:
                assert close_enough(doc["device_status"][key], source, 0), (source, doc)
        loc = doc["location"]
        assert close_enough(loc["latitude"], device["location"]["latitude"], 6)
        assert close_enough(loc["longitude"], device["location"]["longitude"], 6)


_VALUE_NAMES = sorted(PLACES)
_finite = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=1e15, allow_infinity=False).flatmap(lambda f: st.sampled_from((f, -f))),
    st.sampled_from((1e306, -1e306, 1.7976931348623157e308, 5e-324, 2.0**53, 2.0**53 - 1)),
)


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(_VALUE_NAMES),
    value=_finite,
    quality=_quality,
    profile=st.sampled_from(PROFILES),
    unit=st.sampled_from(("ppm", "ppb")),
)
def test_any_finite_float_encodes_or_raises_telemetry_error(name, value, quality, profile, unit):
    """A broken sensor's absurd value is reported with its quality, never a crash: beside a
    value each profile always carries, every finite float encodes to JSON that parses back
    within the documented decimals (or 17 significant digits, past 2**53)."""
    anchor = ["pressure_hpa", 1000.0] if name == "temperature_c" else ["temperature_c", 20.0]
    values = {"motion": [True, "good"], anchor[0]: [anchor[1], "good"], name: [value, quality]}
    reading = {"seq": 1, "ts_ms": 0, "values": values}
    device = {"device_id": "a", "gas_unit": unit, "location": {"latitude": 0, "longitude": 0}}
    doc = json.loads(encode(reading, profile, device))  # OverflowError here was the bug
    if profile == PLATFORM:
        check_platform(doc)
        return
    check_neurobuild(doc)
    assert doc["quality"][name] == quality
    if name in doc.get("out_of_range", {}):
        assert close_enough(doc["out_of_range"][name], value, OUT_OF_RANGE_PLACES)
    elif name in doc:
        assert close_enough(doc[name], value, PLACES[name])
    elif name in doc.get("environment", {}):
        assert close_enough(doc["environment"][name], value, PLACES[name])


@settings(max_examples=200, deadline=None)
@given(
    lat=st.one_of(st.none(), st.floats(), st.integers(-1000, 1000)),
    lon=st.one_of(st.none(), st.floats(), st.integers(-1000, 1000)),
)
def test_platform_location_is_on_the_globe_or_refused_by_name(lat, lon):
    reading = {"seq": 1, "ts_ms": 0, "values": {"temperature_c": [20.0, "good"]}}
    device = {"device_id": "a", "location": {"latitude": lat, "longitude": lon}}
    out = encode_or_error(reading, PLATFORM, device)
    lat_ok = lat is not None and -90 <= lat <= 90
    lon_ok = lon is not None and -180 <= lon <= 180
    if isinstance(out, TelemetryError):
        assert not (lat_ok and lon_ok), (lat, lon, out)
        assert "location %s" % ("latitude" if not lat_ok else "longitude") in str(out), out
        return
    assert lat_ok and lon_ok, (lat, lon)
    doc = json.loads(out)
    check_platform(doc)
    assert close_enough(doc["location"]["latitude"], lat, 6)
    assert close_enough(doc["location"]["longitude"], lon, 6)
