"""The parts soldered to a virtual board, found by the pins /board.json names.

`SimHardware(info, clock, now_ms)` builds one simulated part per section of the board info
(nbk.boards' to_device_dict): SimLD2410 behind the radar's UART and OUT pin, SimPIR on the PIR
pin, a SimI2C bus with a SimBME280 at 0x76, SimMQ134 with the board's MQ-134 circuit on the gas
ADC pin, and a cell at BATTERY_V behind the battery divider. simulator.hw.machine hands them to
the firmware by pin number. `update()` moves the parts' ground truth to what simulator.hw.room
says for the wall clock `now_ms()`; the machine module calls it on every hardware access.
"""

from drivers.mq134 import FULL_SCALE_V
from simulator.bme280 import SimBME280
from simulator.hw.room import Room
from simulator.i2c import SimI2C
from simulator.ld2410 import SimLD2410
from simulator.mq134 import SimMQ134
from simulator.pir import SimPIR

BME280_ADDRESS = 0x76
BATTERY_V = 3.95  # a Li-ion cell most of the way full (firmware maps 3.3-4.2 V to 0-100 %)
AIR_STEP_MS = 5000  # the air is re-applied this often (the BME280 is read every 10 s)
UPDATE_MS = 100  # the people in the room are checked at most this often


class FixedAdc:
    """An ADC pin held at a fixed voltage (the battery divider): read, read_u16, read_uv."""

    def __init__(self, volts, atten="ATTN_11DB"):
        if atten not in FULL_SCALE_V:
            raise ValueError(
                "unknown attenuation %r; use one of %s" % (atten, sorted(FULL_SCALE_V))
            )
        self.volts = volts
        self._full_scale_v = FULL_SCALE_V[atten]

    def read(self):
        v = min(max(self.volts, 0.0), self._full_scale_v)
        return int(v / self._full_scale_v * 4095 + 0.5)

    def read_u16(self):
        raw = self.read()
        return (raw << 4) | (raw >> 8)  # the ESP32 port's 12 -> 16 bit scaling

    def read_uv(self):
        return int(min(max(self.volts, 0.0), self._full_scale_v) * 1000 + 0.5) * 1000


class SimHardware:
    """Every simulated part of one board, keyed by the ESP32 pins that reach it."""

    def __init__(self, info, clock, now_ms, seed=0, battery_v=BATTERY_V):
        if not isinstance(info, dict):
            raise ValueError("board info must be a dict (from /board.json), got %r" % (info,))
        self.info = info
        self.clock = clock
        self.room = Room(seed)
        self._now_ms = now_ms
        self.radar = self.pir = self.env = self.gas = self.battery = None
        self._pins = {}  # GPIO -> Pin-like part (value/irq)
        self._adcs = {}  # GPIO -> ADC-like part
        self._uarts = {}  # ESP32 RX GPIO -> UART-like part
        self._buses = {}  # (sda, scl) -> SimI2C
        ld = info.get("ld2410")
        if ld:
            self.radar = SimLD2410(clock, seed=seed)
            self._uarts[ld["rx"]] = self.radar
            if ld.get("out") is not None:
                self._pins[ld["out"]] = self.radar.out_pin
        pir = info.get("pir")
        if pir:
            self.pir = SimPIR(clock, seed=seed)
            self._pins[pir["pin"]] = self.pir
        i2c = info.get("i2c")
        if i2c:
            bus = SimI2C()
            self.env = bus.add(BME280_ADDRESS, SimBME280(clock))
            self._buses[(i2c["sda"], i2c["scl"])] = bus
        mq = info.get("mq134")
        if mq:
            kw = {}
            for key in ("divider_ratio", "load_ohm", "supply_v", "atten"):
                if key in mq:
                    kw[key] = mq[key]
            self.gas = SimMQ134(seed=seed, **kw)
            self._adcs[mq["adc"]] = self.gas
        bat = info.get("battery")
        if bat:
            self.battery = FixedAdc(battery_v / bat["divider_ratio"], bat.get("atten", "ATTN_11DB"))
            self._adcs[bat["adc"]] = self.battery
        self._moment = None
        self._checked_at = None
        self._air_at = None
        self.update()

    def pin_part(self, gpio):
        """The part driving `gpio` (SimPIR, the radar's OUT), or None for a free pin."""
        return self._pins.get(gpio)

    def adc_part(self, gpio):
        return self._adcs.get(gpio)

    def uart_part(self, rx):
        return self._uarts.get(rx)

    def i2c_bus(self, sda, scl):
        """The bus on these pins; an empty bus (every address NACKs) where nothing is wired."""
        bus = self._buses.get((sda, scl))
        if bus is None:
            bus = self._buses[(sda, scl)] = SimI2C()
        return bus

    def update(self):
        """Set the parts' ground truth to the room's at the wall clock's time."""
        clock = self.clock
        tick = clock.ticks_ms()
        if self._checked_at is not None and clock.ticks_diff(tick, self._checked_at) < UPDATE_MS:
            return
        self._checked_at = tick
        t = self._now_ms()
        moment = self.room.moment_at(t)
        if moment != self._moment:
            self._moment = moment
            people = self.room.people_at(t)
            if self.radar is not None:
                self.radar.set_targets(people)
            if self.pir is not None:
                self.pir.set_motion(any(p[1] == "moving" for p in people))
        if self._air_at is None or clock.ticks_diff(tick, self._air_at) >= AIR_STEP_MS:
            self._air_at = tick
            c, rh, hpa, ppm = self.room.air_at(t)
            if self.env is not None:
                self.env.set_truth(c, rh, hpa)
            if self.gas is not None:
                self.gas.ppm = ppm
                self.gas.temperature_c = c
                self.gas.humidity_pct = rh
