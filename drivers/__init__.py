"""Portable MicroPython sensor drivers: each takes its bus and pins, never builds them."""
