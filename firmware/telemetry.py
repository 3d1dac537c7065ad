"""Telemetry encoding: one reading to the JSON bytes of a contract profile. Pure, no I/O.

Output is built by hand in a fixed key order with fixed number formatting, so the same reading
gives the same bytes on the ESP32, the Unix port and CPython, and a retransmission is
byte-identical (contracts.md §1: the de-dup key is (device_id, timestamp)).

    from firmware.telemetry import encode, data_topic
    reading = {"seq": 7, "ts_ms": 1795600000123, "values": {"presence": [True, "good"]}}
    payload = encode(reading, "neurobuild", {"device_id": "node-1"})
    topic = data_topic("neurobuild/sensors", "node-1")  # neurobuild/sensors/node-1/data
"""

from drivers.sensor import BAD, GOOD, SUSPECT, WARMING_UP

NEUROBUILD = "neurobuild"
PLATFORM = "platform"
PROFILES = (NEUROBUILD, PLATFORM)

_QUALITIES = (GOOD, SUSPECT, BAD, WARMING_UP)

# Reading value names in the order they are written, with decimals used for floats.
_VALUE_PLACES = (
    ("presence", None),
    ("distance_cm", 1),
    ("energy", 1),
    ("occupancy", 3),
    ("motion", None),
    ("motion_events", 0),
    ("gas_ppm", 3),
    ("gas_rs_ohm", 0),
    ("temperature_c", 2),
    ("humidity_pct", 2),
    ("pressure_hpa", 2),
    ("battery_pct", 0),
    ("rssi_dbm", 0),
)
_PLACES = dict(_VALUE_PLACES)

# Status fields in the order they are written (issue 4, Status).
_STATUS_KEYS = (
    "ts_ms",
    "firmware_version",
    "uptime_s",
    "reset_cause",
    "rssi_dbm",
    "battery_pct",
    "free_heap",
    "buffer_depth",
    "buffer_drops",
    "duplicates",
    "dead_letters",
    "config_version",
    "uplink",
    "breaker",
)


# Joi's number() refuses a value past Number.MAX_SAFE_INTEGER ("number.unsafe",
# hapi/joi lib/types/number.js) unless the schema says .unsafe(): the whole reading would get 400.
_JS_SAFE = 9007199254740991


class TelemetryError(ValueError):
    """A reading or device description the chosen profile cannot carry; the message says what."""


# -- validation of names that go into topics and JSON unescaped


def check_device_id(device_id):
    """Return device_id if it matches ^[A-Za-z0-9_-]+$ (contracts §1), else raise."""
    if not isinstance(device_id, str) or not device_id:
        raise TelemetryError("device_id must be a non-empty string, got %r" % (device_id,))
    for c in device_id:
        if not ("a" <= c <= "z" or "A" <= c <= "Z" or "0" <= c <= "9" or c == "_" or c == "-"):
            raise TelemetryError(
                "device_id %r has %r: use only letters, digits, '_' and '-'" % (device_id, c)
            )
    return device_id


def check_prefix(prefix):
    """Return a topic prefix if usable (no wildcards, no empty level), else raise."""
    if not isinstance(prefix, str) or not prefix:
        raise TelemetryError("topic prefix must be a non-empty string, got %r" % (prefix,))
    if "+" in prefix or "#" in prefix or "\x00" in prefix:
        raise TelemetryError("topic prefix %r contains a wildcard or NUL" % prefix)
    if prefix[0] == "/" or prefix[-1] == "/" or "//" in prefix:
        raise TelemetryError("topic prefix %r has an empty level; write e.g. 'a/b'" % prefix)
    return prefix


def data_topic(prefix, device_id):
    """The topic a reading is published on: {prefix}/{id}/data (contracts §1)."""
    return check_prefix(prefix) + "/" + check_device_id(device_id) + "/data"


def status_topic(prefix, device_id):
    """The retained status / last-will topic: {prefix}/{id}/status (issue 4)."""
    return check_prefix(prefix) + "/" + check_device_id(device_id) + "/status"


