"""Remote config (contracts.md §3): fetch it from the config server and apply it to a running
App. Imported only when a poll is due; the App drops it (and firmware.config) afterwards.
"""

from firmware.uplink.http import HttpClient, parse_json


async def fetch(app):
    """GET /v1/devices/{id}/config (contracts.md §3) -> dict, or None when there is none."""
    url = app.s.config_url
    host, port = _host_port(url)
    client = HttpClient(
        host,
        port,
        api_key=app.s.api_key,
        auth=app.s.auth,
        open_connection=app.board.open_connection,
    )
    try:
        status, _, body = await client.request("GET", "/v1/devices/%s/config" % app.s.device_id)
    finally:
        await client.close()
    if status == 404:
        return None
    if status != 200:
        raise OSError("config server answered %d" % status)
    return parse_json(body, "remote config")


async def apply(app, remote):
    """Validate, persist and apply a remote config; True when something changed.

    Intervals and calibration apply at once (tasks read them every loop); a change that
    needs a reboot (power mode) is saved, then the board resets. A bad config is logged
    with the field at fault and changes nothing.
    """
    from firmware.config import ConfigError, apply_remote, load_config, save_config
    from firmware.settings import resolve

    current = app.config
    if current is None:  # let go by run(): the node's config is the one on flash
        current = load_config(app.board.fs)[0]
        if current.get("safe_mode"):
            app.log.warn("config", "remote config refused", {"err": current["safe_mode"]})
            return False
    try:
        new, changed, needs_reboot = apply_remote(current, remote)
    except ConfigError as exc:
        app.log.warn("config", "remote config refused", {"err": str(exc)})
        return False
    if not changed:
        return False
    try:
        save_config(app.board.fs, new)
    except (ConfigError, OSError) as exc:
        app.log.error("config", "remote config not saved", {"err": str(exc)})
        return False
    app.config = new
    app.s = resolve(new, app.tuning)
    app.config_version = app.s.config_version
    app.log.info("config", "remote config applied", {"changed": changed, "reboot": needs_reboot})
    await app.publish_status()  # acknowledges the new version
    if needs_reboot:
        app.buffer.flush()
        app.log.save()
        app.board.reset()
    return True


def _host_port(url):
    """("host", port) from "http://host:port[/...]"; ValueError names the URL."""
    rest = url
    if rest.startswith("http://"):
        rest = rest[7:]
    elif "://" in rest:
        raise ValueError("config_url %r: only http:// is supported" % (url,))
    rest = rest.split("/", 1)[0]
    if ":" in rest:
        host, port = rest.rsplit(":", 1)
        if not port.isdigit():
            raise ValueError("config_url %r: port %r is not a number" % (url, port))
        return host, int(port)
    return rest, 80
