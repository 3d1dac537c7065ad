"""Builds an App's parts at boot: a driver per sensor the board has, and the uplink the
settings name. Runs once; the App drops this module afterwards (firmware.app.unload), so its
code and constants do not stay in RAM.
"""

from drivers.sensor import SensorError
from firmware import telemetry
from firmware.uplink.link import Uplink


def build_sensors(app):
    """(radar, pir, gas, env) drivers for the parts the board has; one missing, or failing to
    set up (logged), is None: the node runs without it."""
    b = app.board
    s = app.s
    clock = app.clock
    radar = pir = gas = env = None
    if b.uart is not None:
        radar = _make(app, "ld2410", _make_radar, b.uart, clock)
    if b.pir_pin is not None:
        pir = _make(app, "pir", _make_pir, b.pir_pin, clock, s.pir_warmup_ms)
    if b.gas_adc is not None:
        gas = _make(app, "mq134", _make_gas, b.gas_adc, clock, s, b.info)
    if b.i2c is not None:
        env = _make(app, "env", _make_env, b.i2c, clock)
    return radar, pir, gas, env


def _make(app, name, factory, *args):
    try:
        return factory(*args)
    except (SensorError, OSError, ValueError) as exc:
        app.log.error(name, "sensor setup failed; running without it", {"err": str(exc)})
        return None


def build_uplink(app):
    """(transport, uplink): app.transport if one was given, else MQTT or HTTP per the
    settings, under the Uplink that owns backoff, the breaker and the dead letters."""
    from firmware.app import EncodingTransport, MqttTransport

    s = app.s
    net = app.board.open_connection
    if app.transport is not None:
        inner = app.transport
    elif s.uplink == "mqtt":
        from firmware.uplink.mqtt import MQTTClient

        client = MQTTClient(
            s.device_id,
            s.host,
            s.port,
            keepalive_s=s.keepalive_s,
            user=s.mqtt_user,
            password=s.mqtt_password,
            will_topic=telemetry.status_topic(s.topic_prefix, s.device_id),
            will_payload=telemetry.will_payload(s.device_id),
            open_connection=net,
            clock=app.clock,
            log=app.log.warn,
        )
        inner = MqttTransport(
            client, telemetry.data_topic(s.topic_prefix, s.device_id), app._on_connect
        )
    else:
        from firmware.uplink.http import HttpClient, HttpTransport

        client = HttpClient(s.host, s.port, api_key=s.api_key, auth=s.auth, open_connection=net)
        inner = HttpTransport(client, s.http_path, s.http_batch_path)
    uplink = Uplink(
        EncodingTransport(inner, s.profile, app.device),
        app.clock,
        app.rand,
        log=app.log.warn,
        batch=s.batch,
    )
    return inner, uplink


def _make_radar(uart, clock):
    from drivers.ld2410 import LD2410

    return LD2410(uart, clock)


def _make_pir(pin, clock, warmup_ms):
    from drivers.pir import PIR

    return PIR(pin, clock, warmup_ms=warmup_ms)


def _make_gas(adc, clock, s, info):
    from drivers.mq134 import MQ134

    kw = {}
    mq = info.get("mq134", {}) if isinstance(info, dict) else {}
    for key in ("atten", "divider_ratio", "load_ohm", "supply_v"):  # the board's circuit
        if key in mq:
            kw[key] = mq[key]
    # Chemistry (R0 and the curve) is calibration: config, None = the driver's placeholder.
    # RL is the circuit: board.json says what is soldered; config's value only without it.
    for key in ("r0_ohm", "a", "b", "load_ohm"):
        if s.gas.get(key) is not None and (key != "load_ohm" or key not in kw):
            kw[key] = s.gas[key]
    return MQ134(adc, clock, warmup_ms=s.gas_warmup_ms, **kw)


def _make_env(i2c, clock):
    """The driver of the environment part that answers, importing only that driver (RAM)."""
    from drivers.env import AHT20_ADDRESSES, BME280_ADDRESSES, SHT3X_ADDRESSES, detect

    try:
        present = i2c.scan()
    except OSError:
        present = ()
    for address in present:
        try:
            if address in BME280_ADDRESSES:
                from drivers.bme280 import BME280

                return BME280(i2c, address=address, clock=clock)
            if address in SHT3X_ADDRESSES:
                from drivers.sht3x import SHT3x

                return SHT3x(i2c, address=address, clock=clock)
            if address in AHT20_ADDRESSES:
                from drivers.aht20 import AHT20

                return AHT20(i2c, address=address, clock=clock)
        except SensorError:
            pass  # detect() below says what answered and why it was refused
    return detect(i2c, clock)
