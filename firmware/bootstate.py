"""Boot bookkeeping that must survive resets: the boot counter, and the run of boots
that crashed before the node became healthy, which puts the node in safe mode
(network + status only) after SAFE_MODE_CRASHES of them in a row."""
import json
import os

SAFE_MODE_CRASHES = 3
PATH = "boot.json"


class BootState:
    def __init__(self, path=PATH):
        self.path = path
        st = {}
        try:
            with open(path) as f:
                st = json.load(f)
        except (OSError, ValueError):
            pass
        self.boot = int(st.get("boot", 0)) + 1
        crashes = int(st.get("crashes", 0))
        # A boot that ended without becoming healthy and without a clean stop counts
        # as a crash (exception, watchdog, brown-out loop, power cut during start-up).
        if st and not st.get("healthy") and not st.get("clean"):
            crashes += 1
        self.crashes = crashes
        self.safe_mode = crashes >= SAFE_MODE_CRASHES
        self.healthy = False
        self._save(healthy=False, clean=False)

    def _save(self, healthy, clean):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"boot": self.boot, "crashes": self.crashes, "healthy": healthy, "clean": clean}, f)
        os.rename(tmp, self.path)

    def mark_healthy(self):
        """Connected and delivering: the crash run is over (not in safe mode, where
        only a reboot command or an update ends it)."""
        if self.healthy or self.safe_mode:
            return
        self.healthy = True
        self.crashes = 0
        self._save(healthy=True, clean=False)

    def mark_clean(self, reset_crashes=False):
        """A planned stop or reboot: the next boot is not a crash."""
        if reset_crashes:
            self.crashes = 0
        self._save(healthy=self.healthy, clean=True)
