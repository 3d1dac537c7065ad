"""Config properties (hypothesis, CPython): any JSON is answered with named errors, never a crash;
valid configs survive save -> load; remote configs apply all or nothing.

Valid configs are drawn from firmware.config's own schema table (the spec docs/config.md
renders), with the cross-key rules (device id, uplink host or URL, transmission >= sampling)
added here.
"""

import copy
import json
import math
import re
import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.config import (
    _SCHEMA,
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

# -- what a config looks like


def leaf_paths(node, schema=_SCHEMA, prefix=""):
    """Dotted paths of every leaf of a config (or of the schema itself); a key the schema does
    not know counts as a leaf, so extras show up as a difference."""
    out = set()
    for key, value in node.items():
        spec = schema.get(key)
        if isinstance(spec, dict) and isinstance(value, dict):
            out |= leaf_paths(value, spec, prefix + key + ".")
        else:
            out.add(prefix + key)
    return out


LEAVES = leaf_paths(_SCHEMA)
SECTIONS = {p.rsplit(".", i)[0] for p in LEAVES for i in range(1, p.count(".") + 1)}


def names_a_config_key(key):
    """A dotted schema key, a section, a list element of one ("x.y[3]"), or the whole config."""
    base = key.split("[", 1)[0]
    return key == "config" or base in LEAVES or base in SECTIONS


def satisfies(spec, value):
    """Whether a stored leaf value meets its schema entry, read from the kinds' documentation
    in firmware/config.py (kept apart from _check_leaf, so a lax checker cannot vouch for
    itself)."""
    kind = spec[0]
    if kind == "int":
        return type(value) is int and spec[2] <= value <= spec[3]
    if kind in ("float", "float?"):
        if value is None:
            return kind == "float?"
        return isinstance(value, float) and spec[2] <= value <= spec[3]
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str) and spec[2] <= len(value) <= spec[3]
    if kind == "id":
        return isinstance(value, str) and (
            value == "" or re.fullmatch(r"[A-Za-z0-9_-]{1,64}", value)
        )
    if kind == "choice":
        return value in spec[2]
    if kind == "ints":
        return (
            isinstance(value, list)
            and len(value) == spec[4]
            and all(satisfies(("int", 0, spec[2], spec[3]), v) for v in value)
        )
    if kind == "keys":
        return (
            isinstance(value, list)
            and len(value) <= 8
            and all(isinstance(k, str) and re.fullmatch(r"[0-9a-fA-F]{32,256}", k) for k in value)
        )
    return isinstance(value, dict)  # object


def assert_meets_schema(config):
    for path in LEAVES:
        value = get_path(config, path)
        assert satisfies(get_path(_SCHEMA, path), value), (path, value)
    assert config["intervals"]["transmission_s"] >= config["intervals"]["sampling_s"]


def get_path(doc, dotted):
    node = doc
    for part in dotted.split("."):
        node = node[part]
    return node


def is_key_in(doc, dotted):
    """Whether `dotted` is a top-level key of doc, or a key of one of its sections (keys may
    themselves hold dots, so the section is found by prefix)."""
    if dotted in doc:
        return True
    for section in SECTIONS:
        if dotted.startswith(section + "."):
            try:
                node = get_path(doc, section)
            except (KeyError, TypeError):
                continue
            if isinstance(node, dict) and dotted[len(section) + 1 :] in node:
                return True
    return False


# -- strategies

_json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(10**600), 10**600),  # past a float's range: CPython's float() overflows
    st.sampled_from((10**400, -(10**400), 2**1024)),  # ... so often enough to meet a float key
    st.floats(allow_nan=True, allow_infinity=True),  # CPython's json reads NaN and Infinity
    st.text(max_size=12),
)
_json = st.recursive(
    _json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_plain_json = st.recursive(  # what survives a JSON round trip unchanged (no NaN)
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**53), 2**53),
        st.floats(allow_nan=False),
        st.text(max_size=12),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


_ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"


