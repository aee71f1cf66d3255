"""CampusFleet node entry point: read config.json, pick the hardware layer once
(`esp32` on the board, `sim` on the unix port), run the node. An unexpected exception
resets the node (never a REPL on a ceiling); three such boots in a row start safe mode."""
import gc
import sys
import time

# Modules by their path relative to the working directory (the node's flash), as on the
# board: the unix port puts this script's absolute folder first, and every imported
# module would keep that long path as its __file__ (a qstr for the life of the node).
sys.path[0] = ""
# Collect after every 16 KB allocated, not only when the heap is full: the garbage of a
# catch-up (floats, slices, JSON text) then never spreads over the whole heap between the
# objects that stay, so a large block is still found late in a long run.
gc.threshold(16384)
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
    except ValueError as e:
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
            time.sleep_ms(2000)  # never a tight crash loop, even in safe mode
            hardware.crash_reset()
            cfg = nodeconfig.load()


main()
