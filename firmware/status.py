"""The node's status: what it publishes on connect and periodically (issue 4, Status).

Gathers firmware version, uptime, reset cause, RSSI, battery, free heap, buffer depth and drops,
delivery counters and the acknowledged config version into the dict
`firmware.telemetry.status_payload` encodes. No I/O of its own.
"""

FIRMWARE_VERSION = "0.1.0"


def snapshot(
    board, started_ticks, wall_ms, buffer_stats, counters, config_version, uplink=None, breaker=None
):
    """The status dict for `telemetry.status_payload`.

    `buffer_stats` is firmware.buffer.Buffer.stats() (depth, dropped); `counters` a dict with
    duplicates and dead_letters; `uplink` the transport ("mqtt" | "http"), `breaker` its
    circuit breaker's state ("closed" | "open" | "half_open").
    Values the board cannot give (RSSI on the Unix port, battery on mains) are left out.
    """
    clock = board.clock
    status = {
        "ts_ms": wall_ms,
        "firmware_version": FIRMWARE_VERSION,
        "uptime_s": clock.ticks_diff(clock.ticks_ms(), started_ticks) // 1000,
        "reset_cause": board.reset_cause,
    }
    for key, value in (
        ("rssi_dbm", board.rssi()),
        ("battery_pct", board.battery_pct()),
        ("free_heap", board.mem_free()),
    ):
        if value is not None:
            status[key] = value
    status["buffer_depth"] = buffer_stats.get("depth", 0)
    status["buffer_drops"] = buffer_stats.get("dropped", 0)
    status["duplicates"] = counters.get("duplicates", 0)
    status["dead_letters"] = counters.get("dead_letters", 0)
    if config_version is not None:
        status["config_version"] = config_version
    if uplink is not None:
        status["uplink"] = uplink
    if breaker is not None:
        status["breaker"] = breaker
    return status
