"""Telemetry encoding: byte-exact payloads for both contract profiles, topics, status, errors."""

import json
import time

from firmware.telemetry import (
    TelemetryError,
    data_topic,
    encode,
    iso_utc_ms,
    status_payload,
    status_topic,
    will_payload,
)
from tests.support.mptest import raises

RUN_ON_MICROPYTHON = True

DEVICE = {
    "device_id": "node-1",
    "firmware_version": "1.2.0",
    "location": {"latitude": 52.52, "longitude": 13.405},
    "battery_pct": 88,
    "rssi_dbm": -61,
}


def full_reading():
    return {
        "seq": 7,
        "ts_ms": 1795600000123,  # 2026-11-25T09:46:40.123Z
        "values": {
            "presence": [True, "good"],
            "distance_cm": [123, "good"],
            "energy": [55.25, "good"],
            "occupancy": [0.5, "good"],
            "motion": [False, "good"],
            "motion_events": [0, "good"],
            "gas_ppm": [1.25, "warming_up"],
            "gas_rs_ohm": [12000.4, "good"],
            "temperature_c": [21.5, "good"],
            "humidity_pct": [40.125, "suspect"],
            "pressure_hpa": [1013.25, "good"],
        },
    }


NEUROBUILD_FULL = (
    b'{"device_id":"node-1","timestamp":"2026-11-25T09:46:40.123Z","seq":7,'
    b'"sensors":{"ld2410":{"presence":true,"distance":123,"energy":55.2},'
    b'"pir":{"motion_detected":false},"mq134":{"gas_concentration":1.250,"unit":"ppm"}},'
    b'"occupancy":0.500,"motion_events":0,"gas_rs_ohm":12000,'
    b'"environment":{"temperature_c":21.50,"humidity_pct":40.12,"pressure_hpa":1013.25},'
    b'"quality":{"presence":"good","distance_cm":"good","energy":"good","occupancy":"good",'
    b'"motion":"good","motion_events":"good","gas_ppm":"warming_up","gas_rs_ohm":"good",'
    b'"temperature_c":"good","humidity_pct":"suspect","pressure_hpa":"good"}}'
)

PLATFORM_FULL = (
    b'{"device_id":"node-1","timestamp":"2026-11-25T09:46:40.123Z",'
    b'"location":{"latitude":52.520000,"longitude":13.405000},'
    b'"sensor_data":{"temperature":{"value":21.50,"unit":"celsius","quality":"good"},'
    b'"humidity":{"value":40.12,"unit":"percent","quality":"suspect"},'
    b'"pressure":{"value":1013.25,"unit":"hpa","quality":"good"}},'
    b'"device_status":{"battery_level":88,"signal_strength":-61,"firmware_version":"1.2.0"}}'
)


def test_neurobuild_profile_is_byte_exact():
    # 55.25 and 40.125 round half to even at their last place: same on every runtime
    assert encode(full_reading(), "neurobuild", DEVICE) == NEUROBUILD_FULL


def test_platform_profile_is_byte_exact():
    assert encode(full_reading(), "platform", DEVICE) == PLATFORM_FULL


def test_payloads_are_json_with_the_contract_fields():
    doc = json.loads(encode(full_reading(), "neurobuild", DEVICE))
    assert doc["sensors"]["ld2410"] == {"presence": True, "distance": 123, "energy": 55.2}
    assert doc["sensors"]["mq134"]["unit"] == "ppm"
    doc = json.loads(encode(full_reading(), "platform", DEVICE))
    assert doc["sensor_data"]["temperature"]["unit"] == "celsius"
    assert doc["device_status"]["signal_strength"] == -61


def test_retransmission_is_byte_identical():
    assert encode(full_reading(), "neurobuild", DEVICE) == encode(
        full_reading(), "neurobuild", DEVICE
    )


def test_partial_reading_carries_only_what_it_has():
    r = {"seq": 1, "ts_ms": 0, "values": {"motion": [True, "good"]}}
    assert encode(r, "neurobuild", {"device_id": "a"}) == (
        b'{"device_id":"a","timestamp":"1970-01-01T00:00:00.000Z","seq":1,'
        b'"sensors":{"pir":{"motion_detected":true}},"quality":{"motion":"good"}}'
    )


def test_ppb_unit_scales_the_value():
    r = {"seq": 2, "ts_ms": 0, "values": {"gas_ppm": [0.0125, "good"]}}
    out = encode(r, "neurobuild", {"device_id": "a", "gas_unit": "ppb"})
    assert b'"mq134":{"gas_concentration":12.500,"unit":"ppb"}' in out, out


