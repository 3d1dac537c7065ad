"""The node's configuration: /config.json schema, defaults, validation, atomic save, remote updates.

Loading never raises: `load_config(fs)` tries config.json, then the last good copy config.bak,
then falls back to defaults in safe mode, and says why in `config["safe_mode"]` and the problems
list. Every problem names the key and the value. The schema is documented in docs/config.md.

    config, problems = load_config(OsFs(""))
    if config["safe_mode"]:
        log.error("config", config["safe_mode"])
    new, changed, needs_reboot = apply_remote(config, remote_json)   # contracts.md §3
    save_config(fs, new)
"""

import json

CONFIG = "config.json"
LAST_GOOD = "config.bak"
_TMP = "config.json.tmp"
_MAX_BYTES = 16384  # a config is ~1 KB; anything far larger is corrupt and would not fit in RAM
RUNTIME_KEYS = ("safe_mode", "source")  # set by load_config, never saved

# Leaf specs: (kind, default, *limits). Kinds: int/float (min, max), float? (may be null),
# bool, str (min length, max length), id (device id), choice (options), ints (min, max, count),
# keys (list of hex strings), object (opaque dict).
_SCHEMA = {
    "version": ("int", 0, 0, 2147483647),
    "device_id": ("id", ""),
    "network": {
        "ssid": ("str", "", 0, 32),
        "password": ("str", "", 0, 64),
        "hostname": ("str", "", 0, 32),
    },
    "uplink": {
        "url": ("str", "", 0, 256),
        "transport": ("choice", "mqtt", ("mqtt", "http")),
        "host": ("str", "", 0, 253),
        "port": ("int", 0, 0, 65535),
        "tls": ("bool", False),
        "path": ("str", "", 0, 128),
        "topic_prefix": ("str", "neurobuild/sensors", 1, 128),
        "profile": ("choice", "neurobuild", ("neurobuild", "platform")),
        "api_key": ("str", "", 0, 256),
        "auth": ("choice", "x-api-key", ("x-api-key", "bearer")),
        "keepalive_s": ("int", 60, 10, 3600),
    },
    "intervals": {
        "sampling_s": ("int", 60, 1, 86400),
        "transmission_s": ("int", 300, 1, 86400),
        "status_s": ("int", 300, 10, 86400),
        "config_poll_s": ("int", 3600, 60, 604800),
        "ota_poll_s": ("int", 86400, 300, 2592000),
    },
    "calibration": {
        "gas": {
            # null: the drivers.mq134 placeholders (MQ-134 has no published curve)
            "r0_ohm": ("float?", None, 1.0, 1e8),
            "load_ohm": ("float", 10000.0, 100.0, 1e7),
            "a": ("float?", None, 1e-6, 1e9),
            "b": ("float?", None, -20.0, 20.0),
        },
        "env": {
            "temperature_offset": ("float", 0.0, -10.0, 10.0),
            "humidity_offset": ("float", 0.0, -20.0, 20.0),
            "pressure_offset": ("float", 0.0, -50.0, 50.0),
        },
        "radar": {
            "max_move_gate": ("int", 8, 2, 8),
            "max_still_gate": ("int", 8, 2, 8),
            "unmanned_s": ("int", 5, 0, 65535),
            "move_sensitivity": ("ints", [50, 50, 40, 30, 20, 15, 15, 15, 15], 0, 100, 9),
            "still_sensitivity": ("ints", [0, 0, 40, 40, 30, 30, 20, 20, 20], 0, 100, 9),
        },
    },
    "thresholds": {
        "presence_max_cm": ("int", 600, 0, 600),
        "gas_alarm_ppm": ("float", 100.0, 0.0, 100000.0),
        "battery_low_pct": ("int", 15, 0, 100),
    },
    "power": {
        "sleep_mode": ("choice", "disabled", ("enabled", "disabled")),
        "wake_interval_s": ("int", 300, 10, 86400),
    },
    "location": {
        "latitude": ("float?", None, -90.0, 90.0),
        "longitude": ("float?", None, -180.0, 180.0),
    },
    "trusted_keys": ("keys", []),
    "registration": ("object", {}),
}

