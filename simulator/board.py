"""A simulated node's Board and virtual clock; what the device side of a simulation imports.

Runs under MicroPython (the firmware's end-to-end test, simulator.node) and CPython.

    clock = VirtualClock()
    board = bridged_board(clock, "node_fs", "127.0.0.1:40123")  # parts served over the bridge
    asyncio.create_task(clock.run())               # time jumps whenever every task waits on it

`bridged_board` leaves the parts in another process (simulator.bridge; the firmware alone in
this heap); simulator.parts.sim_board builds a SimBoard with the parts in this process.

Virtual time: tasks wait through `clock.sleep_ms_async(ms)`. A task the clock woke counts as
busy until it sleeps on the clock again, however long it waits on a socket meanwhile; when no
task is busy the clock jumps to the earliest wake-up. So ten simulated minutes of sampling pass
in seconds of real time, while a network round trip still completes before time moves on.
"""

import asyncio
import heapq

from firmware.board import Board
from simulator.clock import SimClock

# A fixed, plausible wall time for a simulation that does not say otherwise: 2026-11-22T10:00Z.
DEFAULT_EPOCH_MS = 1795341600000


class VirtualClock(SimClock):
    """A SimClock that asyncio tasks can sleep on; `run()` moves it forward."""

    def __init__(self, start_ms=0, epoch_ms=DEFAULT_EPOCH_MS):
        super().__init__(start_ms)
        self.epoch_at_zero_ms = epoch_ms  # the true wall time at tick 0: what NTP answers
        self._sleepers = []  # heap of (wake_ms, order, event, task)
        self._order = 0
        self._busy = []  # tasks woken by the clock that have not slept on it again
        self.watchers = []  # simulated parts with next_edge_ms() and update() (e.g. SimPIR)
        self.jumps = 0

    def epoch_ms(self):
        """The simulation's true wall time (for the simulated NTP server)."""
        return self.epoch_at_zero_ms + self._now_ms

    async def sleep_ms_async(self, ms):
        if ms < 0:
            ms = 0
        try:
            task = asyncio.current_task()
        except RuntimeError:  # CPython outside a task
            task = None
        busy = self._busy
        for i in range(len(busy)):
            if busy[i] is task:
                busy.pop(i)
                break
        event = asyncio.Event()
        self._order += 1
        heapq.heappush(self._sleepers, (self._now_ms + ms, self._order, event, task))
        await event.wait()

    async def run(self, until_ms=None, settle_ms=5):
        """Advance time forever (or until `until_ms`): run it as a task beside the firmware.

        Its real-time waits use asyncio.sleep (seconds), which both interpreters have."""
        await asyncio.sleep(settle_ms / 1000)
        busy = self._busy
        while until_ms is None or self._now_ms < until_ms:
            await asyncio.sleep(0)  # tasks created since the last look get their first turn
            i = 0
            while i < len(busy):  # forget woken tasks that ended without sleeping again
                if busy[i].done():
                    busy.pop(i)
                else:
                    i += 1
            if busy or not self._sleepers:
                await asyncio.sleep(0.001)  # someone waits on I/O (or nobody sleeps yet)
                continue
            wake = self._sleepers[0][0]
            for w in self.watchers:  # stop at a part's own transition, so its edges are exact
                edge = w.next_edge_ms()
                if edge is not None and self._now_ms < edge < wake:
                    wake = edge
            if until_ms is not None and wake > until_ms:
                wake = until_ms
            if wake > self._now_ms:
                self._now_ms = wake
                self.jumps += 1
            for w in self.watchers:
                w.update()
            while self._sleepers and self._sleepers[0][0] <= self._now_ms:
                item = heapq.heappop(self._sleepers)
                task = item[3]
                if task is not None and not task.done():
                    busy.append(task)
                item[2].set()
            await asyncio.sleep(0)  # let the woken tasks run before looking again


class SimBoard(Board):
    """A Board over simulated peripherals (`radar`, `pir`, `gas`, `env` stay reachable for
    setting ground truth) and a VirtualClock, which answers its NTP."""

    def __init__(self, clock, fs, radar=None, pir=None, gas=None, i2c=None, env=None, **kw):
        super().__init__(clock, fs, uart=radar, pir_pin=pir, gas_adc=gas, i2c=i2c, **kw)
        self.radar = radar
        self.pir = pir
        self.gas = gas
        self.env = env  # the simulated environment chip on i2c, for set_truth
        self.ntp_ok = True
        self.rssi_dbm = -60
        self.resets = 0
        self.slept_ms = []

    def ntp_epoch_ms(self):
        if not self.ntp_ok:
            raise OSError(110, "simulated NTP timeout")
        return self.clock.epoch_ms()

    def rssi(self):
        return self.rssi_dbm

    def deep_sleep(self, ms):
        """Simulated deep sleep: time passes; RTC memory is kept; the caller restarts the app."""
        self.slept_ms.append(ms)
        self.clock.advance(ms)
        self.reset_cause = "deep_sleep"

    def reset(self):
        self.resets += 1
        raise SystemExit("simulated reset")


def bridged_board(clock, fs_root, address, divider_ratio=2.0):
    """A SimBoard whose peripherals are proxies to a simulator.bridge_host.BridgeHost at
    "host:port", on a directory file system.

    The parts and their ground truth live in the host process (set truth there); this process
    holds only the firmware and small proxies, as a board's heap would. The bridge joins the
    clock's watchers, so the VirtualClock stops at the host's PIR edges and scheduled events.
    """
    from firmware.fs import OsFs
    from simulator.bridge import HAS_ADC, HAS_I2C, HAS_PIN, HAS_UART, Bridge, BridgeADC

    b = Bridge(clock, address)  # the UART, the I2C bus and the PIR pin in one proxy
    if hasattr(clock, "watchers"):
        clock.watchers.append(b)
    has = b.parts
    board = SimBoard(
        clock,
        OsFs(fs_root),
        radar=b if has & HAS_UART else None,
        pir=b if has & HAS_PIN else None,
        gas=BridgeADC(b) if has & HAS_ADC else None,
        i2c=b if has & HAS_I2C else None,
        info={"mq134": {"divider_ratio": divider_ratio}},
    )
    board.bridge = b
    return board
