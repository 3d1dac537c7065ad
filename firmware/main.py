"""Device /main.py: build the ESP32 board and start the node from the slot /boot.py chose.

Copied to the root of the device's filesystem (nbk build). Wiring only: the application is
firmware.app.start, the hardware firmware.esp32_board. When /boot.py kept the slot off
sys.path (safe mode) or the slot cannot be imported, this returns to the REPL, so the console,
provisioning and OTA still work; an import failure is counted as a crashed boot.
"""

import sys


def _slot_on_path():
    for p in sys.path:
        if isinstance(p, str) and p.startswith("/app/"):
            return p
    return None


def _count_failed_boot(reason):
    """The slot is broken before firmware.bootrecord could run: count it the same way."""
    import json

    try:
        with open("/boot.json") as f:
            rec = json.loads(f.read())
    except (OSError, ValueError):
        rec = {}
    if rec.get("state") == "booting":
        rec["unhealthy"] = rec.get("unhealthy", 0) + 1
    rec["state"] = "booting"
    rec["last_crash"] = reason[:160]
    with open("/boot.json.tmp", "w") as f:
        f.write(json.dumps(rec))
    import os

    os.rename("/boot.json.tmp", "/boot.json")


def main():
    slot = _slot_on_path()
    if slot is None:
        print("nbk: safe mode: console, provisioning and OTA only (see /boot.json)")
        return
    try:
        from firmware.app import start
        from firmware.esp32_board import build_board
    except Exception as exc:  # a broken slot: never a reboot loop without a count
        print("nbk: cannot load the application from %s: %r" % (slot, exc))
        _count_failed_boot("import: %r" % (exc,))
        return
    start(build_board())  # returns only in safe mode; a crash resets the board


main()
