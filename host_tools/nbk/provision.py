"""Give a board its identity: config and Wi-Fi credentials, optional registration, a record.

`provision()` builds the config, registers the device with the device-management service when
asked (contracts.md §5: the service chooses the id and returns an API key), writes
`config.json` atomically, reads it back and compares, and appends one JSON line to the
technician's record. Secrets (Wi-Fi password, API key, token) are written to the board only:
results and records carry "***" or nothing in their place.
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import json
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from nbk.errors import DeviceError, NbkError
from nbk.transport.base import Transport

CONFIG_PATH = "config.json"  # relative to the working directory: "/" at boot
LAST_GOOD_PATH = "config.bak"  # firmware/config.py's fallback copy
MASK = "***"
SENSORS = ("LD2410", "PIR", "MQ134")
_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
BATCH_COLUMNS = ("port", "device_id", "wifi_ssid", "wifi_password", "server")


def check_device_id(device_id: str) -> str:
    """Telemetry sends only ^[A-Za-z0-9_-]+$ ids (contracts.md §1); refuse others early."""
    if not isinstance(device_id, str) or not _ID_RE.match(device_id):
        raise NbkError(
            "device id %r is not valid; use 1-64 letters, digits, '-' or '_'" % (device_id,)
        )
    return device_id


def check_wifi_password(password: str) -> None:
    """WPA2/WPA3-Personal takes a passphrase of 8-63 printable ASCII characters or a raw key of
    64 hex digits (IEEE 802.11i-2004, H.4.1); "" means an open network. Anything else would be
    written happily and only fail at the site, so refuse it here, naming the length only."""
    if not password:
        return
    if len(password) == 64 and all(c in "0123456789abcdefABCDEF" for c in password):
        return
    if not 8 <= len(password) <= 63:
        raise NbkError(
            "the Wi-Fi password has %d characters; WPA2 needs 8 to 63 (or 64 hex digits, or "
            "none for an open network); check it" % len(password)
        )
    if any(not " " <= c <= "~" for c in password):
        raise NbkError(
            "the Wi-Fi password holds a character outside printable ASCII, which WPA2 "
            "passphrases cannot contain; check it"
        )


def build_config(
    device_id: str,
    ssid: str,
    password: str,
    server: str,
    api_key: str | None = None,
    registration: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The config dict the firmware reads from config.json.

    firmware/config.py fills in its defaults and validates (so the board will accept it); the
    secrets land in network.password, uplink.api_key and registration.token.
    """
    check_device_id(device_id)
    if not ssid:
        raise NbkError("Wi-Fi SSID is empty; pass --wifi-ssid NAME")
    if len(ssid.encode()) > 32:
        raise NbkError(
            "Wi-Fi SSID is %d bytes; 802.11 allows at most 32, check --wifi-ssid"
            % len(ssid.encode())
        )
    check_wifi_password(password or "")
    if not server or "://" not in server:
        raise NbkError(
            "server %r is not a URL; pass e.g. --server mqtt://10.0.0.2:1883" % (server,)
        )
    config: dict[str, Any] = {
        "device_id": device_id,
        "network": {"ssid": ssid, "password": password or ""},
        "uplink": {"url": server},
    }
    if api_key:
        config["uplink"]["api_key"] = api_key
    if registration:
        config["registration"] = registration
    return _firmware_shape(config)


