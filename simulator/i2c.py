"""A simulated I2C bus: devices by address, with the `machine.I2C` methods drivers call.

    bus = SimI2C()
    bus.add(0x76, SimBME280(clock))
    bus.readfrom_mem(0x76, 0xD0, 1)      # b'`'

A missing or NACKing device raises OSError(19) (ENODEV), as MicroPython's ESP32 port does for a
NACKed address byte; a device may be told to fail with ETIMEDOUT (116) instead, like a bus hang.
"""

from drivers.compat import const
from simulator.prng import Prng

ENODEV = const(19)
ETIMEDOUT = const(116)


class I2CDevice:
    """Base of a simulated I2C target: the ACK decision and the NACK faults.

    Subclasses implement `write(data)` (the bytes after the address byte of a write) and
    `read(n)` (returns n bytes of a read); either may raise OSError(ENODEV) itself when the
    part NACKs a phase (e.g. an SHT3x with no result yet).
    """

    def __init__(self):
        self.nack = False  # the whole device stops answering until cleared
        self.fault_errno = ENODEV
        self._nack_next = 0
        self._nack_rate = 0.0
        self._prng = None

    def nack_next(self, count):
        """NACK the next `count` transactions, then answer again."""
        if count < 0:
            raise ValueError("nack_next(count): count must be >= 0, got %d" % count)
        self._nack_next = count

    def nack_rate(self, probability, seed=0):
        """NACK each transaction with `probability`, drawn from a Prng seeded with `seed`."""
        if not 0.0 <= probability <= 1.0:
            raise ValueError("nack_rate: probability must be in 0..1, got %r" % (probability,))
        self._nack_rate = probability
        self._prng = Prng(seed) if probability else None

    def check_ack(self):
        """Raise OSError(fault_errno) when the address byte of this transaction is NACKed."""
        if self.nack:
            raise OSError(self.fault_errno)
        if self._nack_next:
            self._nack_next -= 1
            raise OSError(self.fault_errno)
        if self._prng is not None and self._prng.chance(self._nack_rate):
            raise OSError(self.fault_errno)

    def write(self, data):
        raise NotImplementedError

    def read(self, n):
        raise NotImplementedError


class SimI2C:
    """A bus of simulated devices answering the machine.I2C calls drivers make."""

    def __init__(self):
        self._devices = {}
        self.transactions = 0  # every call that addressed a device, answered or not

    def add(self, address, device):
        """Attach `device` at the 7-bit `address`; returns the device."""
        if not 0x08 <= address <= 0x77:
            raise ValueError("I2C address 0x%02x outside the 7-bit range 0x08..0x77" % address)
        if address in self._devices:
            raise ValueError("I2C address 0x%02x already has a device" % address)
        self._devices[address] = device
        return device

    def remove(self, address):
        """Detach the device at `address` (it is unplugged: later calls raise ENODEV)."""
        if self._devices.pop(address, None) is None:
            raise ValueError("no device at I2C address 0x%02x" % address)

    def device(self, address):
        """The simulated device at `address` (to set truth and faults)."""
        return self._devices[address]

    def _target(self, addr):
        self.transactions += 1
        dev = self._devices.get(addr)
        if dev is None:
            raise OSError(ENODEV)
        dev.check_ack()
        return dev

    def scan(self):
        """Addresses that ACK, ascending (each probe counts as a transaction)."""
        found = []
        for addr in sorted(self._devices):
            try:
                self._target(addr)
            except OSError:
                continue
            found.append(addr)
        return found

    def writeto(self, addr, buf, stop=True):
        """Write `buf`; returns the number of bytes ACKed, like machine.I2C."""
        self._target(addr).write(bytes(buf))
        return len(buf)

    def readfrom(self, addr, nbytes, stop=True):
        return bytes(self._target(addr).read(nbytes))

    def readfrom_into(self, addr, buf, stop=True):
        data = self._target(addr).read(len(buf))
        for i in range(len(buf)):
            buf[i] = data[i]

    def readfrom_mem(self, addr, memaddr, nbytes, addrsize=8):
        dev = self._target(addr)
        dev.write(_mem_address(memaddr, addrsize))  # then a repeated start and the read
        return bytes(dev.read(nbytes))

    def readfrom_mem_into(self, addr, memaddr, buf, addrsize=8):
        dev = self._target(addr)
        dev.write(_mem_address(memaddr, addrsize))
        data = dev.read(len(buf))
        for i in range(len(buf)):
            buf[i] = data[i]

    def writeto_mem(self, addr, memaddr, buf, addrsize=8):
        self._target(addr).write(_mem_address(memaddr, addrsize) + bytes(buf))


def _mem_address(memaddr, addrsize):
    if addrsize == 8:
        return bytes((memaddr & 0xFF,))
    if addrsize == 16:
        return bytes(((memaddr >> 8) & 0xFF, memaddr & 0xFF))
    raise ValueError("addrsize must be 8 or 16, got %r" % (addrsize,))