def test_out_of_schema_values_are_flagged_not_sent_in_sensors():
    # contracts §1: distance 0..600; a 700 would make the service reject the whole reading
    r = {
        "seq": 3,
        "ts_ms": 0,
        "values": {
            "presence": [True, "bad"],
            "distance_cm": [700, "bad"],
            "energy": [40, "good"],
            "motion": [True, "good"],
        },
    }
    out = encode(r, "neurobuild", {"device_id": "a"})
    assert b"ld2410" not in out
    assert b'"out_of_range":{"distance_cm":700}' in out, out
    assert b'"distance_cm":"bad"' in out


def test_nothing_the_profile_can_carry_raises():
    env_only = {"seq": 4, "ts_ms": 0, "values": {"temperature_c": [20.0, "good"]}}
    err = raises(TelemetryError, encode, env_only, "neurobuild", {"device_id": "a"})
    assert "reading 4" in str(err) and "ld2410" in str(err)
    radar = {"seq": 5, "ts_ms": 0, "values": {"motion": [True, "good"]}}
    err = raises(TelemetryError, encode, radar, "platform", DEVICE)
    assert "reading 5" in str(err)
    hot = {"seq": 6, "ts_ms": 0, "values": {"temperature_c": [150.0, "bad"]}}
    assert "reading 6" in str(raises(TelemetryError, encode, hot, "platform", DEVICE))


def test_bad_input_names_what_is_wrong():
    good = full_reading()
    assert "profile" in str(raises(TelemetryError, encode, good, "csv", DEVICE))
    assert "device_id" in str(raises(TelemetryError, encode, good, "neurobuild", {}))
    bad_id = {"device_id": "node 1"}
    assert "' '" in str(raises(TelemetryError, encode, good, "neurobuild", bad_id))
    r = full_reading()
    r["values"]["presence"] = [True, "great"]
    assert "quality 'great'" in str(raises(TelemetryError, encode, r, "neurobuild", DEVICE))
    r = full_reading()
    r["values"]["lux"] = [3, "good"]
    assert "'lux'" in str(raises(TelemetryError, encode, r, "neurobuild", DEVICE))
    r = full_reading()
    r["ts_ms"] = 1.5
    assert "ts_ms" in str(raises(TelemetryError, encode, r, "neurobuild", DEVICE))
    r = full_reading()
    r["values"]["energy"] = [float("nan"), "bad"]
    assert "energy" in str(raises(TelemetryError, encode, r, "neurobuild", DEVICE))
    r = full_reading()
    del r["seq"]
    assert "seq" in str(raises(TelemetryError, encode, r, "neurobuild", DEVICE))
    quoted = dict(DEVICE, firmware_version='1.2"')
    assert "firmware_version" in str(raises(TelemetryError, encode, good, "platform", quoted))


