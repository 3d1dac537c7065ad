"""SimI2C: addressing, register framing through the machine.I2C calls, and the NACK faults."""

from simulator.i2c import ENODEV, ETIMEDOUT, I2CDevice, SimI2C
from tests.support.mptest import raises

RUN_ON_MICROPYTHON = True


class Memory(I2CDevice):
    """A 16-byte register file with auto-increment: the smallest device worth a bus."""

    def __init__(self):
        super().__init__()
        self.mem = bytearray(range(16))
        self.ptr = 0
        self.writes = []

    def write(self, data):
        self.writes.append(bytes(data))
        if data:
            self.ptr = data[0]
            for b in data[1:]:
                self.mem[self.ptr & 0x0F] = b
                self.ptr += 1

    def read(self, n):
        out = bytes(self.mem[(self.ptr + i) & 0x0F] for i in range(n))
        self.ptr += n
        return out


def _bus():
    bus = SimI2C()
    dev = bus.add(0x50, Memory())
    return bus, dev


def test_readfrom_mem_sets_the_pointer_then_reads():
    bus, dev = _bus()
    assert bus.readfrom_mem(0x50, 3, 4) == b"\x03\x04\x05\x06"
    assert dev.writes == [b"\x03"]


def test_readfrom_mem_into_fills_a_memoryview_slice():
    bus, _ = _bus()
    buf = bytearray(6)
    bus.readfrom_mem_into(0x50, 10, memoryview(buf)[2:5])
    assert buf == bytearray(b"\x00\x00\x0a\x0b\x0c\x00")


def test_writeto_mem_sends_address_then_data():
    bus, dev = _bus()
    bus.writeto_mem(0x50, 2, b"\xaa\xbb")
    assert dev.writes == [b"\x02\xaa\xbb"]
    assert bus.readfrom_mem(0x50, 2, 2) == b"\xaa\xbb"


def test_sixteen_bit_memory_address_is_sent_msb_first():
    bus, dev = _bus()
    bus.readfrom_mem(0x50, 0x0102, 1, addrsize=16)
    assert dev.writes == [b"\x01\x02"]
    assert raises(ValueError, bus.readfrom_mem, 0x50, 1, 1, addrsize=12)


def test_plain_writeto_and_readfrom():
    bus, _dev = _bus()
    assert bus.writeto(0x50, b"\x05") == 1
    assert bus.readfrom(0x50, 2) == b"\x05\x06"
    buf = bytearray(3)
    bus.readfrom_into(0x50, buf)
    assert buf == bytearray(b"\x07\x08\x09")


def test_missing_address_raises_enodev_like_micropython():
    bus, _ = _bus()
    exc = raises(OSError, bus.readfrom_mem, 0x51, 0, 1)
    assert exc.args[0] == ENODEV == 19


def test_scan_lists_answering_addresses_in_order():
    bus, dev = _bus()
    bus.add(0x20, Memory())
    assert bus.scan() == [0x20, 0x50]
    dev.nack = True
    assert bus.scan() == [0x20]


def test_add_rejects_reserved_and_duplicate_addresses():
    bus, _ = _bus()
    assert "0x50" in str(raises(ValueError, bus.add, 0x50, Memory()))
    assert "0x78" in str(raises(ValueError, bus.add, 0x78, Memory()))
    assert "0x03" in str(raises(ValueError, bus.add, 0x03, Memory()))


def test_removed_device_no_longer_answers():
    bus, _ = _bus()
    bus.remove(0x50)
    assert raises(OSError, bus.readfrom, 0x50, 1).args[0] == ENODEV
    assert raises(ValueError, bus.remove, 0x50)


def test_whole_device_nack_until_cleared():
    bus, dev = _bus()
    dev.nack = True
    assert raises(OSError, bus.writeto, 0x50, b"\x00").args[0] == ENODEV
    dev.nack = False
    assert bus.readfrom_mem(0x50, 0, 1) == b"\x00"


def test_nack_next_fails_exactly_that_many_transactions():
    bus, _ = _bus()
    bus.device(0x50).nack_next(2)
    raises(OSError, bus.readfrom, 0x50, 1)
    raises(OSError, bus.readfrom_mem, 0x50, 0, 1)
    assert bus.readfrom(0x50, 1) is not None
    assert raises(ValueError, bus.device(0x50).nack_next, -1)


def test_fault_errno_can_be_a_bus_timeout():
    bus, dev = _bus()
    dev.fault_errno = ETIMEDOUT
    dev.nack_next(1)
    assert raises(OSError, bus.readfrom, 0x50, 1).args[0] == 116


def _outcomes(seed, count):
    bus, dev = _bus()
    dev.nack_rate(0.3, seed=seed)
    out = []
    for _ in range(count):
        try:
            bus.readfrom(0x50, 1)
            out.append(1)
        except OSError:
            out.append(0)
    return out


def test_intermittent_nack_rate_is_seeded_and_roughly_right():
    first = _outcomes(7, 400)
    assert first == _outcomes(7, 400)  # the same seed replays the same faults
    assert first != _outcomes(8, 400)
    failures = first.count(0)
    assert 80 <= failures <= 160, failures  # 0.3 of 400 = 120
    assert raises(ValueError, I2CDevice().nack_rate, 1.5)


def test_transactions_are_counted():
    bus, _ = _bus()
    bus.readfrom_mem(0x50, 0, 1)
    raises(OSError, bus.readfrom, 0x33, 1)
    assert bus.transactions == 2
