"""PIR motion sensor (AM312 / HC-SR501) on a GPIO: counts debounced rising edges in the
pin IRQ; the node takes the count once a second as its fast "someone moved" evidence."""
import time

try:
    from machine import disable_irq, enable_irq
except ImportError:  # the unix port's machine module has no IRQ control
    disable_irq = None
    enable_irq = None


class PIR:
    """`pin` is an input machine.Pin (or anything with irq() and IRQ_RISING). `ticks_ms`
    is the clock the debounce reads; the sim passes its sim-time clock so that edges two
    sim seconds apart stay two seconds apart at 60x real time."""

    def __init__(self, pin, debounce_ms=50, ticks_ms=time.ticks_ms):
        if not 0 <= debounce_ms <= 10000:
            raise ValueError("debounce_ms must be 0..10000")
        self._pin = pin
        self.debounce_ms = debounce_ms
        self._ticks_ms = ticks_ms
        self._count = 0
        self._last_ms = 0
        self._seen = False
        self.edges_total = 0  # counted edges since start, for status
        # The sensor output goes high on motion (AM312 / HC-SR501 datasheets: "high level
        # output" on trigger); a rising edge is one detection. The bound method is made
        # once here, so the IRQ itself allocates nothing.
        self._handler = self._irq
        pin.irq(trigger=pin.IRQ_RISING, handler=self._handler)

    def _irq(self, pin):
        # Runs in IRQ context: ints and attribute stores only, no allocation.
        now = self._ticks_ms()
        quiet = time.ticks_diff(now, self._last_ms) >= self.debounce_ms
        self._last_ms = now
        # Debounce as a quiet period: an edge counts only if the line has had no rising
        # edge for debounce_ms, so a burst of bounces counts once however long it lasts.
        if quiet or not self._seen:
            self._seen = True
            self._count += 1
            self.edges_total += 1

    def take(self):
        """Returns the edges counted since the last take() and clears the count, without
        losing an edge that arrives in between (IRQs off around the swap)."""
        if disable_irq is None:
            n = self._count
            self._count = 0
            return n
        state = disable_irq()
        n = self._count
        self._count = 0
        enable_irq(state)
        return n

    def deinit(self):
        self._pin.irq(handler=None)
