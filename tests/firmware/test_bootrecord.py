"""Boot record: boot counting, crashed boots, safe mode after three, slot choice."""

import json

from firmware.bootrecord import CRASH_LIMIT, BootRecord, check_slot, slot_dir
from firmware.fs import OsFs
from tests.support.mptest import raises

RUN_ON_MICROPYTHON = True


def _fresh_fs(name):
    """A scratch directory (tests run in an empty cwd) wrapped as the device fs."""
    import os

    os.mkdir(name)
    return OsFs(name)


def _stored(fs):
    with fs.open("boot.json") as f:
        return json.loads(f.read())


def test_first_boot_runs_slot_a_and_writes_record():
    fs = _fresh_fs("first")
    d = BootRecord(fs).begin("power_on")
    assert (d.slot, d.safe_mode, d.boots, d.unhealthy, d.problem) == ("a", False, 1, 0, None)
    rec = _stored(fs)
    assert rec["state"] == "booting" and rec["reset_cause"] == "power_on"


def test_three_crashed_boots_mean_safe_mode_and_healthy_clears_the_count():
    fs = _fresh_fs("crashy")
    for expected in (0, 1, 2):
        d = BootRecord(fs).begin("watchdog")  # never marked healthy: the boot "crashed"
        assert d.unhealthy == expected and not d.safe_mode
    rb = BootRecord(fs)
    rb.begin("watchdog")
    rb.note_crash("MemoryError: allocating 1024 bytes")
    d = BootRecord(fs).begin("soft")
    assert d.safe_mode and d.unhealthy == 4
    assert "4 boots in a row" in d.reason and "MemoryError" in d.reason
    rb = BootRecord(fs)
    rb.begin("soft")
    rb.clear()
    d = BootRecord(fs).begin("soft")
    assert not d.safe_mode and d.unhealthy == 0


def test_healthy_boot_resets_the_crash_streak():
    fs = _fresh_fs("healthy")
    BootRecord(fs).begin()
    BootRecord(fs).begin()
    rb = BootRecord(fs)
    assert rb.begin().unhealthy == 2
    rb.mark_healthy()
    assert _stored(fs)["state"] == "healthy"
    d = BootRecord(fs).begin()
    assert d.unhealthy == 0 and d.boots == 4


def test_corrupt_record_never_bricks_the_node():
    fs = _fresh_fs("corrupt")
    with fs.open("boot.json", "w") as f:
        f.write("{not json")
    d = BootRecord(fs).begin()
    assert d.slot == "a" and not d.safe_mode
    assert "unreadable" in d.problem
    with fs.open("boot.json", "w") as f:
        f.write(json.dumps({"slot": "../x", "boots": -3, "unhealthy": 1, "state": "healthy"}))
    d = BootRecord(fs).begin()
    assert d.slot == "a" and d.boots == 1 and d.problem


def test_slot_switch_takes_effect_next_boot():
    fs = _fresh_fs("slots")
    rb = BootRecord(fs)
    rb.begin()
    rb.set_slot("b")
    assert BootRecord(fs).begin().slot == "b"
    assert slot_dir("b") == "/app/b"
    assert "only a-z" in str(raises(ValueError, check_slot, "B/1"))
    assert "1 to 8" in str(raises(ValueError, check_slot, ""))
    assert "at least 1" in str(raises(ValueError, BootRecord, fs, "boot.json", 0))


def test_device_boot_py_picks_the_slot_and_keeps_a_crashing_one_away():
    from firmware import boot

    assert boot.choose({}) == ("/app/a", None)
    assert boot.choose({"slot": "b", "unhealthy": 1, "state": "booting"}) == ("/app/b", None)
    assert boot.slot_path({"slot": "../../etc"}) == "/app/a"
    assert boot.slot_path({"slot": 7}) == "/app/a"
    path, reason = boot.choose({"slot": "b", "unhealthy": 2, "state": "booting"})
    assert path is None and reason == "3 boots crashed before healthy"
    assert boot.choose({"slot": "b", "unhealthy": 2, "state": "healthy"})[0] == "/app/b"
    assert boot.CRASH_LIMIT == CRASH_LIMIT  # the device file repeats the bootrecord constant


def test_boot_py_and_bootrecord_agree_on_when_safe_mode_starts():
    from firmware import boot

    fs = _fresh_fs("agree")
    for _ in range(6):
        with_slot = boot.choose(boot.read_record(fs.path("boot.json")))[0] is not None
        d = BootRecord(fs).begin("watchdog")
        assert with_slot == (not d.safe_mode), (d.unhealthy, with_slot)
    assert boot.read_record("no-such-file.json") == {}