def _leaf(spec):
    kind = spec[0]
    if kind == "int":
        return st.integers(spec[2], spec[3])
    if kind in ("float", "float?"):
        lo, hi = spec[2], spec[3]
        value = st.one_of(st.floats(lo, hi), st.integers(math.ceil(lo), math.floor(hi)))
        return st.one_of(st.none(), value) if kind == "float?" else value
    if kind == "bool":
        return st.booleans()
    if kind == "str":
        lo, hi = spec[2], spec[3]
        # the longest allowed, in one- and two-byte characters, is cheaper drawn than generated
        at_limit = st.sampled_from(("a" * hi, "\u00e9" * hi))
        return st.one_of(st.text(min_size=lo, max_size=min(hi, 16)), at_limit)
    if kind == "id":
        return st.text(alphabet=_ID_CHARS, min_size=1, max_size=64)
    if kind == "choice":
        return st.sampled_from(spec[2])
    if kind == "ints":
        return st.lists(st.integers(spec[2], spec[3]), min_size=spec[4], max_size=spec[4])
    if kind == "keys":
        key = st.binary(min_size=16, max_size=40).map(bytes.hex)
        return st.lists(st.one_of(key, key.map(str.upper)), max_size=8)
    if kind == "object":
        return st.dictionaries(st.text(max_size=8), _plain_json, max_size=3)
    raise AssertionError("no strategy for schema kind %r" % kind)


def _section(schema, full):
    """Every key of a section (full) or any subset of them, each valid on its own: the rest
    take defaults."""
    fields = {k: _section(v, full) if isinstance(v, dict) else _leaf(v) for k, v in schema.items()}
    if full:
        return st.fixed_dictionaries(fields)
    return st.fixed_dictionaries({}, optional=fields)


_host = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.-", min_size=1, max_size=30).filter(
    lambda h: h[0] not in ".-"
)
_url = st.builds(
    lambda scheme, host, port, path: scheme + "://" + host + port + path,
    st.sampled_from(("mqtt", "mqtts", "http", "https")),
    _host,
    st.one_of(st.just(""), st.integers(1, 65535).map(lambda p: ":%d" % p)),
    st.tuples(
        st.lists(st.text(alphabet="abc019", min_size=1, max_size=8), max_size=3),
        st.sampled_from(("", "/")),  # a trailing slash is dropped
    ).map(lambda t: "".join("/" + p for p in t[0]) + t[1]),
)


@st.composite
def valid_configs(draw):
    doc = draw(st.one_of(_section(_SCHEMA, True), _section(_SCHEMA, False)))
    doc["device_id"] = draw(_leaf(("id",)))
    uplink = doc.setdefault("uplink", {})
    uplink["url"] = draw(st.one_of(st.just(""), _url))
    if not uplink["url"]:
        uplink["host"] = draw(_host)
    intervals = doc.get("intervals", {})
    sampling = intervals.get("sampling_s", 60)
    if intervals.get("transmission_s", 300) < sampling:
        doc["intervals"]["transmission_s"] = sampling
    return doc


def _paths_into(doc, prefix=()):
    """Every (path tuple) inside nested dicts and lists, containers included."""
    out = []
    items = doc.items() if isinstance(doc, dict) else enumerate(doc)
    for key, value in items:
        out.append(prefix + (key,))
        if isinstance(value, (dict, list)):
            out.extend(_paths_into(value, prefix + (key,)))
    return out


@st.composite
def damaged_configs(draw):
    """A valid config with a few values replaced by arbitrary JSON and a few keys added."""
    doc = draw(valid_configs())
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths_into(doc)
        path = draw(st.sampled_from(paths))
        node = doc
        for part in path[:-1]:
            node = node[part]
        if draw(st.booleans()):
            node[path[-1]] = draw(_json, label="replacement")
        elif isinstance(node, dict):
            node[draw(st.text(max_size=8), label="new key")] = draw(_json)
    return doc


_documents = st.one_of(_json, damaged_configs())


# -- properties


@settings(max_examples=120, deadline=None)
@given(doc=_documents)
def test_check_never_raises_and_every_error_names_a_key(doc):
    config, errors, warnings = check(doc)
    assert leaf_paths(config) == LEAVES  # always a complete config, defaults filling gaps
    for e in errors:
        assert isinstance(e, ConfigError) and names_a_config_key(e.key), e.key
        assert str(e).startswith(e.key + ": ") and e.reason
    for w in warnings:
        assert isinstance(w, ConfigError) and "unknown key" in w.reason
        assert is_key_in(doc, w.key), w.key  # names the key as it stands in the document
    if errors:
        try:
            validate(doc)
        except ConfigError as exc:
            assert exc.key == errors[0].key
        else:
            raise AssertionError("validate accepted what check refused")
    else:
        assert_meets_schema(config)
        assert validate(doc) == config


