"""Config: schema checks naming key and value, fallback at load, atomic save, remote config."""

import json

from firmware.config import (
    CONFIG,
    LAST_GOOD,
    ConfigError,
    apply_remote,
    check,
    defaults,
    load_config,
    save_config,
    validate,
)
from firmware.fs import OsFs
from tests.support.mptest import IS_MICROPYTHON, close_to, raises

RUN_ON_MICROPYTHON = True

_REMOTE = {
    "sampling_interval": 60,
    "transmission_interval": 300,
    "sensor_calibration": {
        "temperature_offset": 0.2,
        "humidity_offset": -1.5,
        "pressure_offset": 0.1,
    },
    "power_management": {"sleep_mode": "enabled", "wake_interval": 300},
}


def _minimal():
    return {"device_id": "ESP32-0A1B2C3D", "uplink": {"url": "mqtt://10.0.0.2"}}


def _write(name, text):
    with open(name, "w") as f:
        f.write(text)


def _read_json(name):
    with open(name) as f:
        return json.loads(f.read())


def _errors(given):
    return [str(e) for e in check(given)[1]]


def test_defaults_are_fresh_copies():
    a = defaults()
    a["calibration"]["radar"]["move_sensitivity"][0] = 99
    assert defaults()["calibration"]["radar"]["move_sensitivity"][0] == 50
    assert defaults()["uplink"]["topic_prefix"] == "neurobuild/sensors"
    assert defaults()["uplink"]["profile"] == "neurobuild"


def test_minimal_config_is_completed_from_defaults():
    config, errors, warnings = check(_minimal())
    assert errors == [] and warnings == []
    up = config["uplink"]
    assert (up["transport"], up["host"], up["port"], up["tls"]) == ("mqtt", "10.0.0.2", 1883, False)
    assert config["intervals"]["sampling_s"] == 60
    assert "safe_mode" not in config and "source" not in config  # only load_config sets them


def test_uplink_url_sets_transport_tls_port_and_path():
    given = _minimal()
    given["uplink"]["url"] = "https://ingest.example.com:8443/api/v1/"
    up = validate(given)["uplink"]
    assert (up["transport"], up["tls"], up["host"], up["port"], up["path"]) == (
        "http",
        True,
        "ingest.example.com",
        8443,
        "/api/v1",
    )
    given["uplink"] = {"host": "broker", "tls": True}
    assert validate(given)["uplink"]["port"] == 8883


def test_bad_url_names_key_and_value():
    given = _minimal()
    given["uplink"]["url"] = "ftp://x"
    assert _errors(given) == ["uplink.url: 'ftp://x': use mqtt://, mqtts://, http:// or https://"]
    given["uplink"]["url"] = "mqtt://broker:88x3"
    assert _errors(given) == ["uplink.url: 'mqtt://broker:88x3': port '88x3' is not a number"]


def test_wrong_types_name_the_key_and_the_value():
    given = _minimal()
    given["intervals"] = {"sampling_s": "60"}
    given["uplink"]["tls"] = "yes"
    given["uplink"]["port"] = True
    given["network"] = ["ssid"]
    given["calibration"] = {"radar": {"move_sensitivity": [1, 2]}}
    assert sorted(_errors(given)) == [
        "calibration.radar.move_sensitivity: [1, 2] is not a list of 9 ints",
        "intervals.sampling_s: '60' (str) is not an int",
        "network: ['ssid'] (list) is not an object",
        "uplink.port: True (bool) is not an int",
        "uplink.tls: 'yes' (str) is not true/false",
    ]


def test_out_of_range_values_name_the_limits():
    given = _minimal()
    given["uplink"]["port"] = 70000
    given["uplink"]["url"] = ""
    given["uplink"]["host"] = "broker"
    given["calibration"] = {"env": {"temperature_offset": 50}, "radar": {"max_move_gate": 9}}
    given["uplink"]["profile"] = "cloud"
    given["trusted_keys"] = ["zz" * 16]
    assert sorted(_errors(given)) == [
        "calibration.env.temperature_offset: 50.0 is out of range -10.0..10.0",
        "calibration.radar.max_move_gate: 9 is out of range 2..8",
        "trusted_keys[0]: '" + "zz" * 16 + "' is not a hex key",
        "uplink.port: 70000 is out of range 0..65535",
        "uplink.profile: 'cloud' is not one of neurobuild, platform",
    ]


def test_ints_become_floats_and_null_means_driver_default():
    given = _minimal()
    given["calibration"] = {"env": {"pressure_offset": 2}, "gas": {"r0_ohm": None, "a": 110}}
    config = validate(given)
    assert config["calibration"]["env"]["pressure_offset"] == 2.0
    assert isinstance(config["calibration"]["env"]["pressure_offset"], float)
    assert config["calibration"]["gas"]["r0_ohm"] is None
    assert close_to(config["calibration"]["gas"]["a"], 110.0, 1e-9)


