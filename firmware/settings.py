"""The application's settings: config.json (already validated) and the build's tuning resolved
once into plain attributes, at boot and after a remote config. Only boot and a remote config
need this module; the App drops it afterwards (RAM).

    s = resolve(config, {"gas_warmup_s": 20})   # tests shorten warm-ups
    s.sampling_ms, s.uplink, s.http_batch_path
"""

from firmware.telemetry import NEUROBUILD, PLATFORM


def _get(config, path, default):
    """config["a"]["b"] for path "a.b", or default when any level is missing."""
    node = config
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return default
        node = node[key]
    return node


# Cadences and warm-ups that are properties of the parts and the build, not of a deployment:
# App(..., tuning={...}) overrides them (tests shorten warm-ups), config.json does not.
TUNING = {
    "pir_s": 1,  # PIR state sampled every second; events are counted by the driver meanwhile
    "gas_s": 5,  # MQ-134 averaged over a window of samples every 5 s
    "env_s": 10,  # BME280 forced conversion every 10 s (it drifts slowly)
    "task_stall_s": 120,  # a task silent this long stops the watchdog feed
    "gas_warmup_s": 180,  # drivers.mq134.DEFAULT_WARMUP_MS
    "pir_warmup_s": 60,  # HC-SR501-class settle time after power-on (sensors.md §6)
    "buffer_records": 2000,
    "flush_every": 5,
}


class Settings:
    """The values the application reads from the config and the tuning, as attributes.

    It has no methods: an App keeps its Settings for life, and resolve() with its constants
    can be collected once this module is dropped (firmware.app.unload). The annotations cost
    nothing at run time; they tell the type checker what resolve() sets.
    """

    device_id: str
    config_version: int | None
    uplink: str  # "mqtt" | "http"
    host: str
    port: int
    profile: str  # telemetry.NEUROBUILD | telemetry.PLATFORM
    topic_prefix: str
    keepalive_s: int
    api_key: str | None
    mqtt_user: str | None
    mqtt_password: str | None
    auth: str
    http_path: str
    http_batch_path: str | None
    batch: int
    sampling_ms: int
    transmission_ms: int
    status_ms: int
    config_poll_ms: int
    config_url: str | None
    temperature_offset: float
    humidity_offset: float
    pressure_offset: float
    gas: dict
    sleep_mode: bool
    wake_ms: int
    pir_ms: int
    gas_ms: int
    env_ms: int
    task_stall_ms: int
    gas_warmup_ms: int
    pir_warmup_ms: int
    buffer_records: int
    flush_every: int
    device_extra: dict


def resolve(config, tuning=None):
    """Settings from a config (firmware.config's schema, already validated) and the tuning.

    ValueError names an unknown tuning key or transport.
    """
    s = Settings()
    g = _get
    t = dict(TUNING)
    if tuning:
        for key in tuning:
            if key not in TUNING:
                raise ValueError("unknown tuning key %r; known: %s" % (key, sorted(TUNING)))
            t[key] = tuning[key]
    s.device_id = g(config, "device_id", "") or "nbk-node"
    s.config_version = g(config, "version", None)
    u = "uplink."
    s.uplink = g(config, u + "transport", "mqtt")
    if s.uplink not in ("mqtt", "http"):
        raise ValueError("uplink.transport %r: use 'mqtt' or 'http'" % (s.uplink,))
    mqtt = s.uplink == "mqtt"
    s.host = g(config, u + "host", "") or "127.0.0.1"
    s.port = g(config, u + "port", 0) or (1883 if mqtt else 80)
    s.profile = g(config, u + "profile", NEUROBUILD)
    s.topic_prefix = g(config, u + "topic_prefix", "neurobuild/sensors")
    s.keepalive_s = g(config, u + "keepalive_s", 60)
    s.api_key = g(config, u + "api_key", "") or None
    s.mqtt_user = s.mqtt_password = None
    if mqtt and s.api_key:  # a gateway in front of the broker authenticates by key
        s.mqtt_user, s.mqtt_password = s.device_id, s.api_key
    s.auth = g(config, u + "auth", "x-api-key")
    path = g(config, u + "path", "")
    if s.profile == PLATFORM:
        s.http_path, s.http_batch_path = path or "/v1/data/ingest", None
    else:
        s.http_path = path or "/api/v1/sensor-data"
        s.http_batch_path = s.http_path + "/batch"
    # Readings per uplink step. Each is read from flash, decoded and encoded before the
    # send, so the step's transient heap grows with it; an HTTP batch of 2 KiB holds about
    # four anyway (HttpTransport.max_batch_bytes), and MQTT publishes one at a time.
    s.batch = 1 if mqtt else 4
    i = "intervals."
    s.sampling_ms = g(config, i + "sampling_s", 60) * 1000
    s.transmission_ms = g(config, i + "transmission_s", 300) * 1000
    s.status_ms = g(config, i + "status_s", 300) * 1000
    s.config_poll_ms = g(config, i + "config_poll_s", 3600) * 1000
    # Where GET /v1/devices/{id}/config is served (ota_server): "http://host:port".
    s.config_url = g(config, "registration.config_url", "") or None
    c = "calibration."
    s.temperature_offset = g(config, c + "env.temperature_offset", 0.0)
    s.humidity_offset = g(config, c + "env.humidity_offset", 0.0)
    s.pressure_offset = g(config, c + "env.pressure_offset", 0.0)
    s.gas = g(config, c + "gas", {})
    s.sleep_mode = g(config, "power.sleep_mode", "disabled") == "enabled"
    s.wake_ms = g(config, "power.wake_interval_s", 300) * 1000
    s.pir_ms = t["pir_s"] * 1000
    s.gas_ms = t["gas_s"] * 1000
    s.env_ms = t["env_s"] * 1000
    s.task_stall_ms = t["task_stall_s"] * 1000
    s.gas_warmup_ms = t["gas_warmup_s"] * 1000
    s.pir_warmup_ms = t["pir_warmup_s"] * 1000
    s.buffer_records = t["buffer_records"]
    s.flush_every = t["flush_every"]
    s.device_extra = {}
    loc = g(config, "location", None)
    if loc and loc.get("latitude") is not None and loc.get("longitude") is not None:
        s.device_extra["location"] = loc
    return s
