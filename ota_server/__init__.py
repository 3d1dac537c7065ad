"""OTA server: signed firmware releases, staged rollouts, the cloud's status polls.

Not built yet: it comes with the signed-OTA work, on top of the firmware's boot record and
application slots (firmware/bootrecord.py), which already choose the slot the node boots from.
"""