def test_unknown_keys_are_warnings_not_errors():
    given = _minimal()
    given["intervals"] = {"sampling_interval": 30}
    config, errors, warnings = check(given)
    assert errors == []
    assert [str(w) for w in warnings] == ["intervals.sampling_interval: unknown key, ignored"]
    assert config["intervals"]["sampling_s"] == 60


def test_required_keys_and_cross_checks():
    assert _errors({}) == [
        "device_id: missing: provision the node (nbk provision)",
        "uplink.host: missing: set uplink.url or uplink.host",
    ]
    given = _minimal()
    given["device_id"] = "bad id!"
    given["intervals"] = {"sampling_s": 600, "transmission_s": 60}
    assert _errors(given) == [
        "device_id: 'bad id!': use 1-64 letters, digits, '-' or '_'",
        "intervals.transmission_s: 60 is shorter than intervals.sampling_s (600)",
    ]
    assert _errors([1]) == ["config: list is not an object"]


def test_validate_raises_the_first_error_and_counts_the_rest():
    err = raises(ConfigError, validate, {"device_id": 5})
    assert err.key == "device_id" and err.value == 5
    assert str(err) == "device_id: 5 (int) is not a string (and 1 more)"
    assert isinstance(err, ValueError)


def test_missing_config_means_safe_mode_with_a_reason():
    config, problems = load_config(OsFs(""))
    assert config["safe_mode"] == "config.json: missing"
    assert config["source"] == "defaults"
    assert problems == ["config.json: missing", "config.bak: missing"]
    assert config["uplink"]["topic_prefix"] == "neurobuild/sensors"


def test_valid_config_loads_and_becomes_the_last_good_copy():
    _write(CONFIG, json.dumps(_minimal()))
    fs = OsFs("")
    config, problems = load_config(fs)
    assert problems == [] and config["source"] == CONFIG and config["safe_mode"] is None
    assert config["device_id"] == "ESP32-0A1B2C3D"
    assert fs.exists(LAST_GOOD)
    assert _read_json(LAST_GOOD)["device_id"] == "ESP32-0A1B2C3D"


def test_corrupt_config_falls_back_to_the_last_good_copy():
    fs = OsFs("")
    save_config(fs, _minimal())
    save_config(fs, _minimal())  # now config.bak exists too
    with open(CONFIG, "wb") as f:
        f.write(b'{"device_id": "ESP32-0A1B\x00\xff')  # a write cut short
    config, problems = load_config(fs)
    assert config["source"] == LAST_GOOD and config["safe_mode"] is None
    assert len(problems) == 1 and problems[0].startswith("config.json: not valid JSON")


def test_wrong_types_without_a_last_good_copy_mean_safe_mode_naming_the_key():
    given = _minimal()
    given["uplink"]["port"] = "1883"
    _write(CONFIG, json.dumps(given))
    config, problems = load_config(OsFs(""))
    assert config["safe_mode"] == "config.json: uplink.port: '1883' (str) is not an int"
    assert config["device_id"] == "ESP32-0A1B2C3D"  # kept so the node is recognisable
    assert problems[-1] == "config.bak: missing"


def test_oversized_config_is_refused_without_reading_it():
    chunk = b" " * 1000
    with open(CONFIG, "wb") as f:
        for _ in range(20):
            f.write(chunk)
    config, problems = load_config(OsFs(""))
    assert problems[0] == "config.json: 20000 bytes, larger than 16384: corrupt"
    assert config["safe_mode"] == problems[0]


def test_save_is_atomic_keeps_the_previous_copy_and_refuses_bad_configs():
    fs = OsFs("")
    first = save_config(fs, _minimal())
    assert "safe_mode" not in _read_json(CONFIG)
    second = _minimal()
    second["intervals"] = {"sampling_s": 30}
    save_config(fs, second)
    assert _read_json(LAST_GOOD)["intervals"]["sampling_s"] == 60
    assert load_config(fs)[0]["intervals"]["sampling_s"] == 30
    bad = _minimal()
    bad["uplink"]["port"] = -1
    assert raises(ConfigError, save_config, fs, bad).key == "uplink.port"
    assert load_config(fs)[0]["intervals"]["sampling_s"] == 30
    assert not fs.exists("config.json.tmp")
    assert first["uplink"]["port"] == 1883


def test_remote_config_from_the_contract_is_applied():
    config = validate(_minimal())
    remote = dict(_REMOTE)
    remote["config_version"] = 4
    new, changed, needs_reboot = apply_remote(config, remote)
    assert changed == [
        "calibration.env.temperature_offset",
        "calibration.env.humidity_offset",
        "calibration.env.pressure_offset",
        "power.sleep_mode",
        "version",
    ]
    assert needs_reboot  # mains loop -> deep-sleep cycle
    assert close_to(new["calibration"]["env"]["humidity_offset"], -1.5, 1e-9)
    assert new["version"] == 4
    assert config["version"] == 0 and config["power"]["sleep_mode"] == "disabled"
    again, changed, needs_reboot = apply_remote(new, remote)
    assert changed == [] and not needs_reboot and again == new