# -- scalar formatting (identical on every runtime)


def iso_utc_ms(ts_ms):
    """Epoch milliseconds (UTC) to ISO-8601 with milliseconds, e.g. 2026-11-22T10:30:00.123Z.

    Civil-from-days arithmetic (H. Hinnant, "chrono-compatible low-level date algorithms"):
    time.gmtime cannot be used, its epoch is 2000 on the ESP32 and 1970 on the Unix port.
    """
    if isinstance(ts_ms, bool) or not isinstance(ts_ms, int) or ts_ms < 0:
        raise TelemetryError("ts_ms must be a non-negative int of epoch ms, got %r" % (ts_ms,))
    secs, ms = divmod(ts_ms, 1000)
    days, sod = divmod(secs, 86400)
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (1 if month <= 2 else 0)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (
        year,
        month,
        day,
        sod // 3600,
        sod // 60 % 60,
        sod % 60,
        ms,
    )


def _number(value, places, name):
    """An int as is; a float with `places` decimals by integer arithmetic (no float repr).

    Any finite float encodes: from 2**53 up a double is a whole number and value * 10**places
    may overflow, so it is written as its exact integer cut to 17 significant digits with an
    exponent (e.g. 1e306 -> 10000000000000000e290), still one JSON number on every runtime.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TelemetryError("%s must be a number, got %r" % (name, value))
    if isinstance(value, int):
        return str(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise TelemetryError("%s is not finite: %r" % (name, value))
    if value >= 9007199254740992.0 or value <= -9007199254740992.0:  # |value| >= 2**53
        digits = str(int(value))
        sign = ""
        if digits[0] == "-":
            sign = "-"
            digits = digits[1:]
        if len(digits) <= 17:
            return sign + digits
        return sign + digits[:17] + "e" + str(len(digits) - 17)
    scale = 10**places
    n = round(value * scale)  # an int on both runtimes
    sign = "-" if n < 0 else ""
    n = -n if n < 0 else n
    if places == 0:
        return sign + str(n)
    frac = str(n % scale)
    return sign + str(n // scale) + "." + "0" * (places - len(frac)) + frac


def _string(value, name):
    """A JSON string from printable ASCII without quote or backslash (no escaping differences)."""
    if not isinstance(value, str):
        raise TelemetryError("%s must be a string, got %r" % (name, value))
    for c in value:
        if c < " " or c > "~" or c == '"' or c == "\\":
            raise TelemetryError("%s %r has a character JSON would escape: %r" % (name, value, c))
    return '"' + value + '"'


def _scalar(value, name):
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _string(value, name)
    return _number(value, 3, name)


def _value(reading, name):
    """(value, quality) of one named value, or None when the reading lacks it."""
    pair = reading["values"].get(name)
    if pair is None:
        return None
    if not isinstance(pair, (list, tuple)) or len(pair) != 2:
        raise TelemetryError("value %r must be [value, quality], got %r" % (name, pair))
    if pair[1] not in _QUALITIES:
        raise TelemetryError("value %r has unknown quality %r" % (name, pair[1]))
    return pair


def _check_reading(reading):
    if not isinstance(reading, dict):
        raise TelemetryError("reading must be a dict, got %r" % (reading,))
    seq = reading.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise TelemetryError("reading seq must be a non-negative int, got %r" % (seq,))
    if not isinstance(reading.get("values"), dict):
        raise TelemetryError("reading %d has no 'values' dict" % seq)
    for name in reading["values"]:
        if name not in _PLACES:
            raise TelemetryError("reading %d has unknown value %r" % (seq, name))


# -- profiles


def encode(reading, profile, device):
    """JSON bytes of `reading` in `profile` ("neurobuild" or "platform") for `device`.

    `device` is a dict: device_id (required), gas_unit ("ppm" default | "ppb"),
    firmware_version, location {latitude, longitude}, battery_pct, rssi_dbm (the last two are
    taken from the reading's values when it has them). Raises TelemetryError naming the problem,
    including when the profile has nothing of the reading it could carry.
    """
    _check_reading(reading)
    if not isinstance(device, dict):
        raise TelemetryError("device must be a dict with at least device_id")
    head = '{"device_id":' + _string(check_device_id(device.get("device_id")), "device_id")
    head += ',"timestamp":"' + iso_utc_ms(reading.get("ts_ms")) + '"'
    if profile == NEUROBUILD:
        return _neurobuild(reading, device, head)
    if profile == PLATFORM:
        return _platform(reading, device, head)
    raise TelemetryError("unknown profile %r; use 'neurobuild' or 'platform'" % (profile,))


def _in_range(v, lo, hi):
    return not isinstance(v, bool) and isinstance(v, (int, float)) and lo <= v <= hi


def _neurobuild(reading, device, head):
    """contracts §1: sensors.{ld2410,pir,mq134} exactly as the schema wants; the rest as extras.

    A value outside the schema's range would get the whole reading rejected (400), so its
    sensor object is left out and the value rides in "out_of_range" with its quality: a radar
    distance outside 0..600 or energy outside 0..100, a gas value that is negative, missing
    (None) or, in the unit sent, past Joi's safe integers. Every finite number encodes (see
    _number), so an absurd value is reported, never dropped; only NaN and infinities, which
    JSON cannot write, raise TelemetryError naming the value.
    """
    seq = reading["seq"]
    sensors = []
    out = []
    presence = _value(reading, "presence")
    distance = _value(reading, "distance_cm")
    energy = _value(reading, "energy")
    if presence is not None and distance is not None and energy is not None:
        if not isinstance(presence[0], bool):
            raise TelemetryError("reading %d: presence must be a bool, got %r" % (seq, presence[0]))
        ok = True
        for name, pair, hi in (("distance_cm", distance, 600), ("energy", energy, 100)):
            if not _in_range(pair[0], 0, hi):
                out.append('"%s":%s' % (name, _scalar(pair[0], name)))
                ok = False
        if ok:
            sensors.append(
                '"ld2410":{"presence":%s,"distance":%s,"energy":%s}'
                % (
                    _scalar(presence[0], "presence"),
                    _number(distance[0], 1, "distance_cm"),
                    _number(energy[0], 1, "energy"),
                )
            )
    motion = _value(reading, "motion")
    if motion is not None:
        if not isinstance(motion[0], bool):
            raise TelemetryError("reading %d: motion must be a bool, got %r" % (seq, motion[0]))
        sensors.append('"pir":{"motion_detected":%s}' % _scalar(motion[0], "motion"))
    gas = _value(reading, "gas_ppm")
    if gas is not None:
        unit = device.get("gas_unit", "ppm")
        if unit not in ("ppm", "ppb"):
            raise TelemetryError("gas_unit must be 'ppm' or 'ppb', got %r" % (unit,))
        value = gas[0]
        if unit == "ppb" and _in_range(value, 0, _JS_SAFE):
            value = value * 1000
        if _in_range(value, 0, _JS_SAFE):
            sensors.append(
                '"mq134":{"gas_concentration":%s,"unit":"%s"}'
                % (_number(value, 3, "gas_ppm"), unit)
            )
        else:
            out.append('"gas_ppm":%s' % _scalar(gas[0], "gas_ppm"))
    if not sensors:
        raise TelemetryError(
            "reading %d has no ld2410, pir or mq134 value the neurobuild profile can carry%s"
            % (seq, "; out of range: " + ",".join(out) if out else "")
        )
    parts = [head, ',"seq":%d,"sensors":{' % seq, ",".join(sensors), "}"]
    for name in ("occupancy", "motion_events", "gas_rs_ohm"):
        pair = _value(reading, name)
        if pair is not None:
            parts.append(',"%s":%s' % (name, _number(pair[0], _PLACES[name], name)))
    env = []
    for name in ("temperature_c", "humidity_pct", "pressure_hpa"):
        pair = _value(reading, name)
        if pair is not None:
            env.append('"%s":%s' % (name, _number(pair[0], _PLACES[name], name)))
    if env:
        parts.append(',"environment":{' + ",".join(env) + "}")
    if out:
        parts.append(',"out_of_range":{' + ",".join(out) + "}")
    quality = []
    for name, _ in _VALUE_PLACES:
        pair = _value(reading, name)
        if pair is not None:
            quality.append('"%s":"%s"' % (name, pair[1]))
    parts.append(',"quality":{' + ",".join(quality) + "}}")
    return "".join(parts).encode()


# contracts §2: reading value -> (sensor_data key, unit, allowed range)
_PLATFORM_SENSORS = (
    ("temperature_c", "temperature", "celsius", -50, 100),
    ("humidity_pct", "humidity", "percent", 0, 100),
    ("pressure_hpa", "pressure", "hpa", 300, 1100),
)


def _platform(reading, device, head):
    """contracts §2: environment values with unit and quality; device_status; location.

    The database rejects temperatures outside -50..100 °C, so such a value is left out (its
    quality is already bad); a reading left with nothing to send raises. device_status has no
    quality to flag a value with (contracts §2, last paragraph), so a battery_pct or rssi_dbm
    of quality "bad", and a battery level outside 0..100, are left out. A location off the
    globe is the device's description, not a reading: it raises TelemetryError naming it.
    """
    loc = device.get("location")
    if not isinstance(loc, dict):
        raise TelemetryError("the platform profile needs device location {latitude, longitude}")
    pos = []
    for key, lim in (("latitude", 90), ("longitude", 180)):
        v = loc.get(key)
        if not _in_range(v, -lim, lim):
            raise TelemetryError("location %s must be in -%d..%d, got %r" % (key, lim, lim, v))
        pos.append(_number(v, 6, key))
    parts = [head, ',"location":{"latitude":%s,"longitude":%s}' % (pos[0], pos[1])]
    data = []
    for name, key, unit, lo, hi in _PLATFORM_SENSORS:
        pair = _value(reading, name)
        if pair is not None and _in_range(pair[0], lo, hi):
            data.append(
                '"%s":{"value":%s,"unit":"%s","quality":"%s"}'
                % (key, _number(pair[0], _PLACES[name], name), unit, pair[1])
            )
    if not data:
        raise TelemetryError(
            "reading %d has no temperature, humidity or pressure in range for the platform "
            "profile" % reading["seq"]
        )
    parts.append(',"sensor_data":{' + ",".join(data) + "}")
    status = []
    for name, key in (("battery_pct", "battery_level"), ("rssi_dbm", "signal_strength")):
        pair = _value(reading, name)
        if pair is None:
            value = device.get(name)
        else:
            value = None if pair[1] == BAD else pair[0]  # known wrong, and no quality to say so
        if value is None or (key == "battery_level" and not _in_range(value, 0, 100)):
            continue
        status.append('"%s":%s' % (key, _number(value, 0, name)))
    version = device.get("firmware_version")
    if version is not None:
        status.append('"firmware_version":' + _string(version, "firmware_version"))
    parts.append(',"device_status":{' + ",".join(status) + "}}")
    return "".join(parts).encode()


# -- status


def status_payload(device_id, status):
    """JSON bytes for the retained status topic: {"device_id", "online": true, <status>}.

    `status` is a dict with any of: ts_ms, firmware_version, uptime_s, reset_cause, rssi_dbm,
    battery_pct, free_heap, buffer_depth, buffer_drops, duplicates, dead_letters,
    config_version, uplink, breaker. Written in that order; an unknown key raises.
    """
    for key in status:
        if key not in _STATUS_KEYS:
            raise TelemetryError("unknown status field %r" % (key,))
    parts = ['{"device_id":"', check_device_id(device_id), '","online":true']
    for key in _STATUS_KEYS:
        if key in status:
            parts.append(',"%s":%s' % (key, _scalar(status[key], key)))
    parts.append("}")
    return "".join(parts).encode()


def will_payload(device_id):
    """The last-will message the broker publishes when the node vanishes."""
    return ('{"device_id":"%s","online":false}' % check_device_id(device_id)).encode()