# contracts.md §3 field -> (our section path, our key, spec)
_REMOTE = (
    ("sampling_interval", ("intervals",), "sampling_s"),
    ("transmission_interval", ("intervals",), "transmission_s"),
    ("sensor_calibration.temperature_offset", ("calibration", "env"), "temperature_offset"),
    ("sensor_calibration.humidity_offset", ("calibration", "env"), "humidity_offset"),
    ("sensor_calibration.pressure_offset", ("calibration", "env"), "pressure_offset"),
    ("power_management.sleep_mode", ("power",), "sleep_mode"),
    ("power_management.wake_interval", ("power",), "wake_interval_s"),
)
_REBOOT_KEYS = ("power.sleep_mode",)  # mains loop <-> deep-sleep cycle: the app is rebuilt
# URL scheme -> (transport, tls, usual port)
_SCHEMES = {
    "mqtt": ("mqtt", False, 1883),
    "mqtts": ("mqtt", True, 8883),
    "http": ("http", False, 80),
    "https": ("http", True, 443),
}


class ConfigError(ValueError):
    """A config value is wrong; `key` is the dotted key, `value` what was found."""

    def __init__(self, key, value, reason):
        super().__init__("%s: %s" % (key, reason))
        self.key = key
        self.value = value
        self.reason = reason


def _kind(value):
    return "null" if value is None else type(value).__name__


def _copy(value):
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _defaults_of(schema):
    out = {}
    for key, spec in schema.items():
        out[key] = _defaults_of(spec) if isinstance(spec, dict) else _copy(spec[1])
    return out


def defaults():
    """A fresh config holding every default (device_id and uplink host still empty)."""
    return _defaults_of(_SCHEMA)


def _is_id(value):
    if not 0 < len(value) <= 64:
        return False
    return all("a" <= c <= "z" or "A" <= c <= "Z" or "0" <= c <= "9" or c in "-_" for c in value)


def _check_leaf(key, spec, value):
    """-> the value to store (ints become floats where floats are expected); raises ConfigError."""
    kind = spec[0]
    if kind in ("int", "float", "float?"):
        if value is None and kind == "float?":
            return None
        # bool is an int subclass in Python: true/false are not numbers here
        ok = isinstance(value, int) and not isinstance(value, bool)
        if kind != "int":
            ok = ok or isinstance(value, float)
        if not ok:
            want = "an int" if kind == "int" else "a number"
            raise ConfigError(key, value, "%r (%s) is not %s" % (value, _kind(value), want))
        if kind != "int":
            try:
                value = float(value)  # pyright: ignore[reportArgumentType]  (None returned above)
            except OverflowError:  # CPython, an int past 1.8e308: MicroPython gives inf
                value = float("inf") if value > 0 else float("-inf")  # pyright: ignore
            if value != value:
                raise ConfigError(key, value, "NaN is not a number")
        if not spec[2] <= value <= spec[3]:
            raise ConfigError(key, value, "%r is out of range %r..%r" % (value, spec[2], spec[3]))
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(key, value, "%r (%s) is not true/false" % (value, _kind(value)))
        return value
    if kind in ("str", "id", "choice"):
        if not isinstance(value, str):
            raise ConfigError(key, value, "%r (%s) is not a string" % (value, _kind(value)))
        if kind == "choice" and value not in spec[2]:
            raise ConfigError(key, value, "%r is not one of %s" % (value, ", ".join(spec[2])))
        if kind == "id" and value and not _is_id(value):
            raise ConfigError(key, value, "%r: use 1-64 letters, digits, '-' or '_'" % (value,))
        if kind == "str" and not spec[2] <= len(value) <= spec[3]:
            raise ConfigError(
                key, value, "length %d is out of range %d..%d" % (len(value), spec[2], spec[3])
            )
        return value
    if kind == "ints":
        if not isinstance(value, list) or len(value) != spec[4]:
            raise ConfigError(key, value, "%r is not a list of %d ints" % (value, spec[4]))
        for i in range(len(value)):
            _check_leaf("%s[%d]" % (key, i), ("int", 0, spec[2], spec[3]), value[i])
        return list(value)
    if kind == "keys":
        if not isinstance(value, list) or len(value) > 8:
            raise ConfigError(key, value, "%r is not a list of at most 8 keys" % (value,))
        for i in range(len(value)):
            k = value[i]
            if not isinstance(k, str) or not 32 <= len(k) <= 256 or not _is_hex(k):
                raise ConfigError("%s[%d]" % (key, i), k, "%r is not a hex key" % (k,))
        return list(value)
    if kind == "object":
        if not isinstance(value, dict):
            raise ConfigError(key, value, "%r (%s) is not an object" % (value, _kind(value)))
        return _copy(value)
    raise ValueError("schema kind %r" % kind)  # a bug in _SCHEMA, not in the config