def test_live_changes_need_no_reboot():
    config = validate(_minimal())
    new, changed, needs_reboot = apply_remote(config, {"sampling_interval": 30, "x": 1})
    assert changed == ["intervals.sampling_s"] and not needs_reboot
    assert new["intervals"]["sampling_s"] == 30


def test_bad_remote_config_names_the_field_and_changes_nothing():
    config = validate(_minimal())
    cases = (
        ({"sampling_interval": 0}, "sampling_interval: 0 is out of range 1..86400"),
        ({"sampling_interval": "60"}, "sampling_interval: '60' (str) is not an int"),
        (
            {"sensor_calibration": {"temperature_offset": 99}},
            "sensor_calibration.temperature_offset: 99.0 is out of range -10.0..10.0",
        ),
        ({"sensor_calibration": 3}, "sensor_calibration: 3 is not an object"),
        (
            {"power_management": {"sleep_mode": "deep"}},
            "power_management.sleep_mode: 'deep' is not one of enabled, disabled",
        ),
        ({"config_version": "7"}, "config_version: '7' is not an int"),
        (
            {"transmission_interval": 30},
            "transmission_interval: 30 is shorter than sampling_interval 60",
        ),
        ([1], "remote: list is not an object"),
    )
    for remote, message in cases:
        assert str(raises(ConfigError, apply_remote, config, remote)) == message
    assert config == validate(_minimal())


def test_an_int_too_big_for_a_float_is_a_config_error_naming_the_key():
    # CPython's float(10**400) raises OverflowError; MicroPython gives inf: both refuse it alike
    huge = 10**400
    assert _errors({"calibration": {"env": {"temperature_offset": huge}}})[0] == (
        "calibration.env.temperature_offset: inf is out of range -10.0..10.0"
    )
    assert _errors({"location": {"latitude": -huge}})[0] == (
        "location.latitude: -inf is out of range -90.0..90.0"
    )
    config = validate(_minimal())
    err = raises(
        ConfigError, apply_remote, config, {"sensor_calibration": {"humidity_offset": huge}}
    )
    assert err.key == "sensor_calibration.humidity_offset" and "out of range" in str(err)
    _write(
        CONFIG,
        '{"device_id": "a", "uplink": {"url": "mqtt://h"}, "thresholds": '
        '{"gas_alarm_ppm": 1%s}}' % ("0" * 400),
    )
    config, problems = load_config(OsFs(""))
    assert (
        config["safe_mode"] == "config.json: thresholds.gas_alarm_ppm: inf is out of range "
        "0.0..100000.0"
    ), problems


def test_safe_mode_names_the_first_error_not_a_warning():
    given = _minimal()
    given["zzz"] = 1  # a warning, listed after the errors
    given["intervals"] = {"sampling_s": "x"}
    _write(CONFIG, json.dumps(given))
    config, problems = load_config(OsFs(""))
    assert config["safe_mode"] == "config.json: intervals.sampling_s: 'x' (str) is not an int"
    assert problems == [
        "config.json: intervals.sampling_s: 'x' (str) is not an int",
        "config.json: zzz: unknown key, ignored",
        "config.bak: missing",
    ]


def test_save_refuses_a_config_load_would_refuse_as_too_big_and_keeps_the_old_one():
    fs = OsFs("")
    save_config(fs, _minimal())
    big = _minimal()
    big["registration"] = {"blob": "x" * 16000}
    err = raises(ConfigError, save_config, fs, big)
    assert err.key == "config" and "larger than 16384" in str(err), err
    size = err.value
    assert 16384 < size < 17500 and str(err).startswith("config: %d bytes" % size), err
    assert not fs.exists("config.json.tmp")
    config, problems = load_config(fs)
    assert problems == [] and config["registration"] == {}  # the old file, untouched
    n = 16000 - (size - 16384)
    big["registration"] = None  # one 16 KB string at a time: the heap is 96K on MicroPython
    big["registration"] = {"blob": "x" * n}  # exactly at the limit
    save_config(fs, big)
    assert fs.size(CONFIG) == 16384
    assert _read_json(LAST_GOOD)["registration"] == {}  # the previous one, kept as last good
    big = None
    config, problems = load_config(fs)
    if IS_MICROPYTHON:  # a 16 KB string does not fit beside the test in 96K: never a crash
        assert problems == ["config.json: 16384 bytes do not fit in the free RAM"], problems
        assert config["source"] == LAST_GOOD and config["safe_mode"] is None
    else:
        assert problems == [] and config["registration"]["blob"] == "x" * n


def test_remote_version_past_the_schema_is_refused_by_name_and_range():
    config = validate(_minimal())
    for version in (2**31, -1):
        err = raises(ConfigError, apply_remote, config, {"config_version": version})
        assert str(err) == "config_version: %d is out of range 0..2147483647" % version
    err = raises(ConfigError, apply_remote, config, {"version": 2**31, "configVersion": "x"})
    assert str(err) == "version: 2147483648 is out of range 0..2147483647"  # the field it read
    new = apply_remote(config, {"config_version": 2**31 - 1})[0]
    assert new["version"] == 2**31 - 1 and validate(new) == new
