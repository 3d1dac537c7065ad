"""Field calibration math (gas curve, environment offsets, LD2410 per-gate thresholds).

Not built yet: it comes with the calibration work. The drivers already expose what it needs:
gas Rs and ADC counts (drivers.mq134), raw environment codes (drivers.env) and per-gate radar
energies in engineering mode (drivers.ld2410).
"""