def _is_hex(text):
    return all(c in "0123456789abcdefABCDEF" for c in text)


def _walk(schema, given, prefix, errors, warnings):
    out = {}
    for key, spec in schema.items():
        dotted = prefix + key
        if key not in given:
            out[key] = _defaults_of(spec) if isinstance(spec, dict) else _copy(spec[1])
            continue
        value = given[key]
        if isinstance(spec, dict):
            if not isinstance(value, dict):
                errors.append(
                    ConfigError(dotted, value, "%r (%s) is not an object" % (value, _kind(value)))
                )
                out[key] = _defaults_of(spec)
            else:
                out[key] = _walk(spec, value, dotted + ".", errors, warnings)
            continue
        try:
            out[key] = _check_leaf(dotted, spec, value)
        except ConfigError as exc:
            errors.append(exc)
            out[key] = _copy(spec[1])
    for key in given:
        if key not in schema and not (prefix == "" and key in RUNTIME_KEYS):
            warnings.append(ConfigError(prefix + key, given[key], "unknown key, ignored"))
    return out


def _parse_url(url):
    """'mqtts://host:8883/base' -> (transport, tls, host, port, path); raises ValueError."""
    i = url.find("://")
    if i < 0 or url[:i] not in _SCHEMES:
        raise ValueError("use mqtt://, mqtts://, http:// or https://")
    transport, tls, port = _SCHEMES[url[:i]]
    rest = url[i + 3 :]
    j = rest.find("/")
    hostport, path = (rest, "") if j < 0 else (rest[:j], rest[j:].rstrip("/"))
    k = hostport.rfind(":")
    host = hostport
    if k >= 0 and "]" not in hostport[k:]:
        host = hostport[:k]
        try:
            port = int(hostport[k + 1 :])
        except ValueError:
            raise ValueError("port %r is not a number" % hostport[k + 1 :])
        if not 0 < port < 65536:
            raise ValueError("port %d is out of range 1..65535" % port)
    if not host:
        raise ValueError("no host")
    return transport, tls, host, port, path


