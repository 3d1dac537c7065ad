"""`esp32` of a simulated ESP32: the OTA partitions of the 8 MB layout, enough for rollback.

Partition(Partition.RUNNING) is ota_0 (boards/nb-node-v1.toml); mark_app_valid_cancel_rollback()
is counted, as nothing rolls back on the virtual board.
"""

TYPE_APP = 0
TYPE_DATA = 1
# (label, type, subtype, offset, size): boards/nb-node-v1.toml's app slots
_TABLE = (
    ("ota_0", TYPE_APP, 0x10, 0x10000, 0x270000),
    ("ota_1", TYPE_APP, 0x11, 0x280000, 0x270000),
)
_VALID = [0]


class Partition:
    BOOT = 0
    RUNNING = 1
    TYPE_APP = TYPE_APP
    TYPE_DATA = TYPE_DATA

    def __init__(self, id):
        if id in (Partition.BOOT, Partition.RUNNING):
            id = "ota_0"
        for row in _TABLE:
            if row[0] == id:
                self._row = row
                return
        raise ValueError("no partition %r; the virtual board has %s" % (id, [r[0] for r in _TABLE]))

    @staticmethod
    def find(type=TYPE_APP, subtype=0xFF, label=None):
        return [
            Partition(r[0])
            for r in _TABLE
            if r[1] == type and subtype in (0xFF, r[2]) and label in (None, r[0])
        ]

    def info(self):
        """(type, subtype, addr, size, label, encrypted), as on the ESP32 port."""
        label, kind, subtype, offset, size = self._row
        return (kind, subtype, offset, size, label, False)

    def get_next_update(self):
        return Partition("ota_1" if self._row[0] == "ota_0" else "ota_0")

    @staticmethod
    def mark_app_valid_cancel_rollback():
        _VALID[0] += 1

    def __repr__(self):
        return "<Partition type=%d, subtype=%d, address=%d, size=%d, label=%s, encrypted=0>" % (
            self._row[1],
            self._row[2],
            self._row[3],
            self._row[4],
            self._row[0],
        )
