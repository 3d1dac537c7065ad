"""The interface the environment sensors share (BME280/BMP280, SHT3x, AHT20), and detection.

Each driver owns one `EnvReading` and `read()` updates it in place and returns it (no allocation
per read beyond the floats); call `copy()` to keep a reading past the next one.

    from drivers.env import detect
    sensor = detect(i2c)          # BME280, BMP280, SHT3x or AHT20, whichever answers
    r = sensor.read()
    print(r.temperature_c, r.humidity_pct, r.pressure_hpa, r.quality)

For asyncio callers each driver splits `read()`: `start_measurement()` returns the milliseconds
to wait, then `read_measurement()` returns the reading, or None while a BME280 or AHT20 still
converts (an SHT3x NACKs a read before its result is ready: that raises SHT3xError).
"""

from drivers.compat import SYSTEM_CLOCK
from drivers.sensor import BAD, SensorError

# Where each part can live (datasheets: BME280 5.2, SHT3x 3.4 table 7, AHT20 5.3), probe order:
# the BME280 first since it also gives pressure.
BME280_ADDRESSES = (0x76, 0x77)
SHT3X_ADDRESSES = (0x44, 0x45)
AHT20_ADDRESSES = (0x38,)


class EnvReading:
    """One conversion: values in °C, %RH and hPa (None when the part lacks or lost the value).

    `quality` is BAD when a channel the driver asked for delivered nothing usable (reset value,
    CRC mismatch; that value is then None), SUSPECT outside the part's rated range, else GOOD.
    `raw_*` keep the ADC codes (None when absent) for calibration and for the simulator's checks.
    """

    def __init__(self):
        # Type comments, not annotations: the MicroPython subset, and pyright reads them.
        self.temperature_c = None  # type: float | None
        self.humidity_pct = None  # type: float | None
        self.pressure_hpa = None  # type: float | None
        self.quality = BAD
        self.raw_temperature = None  # type: int | None
        self.raw_humidity = None  # type: int | None
        self.raw_pressure = None  # type: int | None

    def copy(self):
        """A detached copy: drivers overwrite their own reading on the next read."""
        other = EnvReading()
        other.temperature_c = self.temperature_c
        other.humidity_pct = self.humidity_pct
        other.pressure_hpa = self.pressure_hpa
        other.quality = self.quality
        other.raw_temperature = self.raw_temperature
        other.raw_humidity = self.raw_humidity
        other.raw_pressure = self.raw_pressure
        return other

    def __repr__(self):
        return "EnvReading(temperature_c=%r, humidity_pct=%r, pressure_hpa=%r, quality=%r)" % (
            self.temperature_c,
            self.humidity_pct,
            self.pressure_hpa,
            self.quality,
        )


def crc8(buf, start=0, end=-1):
    """Sensirion/Aosong CRC-8 of buf[start:end]: poly 0x31, init 0xFF, no reflection, no XOR-out.

    SHT3x datasheet 4.12 (CRC(0xBEEF) = 0x92); the AHT20 uses the same CRC over its frame.
    Indexes instead of slicing, so checking a received frame allocates nothing.
    """
    if end < 0:
        end = len(buf)
    crc = 0xFF
    for i in range(start, end):
        crc ^= buf[i]
        for _ in range(8):
            if crc & 0x80:
                crc = ((crc << 1) ^ 0x31) & 0xFF
            else:
                crc = (crc << 1) & 0xFF
    return crc


def detect(i2c, clock=SYSTEM_CLOCK):
    """Return a driver for the first environment sensor found on `i2c`.

    Probes BME280/BMP280 (0x76, 0x77, told apart by chip id), SHT3x (0x44, 0x45), AHT20 (0x38),
    among the addresses that answer a scan. Raises SensorError listing what answered where and
    why each candidate was refused.
    """
    try:
        present = i2c.scan()
    except OSError as exc:
        raise SensorError("I2C scan failed (%s); check SDA/SCL wiring and pull-ups" % exc, exc)
    refused = []
    for addresses in (BME280_ADDRESSES, SHT3X_ADDRESSES, AHT20_ADDRESSES):
        for address in addresses:
            if address not in present:
                continue
            try:
                return _driver_class(addresses)(i2c, address=address, clock=clock)
            except SensorError as exc:
                refused.append("0x%02x: %s" % (address, exc))
    if not present:
        raise SensorError("no device answered on the I2C bus; check wiring, power and pull-ups")
    others = [a for a in present if a not in BME280_ADDRESSES + SHT3X_ADDRESSES + AHT20_ADDRESSES]
    message = "no supported environment sensor found (BME280/BMP280 at 0x76/0x77, SHT3x at "
    message += "0x44/0x45, AHT20 at 0x38)"
    if refused:
        message += "; refused: " + "; ".join(refused)
    if others:
        message += "; other devices answered at " + ", ".join("0x%02x" % a for a in others)
    raise SensorError(message)


def _driver_class(addresses):
    # Imported only when a part answers at its address: each driver imports this module, and
    # compiling the other two would cost a small board heap it needs for nothing.
    if addresses is BME280_ADDRESSES:
        from drivers.bme280 import BME280

        return BME280
    if addresses is SHT3X_ADDRESSES:
        from drivers.sht3x import SHT3x

        return SHT3x
    from drivers.aht20 import AHT20

    return AHT20