def check(given):
    """Validate a config dict; -> (full config with defaults, errors, warnings). Never raises.

    Errors make the config unusable; warnings (unknown keys) are reported and ignored.
    """
    errors = []
    warnings = []
    if not isinstance(given, dict):
        errors.append(ConfigError("config", given, "%s is not an object" % _kind(given)))
        return defaults(), errors, warnings
    config = _walk(_SCHEMA, given, "", errors, warnings)
    uplink = config["uplink"]
    if uplink["url"]:
        try:
            parsed = _parse_url(uplink["url"])
            uplink["transport"], uplink["tls"], uplink["host"], uplink["port"] = parsed[:4]
            if parsed[4]:
                uplink["path"] = parsed[4]
        except ValueError as exc:
            errors.append(ConfigError("uplink.url", uplink["url"], "%r: %s" % (uplink["url"], exc)))
    if uplink["port"] == 0:  # the transport's usual port
        scheme = uplink["transport"] + ("s" if uplink["tls"] else "")
        uplink["port"] = _SCHEMES[scheme][2]
    if not config["device_id"] and not given.get("device_id"):  # a bad one was reported above
        errors.append(ConfigError("device_id", "", "missing: provision the node (nbk provision)"))
    if not uplink["host"] and not uplink["url"]:  # a bad url was reported above
        errors.append(ConfigError("uplink.host", "", "missing: set uplink.url or uplink.host"))
    intervals = config["intervals"]
    if intervals["transmission_s"] < intervals["sampling_s"]:
        errors.append(
            ConfigError(
                "intervals.transmission_s",
                intervals["transmission_s"],
                "%d is shorter than intervals.sampling_s (%d)"
                % (intervals["transmission_s"], intervals["sampling_s"]),
            )
        )
    return config, errors, warnings


def validate(given):
    """-> the full config; raises ConfigError naming the first bad key (and how many more)."""
    config, errors, _ = check(given)
    if errors:
        first = errors[0]
        if len(errors) > 1:
            more = "%s (and %d more)" % (first.reason, len(errors) - 1)
            raise ConfigError(first.key, first.value, more)
        raise first
    return config


def _read(fs, name):
    """-> (dict or None, problem or None) for one file."""
    try:
        size = fs.size(name)
    except OSError:
        return None, "%s: missing" % name
    if size > _MAX_BYTES:
        return None, "%s: %d bytes, larger than %d: corrupt" % (name, size, _MAX_BYTES)
    try:
        with fs.open(name, "rb") as f:
            return json.load(f), None  # MicroPython parses the stream: no copy of the file
    except OSError as exc:
        return None, "%s: unreadable (%s)" % (name, exc)
    except (ValueError, UnicodeError) as exc:  # json.JSONDecodeError is a ValueError
        return None, "%s: not valid JSON (%s)" % (name, exc)
    except MemoryError:  # a 96K heap parses well under _MAX_BYTES in one string or object
        return None, "%s: %d bytes do not fit in the free RAM" % (name, size)


def load_config(fs, keep_last_good=True):
    """-> (config, problems): config.json, else config.bak, else defaults in safe mode.

    Never raises. `config["source"]` names the file used; `config["safe_mode"]` is None or the
    reason the node must stay in safe mode (console, provisioning and OTA only). Problems are
    strings, each naming the file, the key and the value. With `keep_last_good`, a valid
    config.json is copied to config.bak when no last good copy exists yet.
    """
    problems = []
    salvage_id = ""
    for name in (CONFIG, LAST_GOOD):
        given, problem = _read(fs, name)
        if problem:
            problems.append(problem)
            continue
        config, errors, warnings = check(given)
        for e in errors + warnings:  # errors first: problems[0] becomes safe_mode's reason
            problems.append("%s: %s" % (name, e))
        if errors:
            if not salvage_id and isinstance(given, dict):
                device_id = given.get("device_id")
                if isinstance(device_id, str) and _is_id(device_id):
                    salvage_id = device_id
            continue
        config["source"] = name
        config["safe_mode"] = None
        if name == CONFIG and keep_last_good and not fs.exists(LAST_GOOD):
            try:
                _write_atomic(fs, LAST_GOOD, config)
            except (OSError, ConfigError) as exc:
                problems.append("%s: not written (%s)" % (LAST_GOOD, exc))
        return config, problems
    config = defaults()
    config["device_id"] = salvage_id
    config["source"] = "defaults"
    config["safe_mode"] = problems[0] if problems else "no config"
    return config, problems


