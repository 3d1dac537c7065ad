"""NeuroBuild node firmware: the same code on the ESP32, the MicroPython Unix port and CPython."""