@settings(max_examples=60, deadline=None)
@given(doc=_documents)
def test_load_never_raises_and_every_problem_names_file_and_key(doc):
    _, errors, _ = check(doc)
    with tempfile.TemporaryDirectory() as root:
        fs = OsFs(root)
        with fs.open(CONFIG, "w") as f:
            f.write(json.dumps(doc))
        config, problems = load_config(fs)
    assert leaf_paths({k: v for k, v in config.items() if k not in ("safe_mode", "source")}) == (
        LEAVES
    )
    for p in problems:
        assert p.startswith((CONFIG + ": ", LAST_GOOD + ": ")), p
    for e in errors:
        assert "%s: %s" % (CONFIG, e) in problems  # file, key and value, as check said
    if errors:
        assert config["source"] == "defaults"
        assert config["safe_mode"] == "%s: %s" % (CONFIG, errors[0])  # an error, the first
    else:
        assert config["source"] == CONFIG and config["safe_mode"] is None


@settings(max_examples=50, deadline=None)
@given(first=valid_configs(), second=valid_configs())
def test_valid_configs_survive_save_then_load(first, second):
    assert check(first)[1] == [], check(first)[1]
    with tempfile.TemporaryDirectory() as root:
        fs = OsFs(root)
        saved = save_config(fs, first)
        assert saved == validate(first)
        assert_meets_schema(saved)
        loaded, problems = load_config(fs)
        assert problems == [] and loaded["source"] == CONFIG
        assert {k: v for k, v in loaded.items() if k not in ("safe_mode", "source")} == saved
        # a second save moves the first to the last good copy
        saved2 = save_config(fs, second)
        assert load_config(fs)[0]["device_id"] == saved2["device_id"]
        with fs.open(LAST_GOOD) as f:
            assert validate(json.loads(f.read())) == saved


_REMOTE_FIELDS = {
    "remote",
    "sampling_interval",
    "transmission_interval",
    "sensor_calibration",
    "power_management",
    "sensor_calibration.temperature_offset",
    "sensor_calibration.humidity_offset",
    "sensor_calibration.pressure_offset",
    "power_management.sleep_mode",
    "power_management.wake_interval",
    "config_version",
    "configVersion",
    "version",
}
_near_misses = st.one_of(  # just past the limits of the fields below, or the wrong type
    st.sampled_from((-1, 0, 9, 86401, 604801)),
    st.sampled_from((-10.5, 10.01, -20.5, 50.5, 1e9, float("nan"))),
    st.sampled_from(("60", None, True, [], {})),
    st.sampled_from((2**31 - 1, 2**31, -(2**31), 10**400)),
    _json,
)
_contract_example = st.fixed_dictionaries(  # contracts.md §3, each field optional and valid
    {},
    optional={
        "sampling_interval": st.integers(1, 86400),
        "transmission_interval": st.integers(1, 86400),
        "sensor_calibration": st.fixed_dictionaries(
            {},
            optional={
                "temperature_offset": st.floats(-10, 10),
                "humidity_offset": st.floats(-20, 20),
                "pressure_offset": st.floats(-50, 50),
            },
        ),
        "power_management": st.fixed_dictionaries(
            {},
            optional={
                "sleep_mode": st.sampled_from(("enabled", "disabled", True, False)),
                "wake_interval": st.integers(10, 86400),
            },
        ),
        "config_version": st.one_of(st.integers(0, 2**31 - 1), st.integers()),
    },
)
_CONTRACT_FIELDS = (
    ("sampling_interval",),
    ("transmission_interval",),
    ("sensor_calibration",),
    ("sensor_calibration", "temperature_offset"),
    ("sensor_calibration", "humidity_offset"),
    ("sensor_calibration", "pressure_offset"),
    ("power_management",),
    ("power_management", "sleep_mode"),
    ("power_management", "wake_interval"),
    ("config_version",),
)


@st.composite
def remotes(draw):
    """A contract config with up to two fields wrong (out of range, wrong type, any JSON)."""
    remote = draw(_contract_example)
    for _ in range(draw(st.sampled_from((0, 1, 1, 2)))):  # integers() would favour 0
        path = draw(st.sampled_from(_CONTRACT_FIELDS))
        node = remote
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[path[-1]] = draw(_near_misses)
    return remote


@settings(max_examples=150, deadline=None)
@given(base=valid_configs(), remote=remotes())
def test_remote_config_applies_all_or_nothing_and_stays_valid(base, remote):
    config = validate(base)
    before = copy.deepcopy(config)
    try:
        new, changed, needs_reboot = apply_remote(config, remote)
    except ConfigError as exc:
        assert exc.key in _REMOTE_FIELDS, exc.key
        assert str(exc).startswith(exc.key + ": ")
        assert config == before  # nothing applied
        return
    assert config == before  # the caller's config is not touched either way
    assert_meets_schema(new)  # a remote config never yields one the node would refuse
    assert validate(new) == new
    differ = {p for p in LEAVES if get_path(new, p) != get_path(config, p)}
    assert set(changed) == differ and len(changed) == len(differ)
    assert needs_reboot == ("power.sleep_mode" in differ)