def _write_tmp(fs, config):
    """Write `config` to config.json.tmp, streamed (no second copy of it in RAM); ConfigError,
    and no tmp file left, if load_config would refuse it as too big (measured as written:
    CPython writes non-ASCII as 6-byte \\uXXXX escapes, MicroPython as UTF-8)."""
    out = {}
    for key in config:
        if key not in RUNTIME_KEYS:
            out[key] = config[key]
    with fs.open(_TMP, "w") as f:
        json.dump(out, f)
    size = fs.size(_TMP)
    if size > _MAX_BYTES:
        fs.remove(_TMP)
        raise ConfigError(
            "config", size, "%d bytes when saved, larger than %d" % (size, _MAX_BYTES)
        )


def _write_atomic(fs, name, config):
    _write_tmp(fs, config)
    fs.rename(_TMP, name)


def save_config(fs, config):
    """Validate and write config.json atomically, the previous valid one becoming config.bak.

    Raises ConfigError for an invalid or oversized config (nothing is written) and OSError when
    the flash fails (config.json is then either the old or the new file: rename is atomic).
    """
    config = validate(config)
    _write_tmp(fs, config)
    current, problem = _read(fs, CONFIG)
    if problem is None and not check(current)[1]:
        fs.rename(CONFIG, LAST_GOOD)  # a cut here leaves config.bak, which load_config uses
    fs.rename(_TMP, CONFIG)
    fs.sync()
    return config


def _get(remote, dotted):
    node = remote
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _spec(section_path, key):
    node = _SCHEMA
    for part in section_path:
        node = node[part]
    return node[key]


def remote_version(remote):
    """The version a remote config carries (config_version, configVersion or version), or None."""
    if isinstance(remote, dict):
        for key in ("config_version", "configVersion", "version"):
            value = remote.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
    return None


def apply_remote(config, remote):
    """Apply a contracts.md §3 config; -> (new config, changed dotted keys, needs_reboot).

    All or nothing: any bad field raises ConfigError naming the remote field and its value,
    and `config` is left as it was. Unknown fields are ignored (the server may send more).
    The remote version, when present, becomes `version` (acknowledged in the next status).
    """
    if not isinstance(remote, dict):
        raise ConfigError("remote", remote, "%s is not an object" % _kind(remote))
    for field in ("sensor_calibration", "power_management"):
        if field in remote and not isinstance(remote[field], dict):
            raise ConfigError(field, remote[field], "%r is not an object" % (remote[field],))
    new = _copy(config)  # type: dict  # pyright: ignore[reportAssignmentType]
    changed = []
    for field, section_path, key in _REMOTE:
        present, value = _get(remote, field)
        if not present:
            continue
        if key == "sleep_mode" and isinstance(value, bool):  # liberal: true/false as on/off
            value = "enabled" if value else "disabled"
        value = _check_leaf(field, _spec(section_path, key), value)
        section = new
        for part in section_path:
            section = section[part]
        if section[key] != value:
            section[key] = value
            changed.append(".".join(section_path) + "." + key)
    version = remote_version(remote)
    for key in ("config_version", "configVersion", "version"):
        value = remote.get(key)
        if value is not None and version is None:
            raise ConfigError(key, value, "%r is not an int" % (value,))
        if value is version and value is not None:  # the field remote_version took
            _check_leaf(key, _SCHEMA["version"], value)  # the range validate() holds it to
            break
    if version is not None:
        if version != new["version"]:
            new["version"] = version
            changed.append("version")
    intervals = new["intervals"]
    if intervals["transmission_s"] < intervals["sampling_s"]:
        raise ConfigError(
            "transmission_interval",
            intervals["transmission_s"],
            "%d is shorter than sampling_interval %d"
            % (intervals["transmission_s"], intervals["sampling_s"]),
        )
    needs_reboot = False
    for key in changed:
        if key in _REBOOT_KEYS:
            needs_reboot = True
    return new, changed, needs_reboot
