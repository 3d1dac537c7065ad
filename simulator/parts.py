"""The reference node's simulated parts in this process: `sim_board` builds a SimBoard holding
them, `set_environment` sets the room's climate on them.

Runs under MicroPython (dual tests, the heap benchmarks) and CPython (a BridgeHost's parts, the
fleet simulator).

    clock = VirtualClock()                         # simulator.board
    board = sim_board(clock, "node_fs")            # SimLD2410, SimPIR, SimMQ134, SimI2C+BME280
    board.radar.set_targets([(150, "moving", 60)]) # ground truth
    asyncio.create_task(clock.run())
"""

from simulator.board import SimBoard


def sim_board(clock, fs_root="", seed=1, env_address=0x76, divider_ratio=2.0, pir=True):
    """A SimBoard with every sensor of the reference node, on a directory file system.

    Ground truth: `board.radar.set_targets(...)`, `board.pir.set_motion(...)`,
    `set_environment(board, t, h, p)` and `board.gas.ppm`.
    """
    from firmware.fs import OsFs
    from simulator.bme280 import SimBME280
    from simulator.i2c import SimI2C
    from simulator.ld2410 import SimLD2410
    from simulator.mq134 import SimMQ134

    radar = SimLD2410(clock, seed=seed)
    i2c = SimI2C()
    env = SimBME280(clock)
    i2c.add(env_address, env)
    gas = SimMQ134(divider_ratio=divider_ratio, seed=seed + 1)
    pin = None
    if pir:
        from simulator.pir import SimPIR

        pin = SimPIR(clock, seed=seed + 2)
        if hasattr(clock, "watchers"):
            clock.watchers.append(pin)
    info = {"mq134": {"divider_ratio": divider_ratio}}
    return SimBoard(
        clock, OsFs(fs_root), radar=radar, pir=pin, gas=gas, i2c=i2c, env=env, info=info
    )


def set_environment(board, temperature_c, humidity_pct, pressure_hpa):
    """The room's climate: seen by the environment sensor and by the gas sensor's chemistry."""
    board.env.set_truth(temperature_c, humidity_pct, pressure_hpa)
    board.gas.temperature_c = temperature_c
    board.gas.humidity_pct = humidity_pct