@given(remote=_json.filter(lambda v: not isinstance(v, dict)))
def test_a_remote_config_that_is_no_object_is_refused_as_such(remote):
    config = validate({"device_id": "a", "uplink": {"host": "h"}})
    try:
        apply_remote(config, remote)
    except ConfigError as exc:
        assert exc.key == "remote" and "is not an object" in exc.reason
    else:
        raise AssertionError("applied %r" % (remote,))


def test_defaults_fill_every_leaf_of_the_schema_and_meet_it():
    assert leaf_paths(defaults()) == LEAVES
    assert_meets_schema(defaults())


_big_values = st.builds(
    lambda char, n: char * n,
    st.sampled_from(("x", "\u00e9", "\U0001f600")),  # 1, 6 and 12 bytes each as JSON escapes
    st.one_of(st.integers(0, 17000), st.integers(2600, 2800), st.integers(1300, 1400)),
)


@settings(max_examples=40, deadline=None)
@given(first=valid_configs(), second=valid_configs(), blob=_big_values)
def test_whatever_save_accepts_load_loads_and_a_refused_save_keeps_the_old(first, second, blob):
    """load_config refuses a config.json past 16384 bytes: save_config must refuse it first
    (naming size and limit), not write a file the next boot falls back from."""
    second = dict(second, registration={"blob": blob})
    with tempfile.TemporaryDirectory() as root:
        fs = OsFs(root)
        saved = save_config(fs, first)
        try:
            saved2 = save_config(fs, second)
        except ConfigError as exc:
            assert exc.key == "config" and exc.value > 16384, str(exc)
            assert str(exc) == "config: %d bytes when saved, larger than 16384" % exc.value
            assert len(json.dumps(validate(second))) == exc.value  # what load would have met
            assert not fs.exists(CONFIG + ".tmp")
            loaded, problems = load_config(fs)
            assert (
                problems == []
                and {k: v for k, v in loaded.items() if k not in ("safe_mode", "source")} == saved
            )
            return
        loaded, problems = load_config(fs)
        assert problems == [] and loaded["source"] == CONFIG, problems
        assert {k: v for k, v in loaded.items() if k not in ("safe_mode", "source")} == saved2


@settings(max_examples=60, deadline=None)
@given(
    base=valid_configs(),
    key=st.sampled_from(("config_version", "configVersion", "version")),
    version=st.one_of(st.integers(), st.integers(2**31 - 3, 2**31 + 3), st.integers(-3, 3)),
)
def test_apply_remote_takes_exactly_the_versions_the_schema_holds(base, key, version):
    config = validate(base)
    try:
        new, changed, _ = apply_remote(config, {key: version})
    except ConfigError as exc:
        assert not 0 <= version <= 2**31 - 1, version
        assert str(exc) == "%s: %d is out of range 0..2147483647" % (key, version)
        return
    assert 0 <= version <= 2**31 - 1 and new["version"] == version
    assert validate(new) == new and changed == ([] if version == config["version"] else ["version"])


_FLOAT_LEAVES = sorted(p for p in LEAVES if get_path(_SCHEMA, p)[0] in ("float", "float?"))


@settings(max_examples=100, deadline=None)
@given(
    path=st.sampled_from(_FLOAT_LEAVES),
    value=st.one_of(
        st.integers(), st.integers(-(10**600), 10**600), st.sampled_from((10**400, -(2**1024)))
    ),
)
def test_a_number_key_given_an_int_of_any_size_is_checked_never_a_crash(path, value):
    """CPython's float() overflows past 1.8e308 where MicroPython gives inf: either way the
    value is out of range, named by its key, from check() and from a config.json alike."""
    doc = {"device_id": "a", "uplink": {"url": "mqtt://h"}}
    node = doc
    parts = path.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    spec = get_path(_SCHEMA, path)
    config, errors, _ = check(doc)
    if spec[2] <= value <= spec[3]:
        assert errors == [] and get_path(config, path) == float(value)
        return
    assert [e.key for e in errors] == [path]
    assert "is out of range" in errors[0].reason
    with tempfile.TemporaryDirectory() as root:
        fs = OsFs(root)
        with fs.open(CONFIG, "w") as f:
            f.write(json.dumps(doc))
        config, problems = load_config(fs)
    assert problems[0] == config["safe_mode"] == "%s: %s" % (CONFIG, errors[0])
    assert config["source"] == "defaults"
