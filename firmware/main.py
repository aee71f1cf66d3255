"""CampusFleet node entry point: read config.json, pick the hardware layer once
(`esp32` on the board, `sim` on the unix port), run the node; reboot in place when a
command asks for it on a port that cannot reset itself."""
import sys

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
    while True:
        try:
            Node(cfg, hardware).run()
            return
        except Reboot:
            cfg = nodeconfig.load()


main()
