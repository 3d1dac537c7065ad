"""The node's uplinks: mqtt (MQTT 3.1.1 protocol), http (HTTP/1.1 client) and link (policy:
backoff, circuit breaker, dead letter, the Uplink sender).

This package module holds only what all three share (async sleep on the injected clock, the
per-reading outcomes), so importing one uplink does not compile the others on the device.
"""

try:
    import asyncio
except ImportError:
    import uasyncio as asyncio

# Per-reading outcomes a transport reports (see Uplink.step).
ACKED = "acked"  # MQTT PUBACK, HTTP 202
DUPLICATE = "duplicate"  # HTTP 409 / batch "duplicate": delivered earlier, counted apart
REJECTED = "rejected"  # the peer says this reading is wrong (HTTP 400, batch "failed")
FAILED = "failed"  # the peer answered but failed this reading (HTTP 500): retry, and count it
UNSENT = "unsent"  # not tried, or lost with the link: retry, not the reading's fault


def sleep_ms(clock, ms):
    """Awaitable sleep of `ms` on the injected clock when it can (a simulated clock jumps), else
    on asyncio. Not a coroutine itself: no extra frame while the caller sleeps."""
    fn = getattr(clock, "sleep_ms_async", None)
    if fn is not None:
        return fn(ms)
    if hasattr(asyncio, "sleep_ms"):
        return asyncio.sleep_ms(ms)
    return asyncio.sleep(ms / 1000)


async def wait_for_ms(awaitable, ms):
    """Await with a timeout in wall milliseconds; raises asyncio.TimeoutError."""
    if hasattr(asyncio, "wait_for_ms"):
        return await asyncio.wait_for_ms(awaitable, ms)
    return await asyncio.wait_for(awaitable, ms / 1000)
