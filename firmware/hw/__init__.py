"""Hardware layer selection: `esp32` on the board, `sim` on the unix port. Chosen once
at start; everything above this package is identical on both."""
import sys


def select(cfg):
    if sys.platform == "esp32":
        from hw.esp32 import Esp32Hardware
        return Esp32Hardware(cfg)
    if "sim" not in cfg:
        raise ValueError("no hardware: not on an ESP32 and config.json has no \"sim\" section")
    from hw.sim import SimHardware
    return SimHardware(cfg)


class Reboot(Exception):
    """Raised by a hardware layer that cannot reset the CPU (the unix port): main.py
    catches it and boots the node again in-process, like machine.soft_reset()."""