def _firmware_shape(config: dict[str, Any]) -> dict[str, Any]:
    """Fill in firmware/config.py's defaults and run its validation (the device's own rules)."""
    try:
        from firmware import config as fw
    except ImportError:  # nbk installed without the firmware package: the minimal shape
        return config
    try:
        checked = fw.validate(_merge(fw.defaults(), config))
    except ValueError as exc:  # fw.ConfigError names the key and the value
        raise NbkError("config refused by firmware/config.py: %s; fix that value" % exc) from None
    return {k: v for k, v in checked.items() if k not in fw.RUNTIME_KEYS}


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def masked(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of `config` safe to print: every secret replaced by MASK."""
    out = json.loads(json.dumps(config))
    if out.get("network", {}).get("password"):
        out["network"]["password"] = MASK
    for key in ("api_key", "token"):
        if out.get("uplink", {}).get(key):
            out["uplink"][key] = MASK
        if out.get("registration", {}).get(key):
            out["registration"][key] = MASK
    return out


def register(
    url: str,
    name: str,
    device_type: str = "ESP32",
    sensors: Iterable[str] = SENSORS,
    timeout: float = 10.0,
    opener: Callable[..., Any] | None = None,
) -> tuple[str, str, str | None]:
    """POST /api/devices/register; return (device id, api key, token) chosen by the service."""
    body = {
        "name": name,
        "deviceType": device_type,
        "description": "provisioned by nbk",
        "sensors": [{"type": s, "enabled": True, "config": {}} for s in sensors],
        "metadata": {"requestedId": name},
    }
    endpoint = url.rstrip("/") + "/api/devices/register"
    request = urllib.request.Request(
        endpoint,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
        method="POST",
    )
    open_url = opener or urllib.request.urlopen
    try:
        with open_url(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise NbkError(
            "cannot reach the registration service at %s (%s); check --register URL and the "
            "network" % (endpoint, reason)
        ) from None
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = None
    if status != 201 or not isinstance(answer, dict):
        detail = answer.get("error") or answer.get("message") if isinstance(answer, dict) else ""
        raise NbkError(
            "registration at %s answered %d %s; fix the request or the service and retry"
            % (endpoint, status, str(detail or raw[:80]))
        )
    data = answer.get("data") or {}
    device_id, api_key = data.get("deviceId"), data.get("apiKey")
    if not isinstance(device_id, str) or not _ID_RE.match(device_id):
        raise NbkError(
            "registration answered device id %r, not usable; check the service" % (device_id,)
        )
    if not isinstance(api_key, str) or not api_key:
        raise NbkError("registration at %s returned no apiKey; check the service" % endpoint)
    return device_id, api_key, data.get("token")


def provision(
    transport: Transport,
    device_id: str,
    ssid: str,
    password: str,
    server: str,
    register_url: str | None = None,
    device_type: str = "ESP32",
    opener: Callable[..., Any] | None = None,
) -> dict[str, Any]:
    """Write config.json to the board (after registering, if asked) and verify it.

    Returns a result dict with no secrets in it: device_id (the registered one when
    registering), requested_id, registered, config (masked), config_sha256.
    """
    # Every value is checked before the service hears of the device: a typo in the password
    # must not leave a registered device behind with no board holding its key.
    build_config(device_id, ssid, password, server)
    api_key = token = None
    final_id = device_id
    registration = None
    if register_url:
        final_id, api_key, token = register(
            register_url, device_id, device_type=device_type, opener=opener
        )
        registration = {"url": register_url, "requested_id": device_id}
        if token:
            registration["token"] = token
    config = build_config(final_id, ssid, password, server, api_key, registration)
    data = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    transport.write_files([(CONFIG_PATH, data)])
    # A last-good copy of an earlier identity must not outlive this one (firmware/config.py
    # falls back to it); the firmware makes a fresh copy from the new config.json at boot.
    transport.exec_code("import os\ntry:os.remove(%r)\nexcept OSError:pass\n" % LAST_GOOD_PATH)
    back = transport.read_json(CONFIG_PATH)
    if back != config:
        raise DeviceError(
            "%s read back from the board differs from what was written; check the board's "
            "filesystem (nbk device info) and provision again" % CONFIG_PATH
        )
    return {
        "device_id": final_id,
        "requested_id": device_id,
        "registered": bool(register_url),
        "config": masked(config),
        "config_sha256": hashlib.sha256(data).hexdigest(),
    }


def attempt(device_id: str, ssid: str, server: str) -> dict[str, Any]:
    """What a failed attempt's record line shows: what was asked for, where (no secrets)."""
    return {
        "device_id": device_id,
        "requested_id": device_id,
        "config": {"network": {"ssid": ssid}, "uplink": {"url": server}},
    }


def record_line(
    result: dict[str, Any],
    port: str,
    status: str = "ok",
    error: str | None = None,
    now: datetime.datetime | None = None,
) -> str:
    """One JSON line for the technician's record: what was provisioned where, never a secret."""
    now = now or datetime.datetime.now(datetime.UTC)
    config = result.get("config") or {}
    entry = {
        "time": now.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "port": port,
        "status": status,
        "device_id": result.get("device_id"),
        "requested_id": result.get("requested_id"),
        "registered": result.get("registered", False),
        "ssid": config.get("network", {}).get("ssid"),
        "server": config.get("uplink", {}).get("url"),
        "config_sha256": result.get("config_sha256"),
    }
    if error:
        entry["error"] = error
    return json.dumps(entry, sort_keys=True)


def append_record(path: str, lines: Iterable[str]) -> None:
    """Append JSON lines to the record file (created if missing)."""
    with open(path, "a", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")


def read_batch(path: str) -> list[dict[str, str]]:
    """Rows of a batch CSV as dicts. Header must hold BATCH_COLUMNS (register is optional)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            missing = [c for c in BATCH_COLUMNS if c not in header]
            if missing:
                raise NbkError(
                    "%s lacks column(s) %s; the header must be %s[,register]"
                    % (path, ", ".join(missing), ",".join(BATCH_COLUMNS))
                )
            rows = []
            for number, row in enumerate(reader, start=2):
                for column in ("port", "device_id", "wifi_ssid", "server"):
                    if not (row.get(column) or "").strip():
                        raise NbkError("%s line %d: %s is empty" % (path, number, column))
                rows.append({k: (v or "").strip() for k, v in row.items() if k})
    except OSError as exc:
        raise NbkError("cannot read batch file %s (%s)" % (path, exc.strerror)) from None
    if not rows:
        raise NbkError("%s has no rows under its header; add one line per board" % path)
    ports = [r["port"] for r in rows]
    repeated = sorted({p for p in ports if ports.count(p) > 1})
    if repeated:
        raise NbkError(
            "%s lists port %s more than once; one board per port" % (path, ", ".join(repeated))
        )
    return rows


def provision_batch(
    rows: list[dict[str, str]],
    connect: Callable[[str], Transport],
    register_url: str | None = None,
    opener: Callable[..., Any] | None = None,
) -> list[tuple[dict[str, str], dict[str, Any] | None, str | None]]:
    """Provision every row on its own port at once. Returns [(row, result or None, error)]."""

    def one(row: dict[str, str]) -> tuple[dict[str, str], dict[str, Any] | None, str | None]:
        url = row.get("register") or register_url
        try:
            with connect(row["port"]) as transport:
                result = provision(
                    transport,
                    row["device_id"],
                    row["wifi_ssid"],
                    row.get("wifi_password", ""),
                    row["server"],
                    register_url=url or None,
                    opener=opener,
                )
            return row, result, None
        except NbkError as exc:
            return row, None, str(exc)

    with ThreadPoolExecutor(max_workers=max(1, len(rows))) as pool:
        return list(pool.map(one, rows))
