"""CampusFleet node entry point: pick the app slot (factory at the root, or an OTA slot,
docs/ota.md), read config.json, pick the hardware layer once (`esp32` on the board,
`sim` on the unix port), run the node. An unexpected exception resets the node (never a
REPL on a ceiling); three such boots in a row start safe mode."""
import gc
import json
import os
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
_OTA = "ota.json"
_loaded = None  # the slot folder the app modules were imported from
_hw = None      # the hardware layer, kept across in-process reboots within one slot


def _save(name, st):
    with open(name + ".tmp", "w") as f:
        json.dump(st, f)
    os.rename(name + ".tmp", name)


def _slot():
    """The app folder to boot: "" (factory) or "slots/a", "slots/b". A pending (installed,
    unconfirmed) slot is tried 3 times; then back to the confirmed one (docs/ota.md)."""
    try:
        with open(_OTA) as f:
            st = json.load(f)
        slot = st.get("pending")
        if slot:
            tries = st.get("tries", 0)
            if tries >= 3:
                st["pending"] = None
                st["result"] = "rolled_back"
                st["reason"] = "boot_failed"
                st["ver"] = st.get("pending_ver")
                st["report"] = True
                try:
                    with open("boot.json") as f:
                        boot = json.load(f)
                    boot["crashes"] = 0  # those crashes were the failed release's
                    _save("boot.json", boot)
                except (OSError, ValueError):
                    pass
            else:
                st["tries"] = tries + 1
            _save(_OTA, st)
        slot = st.get("pending") or st.get("active")
        return "slots/" + slot if slot else ""
    except (OSError, ValueError, AttributeError):
        return ""


def _boot(path):
    """Imports the app from its slot folder, first on sys.path. After an in-process
    reboot into another slot (the unix port), the modules of the old one are dropped."""
    global _loaded
    if path != _loaded:
        for name in list(sys.modules):
            if not getattr(sys.modules[name], "__file__", "").startswith(".frozen"):
                del sys.modules[name]
        while sys.path[0] != "":
            sys.path.pop(0)
        if path:
            sys.path.insert(0, path)
        _loaded = path
        gc.collect()
    # The big modules one at a time with a collection in between: compiling from source
    # needs transient heap, and collecting keeps it from fragmenting what stays.
    for name in ("mqtt", "outbox", "sensors", "node"):
        __import__(name)
        gc.collect()
    return __import__("nodeconfig"), __import__("hw"), __import__("node")


def _start(path):
    """One boot: the app from its slot, config, hardware layer, node. Its own function,
    so that nothing of a boot stays referenced from main()'s frame afterwards (an
    in-process reboot into another slot must free the old modules)."""
    global _hw
    nodeconfig, hw, node = _boot(path)
    try:
        cfg = nodeconfig.load()
        if _hw is None:
            _hw = hw.select(cfg)
    except ValueError as e:
        print("campusfleet node: config error:", e)
        sys.exit(2)
    gc.collect()
    node.Node(cfg, _hw).run()


def main():
    global _hw
    while True:
        path = _slot()
        if path != _loaded:
            _hw = None  # built again by the new slot's hardware layer
        try:
            _start(path)
            return
        except Exception as e:  # noqa: BLE001 - last line of defence on the board
            if type(e).__name__ == "Reboot":  # hw.Reboot of whichever slot ran
                continue
            sys.print_exception(e)
            time.sleep_ms(2000)  # never a tight crash loop, even in safe mode
            if _hw is not None:
                _hw.crash_reset()
            elif sys.platform == "esp32":
                import machine  # no hardware layer (the app failed to load): reset
                machine.reset()

main()
