"""A job the server runs every `interval_s` in a daemon thread, from start() to stop():
the rollups, the alert evaluator and retention share this loop."""
from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger(__name__)


class PeriodicJob:
    """Subclasses set `name` and implement run_once(); its result is kept in `last`."""

    name = "job"

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self.last: Any = None

    def run_once(self) -> Any:
        raise NotImplementedError

    def start(self) -> PeriodicJob:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """Idempotent: the server's shutdown and a test may both call it."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def stopping(self) -> bool:
        return self._stop.is_set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.last = self.run_once()
            except Exception:    # a database hiccup must not end the job; retried next tick
                log.exception("%s failed; retrying in %.0f s", self.name, self.interval_s)
            self._stop.wait(self.interval_s)
