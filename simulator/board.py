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

try:  # MicroPython: a sleeping task waits on the clock's own queue (see VirtualClock)
    from asyncio import core as _core
except ImportError:  # CPython: one asyncio.Event per sleep
    _core = None

# A fixed, plausible wall time for a simulation that does not say otherwise: 2026-11-22T10:00Z.
DEFAULT_EPOCH_MS = 1795341600000


class VirtualClock(SimClock):
    """A SimClock that asyncio tasks can sleep on; `run()` moves it forward."""

    def __init__(self, start_ms=0, epoch_ms=DEFAULT_EPOCH_MS):
        super().__init__(start_ms)
        self.epoch_at_zero_ms = epoch_ms  # the true wall time at tick 0: what NTP answers
        if _core is not None:
            self._sleepers = _core.TaskQueue()  # sleeping tasks, keyed by wake time (ph_key)
            self._resume = _Resume()
        else:
            self._sleepers = []  # heap of (wake_ms, order, event, task)
        self._order = 0
        self._busy = []  # tasks woken by the clock that have not slept on it again
        self.watchers = []  # simulated parts with next_edge_ms() and update() (e.g. SimPIR)
        self.jumps = 0

    def epoch_ms(self):
        """The simulation's true wall time (for the simulated NTP server)."""
        return self.epoch_at_zero_ms + self._now_ms

    def sleep_ms_async(self, ms):
        """Awaitable: the calling task resumes when virtual time reaches now + `ms`.

        On MicroPython the task itself waits in the clock's TaskQueue, as asyncio.sleep_ms
        parks it on a board: no Event, no generator, nothing allocated per sleep, so the
        firmware's heap is not charged for the simulation's clock.
        """
        try:
            task = asyncio.current_task()
        except RuntimeError:  # CPython outside a task
            task = None
        busy = self._busy
        for i in range(len(busy)):
            if busy[i] is task:
                busy.pop(i)
                break
        wake = self._now_ms + (ms if ms > 0 else 0)
        if _core is None:
            return self._sleep_on_event(wake, task)
        self._sleepers.push(task, wake)
        task.data = self._sleepers  # so Task.cancel() takes it off this queue
        return self._resume.arm()

    async def _sleep_on_event(self, wake, task):
        event = asyncio.Event()
        self._order += 1
        heapq.heappush(self._sleepers, (wake, self._order, event, task))
        await event.wait()

    def _next_wake(self):
        """The earliest wake-up time, or None when nobody sleeps."""
        if _core is not None:
            first = self._sleepers.peek()
            return None if first is None else first.ph_key
        return self._sleepers[0][0] if self._sleepers else None

    def _wake_due(self):
        """Resume every task whose wake-up time has come; they count as busy."""
        now = self._now_ms
        sleepers = self._sleepers
        if _core is not None:
            while sleepers.peek() is not None and sleepers.peek().ph_key <= now:
                task = sleepers.pop()
                self._busy.append(task)
                _core._task_queue.push(task)
            return
        while sleepers and sleepers[0][0] <= now:
            item = heapq.heappop(sleepers)
            task = item[3]
            if task is not None and not task.done():
                self._busy.append(task)
            item[2].set()

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
            wake = self._next_wake()
            if busy or wake is None:
                await asyncio.sleep(0.001)  # someone waits on I/O (or nobody sleeps yet)
                continue
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
            self._wake_due()
            await asyncio.sleep(0)  # let the woken tasks run before looking again


class _Resume:
    """What a MicroPython task awaits while it sleeps on a VirtualClock: its first step yields
    (the task stays parked in the clock's queue), its second ends the await. One per clock,
    shared by every task, like asyncio's own SingletonGenerator: arming and the first step
    happen in the same turn of the sleeping task."""

    def __init__(self):
        self._armed = False
        self._done = StopIteration()

    def arm(self):
        self._armed = True
        return self

    def __iter__(self):
        return self

    def __next__(self):
        if self._armed:
            self._armed = False
            return None
        self._done.__traceback__ = None  # else each raise would add to its traceback (heap)
        raise self._done


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