def test_timestamps_match_the_calendar():
    assert iso_utc_ms(0) == "1970-01-01T00:00:00.000Z"
    assert iso_utc_ms(951782400000) == "2000-02-29T00:00:00.000Z"  # leap day, 400-year rule
    assert iso_utc_ms(4107542399999) == "2100-02-28T23:59:59.999Z"  # 2100 is not a leap year
    assert iso_utc_ms(1735689599999) == "2024-12-31T23:59:59.999Z"
    # against the interpreter's own calendar (epoch 1970 on the Unix port and CPython)
    ts = 1
    for _ in range(300):
        ts = (ts * 1103515245 + 12345) % 4102444800000
        want = "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (
            tuple(time.gmtime(ts // 1000)[:6]) + (ts % 1000,)
        )
        assert iso_utc_ms(ts) == want, (ts, iso_utc_ms(ts), want)
    assert "ts_ms" in str(raises(TelemetryError, iso_utc_ms, -1))


def test_topics_follow_the_contract_and_refuse_bad_names():
    assert data_topic("neurobuild/sensors", "n-1") == "neurobuild/sensors/n-1/data"
    assert status_topic("site/a", "n_1") == "site/a/n_1/status"
    assert "wildcard" in str(raises(TelemetryError, data_topic, "a/#", "n"))
    assert "empty level" in str(raises(TelemetryError, data_topic, "a/", "n"))
    assert "'/'" in str(raises(TelemetryError, data_topic, "a", "n/x"))


def test_status_and_will_payloads():
    out = status_payload(
        "node-1",
        {
            "breaker": "open",
            "uptime_s": 12,
            "firmware_version": "1.2.0",
            "free_heap": 40000,
            "battery_pct": None,
            "buffer_depth": 3,
            "config_version": 4,
        },
    )
    assert out == (
        b'{"device_id":"node-1","online":true,"firmware_version":"1.2.0","uptime_s":12,'
        b'"battery_pct":null,"free_heap":40000,"buffer_depth":3,"config_version":4,'
        b'"breaker":"open"}'
    )
    assert will_payload("node-1") == b'{"device_id":"node-1","online":false}'
    assert "'mood'" in str(raises(TelemetryError, status_payload, "n", {"mood": 1}))


def test_huge_finite_values_are_sent_with_their_quality():
    # a broken sensor's 1e306 is reported, not dropped: from 2**53 up a float is written as 17
    # significant digits of its exact integer and an exponent, the same bytes on every runtime
    r = {
        "seq": 8,
        "ts_ms": 0,
        "values": {
            "presence": [True, "good"],
            "distance_cm": [1e306, "bad"],
            "energy": [-1e300, "bad"],
            "motion": [True, "good"],
            "gas_ppm": [1e306, "bad"],
            "temperature_c": [-3e200, "bad"],
        },
    }
    out = encode(r, "neurobuild", {"device_id": "a"})
    assert b'"environment":{"temperature_c":-29999999999999999e184}' in out, out
    assert (
        b'"out_of_range":{"distance_cm":10000000000000000e290,"energy":-10000000000000000e284,'
        b'"gas_ppm":10000000000000000e290}' in out
    ), out
    doc = json.loads(out)
    assert doc["sensors"] == {"pir": {"motion_detected": True}}
    assert doc["quality"]["gas_ppm"] == "bad" and doc["quality"]["distance_cm"] == "bad"
    assert 0.999999e306 < doc["out_of_range"]["gas_ppm"] < 1.000001e306


def test_gas_past_javascripts_safe_integers_is_out_of_range():
    # the service's Joi schema refuses numbers past 2**53 - 1 ("number.unsafe"): the whole
    # reading would get a 400, so such a gas value rides in out_of_range, in the unit sent
    def gas(ppm, unit="ppm"):
        r = {"seq": 9, "ts_ms": 0, "values": {"motion": [True, "good"], "gas_ppm": [ppm, "bad"]}}
        return encode(r, "neurobuild", {"device_id": "a", "gas_unit": unit})

    # 2**53 - 1 is still safe; the scaled decimals past a double's ~16 digits are its own
    assert b'"gas_concentration":9007199254740990.976,' in gas(9007199254740991.0)
    out = gas(9007199254740992.0)
    assert b"mq134" not in out and b'"out_of_range":{"gas_ppm":9007199254740992}' in out, out
    assert b'"gas_concentration":1000000000000000.000,"unit":"ppb"' in gas(1e12, "ppb")
    out = gas(1e13, "ppb")  # 1e16 ppb
    assert b"mq134" not in out and b'"out_of_range":{"gas_ppm":10000000000000.000}' in out, out
    # nothing else to carry: refused, naming the value
    alone = {"seq": 10, "ts_ms": 0, "values": {"gas_ppm": [1e306, "bad"]}}
    err = str(raises(TelemetryError, encode, alone, "neurobuild", {"device_id": "a"}))
    assert "reading 10" in err and "gas_ppm" in err, err


def test_platform_device_status_never_sends_a_known_wrong_value():
    # contracts §2: battery_level is 0..100, and device_status has no quality to flag with,
    # so a value outside it or of quality "bad" is left out (never clamped)
    def status(values, device=DEVICE):
        r = {"seq": 1, "ts_ms": 0, "values": dict(values, temperature_c=[20.0, "good"])}
        return json.loads(encode(r, "platform", device))["device_status"]

    assert status({"battery_pct": [150, "bad"]}) == {
        "signal_strength": -61,
        "firmware_version": "1.2.0",
    }
    assert "battery_level" not in status({"battery_pct": [-1, "good"]})
    assert "battery_level" not in status({"battery_pct": [100.6, "good"]})
    assert "battery_level" not in status({"battery_pct": [50, "bad"]})  # validate.py said so
    assert status({"battery_pct": [100, "suspect"]})["battery_level"] == 100
    assert "signal_strength" not in status({"rssi_dbm": [-200, "bad"]})
    assert status({"rssi_dbm": [-70, "good"]})["signal_strength"] == -70
    assert "battery_level" not in status({}, dict(DEVICE, battery_pct=150))
    assert status({}, dict(DEVICE, battery_pct=0))["battery_level"] == 0


def test_platform_location_off_the_globe_is_refused_by_name():
    r = full_reading()
    for loc, name in (
        ({"latitude": 1e306, "longitude": 0}, "latitude"),
        ({"latitude": 0, "longitude": -180.5}, "longitude"),
        ({"latitude": 0}, "longitude"),
        ({"latitude": float("nan"), "longitude": 0}, "latitude"),
    ):
        err = str(raises(TelemetryError, encode, r, "platform", dict(DEVICE, location=loc)))
        assert "location %s" % name in err, err
