"""The boot record (/boot.json): which application slot to run, and whether to run it at all.

Each boot calls `begin()`; the application calls `mark_healthy()` once it has done real work.
A boot that ends (crash, watchdog, power cut) before that counts as crashed; after
`crash_limit` (3) crashed boots in a row the node starts in safe mode (console, provisioning and
OTA only) until `clear()` (a new slot installed, or a technician) resets the count.

Record: {"slot": "a", "boots": 12, "unhealthy": 0, "state": "booting"|"healthy",
"last_crash": "<text>" | null, "reset_cause": "<cause>"}. Written atomically (tmp + rename).
"""

import json

RECORD_PATH = "boot.json"
CRASH_LIMIT = 3
DEFAULT_SLOT = "a"
_SLOT_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"


def check_slot(slot):
    """Raise ValueError unless `slot` is a short lower-case name (it becomes a directory)."""
    if not isinstance(slot, str) or not 0 < len(slot) <= 8:
        raise ValueError("boot slot %r: must be 1 to 8 characters" % (slot,))
    for ch in slot:
        if ch not in _SLOT_CHARS:
            raise ValueError("boot slot %r: only a-z, 0-9 and _ are allowed" % (slot,))
    return slot


def slot_dir(slot):
    """Where a slot's `firmware/` and `drivers/` packages live on the device."""
    return "/app/" + check_slot(slot)


def _default_record():
    return {
        "slot": DEFAULT_SLOT,
        "boots": 0,
        "unhealthy": 0,
        "state": "healthy",
        "last_crash": None,
        "reset_cause": None,
    }


class BootDecision:
    """What `begin()` decided: the slot to run and whether this is a safe-mode boot."""

    def __init__(self, slot, safe_mode, reason, boots, unhealthy, problem):
        self.slot = slot
        self.safe_mode = safe_mode
        self.reason = reason  # why safe mode, or None
        self.boots = boots
        self.unhealthy = unhealthy  # consecutive boots that never reached healthy
        self.problem = problem  # the record could not be read (and was replaced), or None


class BootRecord:
    def __init__(self, fs, path=RECORD_PATH, crash_limit=CRASH_LIMIT):
        if crash_limit < 1:
            raise ValueError("crash_limit %r: must be at least 1" % (crash_limit,))
        self._fs = fs
        self._path = path
        self._limit = crash_limit
        self.record = None

    def read(self):
        """(record, problem): the stored record, or defaults and the reason it was unusable."""
        try:
            with self._fs.open(self._path, "r") as f:
                rec = json.loads(f.read())
        except OSError:
            return _default_record(), None  # first boot: no record yet
        except ValueError as exc:
            return _default_record(), "boot record unreadable (%s); started afresh" % exc
        problem = None
        base = _default_record()
        if not isinstance(rec, dict):
            return base, "boot record is not an object; started afresh"
        for key in ("boots", "unhealthy"):
            value = rec.get(key, 0)
            if isinstance(value, int) and value >= 0:
                base[key] = value
            else:
                problem = "boot record key %r has %r; reset to 0" % (key, value)
        try:
            base["slot"] = check_slot(rec.get("slot", DEFAULT_SLOT))
        except ValueError as exc:
            problem = str(exc) + "; using slot %r" % DEFAULT_SLOT
        if rec.get("state") in ("booting", "healthy"):
            base["state"] = rec["state"]
        base["last_crash"] = rec.get("last_crash")
        base["reset_cause"] = rec.get("reset_cause")
        return base, problem

    def begin(self, reset_cause=None):
        """Count this boot and decide slot and safe mode; never raises on a bad record."""
        rec, problem = self.read()
        if rec["state"] == "booting":  # the previous boot never reached healthy
            rec["unhealthy"] += 1
        rec["boots"] += 1
        rec["state"] = "booting"
        rec["reset_cause"] = reset_cause
        self.record = rec
        self._write()
        safe = rec["unhealthy"] >= self._limit
        reason = None
        if safe:
            reason = "%d boots in a row crashed before healthy" % rec["unhealthy"]
            if rec["last_crash"]:
                reason += "; last crash: " + rec["last_crash"]
        return BootDecision(rec["slot"], safe, reason, rec["boots"], rec["unhealthy"], problem)

    def mark_healthy(self):
        """The application did real work: this boot no longer counts as crashed."""
        rec = self._current()
        if rec["state"] == "healthy" and rec["unhealthy"] == 0:
            return  # nothing to write: spare the flash
        rec["state"] = "healthy"
        rec["unhealthy"] = 0
        self._write()

    def note_crash(self, text):
        """Keep a one-line description of the crash that is about to end this boot."""
        rec = self._current()
        rec["last_crash"] = str(text)[:160]
        self._write()

    def set_slot(self, slot):
        """Run `slot` from the next boot on (the OTA issue builds A/B switching on this)."""
        rec = self._current()
        rec["slot"] = check_slot(slot)
        self._write()

    def clear(self):
        """Leave safe mode: forget the crashed boots."""
        rec = self._current()
        rec["unhealthy"] = 0
        rec["state"] = "healthy"
        self._write()

    def _current(self):
        if self.record is None:
            self.record = self.read()[0]
        return self.record

    def _write(self):
        tmp = self._path + ".tmp"
        with self._fs.open(tmp, "w") as f:
            f.write(json.dumps(self.record))
        self._fs.rename(tmp, self._path)
