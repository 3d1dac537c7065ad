"""Simulated ESP32 modules (`machine`, `network`, `esp32`, `ntptime`) for the virtual board.

`nbk.virtualboard.VirtualBoard(..., hardware="simulated")` puts this directory on the
interpreter's sys.path ahead of the Unix port's built-ins, so the unchanged device code
(firmware/boot.py -> main.py -> firmware/esp32_board.py) finds the modules of an ESP32. The
pins come from /board.json: each one reaches a part from simulator/ (SimLD2410 on the radar's
UART, SimPIR on the PIR pin, SimBME280 on the I2C bus, SimMQ134 on the gas ADC), driven by
simulator.hw.room (a quiet room with someone walking in now and then) on the real clock.

One process is one board: these modules keep the board's state at module level (the one
exception to the no-module-state rule, as machine.* is on the device).
"""
