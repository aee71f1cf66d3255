"""CampusFleet node entry point: read config.json, pick the hardware layer once
(`esp32` on the board, `sim` on the unix port), run the node. An unexpected exception
resets the node (never a REPL on a ceiling); three such boots in a row start safe mode."""
import gc
import sys

# Import the big modules one at a time with a collection in between: compiling from
# source needs transient heap, and collecting keeps it from fragmenting what stays.
for _name in ("mqtt", "outbox", "sensors", "node"):
    __import__(_name)
    gc.collect()

import nodeconfig
from hw import Reboot, select
from node import Node


def main():
    try:
        cfg = nodeconfig.load()
        hardware = select(cfg)
    except ValueError as e:  # ConfigError is a ValueError
        print("campusfleet node: config error:", e)
        sys.exit(2)
    gc.collect()
    while True:
        try:
            Node(cfg, hardware).run()
            return
        except Reboot:
            cfg = nodeconfig.load()
        except Exception as e:  # noqa: BLE001 - last line of defence on the board
            sys.print_exception(e)
            hardware.sleep_ms(2000)  # never a tight crash loop, even in safe mode
            hardware.crash_reset()
            cfg = nodeconfig.load()


main()
