"""Device /boot.py: put the application slot chosen by /boot.json on sys.path.

Copied to the root of the device's filesystem (nbk build); it must not import the application,
which lives in the slot (/app/a, /app/b): a broken slot can then never stop the node from
booting to its REPL, provisioning and OTA. The boot counter, crash record and safe-mode decision
are firmware.bootrecord's, run by firmware.app.start from /main.py.

When the record already shows CRASH_LIMIT boots that crashed before healthy, no slot is added:
/main.py then stays in safe mode (console only) even if the slot cannot be imported at all.
"""

import json
import sys

RECORD = "/boot.json"
CRASH_LIMIT = 3  # firmware.bootrecord.CRASH_LIMIT
_SLOT_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"


def read_record(path=RECORD):
    """The boot record as a dict ({} when missing or unreadable: boot must never fail)."""
    try:
        with open(path) as f:
            rec = json.loads(f.read())
        return rec if isinstance(rec, dict) else {}
    except (OSError, ValueError):
        return {}


def slot_path(record):
    """/app/<slot> for a sane slot name, else /app/a."""
    slot = record.get("slot", "a")
    if not isinstance(slot, str) or not 0 < len(slot) <= 8:
        slot = "a"
    for ch in slot:
        if ch not in _SLOT_CHARS:
            slot = "a"
            break
    return "/app/" + slot


def choose(record):
    """(path to add to sys.path or None, reason for safe mode or None)."""
    unhealthy = record.get("unhealthy", 0)
    if (
        isinstance(unhealthy, int)
        and unhealthy >= CRASH_LIMIT - 1
        and (record.get("state") == "booting")
    ):
        # This boot would be the CRASH_LIMIT-th crashed one: keep the slot out of the way.
        return None, "%d boots crashed before healthy" % (unhealthy + 1)
    return slot_path(record), None


def boot():
    path, reason = choose(read_record())
    if path is None:
        print("nbk: safe mode:", reason)
        return None
    if path not in sys.path:
        sys.path.insert(0, path)
    return path


if __name__ == "__main__":
    boot()
